"""PART's relative encoders compute exactly the paper's functions of the concatenated pair."""

from __future__ import annotations

import torch

from relpos_plugins.part import CrossAttentionHead, PairwiseHead, _take


def _pairs(batch=3, n_patches=10, dim=32, n_pairs=50):
    torch.manual_seed(0)
    tokens = torch.randn(batch, n_patches, dim)
    ref = torch.randint(0, n_patches, (batch, n_pairs))
    tgt = (ref + torch.randint(1, n_patches, (batch, n_pairs))) % n_patches
    concat = torch.cat([_take(tokens, ref), _take(tokens, tgt)], dim=-1)
    return tokens, ref, tgt, concat


def test_cross_attention_head_equals_attention_over_projected_concatenated_pairs():
    tokens, ref, tgt, concat = _pairs()
    dim, heads = 32, 4
    head = CrossAttentionHead(dim, heads, out_dim=2)
    # The paper's form: query = Linear(concat(x_ref, x_tgt)); standard multi-head attention with
    # the same projections, keys and values = all patch embeddings; then the read-out.
    mha = torch.nn.MultiheadAttention(dim, heads, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([head.q_proj.weight, head.kv_proj.weight]))
        mha.in_proj_bias.copy_(torch.cat([head.q_proj.bias, head.kv_proj.bias]))
        mha.out_proj.weight.copy_(head.proj.weight)
        mha.out_proj.bias.copy_(head.proj.bias)
    attended, _ = mha(head.query(concat), tokens, tokens)
    expected = head.out(head.norm(attended))
    torch.testing.assert_close(head(tokens, ref, tgt), expected, atol=1e-5, rtol=1e-5)


def test_pairwise_head_is_one_linear_map_of_the_concatenated_pair():
    tokens, ref, tgt, concat = _pairs()
    head = PairwiseHead(32, out_dim=2)
    torch.testing.assert_close(head(tokens, ref, tgt), head.out(concat), atol=1e-5, rtol=1e-5)
    # The paper's parameter count for this head: 2·d·|θ| weights (+ |θ| biases).
    assert head.out.weight.numel() == 2 * 32 * 2


def test_swapping_reference_and_target_changes_the_query():
    tokens, ref, tgt, _ = _pairs()
    head = CrossAttentionHead(32, 4, out_dim=2)
    assert not torch.allclose(head(tokens, ref, tgt), head(tokens, tgt, ref))

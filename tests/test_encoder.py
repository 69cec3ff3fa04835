"""The patch encoder: shapes, permutation equivariance without positions, sin-cos positions."""

from __future__ import annotations

import pytest
import torch

from relpos.encoders import rebuild_encoder as build_encoder
from relpos.encoders.vit import EncoderConfig, PatchEncoder, sincos_embedding
from relpos.errors import ConfigError


def tiny(pos_embed: str = "none", channels: int = 3, patch_shape=(4, 4)) -> PatchEncoder:
    torch.manual_seed(0)
    enc = PatchEncoder(EncoderConfig(dim=32, depth=1, heads=2, pos_embed=pos_embed), channels, patch_shape)
    return enc.eval()


def test_output_is_cls_plus_one_token_per_patch():
    enc = tiny()
    patches = torch.randn(2, 5, 3, 4, 4)
    out = enc(patches)
    assert out.shape == (2, 1 + 5, 32)
    assert enc.token_dim == 3 * 4 * 4  # C·∏P = 48 inputs to the linear patch embedding
    assert enc.patch_embed.in_features == 48


def test_one_axis_patches():
    enc = tiny(channels=4, patch_shape=(100,))
    out = enc(torch.randn(3, 7, 4, 100))
    assert out.shape == (3, 8, 32)


def test_without_positions_patch_tokens_are_permutation_equivariant():
    # PART relies on this: with pos_embed="none" the encoder cannot tell where a patch came from,
    # so shuffling the patches only shuffles their tokens and leaves CLS unchanged.
    enc = tiny("none")
    gen = torch.Generator().manual_seed(1)
    patches = torch.randn(2, 6, 3, 4, 4, generator=gen)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    centers = torch.rand(2, 6, 2, generator=gen) * 32
    with torch.no_grad():
        out = enc(patches, centers)
        shuffled = enc(patches[:, perm], centers[:, perm])
    torch.testing.assert_close(shuffled[:, 1:], out[:, 1:][:, perm], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shuffled[:, 0], out[:, 0], rtol=1e-5, atol=1e-5)
    # tokens differ between patches (a constant output would pass the checks above trivially)
    assert (out[:, 1] - out[:, 2]).abs().max() > 1e-3


def test_without_positions_centres_are_ignored():
    enc = tiny("none")
    patches = torch.randn(1, 4, 3, 4, 4)
    with torch.no_grad():
        a = enc(patches, torch.zeros(1, 4, 2))
        b = enc(patches, torch.rand(1, 4, 2) * 100)
    torch.testing.assert_close(a, b)


def test_sincos_positions_change_the_output():
    enc = tiny("sincos")
    patches = torch.randn(1, 4, 3, 4, 4)
    centers = torch.tensor([[[2.0, 2.0], [2.0, 6.0], [6.0, 2.0], [6.0, 6.0]]])
    with torch.no_grad():
        a = enc(patches, centers)
        b = enc(patches, centers + torch.tensor([0.0, 8.0]))
        # the same patches in a new order: with positions attached they keep their identity,
        # so permuting (patch, centre) together still permutes the tokens
        perm = torch.tensor([2, 0, 3, 1])
        c = enc(patches[:, perm], centers[:, perm])
        # but moving patches to other centres is seen
        d = enc(patches[:, perm], centers)
    assert (a - b).abs().max() > 1e-3
    torch.testing.assert_close(c[:, 1:], a[:, 1:][:, perm], rtol=1e-5, atol=1e-5)
    assert (d[:, 1:] - a[:, 1:][:, perm]).abs().max() > 1e-3


def test_sincos_encoder_needs_centres():
    enc = tiny("sincos")
    with pytest.raises(ValueError, match="centres"):
        enc(torch.randn(1, 2, 3, 4, 4))


def test_position_masking_only_in_training():
    torch.manual_seed(0)
    cfg = EncoderConfig(dim=32, depth=1, heads=2, pos_embed="sincos", pos_mask_ratio=0.5)
    enc = PatchEncoder(cfg, 1, (2,))
    patches = torch.randn(1, 8, 1, 2)
    centers = torch.arange(8.0).reshape(1, 8, 1) * 10
    enc.eval()
    with torch.no_grad():
        e1 = enc(patches, centers)
        e2 = enc(patches, centers)
    torch.testing.assert_close(e1, e2)
    enc.train()
    with torch.no_grad():
        t1 = enc(patches, centers, torch.Generator().manual_seed(0))
        t2 = enc(patches, centers, torch.Generator().manual_seed(0))
        t3 = enc(patches, centers, torch.Generator().manual_seed(1))
    torch.testing.assert_close(t1, t2)  # masking is drawn from the generator
    assert (t1 - e1).abs().max() > 1e-4  # some positions were dropped
    assert (t1 - t3).abs().max() > 1e-4


# -- sin-cos embedding ------------------------------------------------------------------------------
def test_sincos_embedding_shape_and_values():
    pos = torch.tensor([[0.0, 0.0], [3.0, 5.0]])
    emb = sincos_embedding(pos, 32)
    assert emb.shape == (2, 32)
    # position 0: per axis, 8 sines = 0 then 8 cosines = 1
    expected_zero = torch.cat([torch.zeros(8), torch.ones(8)] * 2)
    torch.testing.assert_close(emb[0], expected_zero)
    # the first frequency is 1 / 10000⁰ = 1: sin(3) for the first axis, sin(5) for the second
    torch.testing.assert_close(emb[1, 0], torch.sin(torch.tensor(3.0)))
    torch.testing.assert_close(emb[1, 16], torch.sin(torch.tensor(5.0)))
    torch.testing.assert_close(emb[1, 8], torch.cos(torch.tensor(3.0)))


def test_sincos_embedding_distinct_for_distinct_positions():
    pos = torch.arange(50.0).reshape(50, 1)
    emb = sincos_embedding(pos, 32)
    dist = torch.cdist(emb, emb)
    off_diag = dist + torch.eye(50) * 1e9
    assert off_diag.min() > 1e-2


def test_sincos_embedding_pads_when_dim_does_not_split_evenly():
    # dim 32 over 3 axes: 32 // 3 = 10 per axis (5 sin + 5 cos) → 30 values, 2 zeros of padding
    emb = sincos_embedding(torch.tensor([[1.0, 2.0, 3.0]]), 32)
    assert emb.shape == (1, 32)
    assert emb[0, 30:].tolist() == [0.0, 0.0]
    assert emb[0, :30].abs().sum() > 0


def test_sincos_embedding_batched_shape():
    assert sincos_embedding(torch.zeros(2, 5, 1), 16).shape == (2, 5, 16)


# -- validation and rebuilding ------------------------------------------------------------------------
def test_invalid_pos_embed_is_a_config_error():
    with pytest.raises(ConfigError, match="pos_embed"):
        PatchEncoder(EncoderConfig(dim=32, depth=1, heads=2, pos_embed="learned"), 3, (4, 4))


def test_dim_not_divisible_by_heads_is_a_config_error():
    with pytest.raises(ConfigError, match="divisible"):
        PatchEncoder(EncoderConfig(dim=30, depth=1, heads=4), 3, (4, 4))


def test_pos_mask_ratio_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="pos_mask_ratio"):
        EncoderConfig(pos_mask_ratio=1.0).validate()


def test_build_encoder_from_init_args_round_trip():
    enc = tiny("sincos", channels=2, patch_shape=(3, 5))
    args = enc.init_args()
    assert args == {
        "config": {
            "arch": "vit", "dim": 32, "depth": 1, "heads": 2, "mlp_ratio": 4.0, "drop_path": 0.0,
            "pos_embed": "sincos", "pos_mask_ratio": 0.0,
        },
        "in_channels": 2,
        "patch_shape": [3, 5],
    }
    rebuilt = build_encoder(args)
    rebuilt.load_state_dict(enc.state_dict())
    rebuilt.eval()
    patches = torch.randn(2, 3, 2, 3, 5)
    centers = torch.rand(2, 3, 2) * 10
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(patches, centers), enc(patches, centers))
    assert rebuilt.config == enc.config
    assert len(rebuilt.blocks) == 1

"""Position-masked PART (the paper's EEG variant): exact mask counts, which pairs count, what is refused."""

from __future__ import annotations

import pytest
import torch

from relpos.config import resolve_config
from relpos.encoders.vit import EncoderConfig, PatchEncoder, masked_count, position_mask
from relpos.errors import ConfigError
from relpos.trivial_baseline import BASELINE_KEY

from test_part import EEG, Spy, make
from conftest import TINY_OVERRIDES as TINY

pytestmark = pytest.mark.usefixtures("one_thread")
MASKED = ["encoder.pos_embed=sincos", "encoder.pos_mask_ratio=0.2", "pretext.n_patches=10"]


@pytest.mark.parametrize(("ratio", "n_tokens", "expected"), [
    (0.2, 40, 8), (0.25, 10, 3), (0.05, 10, 1), (0.04, 10, 0), (0.5, 3, 2), (0.99, 10, 10),
])
def test_masked_count_rounds_half_up(ratio, n_tokens, expected):
    assert masked_count(ratio, n_tokens) == expected


def test_position_mask_hides_exactly_the_count_in_every_sample():
    mask = position_mask(64, 40, 0.2, torch.Generator().manual_seed(0))
    assert mask.shape == (64, 40) and mask.dtype == torch.bool
    assert mask.sum(dim=1).tolist() == [8] * 64
    assert len({tuple(row.tolist()) for row in mask}) > 60  # different patches in different samples
    again = position_mask(64, 40, 0.2, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)  # drawn from the generator only


def test_a_masked_token_gets_no_position():
    torch.manual_seed(0)
    with_positions = PatchEncoder(EncoderConfig(dim=16, depth=1, heads=2, pos_embed="sincos"), 1, (4,))
    without = PatchEncoder(EncoderConfig(dim=16, depth=1, heads=2, pos_embed="none"), 1, (4,))
    without.load_state_dict(with_positions.state_dict())
    patches, centres = torch.randn(2, 5, 1, 4), torch.arange(10.0).reshape(2, 5, 1) * 3
    every_token = torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(with_positions(patches, centres, pos_masked=every_token), without(patches))
        assert (with_positions(patches, centres) - without(patches)).abs().max() > 1e-3


def test_part_masks_exactly_the_requested_fraction_and_reports_both_kinds_of_pairs(monkeypatch):
    pretext, x = make("eeg", "part", [*MASKED, "pretext.n_pairs=64"], x=torch.randn(6, 4, 1000))
    seen = {}
    encoder_forward = pretext.encoder.forward

    def encoder_spy(*args, pos_masked=None, **kwargs):
        seen["pos_masked"] = pos_masked
        return encoder_forward(*args, pos_masked=pos_masked, **kwargs)

    monkeypatch.setattr(pretext.encoder, "forward", encoder_spy)
    spy = Spy(pretext, monkeypatch)
    loss, logs = pretext({"x": x}, torch.Generator().manual_seed(0))
    masked = seen["pos_masked"]
    assert masked.sum(dim=1).tolist() == [2] * 6  # round(0.2 · 10) per sample
    ref, tgt = spy.pairs
    involves_masked = masked.gather(1, ref) | masked.gather(1, tgt)
    centre = spy.boxes.center[..., 0]
    theta = (centre.gather(1, tgt) - centre.gather(1, ref)) / spy.boxes.size[..., 0].gather(1, ref)
    error = (spy.pred[..., 0] - theta) ** 2
    assert logs["mse_masked_pairs"] == pytest.approx(error[involves_masked].mean().item(), rel=1e-5)
    assert logs["mse_visible_pairs"] == pytest.approx(error[~involves_masked].mean().item(), rel=1e-5)
    # Positions only: a visible centre is known, a masked one is put at the mean centre.
    size = spy.boxes.size[..., 0]
    guess = torch.where(masked, centre.mean(), centre)
    guessed = (guess.gather(1, tgt) - guess.gather(1, ref)) / size.gather(1, ref)
    positions_only = (guessed - theta) ** 2
    assert positions_only[~involves_masked].max() < 1e-8  # two visible positions give the offset away
    assert logs["baseline_masked_pairs"] == pytest.approx(positions_only[involves_masked].mean().item(), rel=1e-5)
    assert logs[BASELINE_KEY] == pytest.approx(positions_only.mean().item(), rel=1e-5)
    assert loss.item() == pytest.approx(error.mean().item(), rel=1e-5)  # pair_loss 'all'


def test_positions_only_baseline_by_hand():
    from relpos.geometry import Boxes
    from relpos_plugins.part import positions_only_baseline

    # One sample, 1-s patches at 2, 5 and 11 s (mean 6); the patch at 11 s is masked.
    boxes = Boxes(torch.tensor([[[2.0], [5.0], [11.0]]]), torch.ones(1, 3, 1))
    masked = torch.tensor([[False, False, True]])
    ref, tgt = torch.tensor([[0, 2, 1]]), torch.tensor([[1, 0, 2]])
    theta = torch.tensor([[[3.0], [-9.0], [6.0]]])
    # Guesses: 5 − 2 = 3 (exact), 2 − 6 = −4 (error 5), 6 − 5 = 1 (error 5): (0 + 25 + 25) / 3.
    assert positions_only_baseline(boxes, masked, ref, tgt, theta).item() == pytest.approx(50 / 3)
    assert positions_only_baseline(boxes, masked, ref, tgt, theta, torch.tensor([[False, True, True]])).item() == 25


def test_pair_loss_masked_trains_on_pairs_with_a_masked_patch_only(monkeypatch):
    pretext, x = make("eeg", "part", [*MASKED, "pretext.n_pairs=64", "pretext.pair_loss=masked"])
    loss, logs = pretext({"x": x}, torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(float(logs["mse_masked_pairs"]), rel=1e-6)
    assert float(logs[BASELINE_KEY]) == pytest.approx(float(logs["baseline_masked_pairs"]), rel=1e-6)


@pytest.mark.parametrize(("overrides", "message"), [
    # every position visible: the offsets can be read off the embeddings
    (["encoder.pos_embed=sincos"], r"gives every offset away; set 'encoder.pos_mask_ratio' in \(0, 1\)"),
    # 0.04 · 10 patches rounds to no masked patch at all
    (["encoder.pos_embed=sincos", "encoder.pos_mask_ratio=0.04", "pretext.n_patches=10"],
     r"0.04 of 10 patches masks round\(0.4\) = 0 positions"),
    (["encoder.pos_mask_ratio=0.2"], "but 'encoder.pos_embed' is 'none'"),
    (["pretext.pair_loss=masked"], "'pretext.pair_loss' 'masked' trains on the pairs"),
])
def test_settings_that_make_the_objective_trivial_are_refused_before_data(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(modality="eeg", pretext="part", overrides=[*TINY, *EEG, *overrides])


def test_a_ratio_too_small_for_the_default_patch_count_is_refused_when_the_count_is_known():
    # n_patches 0 takes the modality's default (40 for EEG), known once the windows' extent is.
    with pytest.raises(ConfigError, match=r"0.01 of 40 patches masks round\(0.4\) = 0"):
        make("eeg", "part", ["encoder.pos_embed=sincos", "encoder.pos_mask_ratio=0.01"])

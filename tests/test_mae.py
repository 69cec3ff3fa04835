"""MAE: exact random masking, the normalised target and the masked-patch loss, by hand; CLI training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from relpos.config import resolve_config
from relpos.errors import ConfigError
from relpos.training import build_modality, build_pretext
from relpos.masking import mae_masked_count, visible_token_count
from relpos_plugins.mae import patch_targets, random_masking

from relpos.checkpoint import checkpoint_path
from relpos.cli import main

from conftest import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

#: A 1-channel series at 4 Hz in 2-s windows of 1-s patches: 8 samples, 2 grid patches of 4.
TWO_PATCHES = ["modality.sfreq=4", "modality.window_s=2", "modality.stride_s=2", "modality.patch_s=1"]
TINY_MODEL = ["encoder.dim=16", "encoder.depth=1", "encoder.heads=2"]


def tiny_args(steps: int) -> list[str]:
    """CLI arguments of a tiny run (the shared ones name PART's options, which MAE does not have)."""
    settings = [*TINY_MODEL, "pretext.decoder_dim=8", "pretext.decoder_heads=2", "train.batch_size=2"]
    return [*(a for s in settings for a in ("--set", s)), "--steps", str(steps), "--no-progress"]


def build(pretext: str, overrides=(), data=None, modality: str = "timeseries"):
    """A tiny pretext on in-memory data (1-channel 16-sample series unless ``data`` is given)."""
    if data is None:
        data = np.random.default_rng(0).standard_normal((2, 1, 16)).astype(np.float32)
        overrides = [*TWO_PATCHES, *overrides]
    config = resolve_config(modality=modality, pretext=pretext, overrides=[*TINY_MODEL, *overrides])
    modality_obj = build_modality(config)
    return build_pretext(config, modality_obj, modality_obj.load(data))


def test_masking_hides_exactly_the_official_count_in_every_sample():
    # MAE keeps int(10 · 0.25) = int(2.5) = 2 visible, so 8 masked, in every sample
    masked, visible_idx, masked_idx = random_masking(6, 10, 0.75, torch.Generator().manual_seed(0))
    assert masked.sum(dim=1).tolist() == [8] * 6
    assert visible_idx.shape == (6, 2) and masked_idx.shape == (6, 8)
    for b in range(6):
        visible, hidden = set(visible_idx[b].tolist()), set(masked_idx[b].tolist())
        assert not visible & hidden and visible | hidden == set(range(10))
        assert hidden == set(torch.nonzero(masked[b]).flatten().tolist())
        assert visible_idx[b].tolist() == sorted(visible)  # grid order
    # the draws differ between samples, so the mask is per sample
    assert len({tuple(row) for row in masked_idx.tolist()}) > 1


def test_masking_is_reproducible_from_the_generator():
    first = random_masking(4, 9, 0.5, torch.Generator().manual_seed(3))
    again = random_masking(4, 9, 0.5, torch.Generator().manual_seed(3))
    other = random_masking(4, 9, 0.5, torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    assert first[0].sum(dim=1).tolist() == [5] * 4  # int(9 · 0.5) = 4 visible, 5 masked


def test_normalised_target_by_hand():
    # patch [1, 2, 3, 4]: mean 2.5, unbiased variance (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3
    patches = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 1, 4)
    std = math.sqrt(5 / 3 + 1e-6)
    expected = torch.tensor([-1.5, -0.5, 0.5, 1.5]) / std
    torch.testing.assert_close(patch_targets(patches, normalize=True)[0, 0], expected)
    torch.testing.assert_close(patch_targets(patches, normalize=False)[0, 0], patches.flatten())


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_loss_is_the_mse_over_the_masked_patch_only(norm_pix_loss):
    pretext = build("mae", ["pretext.mask_ratio=0.5", "pretext.decoder_dim=8", "pretext.decoder_heads=2",
                            f"pretext.norm_pix_loss={str(norm_pix_loss).lower()}"])
    assert pretext.n_patches == 2
    # The prediction head outputs the constant 1 for every value of every patch.
    with torch.no_grad():
        pretext.predict.weight.zero_()
        pretext.predict.bias.fill_(1.0)
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 2.0, 4.0, 6.0, 8.0]]])
    loss, logs = pretext({"x": x}, torch.Generator().manual_seed(0))
    masked, _, _ = random_masking(1, 2, 0.5, torch.Generator().manual_seed(0))
    hidden = int(torch.nonzero(masked[0]))
    if norm_pix_loss:
        # both patches normalise to [-1.5, -0.5, 0.5, 1.5] / sqrt(5/3) (the second is the first ×2);
        # mean of (t − 1)² = mean(t²) + 1 = 5 / (5/3) / 4 + 1 = 1.75
        expected = 1.75
    else:
        # patch 0: (0 + 1 + 4 + 9) / 4 = 3.5; patch 1: (1 + 9 + 25 + 49) / 4 = 21
        expected = [3.5, 21.0][hidden]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # the visible patch is logged, not trained on
    other = 1.75 if norm_pix_loss else [3.5, 21.0][1 - hidden]
    assert logs["mse_visible"] == pytest.approx(other, rel=1e-5)


def test_one_step_trains_encoder_decoder_and_mask_token():
    pretext = build("mae", ["pretext.mask_ratio=0.5", "pretext.decoder_dim=8", "pretext.decoder_heads=2"])
    x = torch.randn(2, 1, 8, generator=torch.Generator().manual_seed(1))
    loss, _ = pretext({"x": x}, torch.Generator().manual_seed(0))
    loss.backward()
    assert pretext.decoder.mask_token.grad.abs().sum() > 0
    assert pretext.encoder.patch_embed.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "ratio, n_tokens, n_masked",
    [
        (0.33, 10, 4),  # int(6.7) = 6 visible; rounding the masked count would give 3
        (0.75, 196, 147),  # the paper's recipe: int(49.0) = 49 visible
        (0.75, 40, 30),  # the EEG recipe: 40 one-second patches, int(10.0) = 10 visible
        (0.75, 64, 48),  # the 32-px image recipe: int(16.0) = 16 visible
        (0.75, 10, 8),  # int(2.5) = 2 visible
        (0.1, 2, 1),  # int(1.8) = 1 visible
        (0.9, 10, 9),  # 10 · (1 − 0.9) is 0.99999… in floating point: 1 visible, not 0
        (0.0, 10, 0),
    ],
)
def test_masked_count_follows_the_official_truncation(ratio, n_tokens, n_masked):
    assert mae_masked_count(ratio, n_tokens) == n_masked
    assert visible_token_count(ratio, n_tokens) == n_tokens - n_masked
    masked, visible_idx, masked_idx = random_masking(3, n_tokens, ratio, torch.Generator().manual_seed(0))
    assert masked.sum(dim=1).tolist() == [n_masked] * 3
    assert visible_idx.shape == (3, n_tokens - n_masked) and masked_idx.shape == (3, n_masked)


@pytest.mark.parametrize("ratio, words", [
    ("0", "keeps int(2) = 2 visible and masks none, which leaves nothing to predict; use more than 0.5"),
    ("0.6", "masks all 2, which leaves no visible one; use at most 0.5"),
])
def test_a_masking_without_masked_or_visible_patches_is_refused(ratio, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        build("mae", [f"pretext.mask_ratio={ratio}"])


def test_mae_trains_on_images_and_eeg_from_the_cli(tmp_path, make_image_folder, capsys):
    code = main(["train", "--modality", "image", "--pretext", "mae", "--data", str(make_image_folder()),
                 "--set", "modality.image_size=16", "--set", "modality.patch_size=4",
                 "--out", str(tmp_path / "img"), *tiny_args(2)])
    assert code == 0, capsys.readouterr().err
    header, rows = read_metrics(tmp_path / "img")
    assert header[:3] == ["step", "loss", "loss_baseline"] and rows[-1]["step"] == "2"
    # the bundled EEG sample, 10-s windows of ten 1-s patches
    code = main(["train", "--modality", "eeg", "--pretext", "mae", "--out", str(tmp_path / "eeg"),
                 "--set", "modality.window_s=10", *tiny_args(2)])
    assert code == 0, capsys.readouterr().err
    assert checkpoint_path(tmp_path / "eeg").is_file()


@pytest.mark.parametrize("setting, words", [
    ("pretext.mask_ratio=1.0", "pretext.mask_ratio"),
    ("pretext.mask_ratio=-0.1", "pretext.mask_ratio"),
    ("pretext.decoder_heads=3", "'pretext.decoder_dim' (8) must be divisible by 'pretext.decoder_heads' (3)"),
    ("encoder.pos_embed=none", "'encoder.pos_embed'"),
])
def test_bad_mae_settings_exit_2_with_one_sentence(tmp_path, capsys, setting, words):
    code = main(["train", "--modality", "eeg", "--pretext", "mae", "--out", str(tmp_path / "run"),
                 *tiny_args(1), "--set", setting])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("relpos: error:")]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in err
    assert not (tmp_path / "run").exists()

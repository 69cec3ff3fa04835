"""MP3: the context mask restricts attention, targets are grid indices in grid order, no positions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from relpos.cli import main
from relpos.encoders.vit import EncoderConfig, PatchEncoder
from relpos.sampling import grid_boxes
from relpos_plugins.mae import random_masking
from relpos_plugins.mp3 import grid_targets

from test_mae import TINY_MODEL, build

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_images() -> np.ndarray:
    """Four 12×12 RGB images: a 3×3 grid of 4-pixel patches each."""
    return np.random.default_rng(0).integers(0, 256, size=(4, 12, 12, 3), dtype=np.uint8)


def test_a_token_outside_the_context_influences_no_other_output():
    torch.manual_seed(0)
    encoder = PatchEncoder(EncoderConfig(dim=16, depth=2, heads=2), in_channels=1, patch_shape=(4,)).eval()
    patches = torch.randn(2, 6, 1, 4)
    context = torch.tensor([[True, False, True, True, False, True]] * 2)
    before = encoder(patches, context=context)
    outside = patches.clone()
    outside[:, 1] += 5.0  # token 1 is outside the context
    after = encoder(outside, context=context)
    others = [0, 1 + 0, 1 + 2, 1 + 3, 1 + 4, 1 + 5]  # CLS and every patch token but token 1
    torch.testing.assert_close(after[:, others], before[:, others])
    assert not torch.allclose(after[:, 2], before[:, 2])  # token 1 itself still queries
    # a context token does reach the others, and without a context mask token 1 does too
    inside = patches.clone()
    inside[:, 0] += 5.0
    assert not torch.allclose(encoder(inside, context=context)[:, 3], before[:, 3])
    assert not torch.allclose(encoder(outside)[:, 3], encoder(patches)[:, 3])


def test_targets_are_grid_indices_in_row_major_grid_order():
    targets = grid_targets(2, 9)
    assert targets.tolist() == [list(range(9))] * 2
    # target k is the grid box at row k // 3, column k % 3 of a 3×3 grid of 4-pixel patches
    centers = grid_boxes((12, 12), 4).center
    for k in range(9):
        assert centers[k].tolist() == [(k // 3) * 4 + 2.0, (k % 3) * 4 + 2.0]


def test_loss_of_a_uniform_head_is_log_n_and_the_context_has_the_official_size(monkeypatch):
    pretext = build("mp3", ["modality.image_size=12", "modality.patch_size=4"], data=tiny_images(),
                    modality="image")
    assert pretext.n_patches == 9
    with torch.no_grad():
        pretext.head.weight.zero_()
        pretext.head.bias.zero_()
    seen = {}
    forward = pretext.encoder.forward

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return forward(*args, **kwargs)

    monkeypatch.setattr(pretext.encoder, "forward", spy)
    x = torch.randn(3, 3, 12, 12)
    loss, logs = pretext({"x": x}, torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(math.log(9), rel=1e-6)
    assert logs["loss_baseline"] == pytest.approx(math.log(9))
    # MAE's count: int(9 · 0.25) = 2 tokens in the context, 7 out of it, drawn from the run's generator
    masked, _, _ = random_masking(3, 9, 0.75, torch.Generator().manual_seed(0))
    assert torch.equal(seen["context"], ~masked)
    assert seen["context"].sum(dim=1).tolist() == [2, 2, 2]
    assert seen.get("centers") is None  # no positions


def test_mp3_learns_positions_on_a_1d_series():
    # a ramp: each patch's values tell its position, so a few steps lift accuracy above chance
    pretext = build("mp3", ["pretext.mask_ratio=0.5"])
    optimizer = torch.optim.Adam(pretext.parameters(), lr=1e-2)
    x = torch.linspace(-1, 1, 8).reshape(1, 1, 8).repeat(4, 1, 1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        loss, logs = pretext({"x": x}, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert logs["accuracy"] == 1.0 and loss.item() < 0.1


@pytest.mark.parametrize("setting, words", [
    ("encoder.pos_embed=sincos", "'encoder.pos_embed' must be 'none', got 'sincos'"),
    ("pretext.mask_ratio=1", "pretext.mask_ratio"),
    ("pretext.label_smoothing=-0.1", "pretext.label_smoothing"),
])
def test_bad_mp3_settings_exit_2_with_one_sentence(tmp_path, capsys, setting, words):
    settings = [a for s in [*TINY_MODEL, "train.batch_size=2", setting] for a in ("--set", s)]
    code = main(["train", "--modality", "eeg", "--pretext", "mp3", "--out", str(tmp_path / "run"),
                 *settings, "--steps", "1", "--no-progress"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("relpos: error:")]
    assert code == 2 and len(lines) == 1 and words in lines[0], err
    assert not (tmp_path / "run").exists()


def test_part_asked_to_see_every_position_is_refused(tmp_path, capsys):
    code = main(["train", "--modality", "eeg", "--pretext", "part", "--set", "encoder.pos_embed=sincos",
                 "--out", str(tmp_path / "run"), "--steps", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "gives every offset away" in err
    assert not (tmp_path / "run").exists()


def test_mp3_trains_on_images_and_eeg_from_the_cli(tmp_path, capsys):
    settings = [a for s in [*TINY_MODEL, "train.batch_size=2"] for a in ("--set", s)]
    np.save(tmp_path / "images.npy", tiny_images())
    for modality, extra in (("image", ["--data", str(tmp_path / "images.npy"), "--set", "modality.image_size=12",
                                       "--set", "modality.patch_size=4"]),
                            ("eeg", ["--set", "modality.window_s=10"])):
        code = main(["train", "--modality", modality, "--pretext", "mp3", "--out", str(tmp_path / modality),
                     *settings, *extra, "--steps", "2", "--no-progress"])
        assert code == 0, capsys.readouterr().err

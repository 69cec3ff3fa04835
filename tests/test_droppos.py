"""DropPos: smoothed position labels by hand, the σ schedule, attentive weights, exact dropping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from relpos.cli import main
from relpos.errors import ConfigError
from relpos.sampling import grid_boxes
from relpos_plugins.droppos import (
    attentive_visible_weights,
    attentive_weights,
    dropped_position_loss, grid_coordinates, linear_sigma, position_soft_labels,
)

from test_mae import TINY_MODEL, build
from test_mp3 import tiny_images

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL_DECODER = ["pretext.decoder_dim=8", "pretext.decoder_heads=2"]


def normalised(weights):
    total = sum(weights)
    return torch.tensor([w / total for w in weights])


def coords_of(extent, patch):
    grid = grid_boxes(extent, patch)
    return grid_coordinates(grid.center, grid.size)


def test_grid_coordinates_are_row_major_cells():
    assert coords_of((12, 12), 4).tolist() == [[r, c] for r in range(3) for c in range(3)]
    assert coords_of((10,), 2).tolist() == [[0], [1], [2], [3], [4]]


def test_soft_labels_on_a_1d_grid_of_5_by_hand():
    labels = position_soft_labels(coords_of((10,), 2), sigma=1.0)
    # cell 0: squared distances 0, 1, 4, 9, 16 → exp(−d²) normalised
    expected = normalised([1, math.exp(-1), math.exp(-4), math.exp(-9), math.exp(-16)])
    torch.testing.assert_close(labels[0], expected)
    assert labels[0, 0].item() == pytest.approx(0.72133, abs=1e-5)
    # σ = 2, middle cell: d² / σ² = 1, 1/4, 0, 1/4, 1
    labels = position_soft_labels(coords_of((10,), 2), sigma=2.0)
    expected = normalised([math.exp(-1), math.exp(-0.25), 1, math.exp(-0.25), math.exp(-1)])
    torch.testing.assert_close(labels[2], expected)
    torch.testing.assert_close(labels.sum(dim=1), torch.ones(5))


def test_soft_labels_on_a_3x3_grid_by_hand():
    labels = position_soft_labels(coords_of((12, 12), 4), sigma=1.0)
    e1, e2, e4, e5, e8 = (math.exp(-k) for k in (1, 2, 4, 5, 8))
    # the centre cell (4): its 4 edge neighbours at d² = 1, its 4 corners at d² = 2
    centre = normalised([e2, e1, e2, e1, 1, e1, e2, e1, e2])
    torch.testing.assert_close(labels[4], centre)
    assert labels[4, 4].item() == pytest.approx(1 / (1 + 4 / math.e + 4 / math.e**2), rel=1e-6)  # 0.33191
    # the corner cell (0): d² = 0 1 4 / 1 2 5 / 4 5 8
    torch.testing.assert_close(labels[0], normalised([1, e1, e4, e1, e2, e5, e4, e5, e8]))


def test_sigma_zero_gives_one_hot_labels_and_a_negative_sigma_is_refused():
    assert torch.equal(position_soft_labels(coords_of((12, 12), 4), 0.0), torch.eye(9))
    assert torch.equal(position_soft_labels(coords_of((10,), 2), 0.0), torch.eye(5))
    with pytest.raises(ConfigError, match="at least 0, got -0.5"):
        position_soft_labels(coords_of((10,), 2), -0.5)


def test_sigma_decays_linearly_over_the_run():
    # 11 steps: step 0 has σ_start, step 10 (the last) σ_end, step 5 halfway
    assert [linear_sigma(s, 11, 1.0, 0.0) for s in (0, 5, 10)] == [1.0, 0.5, 0.0]
    pretext = build("droppos", ["pretext.mask_ratio=0.5", "pretext.pos_drop_ratio=0.5",
                                "pretext.sigma_start=2", "pretext.sigma_end=1", *SMALL_DECODER])
    pretext.set_progress(3, 5)  # 3 of steps 0..4 → three quarters of the way
    assert pretext.sigma() == pytest.approx(1.25)
    pretext.config.smoothing = False
    assert pretext.sigma() == 0.0


def test_attentive_weights_by_hand():
    # CLS (1, 0); patches (1, 0), (0, 1), (−1, 0): cosines 1, 0, −1 → softmax(10, 0, −10)
    tokens = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]])
    expected = normalised([math.exp(10), 1, math.exp(-10)]).float()
    torch.testing.assert_close(attentive_weights(tokens, 0.1)[0], expected)


def test_attentive_loss_is_normalised_over_the_batch_as_the_official_code():
    # weights of 4 patches, patches 1 and 3 visible: renormalised over the visible ones
    weights = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    torch.testing.assert_close(attentive_visible_weights(weights, torch.tensor([[1, 3]])),
                               torch.tensor([[1 / 3, 2 / 3]]))
    # two samples of three visible tokens; dropped: tokens 0, 1 of sample 0, tokens 1, 2 of sample 1
    token_loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    dropped = torch.tensor([[True, True, False], [False, True, True]])
    attention = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.2, 0.6]])
    # w = [[0.5, 0.25, 0], [0, 0.2, 0.6]], Σ w = 1.55; Σ w · CE = 0.5 + 0.5 + 1.0 + 3.6 = 5.6
    loss = dropped_position_loss(token_loss, dropped, attention)
    assert loss.item() == pytest.approx(5.6 / 1.55)  # 3.6129; per sample then averaged: 3.5417
    assert loss.item() != pytest.approx((1.0 / 0.75 + 4.6 / 0.8) / 2)
    # without attention: the plain mean over the four dropped tokens, (1 + 2 + 5 + 6) / 4
    assert dropped_position_loss(token_loss, dropped).item() == pytest.approx(3.5)


@pytest.mark.parametrize("attentive", [True, False])
@pytest.mark.parametrize("smoothing", [True, False])
def test_a_uniform_classifier_scores_log_n_whatever_the_parts(attentive, smoothing):
    pretext = build("droppos", ["modality.image_size=12", "modality.patch_size=4", *SMALL_DECODER,
                                f"pretext.attentive={str(attentive).lower()}",
                                f"pretext.smoothing={str(smoothing).lower()}"],
                    data=tiny_images(), modality="image")
    with torch.no_grad():
        pretext.classify.weight.zero_()
        pretext.classify.bias.zero_()
    loss, logs = pretext({"x": torch.randn(2, 3, 12, 12)}, torch.Generator().manual_seed(0))
    # a uniform guess has cross-entropy log 9 against one-hot and smoothed labels alike
    assert loss.item() == pytest.approx(math.log(9), rel=1e-5)
    assert logs["loss_baseline"] == pytest.approx(math.log(9))


def test_masking_and_dropping_hide_exact_counts(monkeypatch):
    pretext = build("droppos", ["modality.image_size=16", "modality.patch_size=4", *SMALL_DECODER,
                                "pretext.attentive=false"],
                    data=np.random.default_rng(0).integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8),
                    modality="image")
    calls = []
    forward = pretext.encoder.forward

    def spy(patches, centers=None, generator=None, **kwargs):
        calls.append((patches, centers, kwargs))
        return forward(patches, centers, generator, **kwargs)

    monkeypatch.setattr(pretext.encoder, "forward", spy)
    loss, _ = pretext({"x": torch.randn(3, 3, 16, 16)}, torch.Generator().manual_seed(0))
    (patches, centers, kwargs), = calls
    # 16 patches: int(16 · 0.25) = 4 visible, 12 masked; int(4 · 0.25) = 1 position kept, 3 dropped
    assert patches.shape[:2] == (3, 4) and centers.shape == (3, 4, 2)
    dropped = kwargs["pos_masked"]
    assert dropped.sum(dim=1).tolist() == [3, 3, 3]
    # a dropped token gets the learnable position token; a kept one nothing extra
    extra = kwargs["extra_pos"]
    token = pretext.pos_mask_token.reshape(-1)
    for b in range(3):
        for i in range(4):
            expected = token if dropped[b, i] else torch.zeros_like(token)
            torch.testing.assert_close(extra[b, i], expected)
    loss.backward()
    assert pretext.pos_mask_token.grad.abs().sum() > 0
    assert pretext.decoder.pos_mask_token.grad.abs().sum() > 0


def test_patch_masking_can_be_switched_off():
    pretext = build("droppos", ["pretext.mask_ratio=0", "pretext.pos_drop_ratio=0.5", *SMALL_DECODER])
    assert pretext.n_visible == 2
    loss, logs = pretext({"x": torch.randn(2, 1, 8)}, torch.Generator().manual_seed(0))
    assert math.isfinite(loss.item()) and 0.0 <= logs["accuracy"] <= 1.0


@pytest.mark.parametrize("setting, words", [
    ("pretext.sigma_start=-1", "pretext.sigma_start"),
    ("pretext.pos_drop_ratio=1", "pretext.pos_drop_ratio"),
    ("pretext.attentive_temperature=1e-300",
     "Invalid value for 'pretext.attentive_temperature': allowed a finite number >= 0.001 and <= 10, got 1e-300."),
    ("encoder.pos_mask_ratio=0.2", "'encoder.pos_mask_ratio' must be 0"),
    ("encoder.pos_embed=none", "'encoder.pos_embed'"),
])
def test_bad_droppos_settings_exit_2_with_one_sentence(tmp_path, capsys, setting, words):
    settings = [a for s in [*TINY_MODEL, *SMALL_DECODER, "train.batch_size=2", setting] for a in ("--set", s)]
    code = main(["train", "--modality", "eeg", "--pretext", "droppos", "--out", str(tmp_path / "run"),
                 *settings, "--steps", "1", "--no-progress"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("relpos: error:")]
    assert code == 2 and len(lines) == 1 and words in lines[0], err
    assert not (tmp_path / "run").exists()


def test_dropping_no_position_is_refused():
    # 2 patches, none masked: 0 of 2 visible keeps int(2) = 2 positions and drops none
    with pytest.raises(ConfigError, match=r"keeps int\(2\) = 2 positions and drops none, which leaves nothing to predict"):
        build("droppos", ["pretext.mask_ratio=0", "pretext.pos_drop_ratio=0", *SMALL_DECODER])
    # the official count: 0.2 of 2 keeps int(1.6) = 1 and drops 1 (rounding 0.4 would drop none)
    assert build("droppos", ["pretext.mask_ratio=0", "pretext.pos_drop_ratio=0.2", *SMALL_DECODER]).n_dropped == 1


def test_droppos_trains_on_images_and_eeg_from_the_cli(tmp_path, capsys):
    settings = [a for s in [*TINY_MODEL, *SMALL_DECODER, "train.batch_size=2"] for a in ("--set", s)]
    np.save(tmp_path / "images.npy", tiny_images())
    for modality, extra in (("image", ["--data", str(tmp_path / "images.npy"), "--set", "modality.image_size=12",
                                       "--set", "modality.patch_size=4"]),
                            ("eeg", ["--set", "modality.window_s=10"])):
        code = main(["train", "--modality", modality, "--pretext", "droppos", "--out", str(tmp_path / modality),
                     *settings, *extra, "--steps", "2", "--no-progress"])
        assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("method", ["mae", "mp3", "droppos"])
def test_the_sleep_and_image_recipes_resolve_to_the_papers_settings(method):
    from conftest import CONFIGS
    from relpos.config import resolve_config

    sleep = resolve_config(CONFIGS / f"eeg_sleep_{method}.yaml")
    assert (sleep.modality, sleep.pretext) == ("eeg", method)
    eeg = sleep.modality_config
    assert (eeg.window_s, eeg.patch_s, eeg.sfreq) == (30.0, 1.0, 100.0)
    assert sleep.pretext_config.mask_ratio == 0.75
    # 20 % of position embeddings masked where the method's encoder sees positions (MAE); MP3 has
    # none, and DropPos drops 75 % of the visible ones itself
    expected = {"mae": ("sincos", 0.2), "mp3": ("none", 0.0), "droppos": ("sincos", 0.0)}[method]
    assert (sleep.encoder.pos_embed, sleep.encoder.pos_mask_ratio) == expected
    image = resolve_config(CONFIGS / f"image_{method}.yaml")
    assert (image.modality, image.pretext, image.pretext_config.mask_ratio) == ("image", method, 0.75)


def test_sigma_follows_the_step_and_the_run_length_across_a_resume(tmp_path, capsys):
    from conftest import read_metrics

    def args(steps, *extra):
        settings = [*TINY_MODEL, *SMALL_DECODER, "train.batch_size=2", "train.log_every=1",
                    "modality.image_size=12", "modality.patch_size=4"]
        return ["train", "--modality", "image", "--pretext", "droppos", "--data", str(tmp_path / "images.npy"),
                "--out", str(tmp_path / "run"), *(a for s in settings for a in ("--set", s)),
                "--steps", str(steps), "--no-progress", *extra]

    np.save(tmp_path / "images.npy", tiny_images())
    assert main(args(2)) == 0
    assert main(args(4, "--resume")) == 0, capsys.readouterr().err
    _, rows = read_metrics(tmp_path / "run")
    # planned for 2 steps: σ 1 then 0; extended to 4 steps, steps 3 and 4 are 2/3 and 3/3 of the way
    # from 1 to 0 (σ is recomputed from the step and the run's length, never counted in the module)
    assert [float(r["sigma"]) for r in rows] == pytest.approx([1, 0, 1 / 3, 0])

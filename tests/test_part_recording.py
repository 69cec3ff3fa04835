"""PART across windows (``pretext.scope: recording``): targets, pairs and baseline by hand on hand-built
batches of K windows; config checks; a tiny run from the CLI."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from relpos.cli import main
from relpos.config import resolve_config
from relpos.encoders.vit import EncoderConfig
from relpos.errors import ConfigError, DataError
from relpos.geometry import Boxes
from relpos.modality import Windows
from relpos.pretext import construct_pretext
from relpos.training import build_modality
from relpos_plugins.part import PART, PARTConfig, compressed_offset, expanded_offset

pytestmark = pytest.mark.usefixtures("one_thread")

#: 2 channels of 10-s windows at 100 Hz, read in 1-s patches (100 samples).
CHANNELS, SAMPLES = 2, 1000
TINY_ENCODER = EncoderConfig(dim=16, depth=1, heads=2)


def eeg_modality():
    config = resolve_config(modality="eeg", pretext="part", overrides=["modality.sfreq=100", "modality.patch_s=1"])
    return build_modality(config)


def make(**options) -> PART:
    torch.manual_seed(0)
    n = 8
    windows = Windows(x=torch.randn(n, CHANNELS, SAMPLES), groups=np.array(["night"] * n),
                      onsets=np.arange(n) * 10.0, durations=np.full(n, 10.0), info={"time_unit": "s"})
    config = PARTConfig(scope="recording", **options)
    return construct_pretext(PART, config, eeg_modality(), TINY_ENCODER, windows)


def test_compression_is_odd_nearly_linear_near_zero_and_logarithmic_far():
    delta = torch.tensor([0.0, 0.01, 1.0, -1.0, 9.0, 600.0, -600.0])
    # log1p by hand: ln 1.01, ln 2, ln 10, ln 601
    expected = [0.0, 0.00995033, 0.69314718, -0.69314718, 2.30258509, 6.39859493, -6.39859493]
    assert compressed_offset(delta).tolist() == pytest.approx(expected, rel=1e-6)
    assert expanded_offset(compressed_offset(delta)).tolist() == pytest.approx(delta.tolist(), rel=1e-5)


def test_targets_are_offsets_in_the_recordings_time_in_patch_lengths():
    # two 10-s windows 60 s apart, two patches each at 0.5 s and 9.5 s (centres 50 and 950 samples);
    # tokens 0, 1 are window 0's patches, 2, 3 window 1's
    pretext = make(n_patches=2, n_pairs=5, windows=2, within_ratio=0.2)
    assert pretext.n_within_pairs == 1 and pretext.window_request.size == 2
    centres = torch.tensor([[50.0], [950.0]]).expand(2, 2, 1)
    pretext.sample_boxes = lambda n, generator, device: Boxes(centres.clone(), torch.full((n, 2, 1), 100.0))
    ref, tgt = torch.tensor([[0, 0, 3, 1, 2]]), torch.tensor([[1, 3, 0, 2, 1]])
    pretext.pairs_across_windows = lambda boxes, batch_size, generator: (ref, tgt)
    batch = {"x": torch.randn(1, 2, CHANNELS, SAMPLES), "onsets": torch.tensor([[1200.0, 1260.0]])}
    loss, logs = pretext(batch, torch.Generator().manual_seed(0))
    # by hand, in patch lengths (100 samples): within window 0, 950 − 50 = 9; across, 60 s = 60
    # patches plus the centres: (6000 + 950 − 50) / 100 = 69 and back −69; (6000 + 50 − 950) / 100 =
    # 51 and back −51; compressed: ln 10, ln 70, −ln 70, ln 52, −ln 52
    theta = torch.tensor([2.302585, 4.248495, -4.248495, 3.951244, -3.951244])
    with torch.no_grad():
        patches = batch["x"].reshape(2, CHANNELS, SAMPLES).unfold(-1, 100, 900).permute(0, 2, 1, 3)
        tokens = pretext.encoder(patches, centres)[:, 1:].reshape(1, 4, -1)
        pred = pretext.head(tokens, ref, tgt).float().squeeze(-1)
    assert loss.item() == pytest.approx((pred - theta).pow(2).mean().item(), rel=1e-5)
    # the baseline: the variance of the five targets, mean ln 10 / 5 = 0.460517; mean of squares
    # (5.301898 + 2 · 18.049710 + 2 · 15.612329) / 5 = 14.525197; minus 0.212076
    assert logs["loss_baseline"] == pytest.approx(14.313121, rel=1e-5)
    assert logs["baseline_within_pairs"] == 0.0  # one within pair: a constant predicts it exactly
    assert logs["baseline_cross_pairs"] == pytest.approx((4.248495**2 + 3.951244**2) / 2, rel=1e-5)
    assert logs["mse_within_pairs"] == pytest.approx((pred[0, 0] - theta[0]).pow(2).item(), rel=1e-5)


def test_only_the_onset_difference_counts_not_where_the_recording_started():
    pretext = make(n_patches=4, n_pairs=64)
    x = torch.randn(3, 4, CHANNELS, SAMPLES)
    early = pretext({"x": x, "onsets": torch.tensor([[0.0, 30.0, 90.0, 600.0]]).repeat(3, 1)},
                    torch.Generator().manual_seed(3))
    late = pretext({"x": x, "onsets": torch.tensor([[80000.0, 80030.0, 80090.0, 80600.0]]).repeat(3, 1)},
                   torch.Generator().manual_seed(3))
    assert late[0].item() == pytest.approx(early[0].item(), rel=1e-6)
    assert float(late[1]["loss_baseline"]) == pytest.approx(float(early[1]["loss_baseline"]), rel=1e-6)


def test_pairs_join_two_windows_except_the_within_share():
    pretext = make(n_patches=5, n_pairs=40, windows=3, within_ratio=0.25)
    boxes = pretext.sample_boxes(2 * 3, torch.Generator().manual_seed(0), torch.device("cpu"))
    ref, tgt = pretext.pairs_across_windows(boxes, 2, torch.Generator().manual_seed(1))
    assert ref.shape == tgt.shape == (2, 40)
    window_ref, window_tgt = ref // 5, tgt // 5
    assert torch.equal(window_ref[:, :10], window_tgt[:, :10]) and bool((ref[:, :10] != tgt[:, :10]).all())
    assert bool((window_ref[:, 10:] != window_tgt[:, 10:]).all())
    assert set(window_ref.flatten().tolist()) == set(window_tgt.flatten().tolist()) == {0, 1, 2}
    again = pretext.pairs_across_windows(boxes, 2, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], ref) and torch.equal(again[1], tgt)


def test_near_within_pairs_stay_near():
    pretext = make(n_patches=6, n_pairs=50, windows=2, within_ratio=1.0, pair_max_offset=1.0)
    boxes = pretext.sample_boxes(4 * 2, torch.Generator().manual_seed(0), torch.device("cpu"))
    ref, tgt = pretext.pairs_across_windows(boxes, 4, torch.Generator().manual_seed(1))
    centre = boxes.center.reshape(4, 12)
    assert torch.equal(ref // 6, tgt // 6)
    gap = (centre.gather(1, tgt) - centre.gather(1, ref)).abs()
    # 6 one-second patches in a 10-s window: a reference without a patch within one patch length (100
    # samples) of it is paired with its nearest other patch of the same window
    same_window = (torch.arange(12) // 6)[None, :] == (ref // 6)[..., None]  # (4, 50, 12)
    distance = (centre[:, None, :] - centre.gather(1, ref)[..., None]).abs()
    distance = distance.masked_fill(~same_window | (torch.arange(12) == ref[..., None]), float("inf"))
    nearest = distance.amin(dim=-1)
    assert bool(((gap <= 100) | (gap == nearest)).all())
    assert bool((gap > 100).any())  # the case of a reference without a near patch did occur


def test_loss_trains_the_encoder_and_a_batch_of_the_wrong_shape_is_one_sentence():
    pretext = make(n_patches=4, n_pairs=32)
    batch = {"x": torch.randn(2, 4, CHANNELS, SAMPLES), "onsets": torch.tensor([[0.0, 10.0, 20.0, 30.0]] * 2)}
    loss, logs = pretext(batch, torch.Generator().manual_seed(0))
    loss.backward()
    assert pretext.encoder.patch_embed.weight.grad.abs().sum() > 0
    assert set(logs) == {"loss_baseline", "center_l2", "mse_within_pairs", "baseline_within_pairs",
                         "mse_cross_pairs", "baseline_cross_pairs"}
    with pytest.raises(DataError, match=r"^PART with 'pretext.scope' 'recording' needs batches of 4 windows of one "
                                        r"recording each .*, got x of shape \(2, 2, 1000\) and onsets of shape None\.$"):
        pretext({"x": torch.randn(2, CHANNELS, SAMPLES)}, torch.Generator())


# -- configuration -------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("pretext.windows=1", r"'pretext.windows'.*1"),
    ("pretext.span_s=0", r"'pretext.span_s'.*0"),
    ("pretext.within_ratio=1.5", r"'pretext.within_ratio'.*1.5"),
    ("pretext.scope=recordings", r"'pretext.scope'.*'window', 'recording'|'pretext.scope'.*recordings"),
])
def test_bad_settings_are_one_sentence_at_config_time(override, message):
    with pytest.raises(ConfigError, match=message) as caught:
        resolve_config(modality="eeg", pretext="part", overrides=["pretext.scope=recording", override])
    assert "\n" not in str(caught.value)


def test_images_and_visible_positions_are_refused_at_config_time():
    with pytest.raises(ConfigError, match=r"^'pretext.scope' 'recording' places patches in a recording's time, so it "
                                          r"needs a modality with one axis \(time\), but modality 'image' has 2"):
        resolve_config(modality="image", pretext="part", overrides=["pretext.scope=recording"])
    with pytest.raises(ConfigError, match=r"'encoder.pos_embed' must be 'none', got 'sincos'\.$"):
        resolve_config(modality="eeg", pretext="part", overrides=[
            "pretext.scope=recording", "encoder.pos_embed=sincos", "encoder.pos_mask_ratio=0.2"])


def test_the_default_scope_draws_no_neighbours():
    config = resolve_config(modality="eeg", pretext="part")
    assert config.pretext_config.scope == "window"
    windows = Windows(x=torch.randn(4, CHANNELS, SAMPLES))
    pretext = construct_pretext(PART, config.pretext_config, eeg_modality(), TINY_ENCODER, windows)
    assert pretext.window_request is None
    assert math.isclose(pretext.config.within_ratio, 0.25)


def test_the_sleep_recipe_resolves():
    from conftest import CONFIGS

    config = resolve_config(CONFIGS / "eeg_sleep_part_recording.yaml")
    part = config.pretext_config
    assert (part.scope, part.windows, part.span_s, part.within_ratio, part.pair_max_offset) == ("recording", 4, 600.0, 0.25, 1.0)
    assert config.modality_config.normalize == "recording"


# -- from the CLI ------------------------------------------------------------------------------------------
def train_args(out, data=None, extra=()):
    args = ["train", "--modality", "eeg", "--pretext", "part", "--out", str(out)]
    args += ["--data", str(data)] if data is not None else []  # default: the bundled 61-s EDF, windows every 5 s
    for setting_ in [*extra, "pretext.scope=recording", "pretext.n_pairs=64", "encoder.dim=16", "encoder.depth=1",
                     "encoder.heads=2", "train.batch_size=4", "train.steps=2", "train.progress=false",
                     "train.log_every=1"]:
        args += ["--set", setting_]
    return args


def test_two_steps_from_the_cli(tmp_path):
    out = tmp_path / "run"
    assert main(train_args(out)) == 0
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [1, 2]
    for row in rows:
        # 64 pairs of 4 windows within 600 s of 5-s steps: 16 inside one window, 48 across
        assert math.isfinite(float(row["loss"])) and float(row["loss_baseline"]) > 0
        assert float(row["baseline_cross_pairs"]) > float(row["baseline_within_pairs"]) > 0


def test_a_trial_archive_is_refused_in_one_sentence(tmp_path, capsys):
    trials = tmp_path / "trials.npz"
    rng = np.random.default_rng(0)
    np.savez(trials, X_train=(20 * rng.standard_normal((6, 2, 1000))).astype(np.float32), sfreq=100.0)
    out = tmp_path / "run"
    assert main(train_args(out, trials, ["modality.window_s=10"])) == 2  # one window per 10-s trial
    err = capsys.readouterr().err
    assert "Traceback" not in err
    refusal = [line for line in err.splitlines() if "trial archive" in line]
    assert len(refusal) == 1 and "'part'" in refusal[0]
    assert not out.exists()


def test_an_interrupted_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    from conftest import read_metrics

    args = [*train_args(tmp_path / "whole"), "--set", "train.steps=6", "--set", "train.ckpt_every=2"]
    assert main(args) == 0
    cut = tmp_path / "cut"
    args_cut = [*train_args(cut), "--set", "train.steps=6", "--set", "train.ckpt_every=2"]
    calls, original = [], PART.forward

    def interrupted(self, batch, generator):
        calls.append(1)
        if len(calls) == 5:  # after the checkpoint of step 4: Ctrl-C
            raise KeyboardInterrupt
        return original(self, batch, generator)

    monkeypatch.setattr(PART, "forward", interrupted)
    assert main(args_cut) == 130
    assert main([*args_cut, "--resume"]) == 0
    assert len(calls) == 5 + 2  # the resumed run took steps 5 and 6 only
    whole, resumed = read_metrics(tmp_path / "whole")[1], read_metrics(cut)[1]
    assert [int(r["step"]) for r in resumed] == list(range(1, 7))
    for key in ("loss", "loss_baseline", "mse_cross_pairs"):  # repr(float) strings: equal strings, equal floats
        assert [r[key] for r in resumed] == [r[key] for r in whole], key

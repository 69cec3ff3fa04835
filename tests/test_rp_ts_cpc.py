"""Relative positioning, temporal shuffling and CPC (Banville et al. 2021): labels, losses and the
windows they draw, by hand; config checks; a tiny run of each from the CLI."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from relpos.cli import main
from relpos.config import resolve_config
from relpos.errors import ConfigError
from relpos.encoders.vit import EncoderConfig
from relpos.modality import Windows
from relpos.neighbours import RecordingIndex
from relpos.pretext import construct_pretext
from relpos.training import build_modality
from relpos_plugins.cpc import ContrastivePredictiveCoding, CPCConfig, standardize_over_batch
from relpos_plugins.recording_requests import OrderedTriplets, SequenceWithNegatives
from relpos_plugins.rp import RelativePositioning, RPConfig, rp_labels
from relpos_plugins.ts import TemporalShuffling, TSConfig, ts_labels

pytestmark = pytest.mark.usefixtures("one_thread")

#: 4 channels of 10-s windows at 100 Hz, read in 1-s patches.
CHANNELS, SAMPLES = 4, 1000
TINY_ENCODER = EncoderConfig(dim=16, depth=1, heads=2, pos_embed="sincos")


def hand_windows(onsets_s, groups=None) -> Windows:
    """Random windows with the given onsets (seconds), one recording unless ``groups`` says otherwise."""
    n = len(onsets_s)
    x = torch.randn(n, CHANNELS, SAMPLES, generator=torch.Generator().manual_seed(0))
    groups = np.array(groups if groups is not None else ["night"] * n)
    return Windows(x=x, groups=groups, onsets=np.asarray(onsets_s, float), durations=np.full(n, 10.0),
                   info={"time_unit": "s"})


def eeg_modality():
    config = resolve_config(modality="eeg", pretext="part", overrides=["modality.sfreq=100", "modality.patch_s=1"])
    return build_modality(config)


def make(pretext_cls, config, windows=None):
    torch.manual_seed(0)
    windows = windows if windows is not None else hand_windows(np.arange(8) * 30.0)
    return construct_pretext(pretext_cls, config, eeg_modality(), TINY_ENCODER, windows)


def batch_of(onsets, seed=1):
    onsets = torch.tensor(onsets, dtype=torch.float32)
    x = torch.randn(*onsets.shape, CHANNELS, SAMPLES, generator=torch.Generator().manual_seed(seed))
    return {"x": x, "onsets": onsets}


# -- relative positioning -----------------------------------------------------------------------------
def test_rp_labels_come_from_the_onsets():
    # tau_pos 60 s, tau_neg 900 s: 30 s apart is close (1), 1,200 s far (0), 60 s exactly close,
    # 900 s exactly far, 300 s neither (ignored), and the order of the two windows does not matter
    onsets = torch.tensor([[0, 30], [0, 1200], [600, 660], [1000, 100], [0, 300], [1200, 0]], dtype=torch.float64)
    labels, used = rp_labels(onsets, 60.0, 900.0)
    assert labels[used].tolist() == [1, 0, 1, 0, 0]
    assert used.tolist() == [True, True, True, True, False, True]


def test_rp_loss_is_the_logistic_loss_of_the_absolute_difference():
    pretext = make(RelativePositioning, RPConfig(tau_pos_s=60.0, tau_neg_s=900.0))
    batch = batch_of([[0, 30], [0, 1200], [0, 300]])  # close, far, in between (left out)
    loss, logs = pretext(batch, torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = pretext.encoder.embed_inputs(batch["x"].flatten(0, 1)).reshape(3, 2, -1)
        logits = pretext.head((h[:, 0] - h[:, 1]).abs()).squeeze(-1)
    expected = F.binary_cross_entropy_with_logits(logits[:2], torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logs["loss_baseline"] == pytest.approx(math.log(2))  # one close, one far
    right = (logits[:2] > 0).float() == torch.tensor([1.0, 0.0])
    assert logs["accuracy"] == pytest.approx(right.float().mean().item())
    # swapping the two windows of every pair changes nothing: |h(x) − h(x')| is symmetric
    swapped = {"x": batch["x"].flip(1), "onsets": batch["onsets"].flip(1)}
    assert pretext(swapped, torch.Generator().manual_seed(0))[0].item() == pytest.approx(loss.item(), rel=1e-5)


def test_rp_refuses_a_batch_of_single_windows():
    pretext = make(RelativePositioning, RPConfig())
    with pytest.raises(Exception, match=r"needs batches of 2 windows of one recording each"):
        pretext({"x": torch.zeros(2, CHANNELS, SAMPLES)}, torch.Generator())


# -- temporal shuffling --------------------------------------------------------------------------------
def test_ts_labels_are_one_for_monotonic_onsets():
    onsets = torch.tensor(
        [[0, 30, 60], [60, 30, 0], [0, 1000, 30], [30, 0, 60], [0, 60, 30], [0, 0, 60]], dtype=torch.float64
    )
    # in order, mirrored order, middle far after, middle before both, middle after both, a tie
    assert ts_labels(onsets).tolist() == [1, 1, 0, 0, 0, 0]


def test_ts_loss_reads_both_absolute_differences():
    pretext = make(TemporalShuffling, TSConfig(tau_pos_s=60.0, tau_neg_s=900.0))
    batch = batch_of([[0, 30, 60], [60, 30, 0], [0, 1000, 30], [30, 0, 60]])
    loss, logs = pretext(batch, torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = pretext.encoder.embed_inputs(batch["x"].flatten(0, 1)).reshape(4, 3, -1)
        logits = pretext.head(torch.cat([(h[:, 0] - h[:, 1]).abs(), (h[:, 1] - h[:, 2]).abs()], -1)).squeeze(-1)
    expected = F.binary_cross_entropy_with_logits(logits, torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logs["loss_baseline"] == pytest.approx(math.log(2))
    assert pretext.head.in_features == 2 * 16


# -- CPC -------------------------------------------------------------------------------------------------
def test_cpc_loss_is_infonce_over_the_future_window_and_the_negatives():
    config = CPCConfig(n_context=2, n_predict=1, n_negatives=2)
    pretext = make(ContrastivePredictiveCoding, config)
    # per sample: context at 0 s and 30 s, the future window at 60 s, negatives at 300 s and 600 s
    batch = batch_of([[0, 30, 60, 300, 600], [90, 120, 150, 0, 900]])
    loss, logs = pretext(batch, torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = pretext.encoder.embed_inputs(batch["x"].flatten(0, 1))
        h = ((h - h.mean(0)) / (h.var(0, unbiased=False) + 1e-5).sqrt()).reshape(2, 5, -1)  # over the batch's windows
        _, last = pretext.context(h[:, :2])
        prediction = pretext.predictors[0](last[-1])  # W_1 c_t
        scores = torch.stack([(h[:, j] * prediction).sum(-1) for j in (2, 3, 4)], dim=1)
    expected = F.cross_entropy(scores, torch.zeros(2, dtype=torch.long))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logs["loss_baseline"] == pytest.approx(math.log(3))  # the true window among 3 candidates
    # the sequence's order is read from the onsets: shuffling its slots with their onsets changes nothing
    order = torch.tensor([2, 0, 1, 3, 4])
    shuffled = {"x": batch["x"][:, order], "onsets": batch["onsets"][:, order]}
    assert pretext(shuffled, torch.Generator().manual_seed(0))[0].item() == pytest.approx(loss.item(), rel=1e-5)


def test_cpc_standardises_each_feature_over_the_batch_rows():
    # feature 0: rows 1, 3 (mean 2, biased variance 1); feature 1: rows 2, 6 (mean 4, biased variance 4)
    h = torch.tensor([[1.0, 2.0], [3.0, 6.0]], requires_grad=True)
    out = standardize_over_batch(h)
    one, two = 1 / math.sqrt(1 + 1e-5), 2 / math.sqrt(4 + 1e-5)
    torch.testing.assert_close(out, torch.tensor([[-one, -two], [one, two]]))
    # as nn.BatchNorm1d without affine parameters, in training mode, up to rounding
    torch.testing.assert_close(out, torch.nn.BatchNorm1d(2, affine=False)(h))
    # the gradient flows through the statistics: for rows 0, 1, 2 (mean 1, biased variance 2/3), the
    # middle output (h1 - mean) / s has d/dh1 = (1 - 1/3) / s and d/dh0 = d/dh2 = -1/3 / s (the term of
    # s vanishes, since h1 - mean = 0), not 1 / s and 0 as with the statistics held fixed
    h = torch.tensor([[0.0], [1.0], [2.0]], requires_grad=True)
    standardize_over_batch(h)[1, 0].backward()
    s = math.sqrt(2 / 3 + 1e-5)
    torch.testing.assert_close(h.grad, torch.tensor([[-1 / 3 / s], [2 / 3 / s], [-1 / 3 / s]]))


def test_cpc_loads_the_weights_of_a_run_saved_with_batch_norm_statistics():
    pretext = make(ContrastivePredictiveCoding, CPCConfig(n_context=2, n_predict=1, n_negatives=2))
    state = pretext.state_dict()
    legacy = dict(state, **{"standardize.running_mean": torch.zeros(4), "standardize.running_var": torch.ones(4),
                            "standardize.num_batches_tracked": torch.tensor(5)})
    fresh = make(ContrastivePredictiveCoding, CPCConfig(n_context=2, n_predict=1, n_negatives=2))
    fresh.load_state_dict(legacy)  # strict, as resume and show load
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(RuntimeError, match="Unexpected"):  # any other stray key is still refused
        fresh.load_state_dict(dict(state, stray=torch.zeros(1)))


def test_cpc_has_one_bilinear_map_per_future_step():
    pretext = make(ContrastivePredictiveCoding, CPCConfig(n_context=3, n_predict=2, n_negatives=4))
    assert len(pretext.predictors) == 2
    assert pretext.window_request.size == 3 + 2 + 4
    loss, logs = pretext(batch_of(np.arange(2 * 9).reshape(2, 9) * 30.0), torch.Generator())
    loss.backward()
    assert all(p.grad is not None for p in pretext.predictors.parameters())
    assert pretext.encoder.patch_embed.weight.grad.abs().sum() > 0


# -- the windows TS and CPC draw ------------------------------------------------------------------------
def hand_index(recordings) -> RecordingIndex:
    """The index of one recording per item of ``recordings`` (name → onsets), windows numbered in order."""
    onsets = np.concatenate([np.asarray(o, float) for o in recordings.values()])
    groups = np.concatenate([[name] * len(o) for name, o in recordings.items()])
    return RecordingIndex.from_windows(Windows(x=torch.zeros(len(onsets), 1, 1), groups=groups, onsets=onsets,
                                               durations=np.full(len(onsets), 30.0)))


def test_triplets_are_ordered_or_shuffled_as_drawn():
    # a 2-hour night of 30-s windows (0 … 7170 s) and a 5-minute nap (10 windows, none 900 s apart)
    night = np.arange(240) * 30.0
    index = hand_index({"night": night, "nap": np.arange(10) * 30.0})
    request = OrderedTriplets(60.0, 900.0)
    assert request.usable(index) == ["night"]
    rows = request.draw(index, 4000, torch.Generator().manual_seed(0))
    assert rows.shape == (4000, 3) and int(rows.max()) < 240  # the nap is never drawn
    t = torch.as_tensor(night)[rows]
    # the anchors (columns 0 and 2) are 60 s apart: the only partner within 60 s with a window between
    assert torch.equal((t[:, 2] - t[:, 0]).abs(), torch.full((4000,), 60.0, dtype=torch.float64))
    ordered = ts_labels(t).bool()
    assert torch.equal(t[ordered, 1], (t[ordered, 0] + t[ordered, 2]) / 2)  # the one window between
    assert bool(((t[~ordered, 1] - t[~ordered, 0]).abs() >= 900).all())
    assert ordered.float().mean().item() == pytest.approx(0.5, abs=0.03)
    # mirror images: the second anchor before the first as often as after
    assert (t[:, 2] < t[:, 0]).float().mean().item() == pytest.approx(0.5, abs=0.03)
    again = request.draw(index, 4000, torch.Generator().manual_seed(0))
    assert torch.equal(rows, again)


def test_sequences_are_consecutive_and_negatives_outside_them():
    index = hand_index({"a": [0.0, 30.0, 60.0], "b": [0.0, 30.0, 60.0, 90.0, 120.0]})
    request = SequenceWithNegatives(3, 2)
    assert request.size == 5
    assert request.usable(index) == ["b"]  # "a" has no window outside a sequence of 3
    rows = request.draw(index, 500, torch.Generator().manual_seed(0))
    # recording b holds windows 3..7; the sequence starts at 3, 4 or 5
    starts = rows[:, 0]
    assert set(starts.tolist()) == {3, 4, 5}
    assert torch.equal(rows[:, :3], starts.unsqueeze(1) + torch.arange(3))
    for row in rows.tolist():
        assert set(row[3:]) <= set(range(3, 8)) - set(row[:3])


# -- configuration ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("pretext_name", ["rp", "ts"])
def test_tau_neg_below_tau_pos_is_one_sentence_at_config_time(pretext_name):
    with pytest.raises(ConfigError, match=r"^'pretext.tau_neg_s' \(30 s\) is below 'pretext.tau_pos_s' \(60 s\), "
                                          r"so a pair could be both close and far; set tau_neg_s >= tau_pos_s\.$"):
        resolve_config(modality="eeg", pretext=pretext_name, overrides=["pretext.tau_pos_s=60", "pretext.tau_neg_s=30"])


def test_the_sleep_recipes_resolve():
    from conftest import CONFIGS

    rp = resolve_config(CONFIGS / "eeg_sleep_rp.yaml")
    assert (rp.pretext_config.tau_pos_s, rp.pretext_config.tau_neg_s) == (60.0, 900.0)
    assert rp.modality_config.normalize == "recording" and rp.encoder.pos_embed == "none"
    ts = resolve_config(CONFIGS / "eeg_sleep_ts.yaml")
    assert ts.pretext == "ts" and ts.encoder.pos_embed == "none"
    cpc = resolve_config(CONFIGS / "eeg_sleep_cpc.yaml")
    assert cpc.encoder.pos_embed == "none"
    cpc = cpc.pretext_config
    assert (cpc.n_context, cpc.n_predict, cpc.n_negatives) == (7, 2, 10)


# -- from the CLI ------------------------------------------------------------------------------------------
#: Per pretext: settings that fit a 5-minute recording of 10-s windows (onsets 0, 10, …, 290 s).
SHORT_RECORDING = {
    "rp": ["pretext.tau_pos_s=20", "pretext.tau_neg_s=100"],
    "ts": ["pretext.tau_pos_s=20", "pretext.tau_neg_s=100"],
    "cpc": ["pretext.n_context=3", "pretext.n_predict=1", "pretext.n_negatives=2"],
}


@pytest.fixture(scope="module")
def five_minutes(tmp_path_factory):
    """A synthetic EEG recording: 2 channels at 100 Hz for 300 s (.fif), cut into 30 windows of 10 s."""
    import mne

    rng = np.random.default_rng(0)
    t = np.arange(30000) / 100.0
    signal = 20e-6 * np.sin(2 * np.pi * (8 + t / 60.0) * t) + 10e-6 * rng.standard_normal((2, t.size))
    raw = mne.io.RawArray(signal, mne.create_info(["C3", "C4"], 100.0, ch_types="eeg"), verbose="error")
    path = tmp_path_factory.mktemp("eeg") / "five_minutes_raw.fif"
    raw.save(path, verbose="error")
    return path


def train_args(pretext_name, data, out, extra=()):
    args = ["train", "--modality", "eeg", "--pretext", pretext_name, "--data", str(data), "--out", str(out)]
    for setting_ in ["modality.window_s=10", "modality.stride_s=10", "modality.patch_s=1", "encoder.dim=16",
                     "encoder.depth=1", "encoder.heads=2", "train.batch_size=4", "train.steps=2",
                     "train.progress=false", "train.log_every=1", *SHORT_RECORDING[pretext_name], *extra]:
        args += ["--set", setting_]
    return args


@pytest.mark.parametrize("pretext_name, baseline", [("rp", None), ("ts", None), ("cpc", math.log(3))])
def test_two_steps_from_the_cli(pretext_name, baseline, five_minutes, tmp_path):
    out = tmp_path / "run"
    assert main(train_args(pretext_name, five_minutes, out)) == 0
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [1, 2]
    for row in rows:
        assert math.isfinite(float(row["loss"])) and 0 <= float(row["accuracy"]) <= 1
        if baseline is not None:  # cpc: the true window among itself and 2 negatives
            assert float(row["loss_baseline"]) == pytest.approx(baseline)
        else:  # the entropy of 4 labels' frequency: 0 (all alike), 0.562 (1 or 3 of 4 close), ln 2 (2 of 4)
            entropies = [0.0, -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), math.log(2)]
            assert min(abs(float(row["loss_baseline"]) - e) for e in entropies) < 1e-5


@pytest.mark.parametrize("pretext_name", ["rp", "ts", "cpc"])
def test_a_trial_archive_is_refused_in_one_sentence(pretext_name, tmp_path, capsys):
    trials = tmp_path / "trials.npz"
    rng = np.random.default_rng(0)
    np.savez(trials, X_train=(20 * rng.standard_normal((6, 2, 1000))).astype(np.float32), sfreq=100.0)
    out = tmp_path / "run"
    assert main(train_args(pretext_name, trials, out)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    refusal = [line for line in lines if "trial archive" in line]
    assert len(refusal) == 1 and f"'{pretext_name}'" in refusal[0]
    assert not out.exists()


def test_a_recording_too_short_for_the_separation_is_refused(five_minutes, tmp_path, capsys):
    # 300 s of windows never hold a pair 900 s apart (the default tau_neg_s)
    out = tmp_path / "run"
    assert main(train_args("rp", five_minutes, out, ["pretext.tau_neg_s=900"])) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no recording" in err and "long enough" in err
    assert not out.exists()

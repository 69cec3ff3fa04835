"""Per-recording normalisation (``modality.normalize: recording``): hand computations, both
modalities, the cache key, and the same windows for training and for ``load_encoder``/``relpos eval``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import relpos
from relpos.cli import main
from relpos.errors import ConfigError
from relpos.training import build_modality
from relpos_modalities.recording_norm import covered, robust_stats

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the statistics by hand ---------------------------------------------------------------------------
def test_robust_stats_by_hand():
    # Channel 0: median 3, absolute deviations 2, 1, 0, 1, 97 → MAD 1, so the outlier 100 does not
    # move the scale: 1.4826. Channel 1: three of five samples are 5, so the MAD is 0 and the
    # standard deviation is used: deviations 0, 0, 0, -4, 4 → sqrt(32 / 5).
    centre, scale = robust_stats(np.array([[1.0, 2, 3, 4, 100], [5.0, 5, 5, 1, 9]]))
    np.testing.assert_allclose(centre, [3.0, 5.0])
    np.testing.assert_allclose(scale, [1.4826, np.sqrt(6.4)])


def test_each_sample_counts_once_however_many_windows_hold_it():
    # Windows [0, 3), [2, 5) and [7, 10) of 10 samples: samples 5 and 6 are in none.
    assert np.flatnonzero(covered(10, np.array([0, 2, 7]), 3)).tolist() == [0, 1, 2, 3, 4, 7, 8, 9]


# -- timeseries ---------------------------------------------------------------------------------------------
def loud_and_quiet(seed: int = 0) -> np.ndarray:
    """One recording (2 channels, 800 samples): quiet then 5 times louder, channel 1 offset by +3."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 800))
    x[:, 400:] *= 5.0
    x[1] += 3.0
    return x


def load_series(path, normalize: str) -> relpos.Windows:
    config = relpos.resolve_config(modality="timeseries", overrides=[
        "modality.sfreq=100", "modality.window_s=1", f"modality.normalize={normalize}",
    ])
    return build_modality(config).load(str(path))


def test_timeseries_recording_normalisation_matches_a_hand_computation(tmp_path):
    x = loud_and_quiet()
    path = tmp_path / "night.npy"
    np.save(path, x.astype(np.float32))
    windows = load_series(path, "recording").x.numpy()
    assert windows.shape == (8, 2, 100)
    data = x.astype(np.float32).astype(np.float64)
    centre = np.median(data, axis=1, keepdims=True)
    scale = 1.4826 * np.median(np.abs(data - centre), axis=1, keepdims=True)
    expected = ((data - centre) / scale).reshape(2, 8, 100).transpose(1, 0, 2)
    np.testing.assert_allclose(windows, expected, rtol=1e-5, atol=1e-5)
    # What instance normalisation throws away is kept: the loud half stays about 5 times louder.
    loudness = windows.std(axis=(1, 2))
    assert 4.0 < loudness[4:].mean() / loudness[:4].mean() < 6.0
    instance = load_series(path, "instance").x.numpy()  # a different cache entry, not the same windows
    np.testing.assert_allclose(instance.std(axis=-1), 1.0, rtol=1e-4)


def test_each_sample_of_a_stacked_source_is_its_own_recording(tmp_path):
    # (samples, channels, time): sample 1 is sample 0 times 10 plus 7, so after per-recording
    # normalisation both give the same windows.
    rng = np.random.default_rng(1)
    first = rng.standard_normal((1, 300))
    path = tmp_path / "trials.npy"
    np.save(path, np.stack([first, first * 10 + 7]).astype(np.float32))
    windows = load_series(path, "recording").x.numpy()
    assert windows.shape == (6, 1, 100)
    np.testing.assert_allclose(windows[:3], windows[3:], rtol=1e-4, atol=1e-4)


def test_training_and_load_encoder_see_the_same_windows(tmp_path, capsys):
    x = loud_and_quiet(seed=2)
    path = tmp_path / "night.npy"
    np.save(path, x.astype(np.float32))
    out = tmp_path / "run"
    code = main([
        "train", "--modality", "timeseries", "--pretext", "part", "--data", str(path), "--out", str(out),
        "--steps", "2", "--no-progress", "--set", "modality.sfreq=100", "--set", "modality.window_s=1",
        "--set", "modality.patch_s=0.1", "--set", "modality.normalize=recording", "--set", "encoder.dim=8",
        "--set", "encoder.depth=1", "--set", "encoder.heads=1", "--set", "pretext.n_pairs=4",
        "--set", "train.batch_size=2",
    ])
    assert code == 0
    pretrained = relpos.load_encoder(out)
    assert pretrained.config.modality_config.normalize == "recording"
    opened = pretrained.open(str(path)).x.numpy()
    np.testing.assert_array_equal(opened, load_series(path, "recording").x.numpy())
    assert opened.std(axis=(1, 2))[4:].mean() > 4 * opened.std(axis=(1, 2))[:4].mean()


# -- eeg ------------------------------------------------------------------------------------------------------
def test_eeg_recording_normalisation_is_one_robust_z_score_per_channel(make_recording):
    path = make_recording(12.0)
    loaded = {}
    for normalize in ("instance", "recording"):
        config = relpos.resolve_config(modality="eeg", overrides=[
            "modality.window_s=2", "modality.stride_s=2", "modality.labels=none",
            f"modality.normalize={normalize}",
        ])
        loaded[normalize] = build_modality(config).load(str(path)).x.numpy().astype(np.float64)
    recording = loaded["recording"]
    assert recording.shape[0] == 6
    # Non-overlapping windows cover the recording once, so over all of them each channel has
    # median 0 and MAD × 1.4826 = 1 exactly (float32 rounding aside).
    samples = recording.transpose(1, 0, 2).reshape(recording.shape[1], -1)
    np.testing.assert_allclose(np.median(samples, axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(1.4826 * np.median(np.abs(samples), axis=1), 1.0, rtol=1e-4)
    # Within a window it is the same signal up to one shift and one positive scale per channel.
    standardised = (recording - recording.mean(-1, keepdims=True)) / recording.std(-1, keepdims=True)
    np.testing.assert_allclose(standardised, loaded["instance"], atol=1e-3)
    assert not np.allclose(recording.std(-1), 1.0, rtol=1e-2)  # windows keep their own spread


def test_an_unknown_normalisation_is_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match=r"'modality.normalize': allowed 'instance' or 'recording', got 'none'"):
        relpos.resolve_config(modality="eeg", overrides=["modality.normalize=none"])

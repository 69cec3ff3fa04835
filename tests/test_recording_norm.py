"""The normalisations (``modality.normalize: instance``, ``recording`` and ``file``), one implementation
shared by eeg and timeseries: hand computations, both modalities, the cache key, and the same windows
for training and for ``load_encoder``/``relpos eval``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import relpos
from relpos.cli import main
from relpos.errors import ConfigError
from relpos.training import build_modality
from relpos_modalities.common.normalisation import covered, normalise, pooled_stats, recording_stats, robust_stats, scaled

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the statistics by hand ---------------------------------------------------------------------------
def test_robust_stats_by_hand():
    # Channel 0: median 3, absolute deviations 2, 1, 0, 1, 97 → MAD 1, so the outlier 100 does not
    # move the scale: 1.4826. Channel 1: three of five samples are 5, so the MAD is 0 and the
    # standard deviation is used: deviations 0, 0, 0, -4, 4 → sqrt(32 / 5).
    centre, scale = robust_stats(np.array([[1.0, 2, 3, 4, 100], [5.0, 5, 5, 1, 9]]))
    np.testing.assert_allclose(centre, [3.0, 5.0])
    np.testing.assert_allclose(scale, [1.4826, np.sqrt(6.4)])


def test_pooled_stats_are_the_stats_of_the_concatenated_samples():
    # Channel 0 of the two pieces: 1, 2, 3 and 4, 100 → median 3, MAD 1 (as above).
    centre, scale = pooled_stats([np.array([[1.0, 2, 3], [5.0, 5, 5]]), np.array([[4.0, 100], [1.0, 9]])])
    np.testing.assert_allclose(centre, [3.0, 5.0])
    np.testing.assert_allclose(scale, [1.4826, np.sqrt(6.4)])
    with pytest.raises(ValueError, match=r"one channel count, got shapes"):
        pooled_stats([np.zeros((2, 3)), np.zeros((3, 3))])


def test_instance_normalisation_by_hand():
    # Channel 0: 1, 2, 3, 4 → mean 2.5, deviations ±0.5, ±1.5, std sqrt(1.25). Channel 1 is constant:
    # its std is 0, so it becomes 0 rather than 0 / 0.
    got = normalise(np.array([[[1.0, 2, 3, 4], [7.0, 7, 7, 7]]]))
    assert got.dtype == np.float32 and got.shape == (1, 2, 4)
    np.testing.assert_allclose(got[0, 0], np.array([-1.5, -0.5, 0.5, 1.5]) / np.sqrt(1.25), rtol=1e-6)
    assert got[0, 1].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_recording_stats_cover_the_windows_and_scaled_applies_them():
    # Samples 0..9, windows [0, 3) and [6, 9): the samples 0, 1, 2, 6, 7, 8 → median 4, absolute
    # deviations 4, 3, 2, 2, 3, 4 → MAD 3, scale 3 × 1.4826. Sample 9 and 3..5 do not count.
    data = np.arange(10.0)[None]
    centre, scale = recording_stats(data, np.array([0, 6]), 3)
    np.testing.assert_allclose(centre, [4.0])
    np.testing.assert_allclose(scale, [3 * 1.4826])
    np.testing.assert_allclose(scaled(data, centre, scale)[0, [0, 4, 9]], [-4 / 4.4478, 0.0, 5 / 4.4478])
    # windows (n, C, T) take the same per-channel pair
    np.testing.assert_allclose(scaled(data[None], centre, scale), scaled(data, centre, scale)[None])


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


def affine_trials(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(X_train, X_test), float32 ``(2, 2, 300)`` each: training trial 1 is trial 0 × 10 + 7, channel
    1 offset by +3; the test trials are another draw, 4 times as loud."""
    rng = np.random.default_rng(seed)
    first = rng.standard_normal((2, 300))
    first[1] += 3.0
    train = np.stack([first, first * 10 + 7]).astype(np.float32)
    test = (4 * rng.standard_normal((2, 2, 300)) - 1).astype(np.float32)
    return train, test


def save_trial_archive(path) -> tuple[np.ndarray, np.ndarray]:
    train, test = affine_trials()
    np.savez(path, X_train=train, y_train=np.array([0, 1]), X_test=test, y_test=np.array([1, 0]),
             sfreq=np.array(100.0))
    return train, test


def file_normalised(trials: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """By hand: (windows, centre, scale) of 1-s windows at 100 Hz of ``trials`` (``(n, C, 300)``)
    with one median and MAD × 1.4826 per channel over every trial's samples."""
    data = trials.astype(np.float64)
    pooled = data.transpose(1, 0, 2).reshape(data.shape[1], -1)
    centre = np.median(pooled, axis=1)
    scale = 1.4826 * np.median(np.abs(pooled - centre[:, None]), axis=1)
    normalised = (data - centre[None, :, None]) / scale[None, :, None]
    windows = normalised.reshape(len(data), data.shape[1], 3, 100).transpose(0, 2, 1, 3).reshape(-1, data.shape[1], 100)
    return windows, centre, scale


def test_timeseries_file_normalisation_keeps_what_separates_the_trials(tmp_path):
    path = tmp_path / "trials.npz"
    train, test = save_trial_archive(path)
    windows = load_series(path, "file").x.numpy()
    assert windows.shape == (6, 2, 100)
    expected, centre, scale = file_normalised(train)
    np.testing.assert_allclose(windows, expected, rtol=1e-5, atol=1e-5)
    # Trial 1 = 10 × trial 0 + 7, so in normalised units 10 × its windows + (9 · centre + 7) / scale.
    shift = (9 * centre + 7) / scale
    np.testing.assert_allclose(windows[3:], 10 * windows[:3] + shift[None, :, None], rtol=1e-5, atol=1e-4)
    # With recording each trial is scaled by its own statistics: the two become the same windows.
    recording = load_series(path, "recording").x.numpy()  # another cache entry for the same file
    np.testing.assert_allclose(recording[:3], recording[3:], rtol=1e-4, atol=1e-4)
    assert not np.allclose(windows[:3], windows[3:], atol=1.0)
    # The test split of an evaluation gets its own statistics, from its own samples only.
    config = relpos.resolve_config(modality="timeseries", overrides=[
        "modality.sfreq=100", "modality.window_s=1", "modality.normalize=file",
    ])
    train_windows, test_windows = build_modality(config).eval_splits(str(path))
    np.testing.assert_array_equal(train_windows.x.numpy(), windows)
    np.testing.assert_allclose(test_windows.x.numpy(), file_normalised(test)[0], rtol=1e-5, atol=1e-5)


def train_and_reopen(path, out, normalize: str) -> np.ndarray:
    """Two PART steps of a tiny timeseries model on ``path`` with ``modality.normalize`` set; the
    windows its ``load_encoder`` opens from ``path``, checked equal to what training read."""
    code = main([
        "train", "--modality", "timeseries", "--pretext", "part", "--data", str(path), "--out", str(out),
        "--steps", "2", "--no-progress", "--set", "modality.sfreq=100", "--set", "modality.window_s=1",
        "--set", "modality.patch_s=0.1", "--set", f"modality.normalize={normalize}", "--set", "encoder.dim=8",
        "--set", "encoder.depth=1", "--set", "encoder.heads=1", "--set", "pretext.n_pairs=4",
        "--set", "train.batch_size=2",
    ])
    assert code == 0
    pretrained = relpos.load_encoder(out)
    assert pretrained.config.modality_config.normalize == normalize
    opened = pretrained.open(str(path)).x.numpy()
    np.testing.assert_array_equal(opened, load_series(path, normalize).x.numpy())
    return opened


def test_training_and_load_encoder_see_the_same_windows_with_file(tmp_path):
    path = tmp_path / "trials.npz"
    save_trial_archive(path)
    out = tmp_path / "run"
    opened = train_and_reopen(path, out, "file")
    # The louder trial stays about 10 times louder.
    assert 9.0 < opened[3:].std(axis=(0, 2)).mean() / opened[:3].std(axis=(0, 2)).mean() < 11.0


def test_training_and_load_encoder_see_the_same_windows(tmp_path, capsys):
    x = loud_and_quiet(seed=2)
    path = tmp_path / "night.npy"
    np.save(path, x.astype(np.float32))
    out = tmp_path / "run"
    opened = train_and_reopen(path, out, "recording")
    assert opened.std(axis=(1, 2))[4:].mean() > 4 * opened.std(axis=(1, 2))[:4].mean()


# -- eeg ------------------------------------------------------------------------------------------------------
def test_eeg_recording_normalisation_is_one_robust_z_score_per_channel(make_recording):
    path = make_recording(12.0)
    loaded = {}
    for normalize in ("instance", "recording", "file"):
        config = relpos.resolve_config(modality="eeg", overrides=[
            "modality.window_s=2", "modality.stride_s=2", "modality.labels=none",
            f"modality.normalize={normalize}",
        ])
        loaded[normalize] = build_modality(config).load(str(path)).x.numpy().astype(np.float64)
    recording = loaded["recording"]
    assert recording.shape[0] == 6
    np.testing.assert_array_equal(loaded["file"], recording)  # a file holding one recording: the same
    # Non-overlapping windows cover the recording once, so over all of them each channel has
    # median 0 and MAD × 1.4826 = 1 exactly (float32 rounding aside).
    samples = recording.transpose(1, 0, 2).reshape(recording.shape[1], -1)
    np.testing.assert_allclose(np.median(samples, axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(1.4826 * np.median(np.abs(samples), axis=1), 1.0, rtol=1e-4)
    # Within a window it is the same signal up to one shift and one positive scale per channel.
    standardised = (recording - recording.mean(-1, keepdims=True)) / recording.std(-1, keepdims=True)
    np.testing.assert_allclose(standardised, loaded["instance"], atol=1e-3)
    assert not np.allclose(recording.std(-1), 1.0, rtol=1e-2)  # windows keep their own spread


def test_eeg_file_normalisation_of_npz_trials(tmp_path):
    import mne

    # Two trials of 4 s at 100 Hz (no resampling), µV; trial 1 = trial 0 × 10 + 7. Low-pass only,
    # so the offset passes the filter; each trial is filtered as the modality does, by MNE.
    rng = np.random.default_rng(4)
    first = 20 * rng.standard_normal((2, 400))
    train = np.stack([first, first * 10 + 7]).astype(np.float32)
    test = (40 * rng.standard_normal((2, 2, 400))).astype(np.float32)
    path = tmp_path / "trials.npz"
    np.savez(path, X_train=train, y_train=np.array([0, 1]), X_test=test, y_test=np.array([1, 0]),
             sfreq=np.array(100.0), ch_names=np.array(["Cz", "Pz"]), class_names=np.array(["a", "b"]))
    loaded = {}
    for normalize in ("recording", "file"):
        config = relpos.resolve_config(modality="eeg", overrides=[
            "modality.window_s=1", "modality.stride_s=1", "modality.patch_s=0.25", "modality.l_freq=0",
            f"modality.normalize={normalize}",
        ])
        loaded[normalize] = build_modality(config).eval_splits(str(path))
    for split, trials in ((0, train), (1, test)):
        filtered = mne.filter.filter_data(trials.astype(np.float64) * 1e-6, 100.0, None, 30.0, verbose="error")
        pooled = filtered.transpose(1, 0, 2).reshape(2, -1)  # 4 non-overlapping windows cover each trial
        centre = np.median(pooled, axis=1)
        scale = 1.4826 * np.median(np.abs(pooled - centre[:, None]), axis=1)
        expected = ((filtered - centre[:, None]) / scale[:, None]).reshape(2, 2, 4, 100).transpose(0, 2, 1, 3)
        got = loaded["file"][split].x.numpy()
        assert got.shape == (8, 2, 100)
        np.testing.assert_allclose(got, expected.reshape(8, 2, 100), rtol=1e-4, atol=1e-4)
    windows = loaded["file"][0].x.numpy().astype(np.float64)
    # In normalised units trial 1 is 10 × trial 0 plus one shift per channel; recording makes them equal.
    shift = windows[4:] - 10 * windows[:4]
    np.testing.assert_allclose(shift, shift.mean(axis=(0, 2), keepdims=True) * np.ones_like(shift), atol=1e-3)
    assert np.abs(shift.mean(axis=(0, 2))).min() > 0.01
    recording = loaded["recording"][0].x.numpy()
    np.testing.assert_allclose(recording[:4], recording[4:], rtol=1e-3, atol=1e-3)


def test_an_unknown_normalisation_is_one_sentence(tmp_path):
    allowed = r"'modality.normalize': allowed 'auto', 'instance', 'recording' or 'file', got 'none'"
    with pytest.raises(ConfigError, match=allowed):
        relpos.resolve_config(modality="eeg", overrides=["modality.normalize=none"])

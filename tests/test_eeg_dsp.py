"""The band-pass and resampling that the EEG pipeline computes for blocks of channels at once give
MNE's numbers (``mne.filter.filter_data``, ``mne.filter.resample``, ``raw.filter``, ``raw.resample``),
and the pipeline falls back to MNE's methods where MNE would do something else."""

from __future__ import annotations

import warnings

import mne
import numpy as np
import pytest

import relpos
from relpos_modalities.eeg import dsp as eeg_dsp, pipeline as eeg_pipeline
from relpos_modalities.eeg import SAMPLE


def close_to(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape
    assert np.max(np.abs(ours - ref)) <= 1e-12 * np.max(np.abs(ref))


def test_reflect_limited_padding_by_hand():
    x = np.array([[1.0, 2.0, 4.0]])
    # left 2: 2*1 - [4, 2] = [-2, 0]; right 3: 2*4 - [2, 1] = [6, 7], then zeros (at most n - 1 reflected)
    got = eeg_dsp.reflect_limited(x, 2, 3)
    np.testing.assert_array_equal(got, [[-2.0, 0.0, 1.0, 2.0, 4.0, 6.0, 7.0, 0.0]])
    np.testing.assert_array_equal(eeg_dsp.reflect_limited(x, 3, 0), [[0.0, -2.0, 0.0, 1.0, 2.0, 4.0]])
    np.testing.assert_array_equal(eeg_dsp.reflect_limited(np.array([[5.0]]), 2, 1), [[0.0, 0.0, 5.0, 0.0]])
    assert eeg_dsp.reflect_limited(x, 0, 0) is x


@pytest.mark.parametrize(
    "sfreq, l_freq, h_freq, n",
    [
        (160.0, 0.1, 30.0, 9760),  # the filter (5281 taps) is shorter than the signal
        (160.0, 0.1, 30.0, 3000),  # ... longer than the signal: MNE pads less than a filter length
        (160.0, 0.1, 30.0, 40),
        (256.0, 0.5, 40.0, 25601),
        (128.0, None, 30.0, 7777),  # low-pass only
        (200.0, 1.0, None, 4001),  # high-pass only
    ],
)
def test_band_pass_equals_mne_filter_data(sfreq, l_freq, h_freq, n):
    x = np.random.default_rng(n).standard_normal((5, n)) * 5e-5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MNE warns when the filter is longer than the signal
        ref = mne.filter.filter_data(x.copy(), sfreq, l_freq, h_freq, verbose="error")
    ours = x.copy()
    eeg_dsp.band_pass_(ours, sfreq, l_freq, h_freq)
    close_to(ours, ref)


@pytest.mark.parametrize(
    "sfreq_old, sfreq_new, n",
    [(160.0, 100.0, 97600), (160.0, 100.0, 101), (256.0, 100.0, 25601), (500.0, 100.0, 33333), (100.0, 160.0, 6001), (200.0, 250.0, 4001)],
)
def test_resample_equals_mne_resample(sfreq_old, sfreq_new, n):
    x = np.random.default_rng(n).standard_normal((3, n))
    ref = mne.filter.resample(x, up=sfreq_new, down=sfreq_old, npad="auto", verbose="error")
    close_to(eeg_dsp.resample(x, sfreq_new, sfreq_old), ref)
    assert ref.shape[1] == round(n * sfreq_new / sfreq_old)


def test_blocks_of_channels_give_the_same_numbers(monkeypatch):
    x = np.random.default_rng(1).standard_normal((7, 5000))
    whole = x.copy()
    eeg_dsp.band_pass_(whole, 160.0, 0.5, 30.0)
    resampled = eeg_dsp.resample(whole, 100.0, 160.0)
    monkeypatch.setattr(eeg_dsp, "BLOCK_BYTES", 1)  # one channel per block
    one_by_one = x.copy()
    eeg_dsp.band_pass_(one_by_one, 160.0, 0.5, 30.0)
    np.testing.assert_allclose(one_by_one, whole, rtol=0, atol=1e-15 * np.abs(whole).max())
    np.testing.assert_allclose(eeg_dsp.resample(one_by_one, 100.0, 160.0), resampled, rtol=0, atol=1e-15 * np.abs(whole).max())


def eeg_windows(monkeypatch, tmp_path, batched: bool, **settings):
    monkeypatch.setenv("RELPOS_CACHE_DIR", str(tmp_path / f"cache-{batched}"))
    calls = []
    band_pass = eeg_dsp.band_pass_
    monkeypatch.setattr(eeg_dsp, "band_pass_", lambda *a: calls.append(a[0].shape[0]) or band_pass(*a))
    if not batched:
        monkeypatch.setattr(eeg_pipeline, "_batched_ok", lambda raw: False)
    mod = relpos.get_modality("eeg")
    cfg = mod.Config()
    for key, value in settings.items():
        setattr(cfg, key, value)
    windows = mod(cfg).load(str(SAMPLE))
    monkeypatch.undo()
    assert calls.count(64) == (1 if batched else 0)  # (the check against MNE filters 1 channel)
    return windows


@pytest.mark.parametrize("reference", ["", "average"])
def test_the_pipeline_gives_the_windows_mne_raw_filter_and_resample_give(monkeypatch, tmp_path, reference):
    """The bundled recording (64 channels, 160 Hz): batched and MNE's own methods, 10-s windows."""
    fast = eeg_windows(monkeypatch, tmp_path, True, window_s=10.0, stride_s=5.0, reference=reference)
    slow = eeg_windows(monkeypatch, tmp_path, False, window_s=10.0, stride_s=5.0, reference=reference)
    assert fast.x.shape == slow.x.shape == (11, 64, 1000)  # 61 s: starts 0, 5, ..., 50 s
    np.testing.assert_allclose(fast.x.numpy(), slow.x.numpy(), rtol=0, atol=2e-6)  # z-scored, float32


def test_preprocess_raw_uses_mne_where_mne_would_split_the_recording(monkeypatch):
    raw = mne.io.read_raw(SAMPLE, preload=True, verbose="error").pick("eeg")
    assert eeg_pipeline._batched_ok(raw)
    halves = [raw.copy().crop(0, 30, include_tmax=False), raw.copy().crop(30, None)]
    joined = mne.concatenate_raws(halves, verbose="error")  # two parts, with an EDGE annotation
    assert not eeg_pipeline._batched_ok(joined)
    calls = []
    monkeypatch.setattr(eeg_dsp, "band_pass_", lambda *a: calls.append("band_pass_"))
    monkeypatch.setattr(eeg_dsp, "resample", lambda *a: calls.append("resample"))
    cfg = relpos.get_modality("eeg").Config()
    data = eeg_pipeline.preprocess_raw(joined, cfg, list(joined.ch_names), "'joined'")
    assert calls == []
    assert data.shape == (64, 6100)  # each 30.5-s part resampled by MNE to 100 Hz on its own


@pytest.mark.parametrize("check, ours, max_samples", [
    ("_compare", "band_pass_", None),  # a recording of the usual length: the one-FFT band-pass
    ("_compare_overlap_add", "overlap_add_", 5000),  # a long recording: the overlap-add band-pass
])
def test_preprocess_raw_uses_mne_when_the_installed_mne_disagrees(monkeypatch, check, ours, max_samples):
    raw = mne.io.read_raw(SAMPLE, preload=True, verbose="error").pick("eeg")
    ref = raw.copy().filter(0.1, 30.0, verbose="error").resample(100.0, verbose="error").get_data()
    if max_samples is not None:
        monkeypatch.setattr(eeg_dsp, "MAX_SAMPLES", max_samples)
    monkeypatch.setattr(eeg_dsp, "_CHECKED", {})
    monkeypatch.setattr(eeg_dsp, check, lambda *a: False)
    calls = []
    monkeypatch.setattr(eeg_dsp, ours, lambda *a: calls.append(ours))
    cfg = relpos.get_modality("eeg").Config()
    data = eeg_pipeline.preprocess_raw(raw, cfg, list(raw.ch_names), "'sample'")
    assert calls == []
    np.testing.assert_array_equal(data, ref)


def test_the_check_against_mne_passes_on_the_installed_mne(monkeypatch):
    monkeypatch.setattr(eeg_dsp, "_CHECKED", {})
    x = np.random.default_rng(0).standard_normal(4000)
    assert eeg_dsp.matches_mne(x, 160.0, 0.1, 30.0, 100.0)
    assert eeg_dsp._CHECKED == {(160.0, 0.1, 30.0, 100.0): True}


@pytest.mark.parametrize(
    "sfreq, l_freq, h_freq, n",
    [
        (100.0, 0.1, 30.0, 1_100_000),  # a 3-h recording: 3301 taps, 32768-sample FFTs, 38 segments
        (160.0, 0.5, 40.0, 50_001),
        (128.0, None, 30.0, 7777),  # low-pass only
        (200.0, 1.0, None, 4001),  # high-pass only
        (160.0, 0.1, 30.0, 3000),  # the filter (5281 taps) is longer than the signal
    ],
)
def test_overlap_add_gives_mne_filter_data_bit_for_bit(sfreq, l_freq, h_freq, n):
    x = np.random.default_rng(n).standard_normal((2, n)) * 5e-5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = mne.filter.filter_data(x.copy(), sfreq, l_freq, h_freq, verbose="error")
    for block_bytes in (1, eeg_dsp.SEGMENT_BLOCK_BYTES):  # one segment per FFT call, and several
        ours = x.copy()
        eeg_dsp.SEGMENT_BLOCK_BYTES, saved = block_bytes, eeg_dsp.SEGMENT_BLOCK_BYTES
        try:
            eeg_dsp.overlap_add_(ours, sfreq, l_freq, h_freq)
        finally:
            eeg_dsp.SEGMENT_BLOCK_BYTES = saved
        np.testing.assert_array_equal(ours, ref)


def test_overlap_add_uses_the_fft_length_mne_logs():
    x = np.random.default_rng(0).standard_normal((1, 200_000))
    with mne.utils.catch_logging() as log:
        mne.filter.filter_data(x, 100.0, 0.1, 30.0, verbose="debug")
    logged = int(log.getvalue().split("FFT block length:")[1].split()[0])
    # 3301 taps; the signal padded by 3300 samples on each side
    assert eeg_dsp.overlap_add_fft_len(3301, 200_000 + 2 * 3300) == logged == 16384


def test_a_long_recording_is_band_passed_by_overlap_add_as_raw_filter_does(monkeypatch):
    raw = mne.io.read_raw(SAMPLE, preload=True, verbose="error").pick("eeg")  # 9760 samples at 160 Hz
    ref = raw.copy().filter(0.1, 30.0, verbose="error").resample(100.0, verbose="error").get_data()
    monkeypatch.setattr(eeg_dsp, "MAX_SAMPLES", 5000)  # so that the sample counts as long
    monkeypatch.setattr(eeg_dsp, "_CHECKED", {})
    calls = []
    overlap_add = eeg_dsp.overlap_add_
    monkeypatch.setattr(eeg_dsp, "overlap_add_", lambda data, *a: calls.append(data.shape) or overlap_add(data, *a))
    monkeypatch.setattr(eeg_dsp, "band_pass_", lambda *a: calls.append("band_pass_"))
    cfg = relpos.get_modality("eeg").Config()
    data = eeg_pipeline.preprocess_raw(raw, cfg, list(raw.ch_names), "'sample'")
    assert calls == [(1, 9760), (64, 9760)]  # the check on the first channel (up to 600 s: all 61 s), then all
    np.testing.assert_array_equal(data, ref)
    assert eeg_dsp._CHECKED == {(160.0, 0.1, 30.0, "overlap-add"): True}



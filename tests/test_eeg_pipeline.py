"""The EEG pipeline's window maths: bad-window masks, per-window statistics and normalisation,
checked against the plain per-window computations they replace."""

from __future__ import annotations

import numpy as np
import pytest

from relpos_modalities.common.normalisation import fill_normalised, normalise, normalise_windows, window_stats
from relpos_modalities.eeg.pipeline import RecordingWindows, all_finite, scan_raw


def plain_bad_windows(data, sfreq, starts_s, window_s, flat_threshold, rows):
    """One window at a time, as the pipeline first did it."""
    data = data[rows]
    n = data.shape[1]
    non_finite = np.zeros(len(starts_s), dtype=bool)
    flat = np.zeros(len(starts_s), dtype=bool)
    for i, start in enumerate(starts_s):
        a = max(0, int(round(start * sfreq)))
        b = min(n, max(a + 1, int(round((start + window_s) * sfreq))))
        seg = data[:, a:b]
        if not np.isfinite(seg).all():
            non_finite[i] = True
        elif flat_threshold > 0:
            flat[i] = bool((seg.max(axis=1) - seg.min(axis=1) < flat_threshold).any())
    return non_finite, flat


@pytest.fixture
def recording() -> np.ndarray:
    """4 channels × 60 s at 160 Hz of noise (volts), with a DC offset on channel 2."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((4, 9600)) * 2e-5
    data[2] += 3e-3
    return data


def test_bad_windows_match_the_window_by_window_check(recording):
    data = recording.copy()
    data[1, 1000:1004] = np.nan  # in channel 1: windows over 6.25 s
    data[3, 5000] = np.inf  # in channel 3, which is not selected: ignored
    data[0, 6400:8000] = 1e-5  # channel 0 constant from 40 to 50 s: flat
    data[2, 8800:8810] = -np.inf
    starts = np.arange(0, 50.01, 2.5)  # 10-s windows every 2.5 s, overlapping
    starts = np.append(starts, [3.3, 41.7])  # and two off the grid
    rows = [0, 1, 2]
    finite, *got = scan_raw(data, 160.0, starts, 10.0, 1e-7, rows=rows)
    want = plain_bad_windows(data, 160.0, starts, 10.0, 1e-7, rows)
    assert finite is False
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    # NaN at 6.25 s: windows from 0, 2.5, 5 and 3.3 s; -inf at 55 s: from 47.5 and 50 s; flat: from 40 s
    assert want[0].sum() == 6 and want[1].sum() == 1
    # without the bad values, nothing is dropped; a zero threshold turns the flat check off
    finite, non_finite, flat = scan_raw(recording, 160.0, starts, 10.0, 1e-7)
    assert finite and not non_finite.any() and not flat.any()
    finite, non_finite, flat = scan_raw(data, 160.0, starts, 10.0, 0.0, rows=[0])
    assert not finite and not non_finite.any() and not flat.any()


@pytest.mark.parametrize("flat_threshold", [1e-7, 0.0])
def test_a_bad_value_outside_every_window_still_counts_as_not_finite(recording, flat_threshold):
    # The pipeline zeroes such values before filtering, so the scan must see them.
    for channel, sample, value in [(2, 5, np.nan), (0, -1, np.inf)]:  # before 1 s / after 30 s
        data = recording.copy()
        data[channel, sample] = value
        finite, non_finite, _ = scan_raw(data, 160.0, np.array([1.0, 20.0]), 10.0, flat_threshold)
        assert finite is False and not non_finite.any()


def test_all_finite_is_exact_even_when_the_sum_overflows():
    assert all_finite(np.ones((2, 5)))
    assert not all_finite(np.array([[1.0, np.nan]]))
    assert not all_finite(np.array([[np.inf, -np.inf]]))
    assert all_finite(np.full((2, 4), 1e308))  # the sum overflows, every value is finite


@pytest.mark.parametrize("stride", [3000, 500, 1234])
def test_window_stats_equal_each_windows_own_mean_and_std(recording, stride):
    data = recording
    starts = np.arange(0, data.shape[1] - 3000 + 1, stride)
    mean, std = window_stats(data, starts, 3000)
    windows = np.stack([data[:, a : a + 3000] for a in starts])
    np.testing.assert_allclose(mean, windows.mean(axis=-1), rtol=1e-12, atol=1e-20)
    np.testing.assert_allclose(std, windows.std(axis=-1), rtol=1e-9)


def test_window_stats_of_a_window_whose_mean_dwarfs_its_spread(recording):
    data = recording.copy()
    # channel 1 jumps by 5 V after its first window, where its spread is 7 µV: the sums of
    # squares alone (taken relative to the first window's level) would keep 4 digits at most
    data[1, 3000:] = 5.0 + np.sin(np.arange(data.shape[1] - 3000)) * 1e-5
    data[3, 3000:6000] = 0.25  # constant in one window
    starts = np.array([0, 3000, 4500])
    mean, std = window_stats(data, starts, 3000)
    windows = np.stack([data[:, a : a + 3000] for a in starts])
    np.testing.assert_allclose(std, windows.std(axis=-1), rtol=1e-9, atol=1e-30)
    assert std[1, 3] == 0.0


def test_normalised_windows_equal_normalise_of_the_stacked_windows(recording):
    starts = np.array([0, 800, 1600, 2000, 6000])
    got = normalise_windows(recording, starts, 3000)
    want = normalise(np.stack([recording[:, a : a + 3000] for a in starts]))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.mean(axis=-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(got.std(axis=-1), 1.0, atol=1e-5)


def test_windows_normalised_on_the_way_equal_normalise(recording):
    # non-overlapping windows get their mean and spread computed while each one is written
    starts = np.array([0, 3000, 6500])
    out = np.empty((3, 4, 3000), dtype=np.float32)
    fill_normalised(out, recording, starts, 3000)
    want = normalise(np.stack([recording[:, a : a + 3000] for a in starts]))
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-6)
    assert np.abs(out.astype(np.float64) - want).max() < 1e-6


def test_recording_windows_fill_any_slice_of_its_windows(recording):
    starts = np.array([0, 500, 1000, 1500])
    mean, std = window_stats(recording, starts, 3000)
    for given in [(mean, std), (None, None)]:
        rw = RecordingWindows(recording, starts, 3000, *given, labels=None)
        assert len(rw) == 4 and rw.shape == (4, 3000)
        part = np.empty((2, 4, 3000), dtype=np.float32)
        rw.fill(part, first=1)
        np.testing.assert_array_equal(part, rw.x[1:3])
        np.testing.assert_allclose(rw.x, normalise_windows(recording, starts, 3000), rtol=0, atol=1e-6)


def stats_segment_by_segment(data, starts, n_samples):
    """window_stats's sums, one segment at a time, as it first took them."""
    from relpos_modalities.common.segments import over_windows, segments

    level = data[:, starts[0] : starts[0] + n_samples].mean(axis=1, keepdims=True)
    cuts, first, count = segments(starts, starts + n_samples, data.shape[1])
    ends = np.append(cuts[1:], data.shape[1])
    sums = np.empty((data.shape[0], len(cuts)))
    squares = np.empty((data.shape[0], len(cuts)))
    for j, (a, b) in enumerate(zip(cuts.tolist(), ends.tolist())):
        part = data[:, a:b] - level
        sums[:, j] = np.sum(part, axis=1)
        squares[:, j] = np.einsum("ij,ij->i", part, part)
    mean = over_windows(sums, first, count, np.add) / n_samples
    var = over_windows(squares, first, count, np.add) / n_samples - mean * mean
    return (mean + level).T, np.sqrt(np.maximum(var, 0.0)).T


def fill_one_window_at_a_time(data, starts, n_samples, mean, std):
    """fill_normalised's windows, one at a time, as it first wrote them."""
    out = np.empty((len(starts), data.shape[0], n_samples), dtype=np.float32)
    for i, a in enumerate(starts):
        window = data[:, a : a + n_samples]
        if mean is None:
            centre = np.add.reduce(window, axis=1) / n_samples
            scratch = window - centre[:, None]
            spread = np.sqrt(np.einsum("ij,ij->i", scratch, scratch) / n_samples)
        else:
            scratch = window - mean[i][:, None]
            spread = std[i]
        np.divide(scratch, np.maximum(spread, 1e-12)[:, None], out=out[i], casting="same_kind")
    return out


@pytest.mark.parametrize("stride", [3000, 500, 1234, 7])
@pytest.mark.parametrize("block_bytes", [1, 4 * 2**20])  # one segment / window per call, and many
def test_stats_and_windows_taken_a_block_at_a_time_are_those_of_one_at_a_time(recording, stride, block_bytes, monkeypatch):
    import relpos_modalities.common.normalisation as normalisation

    monkeypatch.setattr(normalisation, "SEGMENT_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(normalisation, "WINDOW_GROUP_BYTES", block_bytes)
    starts = np.arange(0, recording.shape[1] - 3000 + 1, stride)[:400]
    mean, std = window_stats(recording, starts, 3000)
    want_mean, want_std = stats_segment_by_segment(recording, starts, 3000)
    np.testing.assert_array_equal(mean, want_mean)  # bit for bit: the same sums in the same order
    np.testing.assert_array_equal(std, want_std)
    for given in [(mean, std), (None, None)]:
        out = np.empty((len(starts), recording.shape[0], 3000), dtype=np.float32)
        fill_normalised(out, recording, starts, 3000, *given)
        np.testing.assert_array_equal(out, fill_one_window_at_a_time(recording, starts, 3000, *given))

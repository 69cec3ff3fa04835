"""The ``timeseries`` modality: xarray / netCDF / zarr / NumPy sensor data cut into windows.

Every expected number is worked out by hand in a comment next to it. Data are generated here
(small arrays and files under ``tmp_path``), except BasicMotions from the shared data folder.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch

from relpos.errors import ConfigError, DataError
from relpos_modalities.timeseries import TimeseriesConfig, TimeseriesModality


xr = pytest.importorskip("xarray")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test gets its own window cache (never ~/.cache)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("RELPOS_CACHE_DIR", str(folder))
    return folder


def modality(**options) -> TimeseriesModality:
    return TimeseriesModality(TimeseriesConfig(**options))


def signal(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def cases(n=2, channels=3, n_times=1000, sfreq=100.0, **attrs) -> "xr.DataArray":
    """``n`` cases × ``channels`` × ``n_times`` with channel names a, b, c... and ``attrs``."""
    return xr.DataArray(
        signal((n, channels, n_times)),
        dims=("case", "channel", "time"),
        coords={"channel": [chr(ord("a") + i) for i in range(channels)]},
        attrs={"sfreq": sfreq, **attrs} if sfreq else dict(attrs),
        name="signal",
    )


# -- windowing -------------------------------------------------------------------------------------------
def test_window_count_for_a_known_array():
    # (2, 3, 1000) at 100 Hz, 4-s windows every 2 s: per sample floor((1000 - 400) / 200) + 1 = 4,
    # so 2 × 4 = 8 windows of (3, 400); each normalised to mean 0, std 1 per channel
    m = modality(window_s=4, stride_s=2, sfreq=100)
    windows = m.load(signal((2, 3, 1000)))
    assert tuple(windows.x.shape) == (8, 3, 400)
    assert windows.groups.tolist() == ["array/0"] * 4 + ["array/1"] * 4
    torch.testing.assert_close(windows.x.mean(-1), torch.zeros(8, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(windows.x.std(-1, unbiased=False), torch.ones(8, 3), atol=1e-4, rtol=0)
    # patch_s = 1 s at 100 Hz = 100 samples; the grid of a 400-sample window holds 4 of them
    assert m.patch_size() == (100.0,)
    assert m.default_num_patches(windows.extent) == 4
    assert windows.labels is None and windows.info["sfreq"] == 100.0


def test_windows_start_where_expected_and_normalize_none_keeps_values():
    # one channel counting 0..9 at 1 Hz; 4-s windows every 3 s start at 0, 3, 6: floor((10-4)/3)+1 = 3
    x = np.arange(10, dtype=np.float32)[None]  # (channels, time) = (1, 10)
    windows = modality(window_s=4, stride_s=3, sfreq=1, patch_s=1, normalize="none").load(x)
    assert windows.x[:, 0].tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert windows.groups.tolist() == ["array"] * 3  # (channels, time): one recording, no sample id


def test_window_s_zero_takes_each_sample_whole():
    # 5 samples of (2, 50) at 10 Hz with window_s 0 → 5 windows of (2, 50); 1-s patches = 10 samples,
    # 50 / 10 = 5 on the grid; patches_per_window overrides the grid count
    m = modality(sfreq=10)
    windows = m.load(signal((5, 2, 50)))
    assert tuple(windows.x.shape) == (5, 2, 50)
    assert m.patch_size() == (10.0,)
    assert m.default_num_patches(windows.extent) == 5
    assert modality(sfreq=10, patches_per_window=12).default_num_patches((50,)) == 12
    assert modality(sfreq=10, patch_samples=7).patch_size() == (7.0,)


def test_resampling_to_sfreq_target():
    # 1000 samples at 100 Hz → 500 at 50 Hz; 4-s windows (200 samples) every 2 s (100):
    # floor((500 - 200) / 100) + 1 = 4 per sample → 8; patch 1 s = 50 samples at the new rate
    m = modality(window_s=4, stride_s=2, sfreq=100, sfreq_target=50)
    windows = m.load(signal((2, 3, 1000)))
    assert tuple(windows.x.shape) == (8, 3, 200)
    assert windows.info["sfreq"] == 50.0
    assert m.patch_size() == (50.0,)


def test_resampling_keeps_a_sine_at_its_frequency():
    # a 2-Hz sine at 100 Hz resampled to 25 Hz: one 4-s window of 100 samples with 8 periods, so
    # its spectrum peaks at bin 8 (8 periods / 100 samples)
    t = np.arange(400) / 100.0
    x = np.sin(2 * np.pi * 2 * t)[None]
    windows = modality(window_s=4, sfreq=100, sfreq_target=25).load(x)
    assert tuple(windows.x.shape) == (1, 1, 100)
    assert int(np.abs(np.fft.rfft(windows.x[0, 0].numpy())).argmax()) == 8


# -- sampling rate -------------------------------------------------------------------------------------
@pytest.mark.parametrize("attr", ["sfreq", "sampling_rate", "fs"])
def test_sampling_rate_from_attrs(attr):
    # 250 Hz from attrs; 2-s windows = 500 samples; 1000 / 500 → 2 per case, 4 in all
    da = cases(sfreq=0)
    da.attrs[attr] = 250.0
    m = modality(window_s=2)
    windows = m.load(da)
    assert windows.info["sfreq"] == 250.0
    assert tuple(windows.x.shape) == (4, 3, 500)
    assert m.patch_size() == (250.0,)


def test_sampling_rate_from_a_numeric_time_coordinate():
    # steps of 0.004 s → 250 Hz; in milliseconds (units "ms") steps of 4 ms → 250 Hz too
    da = cases(sfreq=0).assign_coords(time=np.arange(1000) * 0.004)
    assert modality(window_s=2).load(da).info["sfreq"] == pytest.approx(250.0)
    in_ms = da.assign_coords(time=("time", np.arange(1000) * 4.0, {"units": "ms"}))
    assert modality(window_s=2).load(in_ms).info["sfreq"] == pytest.approx(250.0)


def test_sampling_rate_from_a_datetime_coordinate():
    pd = pytest.importorskip("pandas")
    # 10-ms steps → 100 Hz; 4-s windows every 2 s → 4 per case, 8 in all (as for the plain array)
    da = cases(sfreq=0).assign_coords(time=pd.date_range("2024-01-01", periods=1000, freq="10ms"))
    windows = modality(window_s=4, stride_s=2).load(da)
    assert windows.info["sfreq"] == pytest.approx(100.0)
    assert len(windows) == 8


def test_irregular_time_coordinate_is_an_error():
    times = np.r_[np.arange(999) * 0.01, 20.0]  # 0.01-s steps, then one of 10.02 s
    da = cases(sfreq=0).assign_coords(time=times)
    with pytest.raises(DataError, match=r"irregular 'time' coordinate \(steps from 0.01 s to 10.02 s\)"):
        modality(window_s=4).load(da)


def test_missing_sampling_rate_names_what_is_allowed():
    with pytest.raises(DataError, match=r"has no sampling rate: set attrs 'sfreq', 'sampling_rate' or 'fs'"):
        modality(window_s=4).load(cases(sfreq=0))
    # a bare .npy/array needs modality.sfreq
    with pytest.raises(DataError, match=r"array has no sampling rate.*modality.sfreq"):
        modality(window_s=4).load(signal((2, 3, 100)))


def test_missing_time_axis_is_an_error():
    da = cases().rename(time="t")
    with pytest.raises(DataError, match=r"dims \(case, channel, t\) but no time axis: expected a 'time' dim"):
        modality().load(da)
    # time_dim names it instead
    assert len(modality(time_dim="t").load(da)) == 2


def test_too_many_dims_is_an_error():
    da = xr.DataArray(signal((2, 2, 3, 50)), dims=("run", "case", "channel", "time"), attrs={"sfreq": 10.0})
    with pytest.raises(DataError, match="at most one more \\(sample\\) dim, but found run, case"):
        modality().load(da)


# -- channels --------------------------------------------------------------------------------------------
def test_channel_selection_by_names_and_patterns():
    names = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
    da = cases(channels=6).assign_coords(channel=names)
    assert modality(window_s=4, channels="acc_*").load(da).info["ch_names"] == names[:3]
    picked = modality(window_s=4, channels="gyro_z, acc_x").load(da)
    assert picked.info["ch_names"] == ["gyro_z", "acc_x"] and picked.channels == 2
    with pytest.raises(DataError, match=r"no channel matching 'mag_\*'.*available: acc_x, acc_y, acc_z, gyro_x"):
        modality(window_s=4, channels="mag_*").load(da)


def test_dataset_variables_over_time_become_channels():
    # two variables (acc_x, acc_y) over 500 steps at 50 Hz → channels acc_x, acc_y; 2-s windows
    # every 1 s: floor((500 - 100) / 50) + 1 = 9
    ds = xr.Dataset(
        {"acc_x": ("time", signal(500)), "acc_y": ("time", signal(500, seed=1))}, attrs={"sfreq": 50.0}
    )
    windows = modality(window_s=2, stride_s=1).load(ds)
    assert tuple(windows.x.shape) == (9, 2, 100)
    assert windows.info["ch_names"] == ["acc_x", "acc_y"]


def test_dataset_with_several_variables_needs_variable():
    ds = xr.Dataset({"a": cases(), "b": cases()})
    with pytest.raises(DataError, match=r"several data variables with a time axis \(a, b\); set modality.variable"):
        modality().load(ds)
    assert len(modality(variable="b").load(ds)) == 2


# -- labels ----------------------------------------------------------------------------------------------
def test_labels_per_sample_go_to_every_window_of_the_sample():
    # 3 cases labelled walk, run, walk; 4 windows each (as above); classes sorted: run=0, walk=1
    da = cases(n=3).assign_coords(label=("case", ["walk", "run", "walk"]), subject=("case", ["s1", "s1", "s2"]))
    windows = modality(window_s=4, stride_s=2).load(da)
    assert windows.class_names == ["run", "walk"]
    assert windows.labels.tolist() == [1] * 4 + [0] * 4 + [1] * 4
    assert windows.subjects.tolist() == ["s1"] * 8 + ["s2"] * 4
    assert windows.info["label_kind"] == "per window"


def test_labels_per_time_step_centre_and_majority():
    # 500 steps at 50 Hz labelled 0 before step 230 and 1 from it; 2-s windows (100) every 1 s (50)
    # start at 0, 50, ..., 400 (9 windows). Centre (start + 50): 50, 100, 150, 200 → 0; 250... → 1.
    # Majority: the window at 150 covers 150..249 (80 zeros, 20 ones) → 0; at 200: 200..299
    # (30 zeros, 70 ones) → 1.
    labels = np.where(np.arange(500) < 230, 0, 1)
    ds = xr.Dataset(
        {"x": (("channel", "time"), signal((2, 500))), "label": ("time", labels)},
        attrs={"sfreq": 50.0},
    )
    centre = modality(window_s=2, stride_s=1).load(ds)
    assert centre.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert centre.info["label_kind"] == "per time step"
    majority = modality(window_s=2, stride_s=1, label_at="majority").load(ds)
    assert majority.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    # move the change to step 260: the window at 200 holds 60 zeros → majority 0, centre (250) still 0;
    # the window at 250 (centre 300) → 1 both ways; 250..349 holds 10 zeros, 90 ones
    ds["label"] = ("time", np.where(np.arange(500) < 260, 0, 1))
    assert modality(window_s=2, stride_s=1).load(ds).labels.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert modality(window_s=2, stride_s=1, label_at="majority").load(ds).labels.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]


def test_labels_per_time_step_follow_resampling():
    # 400 steps at 100 Hz, label = step // 100 (0..3); resampled to 50 Hz (200 steps), 1-s windows
    # (50) every 1 s: 4 windows whose centres (25, 75, 125, 175 at 50 Hz = 50, 150, 250, 350 at
    # 100 Hz) carry labels 0, 1, 2, 3
    ds = xr.Dataset(
        {"x": (("channel", "time"), signal((1, 400))), "label": ("time", np.arange(400) // 100)},
        attrs={"sfreq": 100.0},
    )
    windows = modality(window_s=1, sfreq_target=50, patch_s=0.2).load(ds)
    assert windows.labels.tolist() == [0, 1, 2, 3]
    assert windows.class_names == ["0", "1", "2", "3"]


def test_labels_of_the_wrong_shape_are_an_error():
    da = cases(n=2).assign_coords(label=("channel", [0, 1, 0]))
    with pytest.raises(DataError, match=r"labels 'label' with dims \(channel\)"):
        modality().load(da)


# -- bad values ------------------------------------------------------------------------------------------
def test_nan_inf_and_flat_windows_are_dropped_and_reported(capsys):
    # 4-s windows every 2 s, 4 per case (starts 0, 200, 400, 600). Case 0: a NaN at step 50 spoils
    # window 0; an inf at step 650 spoils windows 2 (400..799) and 3 (600..999). Case 1: all channels
    # constant over 0..399 → window 0 flat. 8 - 3 - 1 = 4 windows remain.
    x = signal((2, 3, 1000)).astype(np.float64)
    x[0, 1, 50] = np.nan
    x[0, 2, 650] = np.inf
    x[1, :, :400] = 1.5
    windows = modality(window_s=4, stride_s=2, sfreq=100).load(x)
    assert len(windows) == 4
    assert windows.groups.tolist() == ["array/0", "array/1", "array/1", "array/1"]
    assert windows.info["dropped"] == {"non-finite values": 3, "flat (every channel constant)": 1}
    err = capsys.readouterr().err
    assert "relpos: warning: Dropped 3 windows of the NumPy array holding NaN or infinite values." in err
    flat = "relpos: warning: Dropped 1 window of the NumPy array in which every channel ('ch0', 'ch1' and 'ch2') is flat."
    assert flat in err
    assert torch.isfinite(windows.x).all()


def test_every_window_dropped_is_an_error():
    # one NaN in the only window (the whole sample, window_s 0); the channels themselves are live
    x = signal((1, 2, 100)).astype(np.float64)
    x[0, 0, 5] = np.nan
    with pytest.raises(DataError, match=r"Every window made from 'numpy.ndarray' was dropped \(1 of 1 holding NaN"):
        modality(sfreq=10).load(x)


def test_sample_shorter_than_one_window_gives_both_durations():
    # 1000 samples at 100 Hz = 10 s per case, window 20 s
    with pytest.raises(DataError, match=r"lasts 10 s per sample, shorter than one window \(modality.window_s = 20 s\)"):
        modality(window_s=20).load(cases())


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="'modality.normalize': allowed 'auto', 'instance', 'recording', 'file' or 'none', got 'zscore'"):
        modality(normalize="zscore")
    with pytest.raises(ConfigError, match="'modality.split': allowed 'train', 'test' or 'all'"):
        modality(split="valid")
    too_long = r"'modality.patch_s' \(5.0 s\) is longer than 'modality.window_s' \(2.0 s\)"
    with pytest.raises(ConfigError, match=too_long):
        modality(window_s=2.0, patch_s=5.0)
    with pytest.raises(ConfigError, match="patch length in samples is not known before data is loaded"):
        modality().patch_size()


def test_wrong_array_shape_and_type():
    with pytest.raises(DataError, match=r"shape \[2, 2, 2, 5\]; expected numbers shaped \(n, channels, time\)"):
        modality(sfreq=1).load(np.zeros((2, 2, 2, 5)))
    with pytest.raises(DataError, match="Cannot open a set as a timeseries"):
        modality().load({1, 2})

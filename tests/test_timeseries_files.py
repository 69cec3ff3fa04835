"""The ``timeseries`` modality from files (netCDF, zarr, .npy, .npz, folders), the disk cache, the
real BasicMotions data set, and PART training on it through ``relpos.train`` and the CLI.

Expected numbers are worked out by hand in the comments.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

import relpos
from relpos.cli import main
from relpos.config import resolve_config
from relpos.errors import DataError
from relpos_modalities.timeseries import TimeseriesConfig, TimeseriesModality

from conftest import CONFIGS, TINY_OVERRIDES, read_metrics, tiny_args

xr = pytest.importorskip("xarray")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test gets its own window cache (never ~/.cache)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("RELPOS_CACHE_DIR", str(folder))
    return folder


def modality(**options) -> TimeseriesModality:
    return TimeseriesModality(TimeseriesConfig(**options))


def cases(n=2, channels=3, n_times=1000, sfreq=100.0, seed=0) -> "xr.DataArray":
    rng = np.random.default_rng(seed)
    return xr.DataArray(
        rng.standard_normal((n, channels, n_times)).astype(np.float32),
        dims=("case", "channel", "time"),
        coords={"channel": [chr(ord("a") + i) for i in range(channels)]},
        attrs={"sfreq": sfreq},
        name="signal",
    )


def write_netcdf(path, da, engine="scipy"):
    path.parent.mkdir(parents=True, exist_ok=True)
    da.to_netcdf(path, engine=engine)
    return path


# -- file formats ----------------------------------------------------------------------------------------
def test_netcdf3_through_scipy_and_the_cache(tmp_path, cache_dir):
    # 2 cases × 3 channels × 1000 at 100 Hz, 4-s windows every 2 s → 2 × 4 = 8 windows
    path = write_netcdf(tmp_path / "rec.nc", cases())
    m = modality(window_s=4, stride_s=2)
    first = m.load(path)
    assert tuple(first.x.shape) == (8, 3, 400)
    assert first.groups.tolist() == ["rec/0"] * 4 + ["rec/1"] * 4
    assert first.info["cache"]["hit"] is False
    assert first.info["files"][0]["path"] == str(path)
    assert first.info["files"][0]["duration_s"] == 20.0  # 2 cases × 1000 / 100 Hz
    second = modality(window_s=4, stride_s=2).load(path)
    assert second.info["cache"]["hit"] is True
    torch.testing.assert_close(second.x, first.x)
    fresh = modality(window_s=4, stride_s=2)
    fresh.load(path)
    assert fresh.patch_size() == (100.0,)  # from the cached info, without reading the file
    # another option is another entry; cache: false writes nothing new
    assert modality(window_s=2).load(path).info["cache"]["hit"] is False
    entries = len(list((cache_dir / "windows" / "timeseries").iterdir()))
    assert modality(window_s=5, cache=False).load(path).info["cache"] == {"hit": False, "path": None}
    assert len(list((cache_dir / "windows" / "timeseries").iterdir())) == entries


def test_netcdf4_through_h5netcdf(tmp_path):
    if importlib.util.find_spec("h5netcdf") is None or importlib.util.find_spec("h5py") is None:
        pytest.skip("h5netcdf/h5py are not installed (netCDF-4 files need them)")
    path = write_netcdf(tmp_path / "rec.h5", cases().to_dataset(), engine="h5netcdf")
    assert tuple(modality(window_s=4, stride_s=2).load(path).x.shape) == (8, 3, 400)


def test_zarr_store_or_a_clear_error(tmp_path):
    store = tmp_path / "rec.zarr"
    if importlib.util.find_spec("zarr") is None:
        store.mkdir()
        (store / "zarr.json").write_text("{}")
        with pytest.raises(DataError, match=r"needs the zarr package: pip install zarr\."):
            modality().load(store)
    else:
        cases().to_dataset().to_zarr(store)
        assert tuple(modality(window_s=4, stride_s=2).load(store).x.shape) == (8, 3, 400)


def test_npy_needs_sfreq(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).standard_normal((3, 1000)))
    with pytest.raises(DataError, match=r"x.npy' has no sampling rate.*modality.sfreq"):
        modality(window_s=4).load(path)
    # (channels, time): one recording; floor((1000 - 400) / 200) + 1 = 4 windows
    windows = modality(window_s=4, stride_s=2, sfreq=100).load(path)
    assert tuple(windows.x.shape) == (4, 3, 400)
    assert set(windows.groups.tolist()) == {"x"}


def test_npz_with_sfreq_labels_and_channel_names(tmp_path):
    path = tmp_path / "arr.npz"
    rng = np.random.default_rng(0)
    np.savez(path, X=rng.standard_normal((3, 2, 500)), y=np.array([2, 0, 2]), sfreq=np.array(50.0),
             ch_names=np.array(["left", "right"]))
    # 500 samples at 50 Hz = 10 s; window_s 0 → one window per case; labels 0..2 named "0".."2"
    windows = modality().load(path)
    assert tuple(windows.x.shape) == (3, 2, 500)
    assert windows.labels.tolist() == [2, 0, 2]
    assert windows.class_names == ["0", "1", "2"]
    assert windows.info["ch_names"] == ["left", "right"]


def test_npz_shared_layout_and_split(tmp_path):
    path = tmp_path / "shared.npz"
    rng = np.random.default_rng(0)
    np.savez(path, X_train=rng.standard_normal((4, 2, 100)), y_train=np.array([0, 1, 0, 1]),
             X_test=rng.standard_normal((2, 2, 100)), y_test=np.array([1, 1]), sfreq=np.array(10.0),
             class_names=np.array(["rest", "move"]))
    train = modality().load(path)
    assert len(train) == 4 and train.class_names == ["rest", "move"]
    assert train.groups.tolist() == ["shared/train/0", "shared/train/1", "shared/train/2", "shared/train/3"]
    test = modality(split="test").load(path)
    assert test.labels.tolist() == [1, 1]
    both = modality(split="all").load(path)
    assert len(both) == 6 and both.labels.tolist() == [0, 1, 0, 1, 1, 1]  # 4 train + 2 test
    np.savez(tmp_path / "only_train.npz", X_train=np.zeros((1, 1, 10)), sfreq=np.array(1.0))
    with pytest.raises(DataError, match=r"has no 'X_test' array for modality.split='test'"):
        modality(split="test").load(tmp_path / "only_train.npz")


def test_folder_glob_and_a_corrupt_file_among_good_ones(tmp_path, capsys):
    folder = tmp_path / "data"
    write_netcdf(folder / "s1" / "rec.nc", cases(seed=1))
    write_netcdf(folder / "s2" / "rec.nc", cases(seed=2))
    (folder / "s2" / "broken.nc").write_bytes(b"CDF\x01 truncated")
    windows = modality(window_s=4, stride_s=2).load(folder)
    # 2 good files × 8 windows; the same file name in two folders keeps the recordings apart
    assert len(windows) == 16
    assert len(set(windows.groups.tolist())) == 4
    assert "relpos: warning: Skipping" in capsys.readouterr().err
    assert [s["path"] for s in windows.info["skipped"]] == [str(folder / "s2" / "broken.nc")]
    assert len(modality(window_s=4, stride_s=2).load(str(folder / "s1" / "*.nc"))) == 8
    with pytest.raises(DataError, match=r"Cannot read '.*broken.nc' as netCDF \(scipy\)"):
        modality().load(folder / "s2" / "broken.nc")


def test_files_with_different_rates_need_sfreq_target(tmp_path):
    a = write_netcdf(tmp_path / "a.nc", cases(sfreq=100.0))
    b = write_netcdf(tmp_path / "b.nc", cases(n_times=500, sfreq=50.0))
    with pytest.raises(DataError, match=r"different sampling rates \(100 Hz in '.*a.nc', 50 Hz in '.*b.nc'\)"):
        modality(window_s=4).load([a, b])
    # both at 50 Hz: 500 samples each, 4-s windows (200) every 4 s → floor(300/200)+1 = 2 per case → 8
    windows = modality(window_s=4, sfreq_target=50).load([a, b])
    assert tuple(windows.x.shape) == (8, 3, 200)


def test_inspect_reports_files_and_skips(tmp_path):
    write_netcdf(tmp_path / "d" / "good.nc", cases().assign_coords(label=("case", ["x", "y"])))
    (tmp_path / "d" / "bad.nc").write_bytes(b"not netcdf")
    report = modality(window_s=4, stride_s=2).inspect(tmp_path / "d")
    assert report["n_windows"] == 8 and report["extent"] == [400] and report["channels"] == 3
    assert report["label_counts"] == {"x": 4, "y": 4}
    assert report["sfreq"] == 100.0 and report["patch_samples"] == 100
    (entry,) = report["files"]
    assert entry["channels"] == ["a", "b", "c"] and entry["n_windows"] == 8 and entry["sfreq"] == 100.0
    assert entry["label_counts"] == {"x": 4, "y": 4}
    assert report["skipped"][0]["path"].endswith("bad.nc")
    assert "signature" in report["skipped"][0]["reason"]


# -- BasicMotions (real data) ------------------------------------------------------------------------------
def test_basicmotions_windows_and_labels(shared_data):
    path = shared_data / "sensor" / "basicmotions.npz"
    m = modality()
    windows = m.load(path)
    # 40 training cases of 6 channels × 100 samples (10 s at 10 Hz), one window each; 10 per class
    assert tuple(windows.x.shape) == (40, 6, 100)
    assert np.bincount(windows.labels.numpy()).tolist() == [10, 10, 10, 10]
    assert windows.class_names == ["Standing", "Running", "Walking", "Badminton"]
    assert windows.info["ch_names"] == ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
    assert m.patch_size() == (10.0,)  # 1 s at 10 Hz
    assert len(modality(split="all").load(path)) == 80


def test_part_trains_on_basicmotions(shared_data, tmp_path):
    config = resolve_config(
        CONFIGS / "basicmotions_part.yaml",
        overrides=[*TINY_OVERRIDES, "train.steps=2", "train.progress=false", "train.tensorboard=false",
                   f"out={tmp_path / 'run'}"],
    )
    config.data = str(shared_data / "sensor" / "basicmotions.npz")
    result = relpos.train(config)
    assert result.step == 2 and math.isfinite(result.loss)
    assert result.pretext.patch_shape == (10,)
    # 16 patches per 100-sample case (the config), not the grid's 10
    assert result.pretext.modality.default_num_patches((100,)) == 16


def test_cli_trains_part_on_a_netcdf_file(tmp_path, cli):
    data = write_netcdf(tmp_path / "sensor.nc", cases(n=3).assign_coords(label=("case", ["a", "b", "a"])))
    run = tmp_path / "run"
    code, out, err = cli(
        "train", "--modality", "timeseries", "--pretext", "part", "--data", data, "--out", run,
        "--set", "modality.window_s=4", "--set", "modality.stride_s=2", "--set", "modality.patch_s=0.5",
        *tiny_args(steps=2),
    )
    assert code == 0, err
    assert "trained 2 steps" in out
    _, rows = read_metrics(run)
    assert [r["step"] for r in rows] == ["2"] and math.isfinite(float(rows[0]["loss"]))
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    # 3 cases × 4 windows of (3, 400) at 100 Hz
    assert state["data_info"]["extent"] == [400] and state["data_info"]["sfreq"] == 100.0


def test_cli_bad_timeseries_input_is_one_sentence(tmp_path, capsys):
    data = write_netcdf(tmp_path / "no_time.nc", cases().rename(time="t"))
    code = main(["train", "--modality", "timeseries", "--data", str(data), "--out", str(tmp_path / "run"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "has no data variable with a time axis: expected a 'time' dim" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()

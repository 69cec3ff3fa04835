"""Unreadable timeseries files get one sentence saying what the file is not, never NumPy's or a
backend's advice (``allow_pickle``), and pickles are never loaded."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from relpos.cli import main
from relpos.errors import ConfigError, DataError
from relpos_modalities.timeseries import TimeseriesConfig, TimeseriesModality


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RELPOS_CACHE_DIR", str(tmp_path / "cache"))


def load(path, **options):
    return TimeseriesModality(TimeseriesConfig(sfreq=10, **options)).load(path)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("suffix, what", [(".npz", "not a NumPy .npz archive"), (".npy", "not a NumPy .npy file")])
def test_random_bytes_are_not_a_numpy_file(tmp_path, seed, suffix, what):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(np.random.default_rng(seed).bytes(64 + 97 * seed))
    with pytest.raises(DataError) as info:
        load(path)
    message = str(info.value)
    assert what in message and "pickle" not in message.lower() and str(path) in message


@pytest.mark.parametrize("suffix", [".npz", ".npy", ".nc"])
def test_an_empty_file_says_so(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"the file is empty\.$"):
        load(path)


def test_pickled_arrays_are_refused_without_loading_them(tmp_path, monkeypatch):
    import pickle

    def never(*args, **kwargs):
        raise AssertionError("a pickle was loaded")

    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "objects.npz", X=np.array([[1, "x"]], dtype=object), sfreq=np.array(10.0))
    monkeypatch.setattr(pickle, "load", never)
    monkeypatch.setattr(pickle, "loads", never)
    with pytest.raises(DataError, match=r"objects.npy' holds Python objects \(a pickled object array\); relpos "
                                        r"never loads pickles"):
        load(tmp_path / "objects.npy")
    with pytest.raises(DataError, match=r"objects.npz' holds Python objects in 'X'.*never loads pickles"):
        load(tmp_path / "objects.npz")


def test_a_zip_without_arrays_and_a_truncated_npy(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("readme.txt", "hello")
    (tmp_path / "notes.npz").write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match=r"it is a zip file without any \.npy array in it\.$"):
        load(tmp_path / "notes.npz")
    np.save(tmp_path / "cut.npy", np.zeros((2, 3, 100)))
    data = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"Cannot read .*cut.npy.: it is not a readable NumPy .npy file \("):
        load(tmp_path / "cut.npy")


@pytest.mark.parametrize("head", [b"", b"GARBAGE!", b"\x89HDF\r\n\x1a\n" + bytes(40), b"CDF\x01" + bytes(20)])
def test_unreadable_netcdf_is_one_sentence(tmp_path, head):
    path = tmp_path / "bad.nc"
    path.write_bytes(head)
    with pytest.raises(DataError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"Cannot read {str(path)!r} as netCDF") or "needs h5netcdf" in message
    assert "\n" not in message and "Traceback" not in message


def test_a_broken_zarr_store_or_a_missing_zarr_is_one_sentence(tmp_path):
    store = tmp_path / "bad.zarr"
    store.mkdir()
    (store / "zarr.json").write_text("{ not json")
    with pytest.raises(DataError, match=r"(needs the zarr package: pip install zarr|Cannot read '.*bad.zarr' as a "
                                        r"zarr store: )"):
        load(store)


def test_a_csv_named_explicitly_says_what_is_read(tmp_path):
    path = tmp_path / "sensor.csv"
    path.write_text("t,acc_x\n0,1\n")
    with pytest.raises(DataError, match=r"Cannot open '.*sensor.csv' as a timeseries: expected netCDF \(.nc, "
                                        r".*\), a .zarr store, .npy or .npz\.$"):
        load(path)


def test_cli_random_npz_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "data.npz"
    path.write_bytes(np.random.default_rng(7).bytes(300))
    code = main(["train", "--modality", "timeseries", "--data", str(path), "--out", str(tmp_path / "run"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "allow_pickle" not in err
    assert "is not a NumPy .npz archive" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("sfreq, shown", [(-5.0, "-5"), (0.0, "0"), (np.nan, "nan"), (1e300, r"1e\+300")])
def test_a_sampling_rate_out_of_range_names_where_it_came_from(tmp_path, sfreq, shown):
    np.savez(tmp_path / "rate.npz", X=np.ones((2, 10)), sfreq=np.array(sfreq))
    with pytest.raises(DataError, match=rf"rate.npz' gives a sampling rate of {shown} Hz \(its 'sfreq' array\); "
                                        r"it must be positive and at most 1e\+09 Hz\.$"):
        load(tmp_path / "rate.npz")


@pytest.mark.parametrize("sfreq", [["fast"], []])
def test_a_sampling_rate_that_is_not_a_number(tmp_path, sfreq):
    np.savez(tmp_path / "rate.npz", X=np.ones((2, 10)), sfreq=np.array(sfreq))
    with pytest.raises(DataError, match=r"rate.npz' has an 'sfreq' of .*, which is not a number of Hz\.$"):
        load(tmp_path / "rate.npz")


@pytest.mark.parametrize("values", [np.ones((2, 10), dtype=complex), np.ones((2, 10), dtype=bool)])
def test_complex_or_boolean_samples_are_refused(tmp_path, values):
    np.save(tmp_path / "odd.npy", values)
    with pytest.raises(DataError, match=rf"holds a {values.dtype} array of shape \[2, 10\]; expected numbers"):
        load(tmp_path / "odd.npy")


def test_a_patch_shorter_than_one_sample(tmp_path):
    # 0.5 Hz: a 1-s patch is 0.5 samples, which rounds to none
    np.savez(tmp_path / "slow.npz", X=np.random.default_rng(0).standard_normal((2, 10)), sfreq=np.array(0.5))
    modality = TimeseriesModality(TimeseriesConfig(cache=False))
    modality.load(tmp_path / "slow.npz")
    with pytest.raises(ConfigError, match=r"'modality.patch_s' \(1 s\) is shorter than one sample at 0.5 Hz"):
        modality.patch_size()


def test_a_binary_list_file_is_not_read_as_paths(tmp_path):
    (tmp_path / "files.txt").write_bytes(bytes(range(256)))
    with pytest.raises(DataError, match=r"list file '.*files.txt' cannot be read as text \(one path a line\)"):
        load(tmp_path / "files.txt")
    (tmp_path / "nul.lst").write_bytes(b"a.npy\x00b.npy\n")
    with pytest.raises(DataError, match=r"list file '.*nul.lst' is not a text file .*NUL bytes"):
        load(tmp_path / "nul.lst")

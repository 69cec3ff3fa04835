"""Finding data files (``modalities/common/sources.py``), shared by the eeg and timeseries modalities:
folders, globs and list files, in natural order, each file once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from relpos.errors import DataError
from relpos_modalities.eeg.sources import resolve_recordings
from relpos_modalities.common.sources import natural_sorted
from relpos_modalities.timeseries import TimeseriesConfig, TimeseriesModality
from relpos_modalities.timeseries.sources import find_items


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_natural_order_puts_numbers_in_value_order():
    names = ["vol10.nc", "vol2.nc", "vol1.nc", "vol0.nc", "Vol3.nc", "vol1b.nc"]
    # digit runs compare as numbers: 0 < 1 < 2 < 3 < 10, whatever the case of the text around them;
    # "vol1.nc" and "vol1b.nc" share "vol", 1 and then compare ".nc" with "b.nc" ('.' < 'b')
    assert [p.name for p in natural_sorted(Path(n) for n in names)] == [
        "vol0.nc", "vol1.nc", "vol1b.nc", "vol2.nc", "Vol3.nc", "vol10.nc",
    ]
    # folders are ordered before their contents, part by part: s2/... before s10/...
    paths = [Path("s10/a1.nc"), Path("s2/a10.nc"), Path("s2/a9.nc")]
    assert natural_sorted(paths) == [Path("s2/a9.nc"), Path("s2/a10.nc"), Path("s10/a1.nc")]


def test_eeg_folder_and_glob_in_natural_order(tmp_path):
    for i in (10, 2, 0, 1):
        touch(tmp_path / "eeg" / f"vol{i}.edf")
    touch(tmp_path / "eeg" / "notes.txt")  # not a recording: a folder search skips it
    expected = ["vol0", "vol1", "vol2", "vol10"]
    assert [r.recording_id for r in resolve_recordings(tmp_path / "eeg")] == expected
    assert [r.recording_id for r in resolve_recordings(str(tmp_path / "eeg" / "vol*.edf"))] == expected


def test_timeseries_folder_in_natural_order(tmp_path):
    # four one-channel .npy recordings whose values are their number: the windows come vol0, vol1,
    # vol2, vol10 (string order would give vol0, vol1, vol10, vol2)
    for i in (10, 2, 0, 1):
        np.save(tmp_path / f"vol{i}.npy", np.full((1, 4), float(i)) + np.arange(4)[None])
    windows = TimeseriesModality(TimeseriesConfig(sfreq=1, patch_s=1, normalize="none")).load(tmp_path)
    assert windows.groups.tolist() == ["vol0", "vol1", "vol2", "vol10"]
    assert windows.x[:, 0, 0].tolist() == [0.0, 1.0, 2.0, 10.0]


def test_list_file_comments_nesting_and_duplicates(tmp_path):
    a = touch(tmp_path / "d" / "a.npy")
    b = touch(tmp_path / "d" / "b.npy")
    inner = tmp_path / "d" / "more.txt"
    inner.write_text("b.npy  # the second one\n")
    outer = tmp_path / "list.txt"
    # relative to the list file; a comment line, an inline comment, a blank line, a nested list
    # naming b again, and a glob naming both again: each file is read once, in first-named order
    outer.write_text("# my files\nd/a.npy # first\n\nd/more.txt\nd/*.npy\n")
    assert find_items(outer) == [a, b]
    # a Python list naming the same file twice reads it once
    assert find_items([str(a), a, outer]) == [a, b]


def test_list_file_naming_itself_is_an_error(tmp_path):
    loop = tmp_path / "loop.txt"
    loop.write_text("loop.txt\n")
    with pytest.raises(DataError, match=r"list file '.*loop.txt' names itself"):
        find_items(loop)


def test_errors_name_the_entry_and_what_was_looked_for(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("missing.nc\n")
    with pytest.raises(DataError, match=r"'.*missing.nc' \(line 1 of list file '.*list.txt'\) does not exist"):
        find_items(listing)
    (tmp_path / "notes.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"matches no timeseries files \(it matches 1 other file, such as "
                                        r"'notes.csv'; looked for .nc, .*\.npz and .zarr stores\)"):
        find_items(str(tmp_path / "*.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"No timeseries files found in folder '.*empty' \(looked recursively"):
        find_items(tmp_path / "empty")
    empty_list = tmp_path / "empty.lst"
    empty_list.write_text("# nothing yet\n")
    with pytest.raises(DataError, match=r"list file '.*empty.lst' names no recordings"):
        resolve_recordings(empty_list)

"""EEG windows are cached: the second load never touches MNE's readers, a changed parameter or file
builds again. (The test session points RELPOS_CACHE_DIR at a temporary folder; see conftest.)"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import relpos
from relpos.config import build_dataclass


def eeg(**options):
    cls = relpos.get_modality("eeg")
    return cls(build_dataclass(cls.Config, options, "modality"))


def write_fif(path, seconds=40.0, seed=0):
    import mne

    data = np.random.default_rng(seed).standard_normal((2, int(seconds * 100))) * 20e-6
    raw = mne.io.RawArray(data, mne.create_info(["C3", "C4"], 100.0, "eeg"), verbose="error")
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.save(path, overwrite=True, verbose="error")
    return path


@pytest.fixture
def count_reads(monkeypatch):
    """Count calls to mne.io.read_raw; ``count_reads.forbid()`` makes any further call fail."""
    import mne

    real = mne.io.read_raw
    state = {"n": 0, "forbidden": False}

    def reading(*args, **kwargs):
        if state["forbidden"]:
            raise AssertionError("mne.io.read_raw was called although the windows are cached")
        state["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(mne.io, "read_raw", reading)
    return state


def test_second_load_comes_from_the_cache_without_mne(tmp_path, count_reads, monkeypatch):
    folder = tmp_path / "d"
    write_fif(folder / "a_raw.fif", seed=1)
    write_fif(folder / "b_raw.fif", seed=2)
    first = eeg(stride_s=10, n_jobs=1).load(folder)  # one process, so that its reads are counted here
    assert count_reads["n"] == 2 and first.info["cache"]["hit"] is False
    count_reads["forbidden"] = True
    second = eeg(stride_s=10).load(folder)
    assert second.info["cache"]["hit"] is True
    assert torch.equal(first.x, second.x)
    assert list(second.groups) == list(first.groups) == ["a_raw", "a_raw", "b_raw", "b_raw"]
    assert second.info["files"] == first.info["files"]
    # The patch geometry does not change the windows, so it does not rebuild them.
    assert eeg(stride_s=10, patch_s=2.0, patches_per_window=8).load(folder).info["cache"]["hit"] is True


def test_a_changed_parameter_or_file_builds_again(tmp_path, count_reads):
    path = write_fif(tmp_path / "a_raw.fif")
    base = eeg(stride_s=10).load(path)
    assert count_reads["n"] == 1
    lower = eeg(stride_s=10, h_freq=20.0).load(path)
    assert count_reads["n"] == 2 and lower.info["cache"]["hit"] is False
    assert not torch.equal(base.x, lower.x)
    write_fif(path, seed=5)  # same name, new content (and size/mtime)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    again = eeg(stride_s=10).load(path)
    assert count_reads["n"] == 3 and not torch.equal(base.x, again.x)


def test_cache_false_writes_nothing(tmp_path, count_reads):
    path = write_fif(tmp_path / "a_raw.fif")
    first = eeg(cache=False).load(path)
    second = eeg(cache=False).load(path)
    assert count_reads["n"] == 2
    assert first.info["cache"] == {"hit": False, "path": None}
    assert torch.equal(first.x, second.x)


def test_cached_hit_repeats_the_warnings(tmp_path, capsys):
    folder = tmp_path / "d"
    write_fif(folder / "a_raw.fif")
    write_fif(folder / "short_raw.fif", seconds=10.0)
    eeg().load(folder)
    assert "short_raw.fif" in capsys.readouterr().err
    hit = eeg().load(folder)
    assert hit.info["cache"]["hit"] is True
    assert "short_raw.fif" in capsys.readouterr().err
    assert [s["path"].rsplit("/", 1)[-1] for s in hit.info["skipped"]] == ["short_raw.fif"]

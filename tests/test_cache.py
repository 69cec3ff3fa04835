"""The on-disk window cache: hits skip the build, any change of parameter or file rebuilds, builds
that fail publish nothing, and memory-mapped windows train like in-memory ones."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import relpos
from relpos.cache import WindowWriter, cache_root, cached_windows
from relpos.errors import DataError
from relpos.modality import Windows


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("RELPOS_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def source(tmp_path) -> Path:
    path = tmp_path / "recording.bin"
    path.write_bytes(b"0123456789")
    return path


def windows_of(seed: int, n: int, channels: int = 2, samples: int = 300) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, channels, samples)).astype(np.float32)


class CountingBuild:
    """A build function that appends two recordings (3 + 2 windows) and counts its calls."""

    def __init__(self):
        self.calls = 0
        self.first, self.second = windows_of(0, 3), windows_of(1, 2)

    def __call__(self, writer: WindowWriter) -> None:
        self.calls += 1
        writer.append(self.first, "rec-a", labels=np.array([0, 1, 1]), subjects="subject-1")
        writer.append(self.second, ["rec-b", "rec-b"], labels=np.array([2, 0]))
        writer.class_names = ["W", "N1", "N2"]
        writer.info.update({"sfreq": 100.0, "ch_names": ["C3", "C4"]})


def entries(cache_dir: Path, namespace: str = "test") -> list[Path]:
    folder = cache_dir / "windows" / namespace
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_second_call_reuses_the_entry_without_building(cache_dir, source):
    build = CountingBuild()
    first = cached_windows("test", [source], {"sfreq": 100.0}, build)
    second = cached_windows("test", [source], {"sfreq": 100.0}, build)
    assert build.calls == 1
    assert first.info["cache"]["hit"] is False and second.info["cache"]["hit"] is True
    assert second.info["cache"]["path"] == first.info["cache"]["path"]
    # Everything appended comes back: 3 + 2 = 5 windows of (2, 300), in order.
    expected = np.concatenate([build.first, build.second])
    for windows in (first, second):
        assert windows.x.shape == (5, 2, 300) and windows.x.dtype == torch.float32
        np.testing.assert_array_equal(windows.x.numpy(), expected)
        assert windows.labels.tolist() == [0, 1, 1, 2, 0]
        assert windows.groups.tolist() == ["rec-a"] * 3 + ["rec-b"] * 2
        # subjects default to the groups where none were given
        assert windows.subjects.tolist() == ["subject-1"] * 3 + ["rec-b"] * 2
        assert windows.class_names == ["W", "N1", "N2"]
        assert windows.info["sfreq"] == 100.0 and windows.info["ch_names"] == ["C3", "C4"]
    # Fancy indexing (what the training loop does) works on the memory-mapped tensor.
    picked = second.x[torch.tensor([4, 0])]
    np.testing.assert_array_equal(picked.numpy(), expected[[4, 0]])


def test_entry_lives_under_relpos_cache_dir(cache_dir, source):
    assert cache_root() == cache_dir
    windows = cached_windows("test", [source], {}, CountingBuild())
    [entry] = entries(cache_dir)
    assert Path(windows.info["cache"]["path"]) == entry
    assert len(entry.name) == 64  # a sha256 hex digest
    # 5 windows × 2 channels × 300 samples × 4 bytes = 12000 bytes of raw float32
    assert (entry / "x.f32").stat().st_size == 12000


def test_a_changed_parameter_builds_a_new_entry(cache_dir, source):
    build = CountingBuild()
    cached_windows("test", [source], {"sfreq": 100.0, "l_freq": 0.1}, build)
    cached_windows("test", [source], {"sfreq": 100.0, "l_freq": 0.5}, build)
    cached_windows("other", [source], {"sfreq": 100.0, "l_freq": 0.1}, build)  # another namespace
    assert build.calls == 3
    assert len(entries(cache_dir)) == 2
    cached_windows("test", [source], {"l_freq": 0.1, "sfreq": 100.0}, build)  # key order does not matter
    assert build.calls == 3


def test_a_touched_or_changed_source_rebuilds(cache_dir, source):
    build = CountingBuild()
    cached_windows("test", [source], {}, build)
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # same bytes, newer mtime
    cached_windows("test", [source], {}, build)
    assert build.calls == 2
    source.write_bytes(b"0123456789abc")  # a different size
    cached_windows("test", [source], {}, build)
    assert build.calls == 3
    cached_windows("test", [source], {}, build)
    assert build.calls == 3


def test_a_build_that_raises_publishes_nothing(cache_dir, source):
    def failing(writer):
        writer.append(windows_of(0, 2), "rec-a")
        raise DataError("Recording 'rec-b' is broken.")

    with pytest.raises(DataError, match="rec-b"):
        cached_windows("test", [source], {}, failing)
    assert entries(cache_dir) == []  # no entry and no temporary folder left behind
    build = CountingBuild()
    assert len(cached_windows("test", [source], {}, build)) == 5
    assert build.calls == 1


def test_disabled_cache_builds_in_memory_and_writes_nothing(cache_dir, source):
    build = CountingBuild()
    first = cached_windows("test", [source], {}, build, enabled=False)
    second = cached_windows("test", [source], {}, build, enabled=False)
    assert build.calls == 2
    assert not cache_dir.exists()
    assert first.info["cache"] == {"hit": False, "path": None}
    np.testing.assert_array_equal(second.x.numpy(), np.concatenate([build.first, build.second]))
    assert second.labels.tolist() == [0, 1, 1, 2, 0]
    assert second.groups.tolist() == ["rec-a"] * 3 + ["rec-b"] * 2


def test_windows_of_another_shape_are_a_data_error(cache_dir, source):
    def mixed(writer):
        writer.append(windows_of(0, 2, channels=2), "rec-a")
        writer.append(windows_of(1, 2, channels=3), "rec-b")

    with pytest.raises(DataError, match=r"'rec-b' have shape \(3, 300\).*earlier windows have \(2, 300\)"):
        cached_windows("test", [source], {}, mixed)
    with pytest.raises(DataError, match="rec-b"):
        cached_windows("test", [source], {}, mixed, enabled=False)
    assert entries(cache_dir) == []


def test_labels_for_some_recordings_only_are_a_data_error(cache_dir, source):
    def half_labelled(writer):
        writer.append(windows_of(0, 2), "rec-a", labels=np.array([0, 1]))
        writer.append(windows_of(1, 2), "rec-b")

    with pytest.raises(DataError, match="'rec-b' have no labels"):
        cached_windows("test", [source], {}, half_labelled)


@pytest.mark.parametrize("damage", ["truncate", "no-meta"])
def test_a_damaged_entry_is_rebuilt(cache_dir, source, damage):
    build = CountingBuild()
    windows = cached_windows("test", [source], {}, build)
    entry = Path(windows.info["cache"]["path"])
    del windows
    if damage == "truncate":
        with open(entry / "x.f32", "r+b") as fh:
            fh.truncate(100)
    else:
        (entry / "meta.json").unlink()
    again = cached_windows("test", [source], {}, build)
    assert build.calls == 2 and again.info["cache"]["hit"] is False
    np.testing.assert_array_equal(again.x.numpy(), np.concatenate([build.first, build.second]))
    assert cached_windows("test", [source], {}, build).info["cache"]["hit"] is True


def test_warnings_given_by_build_are_repeated_on_a_hit(cache_dir, source, capsys):
    def build(writer):
        writer.append(windows_of(0, 1), "rec-a")
        writer.warn("Skipping 'rec-b': it lasts 12.0 s, shorter than one window (30.0 s).")

    cached_windows("test", [source], {}, build)
    assert capsys.readouterr().err.count("relpos: warning: Skipping 'rec-b'") == 1
    cached_windows("test", [source], {}, build)
    assert capsys.readouterr().err.count("relpos: warning: Skipping 'rec-b'") == 1


def test_a_lost_race_uses_the_winners_entry(cache_dir, source):
    """Two processes build the same entry at once: the one that publishes second keeps the first's."""
    builds = []

    def build(writer):
        builds.append(1)
        if len(builds) == 1:  # while this build runs, "another process" publishes the same key
            cached_windows("test", [source], {}, lambda w: w.append(windows_of(7, 4), "winner"))
        writer.append(windows_of(0, 2), "loser")

    windows = cached_windows("test", [source], {}, build)
    assert windows.groups.tolist() == ["winner"] * 4
    assert windows.info["cache"]["hit"] is True
    assert len(entries(cache_dir)) == 1  # the loser's temporary folder is gone


def test_a_missing_source_is_a_data_error(cache_dir, tmp_path):
    with pytest.raises(DataError, match="gone.edf"):
        cached_windows("test", [tmp_path / "gone.edf"], {}, CountingBuild())


def test_windows_subjects_default_to_a_copy_of_groups():
    windows = Windows(x=torch.zeros(2, 1, 4), groups=np.array(["a", "b"]))
    assert windows.subjects.tolist() == ["a", "b"]
    windows.subjects[0] = "s1"
    assert windows.groups.tolist() == ["a", "b"]


def test_memory_mapped_windows_train(cache_dir, source, tmp_path, tiny, one_thread):
    # eeg at 100 Hz with 3-s windows and 1-s patches: windows of 300 samples, patches of 100.
    windows = cached_windows("test", [source], {}, CountingBuild())
    windows = cached_windows("test", [source], {}, CountingBuild())
    assert windows.info["cache"]["hit"] is True
    config = relpos.resolve_config(
        modality="eeg",
        pretext="part",
        overrides=[*tiny, "modality.window_s=3", "modality.patch_s=1", "modality.patches_per_window=3",
                   "train.steps=2", "train.progress=false", "train.tensorboard=false"],
    )
    config.out = str(tmp_path / "run")
    result = relpos.train(config, data=windows)
    assert result.step == 2 and np.isfinite(result.loss)


class FilledBuild:
    """Two recordings appended with ``append_filled``: window i of a recording is ``seed + i`` everywhere."""

    def __init__(self, counts=(5, 3), shape=(2, 300)):
        self.counts, self.shape, self.calls = counts, shape, []

    def __call__(self, writer: WindowWriter) -> None:
        for r, n in enumerate(self.counts):
            def fill(out, first, seed=100 * r):
                self.calls.append((len(out), first))
                out[:] = (seed + first + np.arange(len(out), dtype=np.float32))[:, None, None]

            writer.append_filled(n, self.shape, fill, f"rec-{r}", labels=np.arange(n), subjects=f"s{r}")

    def expected(self) -> np.ndarray:
        values = np.concatenate([100 * r + np.arange(n) for r, n in enumerate(self.counts)]).astype(np.float32)
        return np.broadcast_to(values[:, None, None], (len(values), *self.shape))


@pytest.mark.parametrize("enabled", [True, False])
def test_append_filled_writes_the_windows_chunk_by_chunk(cache_dir, source, monkeypatch, enabled):
    # 2 × 300 float32 = 2,400 bytes a window; a 5,000-byte chunk holds 2 of them.
    monkeypatch.setattr("relpos.cache.FILL_CHUNK_BYTES", 5000)
    build = FilledBuild()
    windows = cached_windows("test", [source], {}, build, enabled=enabled)
    np.testing.assert_array_equal(windows.x.numpy(), build.expected())
    assert windows.groups.tolist() == ["rec-0"] * 5 + ["rec-1"] * 3
    assert windows.subjects.tolist() == ["s0"] * 5 + ["s1"] * 3
    assert windows.labels.tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    if enabled:  # 5 windows in chunks of 2, 2, 1; then 3 in 2, 1
        assert build.calls == [(2, 0), (2, 2), (1, 4), (2, 0), (1, 2)]
        assert cached_windows("test", [source], {}, build).info["cache"]["hit"] is True
    else:  # in memory: one call per recording, straight into the output
        assert build.calls == [(5, 0), (3, 0)]


def test_append_filled_checks_shapes_like_append(cache_dir, source):
    def mixed(writer):
        writer.append(windows_of(0, 2, channels=2), "rec-a")
        writer.append_filled(2, (3, 300), lambda out, first: out.fill(0), "rec-b")

    with pytest.raises(DataError, match=r"'rec-b' have shape \(3, 300\).*earlier windows have \(2, 300\)"):
        cached_windows("test", [source], {}, mixed)
    assert entries(cache_dir) == []


def test_the_entry_is_flushed_to_disk_before_it_is_published(cache_dir, source, monkeypatch):
    synced = []
    monkeypatch.setattr("relpos.cache._datasync", lambda fd: synced.append(os.fstat(fd).st_size))
    import types

    import relpos.cache

    # Only the cache module's os.fsync is watched (other threads of the test process, such as a
    # TensorBoard writer left by an earlier test, may call os.fsync at any time).
    watched = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
    watched.fsync = lambda fd: synced.append(("fsync", os.fstat(fd).st_size)) or os.fsync(fd)
    monkeypatch.setattr(relpos.cache, "os", watched)
    build = FilledBuild(counts=(4, 4))
    windows = cached_windows("test", [source], {}, build)
    size = 8 * 2 * 300 * 4
    # A background flush starts after the first recording (4 windows = half the entry). The flush
    # thread may see the file after the second recording is written too, so its size is between half
    # and all of the entry. The last sync, before publication, covers everything.
    assert isinstance(synced[0], int) and size // 2 <= synced[0] <= size
    assert synced[-1] == ("fsync", size)
    assert len(windows) == 8

"""Large cache entries are memory-mapped (bounded memory); small ones are read into memory, and the
first pass returns the small ones it wrote without reading them back."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from relpos.cache import cached_windows


def _build(writer):
    # 3 windows of 2 channels × 50 samples: 3 · 2 · 50 · 4 bytes = 1,200 bytes.
    writer.append(np.arange(300, dtype=np.float32).reshape(3, 2, 50), groups=["rec"] * 3)


def _mapped(path: Path) -> bool:
    return str(path) in Path("/proc/self/maps").read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_entry_above_the_threshold_is_memory_mapped_and_below_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("RELPOS_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "source.bin"
    source.write_bytes(b"x")
    cached_windows("mmaptest", [source], {"a": 1}, _build)  # builds the entry

    monkeypatch.setenv("RELPOS_CACHE_MMAP_MIN_BYTES", "0")  # every entry is mapped
    mapped = cached_windows("mmaptest", [source], {"a": 1}, _build)
    entry = Path(mapped.info["cache"]["path"]) / "x.f32"
    assert mapped.info["cache"]["hit"] and _mapped(entry)
    assert mapped.x[2, 1, 49].item() == 299.0

    monkeypatch.setenv("RELPOS_CACHE_MMAP_MIN_BYTES", "1201")  # 1,200 bytes < threshold: read
    del mapped
    import gc

    gc.collect()
    read = cached_windows("mmaptest", [source], {"a": 1}, _build)
    assert read.info["cache"]["hit"] and not _mapped(entry)
    assert read.x[2, 1, 49].item() == 299.0


class _Reused:
    """Appends two recordings from one buffer it overwrites in between (as a build may)."""

    def __call__(self, writer):
        buffer = np.zeros((2, 2, 50), dtype=np.float32)
        for value in (1.0, 2.0):
            buffer[:] = value
            writer.append(buffer, groups="rec")


@pytest.mark.parametrize("threshold, mapped", [("1601", False), ("1600", True)])
def test_the_first_pass_returns_the_windows_it_wrote_without_reading_them_back(tmp_path, monkeypatch, threshold, mapped):
    # 4 windows of 2 × 50 float32: 1,600 bytes. Under the threshold a hit would read the entry into
    # memory, so the first pass keeps what it wrote; at or above it, the entry is memory-mapped.
    import relpos.cache

    monkeypatch.setenv("RELPOS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RELPOS_CACHE_MMAP_MIN_BYTES", threshold)
    source = tmp_path / "source.bin"
    source.write_bytes(b"x")
    reads = []
    read_float32 = relpos.cache._read_float32
    monkeypatch.setattr(relpos.cache, "_read_float32", lambda path: reads.append(path) or read_float32(path))
    first = cached_windows("keeptest", [source], {}, _Reused())
    expected = np.repeat([1.0, 2.0], 2)[:, None, None] * np.ones((4, 2, 50), dtype=np.float32)
    np.testing.assert_array_equal(first.x.numpy(), expected)  # not the buffer's last values twice
    entry = Path(first.info["cache"]["path"]) / "x.f32"
    assert reads == [] and _mapped(entry) == mapped
    np.testing.assert_array_equal(np.fromfile(entry, dtype=np.float32).reshape(4, 2, 50), expected)
    monkeypatch.setenv("RELPOS_CACHE_MMAP_MIN_BYTES", "1601")
    again = cached_windows("keeptest", [source], {}, _Reused())
    assert again.info["cache"]["hit"] and len(reads) == 1  # a hit reads the file
    np.testing.assert_array_equal(again.x.numpy(), expected)

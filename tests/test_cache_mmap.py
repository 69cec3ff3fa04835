"""Large cache entries are memory-mapped (bounded memory); small ones are read into memory."""

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

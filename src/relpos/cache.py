"""An on-disk cache of preprocessed windows, memory-mapped on the way back.

A modality that spends time turning files into windows (reading, filtering, resampling) wraps that
work in :func:`cached_windows`. The first call runs ``build``, which appends windows to a
:class:`WindowWriter` one recording at a time (so memory stays bounded by one recording, whatever
the size of the data set); the writer streams them into a raw float32 file (flushing it to disk in
the background while the build goes on), and the finished folder is published atomically once the
file is on disk. Every later call with the same sources and parameters skips ``build``
entirely and memory-maps that file (entries under ``$RELPOS_CACHE_MMAP_MIN_BYTES``, default 1 GiB, are
read into memory instead), so opening a data set larger than RAM costs almost nothing.

The key covers the namespace, the cache format, every parameter and, for each source file, its
resolved path, size and modification time: changing any of them builds a new entry. Entries live in
``$RELPOS_CACHE_DIR/windows/<namespace>/<key>/`` (default ``~/.cache/relpos``); deleting that folder
is always safe.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError, warn
from .modality import Windows

#: Bumped whenever the layout of an entry changes, so old entries are never misread
#: (2: the windows' onsets and durations in their recordings, ``onsets.npy``/``durations.npy``).
CACHE_FORMAT = 2
X_FILE = "x.f32"
#: Size of the buffer :meth:`WindowWriter.append_filled` fills and writes, chunk by chunk.
FILL_CHUNK_BYTES = 4 * 2**20
META_FILE = "meta.json"
#: Temporary folders older than this (left by a killed process) are removed on the next build.
STALE_TMP_S = 24 * 3600.0
_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync
_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def cache_root() -> Path:
    """The cache folder: ``$RELPOS_CACHE_DIR`` when set, else ``~/.cache/relpos``."""
    env = os.environ.get("RELPOS_CACHE_DIR", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "relpos"


def mmap_min_bytes() -> int:
    """Cache entries at least this large are memory-mapped; smaller ones are read into memory.

    ``$RELPOS_CACHE_MMAP_MIN_BYTES`` (default 1 GiB); 0 memory-maps every entry. A value that is
    not a whole number of bytes >= 0 raises :class:`~relpos.errors.ConfigError` naming the variable.
    """
    text = os.environ.get("RELPOS_CACHE_MMAP_MIN_BYTES", "").strip()
    if not text:
        return 2**30
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        from .errors import ConfigError

        raise ConfigError(
            f"The environment variable RELPOS_CACHE_MMAP_MIN_BYTES is {text!r}, expected a whole number of "
            f"bytes >= 0 (cache entries at least this large are memory-mapped; 0 maps every entry, unset "
            f"means 1 GiB)."
        )
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


def _source_fingerprint(path: str | os.PathLike) -> list[Any]:
    resolved = Path(path).expanduser().resolve()
    try:
        stat = resolved.stat()
    except OSError:
        raise DataError(f"Source file {str(path)!r} does not exist or cannot be read.") from None
    return [str(resolved), int(stat.st_size), int(stat.st_mtime_ns)]


def cache_key(namespace: str, sources: Sequence[str | os.PathLike], params: Mapping[str, Any]) -> str:
    """The sha256 key of an entry: namespace, format, parameters, and path/size/mtime of each source."""
    payload = json.dumps(
        {
            "namespace": namespace,
            "format": CACHE_FORMAT,
            "params": dict(params),
            "sources": [_source_fingerprint(s) for s in sources],
        },
        sort_keys=True,
        default=_json_default,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class WindowWriter:
    """Collects the windows a ``build`` function makes, streaming them to disk.

    Attributes
    ----------
    count : int
        Windows appended so far.
    class_names : list of str
        Names of the label indices; ``build`` sets it.
    info : dict
        Facts about the data (JSON-serialisable: sampling rate, channel names, skipped files...);
        ``build`` updates it. It comes back, through JSON, in ``Windows.info`` on every later hit.
    warnings : list of str
        Messages given with :meth:`warn`; they are repeated on every cache hit.
    """

    def __init__(self, folder: Path | None = None):
        self.folder = folder
        self.count = 0
        self.class_names: list[str] = []
        self.info: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.shape: tuple[int, ...] | None = None  # (C, *extent), fixed by the first append
        self._has_labels: bool | None = None
        self._groups: list[str] = []
        self._subjects: list[str] = []
        self._labels: list[np.ndarray] = []
        self._has_times: bool | None = None
        self._onsets: list[np.ndarray] = []
        self._durations: list[np.ndarray] = []
        self._chunks: list[np.ndarray] = []  # only without a folder (cache disabled)
        self._fh = open(folder / X_FILE, "wb") if folder is not None else None
        self._pool = None  # one thread that flushes the file to disk while the build goes on
        self._sync = None

    def append(
        self,
        x: np.ndarray,
        groups: Sequence[str],
        labels: np.ndarray | None = None,
        subjects: Sequence[str] | None = None,
        onsets: np.ndarray | None = None,
        durations: np.ndarray | float | None = None,
    ) -> None:
        """Append windows.

        Parameters
        ----------
        x : numpy.ndarray
            ``(n, C, *extent)`` windows (converted to float32). Channels and extent are fixed by the
            first call; a later mismatch is a :class:`~relpos.errors.DataError`.
        groups : sequence of str
            ``n`` recording ids (a single string is repeated for every window).
        labels : numpy.ndarray, optional
            ``n`` integer class indices. Either every call passes labels or none does.
        subjects : sequence of str, optional
            ``n`` subject ids (a single string is repeated); default: the groups.
        onsets : numpy.ndarray, optional
            ``n`` start times of the windows in their recording (seconds for a signal; see
            :attr:`relpos.Windows.onsets`). Either every call passes onsets or none does.
        durations : numpy.ndarray or float, optional
            ``n`` window lengths in the unit of ``onsets`` (a single number is repeated); required
            with ``onsets``.
        """
        x = np.asarray(x)
        if x.ndim < 3:
            raise ValueError(f"WindowWriter.append() takes windows of shape (n, C, *extent), got {x.shape}.")
        n = int(x.shape[0])
        if not self._accept(n, x.shape[1:], groups, labels, subjects, onsets, durations):
            return
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self._fh is not None:
            x.tofile(self._fh)
            self._start_sync()
        else:
            self._chunks.append(x)

    def append_filled(
        self,
        n: int,
        shape: Sequence[int],
        fill: Callable[[np.ndarray, int], None],
        groups: Sequence[str],
        labels: np.ndarray | None = None,
        subjects: Sequence[str] | None = None,
        onsets: np.ndarray | None = None,
        durations: np.ndarray | float | None = None,
    ) -> None:
        """Append ``n`` windows that ``fill`` writes straight into the writer's float32 buffer.

        Like :meth:`append`, without an ``(n, C, *extent)`` array of all the windows: the writer
        calls ``fill(out, first)`` with ``out`` a float32 ``(k, *shape)`` buffer to fill with
        windows ``first, ..., first + k - 1`` (the whole output array when the cache is disabled,
        else a small reused chunk that goes to the file after each call).
        """
        n = int(n)
        shape = tuple(int(s) for s in shape)
        if not self._accept(n, shape, groups, labels, subjects, onsets, durations):
            return
        if self._fh is None:
            out = np.empty((n, *shape), dtype=np.float32)
            fill(out, 0)
            self._chunks.append(out)
            return
        per_window = int(np.prod(shape, dtype=np.int64)) * 4
        k = max(1, min(n, FILL_CHUNK_BYTES // max(per_window, 1)))
        buffer = np.empty((k, *shape), dtype=np.float32)
        for first in range(0, n, k):
            out = buffer[: min(k, n - first)]
            fill(out, first)
            self._fh.write(memoryview(out).cast("B"))
            # The disk takes the chunks written so far while the next ones are filled (a no-op while
            # a flush runs): the wait before publishing a 381-MB entry went from 0.13-0.15 s to ~0.
            self._start_sync()

    def _accept(self, n, shape, groups, labels, subjects, onsets=None, durations=None) -> bool:
        """Check and record everything about ``n`` windows but their values; False when n is 0."""
        groups = _per_window(groups, n, "groups")
        subjects = groups if subjects is None else _per_window(subjects, n, "subjects")
        where = repr(groups[0]) if groups else "(no windows)"
        if self.shape is None:
            self.shape = tuple(int(s) for s in shape)
        elif tuple(shape) != self.shape:
            raise DataError(
                f"Windows from {where} have shape {_shape_text(shape)} (channels, samples) but earlier "
                f"windows have {_shape_text(self.shape)}; every recording must give the same channels and "
                f"window length."
            )
        has_labels = labels is not None
        if self._has_labels is None:
            self._has_labels = has_labels
        elif has_labels != self._has_labels:
            raise DataError(
                f"Windows from {where} {'have' if has_labels else 'have no'} labels but earlier windows "
                f"{'have none' if has_labels else 'have labels'}; label every recording or none."
            )
        if has_labels:
            labels = np.asarray(labels).reshape(-1)
            if len(labels) != n:
                raise ValueError(f"WindowWriter.append() got {n} windows but {len(labels)} labels.")
            self._labels.append(labels.astype(np.int64))
        self._accept_times(n, where, onsets, durations)
        if n == 0:
            return False
        self._groups.extend(groups)
        self._subjects.extend(subjects)
        self.count += n
        return True

    def _accept_times(self, n: int, where: str, onsets, durations) -> None:
        has_times = onsets is not None
        if (durations is not None) != has_times:
            raise ValueError("WindowWriter.append() takes onsets and durations together, or neither.")
        if self._has_times is None:
            self._has_times = has_times
        elif has_times != self._has_times:
            raise DataError(
                f"Windows from {where} {'have' if has_times else 'have no'} onsets in their recording but "
                f"earlier windows {'have none' if has_times else 'have them'}; give every recording's onsets or none."
            )
        if not has_times:
            return
        onsets = np.asarray(onsets, dtype=np.float64).reshape(-1)
        durations = np.asarray(durations, dtype=np.float64).reshape(-1)
        if durations.size == 1:
            durations = np.full(n, durations[0])  # one length for every window
        if len(onsets) != n or len(durations) != n:
            raise ValueError(
                f"WindowWriter.append() got {n} windows but {len(onsets)} onsets and {len(durations)} durations."
            )
        self._onsets.append(onsets)
        self._durations.append(durations)

    def _times_arrays(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        if not self._has_times:
            return None, None
        if not self._onsets:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(self._onsets), np.concatenate(self._durations)

    def _start_sync(self) -> None:
        """Start flushing what is written so far to disk in the background (if no flush is running).

        The entry must be on disk before it is published (:meth:`finish` waits for that); flushing
        each recording's windows while the next one is being prepared keeps that wait short. The
        thread only waits on the kernel's disk writes.
        """
        if self._sync is not None and not self._sync.done():
            return
        if self._sync is not None:
            self._sync.result()  # an I/O error surfaces here, not at publication
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relpos-cache-sync")
        self._fh.flush()
        self._sync = self._pool.submit(_datasync, self._fh.fileno())

    def _join_sync(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        sync, self._sync = self._sync, None
        if sync is not None:
            sync.result()

    def warn(self, message: str) -> None:
        """Warn the user now (``relpos: warning: ...``) and again whenever this entry is reused."""
        self.warnings.append(message)
        warn(message)

    # -- finishing ------------------------------------------------------------------------------
    def _labels_array(self) -> np.ndarray | None:
        if not self._has_labels:
            return None
        return np.concatenate(self._labels) if self._labels else np.zeros(0, dtype=np.int64)

    def _full_shape(self) -> list[int]:
        return [self.count, *(self.shape if self.shape is not None else ())]

    def close(self) -> None:
        if self._fh is not None and not self._fh.closed:
            try:
                self._join_sync()
            except OSError:
                pass  # closing after a failed build: the entry is discarded anyway
            self._fh.close()

    def finish(self) -> None:
        """Flush the raw file and write the small files beside it (``meta.json`` last)."""
        assert self.folder is not None
        self._join_sync()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.close()
        np.save(self.folder / "groups.npy", np.array(self._groups, dtype=str))
        np.save(self.folder / "subjects.npy", np.array(self._subjects, dtype=str))
        labels = self._labels_array()
        if labels is not None:
            np.save(self.folder / "labels.npy", labels)
        onsets, durations = self._times_arrays()
        if onsets is not None:
            np.save(self.folder / "onsets.npy", onsets)
            np.save(self.folder / "durations.npy", durations)
        meta = {
            "format": CACHE_FORMAT,
            "shape": self._full_shape(),
            "dtype": "float32",
            "has_labels": labels is not None,
            "has_onsets": onsets is not None,
            "class_names": list(self.class_names),
            "info": self.info,
            "warnings": self.warnings,
        }
        (self.folder / META_FILE).write_text(json.dumps(meta, indent=1, default=_json_default))

    def to_windows(self) -> Windows:
        """The windows held in memory (cache disabled)."""
        if self._chunks:
            x = torch.from_numpy(np.concatenate(self._chunks))
        else:
            x = torch.zeros(tuple(self._full_shape()), dtype=torch.float32)
        labels = self._labels_array()
        onsets, durations = self._times_arrays()
        info = json.loads(json.dumps(self.info, default=_json_default))
        return Windows(
            x=x,
            labels=None if labels is None else torch.from_numpy(labels),
            groups=np.array(self._groups, dtype=str),
            subjects=np.array(self._subjects, dtype=str),
            class_names=list(self.class_names),
            info=info,
            onsets=onsets,
            durations=durations,
        )


def _per_window(values: Sequence[str] | str, n: int, what: str) -> list[str]:
    if isinstance(values, (str, os.PathLike)):
        return [str(values)] * n
    values = [str(v) for v in values]
    if len(values) != n:
        raise ValueError(f"WindowWriter.append() got {n} windows but {len(values)} {what}.")
    return values


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _read_float32(path: Path) -> np.ndarray:
    """The float32 values of ``path``, read into memory.

    Where the platform allows it, the memory is an anonymous mapping advised to use huge pages:
    filling 4-KiB pages one fault at a time is most of the cost of reading a cached file that
    already sits in the page cache (measured: 176 MiB in 40 ms instead of 91 ms).
    """
    size = path.stat().st_size
    if size == 0 or not hasattr(mmap, "MADV_HUGEPAGE") or not hasattr(mmap, "MAP_ANONYMOUS"):
        return np.fromfile(path, dtype=np.float32)
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        buffer.madvise(mmap.MADV_HUGEPAGE)
    except OSError:
        pass  # huge pages switched off: ordinary pages, still correct
    with open(path, "rb", buffering=0) as fh:
        view = memoryview(buffer)
        done = 0
        while done < size:
            got = fh.readinto(view[done:])
            if not got:
                raise ValueError(f"{path} ended after {done} of {size} bytes")
            done += got
        view.release()
    return np.frombuffer(buffer, dtype=np.float32)


def load_entry(folder: Path, replay_warnings: bool = True) -> Windows | None:
    """Open a published entry, memory-mapped; None when it is missing, partial or corrupt.

    ``replay_warnings`` repeats the warnings ``build`` gave when the entry was made.
    """
    try:
        meta = json.loads((folder / META_FILE).read_text())
        if meta.get("format") != CACHE_FORMAT or meta.get("dtype") != "float32":
            return None
        shape = tuple(int(s) for s in meta["shape"])
        n = shape[0]
        x_path = folder / X_FILE
        if x_path.stat().st_size != int(np.prod(shape, dtype=np.int64)) * 4:
            return None
        groups = np.load(folder / "groups.npy", allow_pickle=False)
        subjects = np.load(folder / "subjects.npy", allow_pickle=False)
        labels = np.load(folder / "labels.npy", allow_pickle=False) if meta["has_labels"] else None
        onsets = durations = None
        if meta.get("has_onsets"):
            onsets = np.load(folder / "onsets.npy", allow_pickle=False).astype(np.float64)
            durations = np.load(folder / "durations.npy", allow_pickle=False).astype(np.float64)
            if len(onsets) != n or len(durations) != n:
                return None
        if len(groups) != n or len(subjects) != n or (labels is not None and len(labels) != n):
            return None
        if n == 0 or len(shape) < 3:
            x = torch.zeros(shape, dtype=torch.float32)
        elif x_path.stat().st_size < mmap_min_bytes():
            # Small entries are read into memory: training reads random batches every step, and
            # from a memory map that was measured 25 % slower (35 vs 46 windows/s, bundled EEG).
            x = torch.from_numpy(_read_float32(x_path).reshape(shape))
        else:
            # Copy-on-write: torch wants a writable buffer; nothing is ever written back to the file.
            x = torch.from_numpy(np.memmap(x_path, dtype=np.float32, mode="c", shape=shape))
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None
    info = dict(meta.get("info") or {})
    for message in (meta.get("warnings") or []) if replay_warnings else []:
        warn(message)
    return Windows(
        x=x,
        labels=None if labels is None else torch.from_numpy(labels.astype(np.int64)),
        groups=groups,
        subjects=subjects,
        class_names=list(meta.get("class_names") or []),
        info=info,
        onsets=onsets,
        durations=durations,
    )


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _discard(folder: Path) -> None:
    """Move a corrupt entry out of the way first, so a reader never sees half of it deleted."""
    trash = folder.parent / f".trash-{folder.name}-{uuid.uuid4().hex[:8]}"
    try:
        os.replace(folder, trash)
    except OSError:
        return
    _remove(trash)


def _remove_stale_tmp(parent: Path) -> None:
    now = time.time()
    for tmp in parent.glob(".tmp-*"):
        try:
            if now - tmp.stat().st_mtime > STALE_TMP_S:
                _remove(tmp)
        except OSError:
            pass


def cached_windows(
    namespace: str,
    sources: Sequence[str | os.PathLike],
    params: Mapping[str, Any],
    build: Callable[[WindowWriter], None],
    enabled: bool = True,
) -> Windows:
    """Windows from the cache, or built once by ``build`` and cached.

    Parameters
    ----------
    namespace : str
        Who builds the windows (the modality name); entries of different namespaces never mix.
    sources : sequence of path
        The files the windows are made from; the key covers each one's path, size and mtime.
    params : mapping
        Every parameter that changes the result (JSON-serialisable; other values go through ``str``).
    build : callable
        ``build(writer)`` appends the windows to ``writer`` (:class:`WindowWriter`) and may set
        ``writer.class_names``, update ``writer.info`` and call ``writer.warn(message)``. It is not
        called on a hit. If it raises, nothing is published and the exception propagates.
    enabled : bool
        False builds in memory and writes nothing.

    Returns
    -------
    Windows
        ``x`` is memory-mapped from the cache file (in memory when ``enabled`` is False);
        ``info["cache"]`` says ``{"hit": bool, "path": str or None}``.
    """
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"Invalid cache namespace {namespace!r}: use letters, digits, '_', '.' or '-'.")
    if not enabled:
        writer = WindowWriter(None)
        build(writer)
        windows = writer.to_windows()
        windows.info["cache"] = {"hit": False, "path": None}
        return windows

    mmap_min_bytes()  # a bad $RELPOS_CACHE_MMAP_MIN_BYTES is said before any data is read
    key = cache_key(namespace, sources, params)
    final = cache_root() / "windows" / namespace / key
    if final.exists():
        windows = load_entry(final)
        if windows is not None:
            windows.info["cache"] = {"hit": True, "path": str(final)}
            return windows
        _discard(final)

    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"Cannot create the cache folder {str(parent)!r}: {exc.strerror or exc}; set RELPOS_CACHE_DIR "
            f"to a writable folder."
        ) from None
    _remove_stale_tmp(parent)
    tmp = parent / f".tmp-{key[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    writer = WindowWriter(tmp)
    try:
        build(writer)
        writer.finish()
    except BaseException:
        writer.close()
        _remove(tmp)
        raise
    try:
        os.replace(tmp, final)
    except OSError:
        # Another process published the same entry first: use theirs.
        _remove(tmp)
        windows = load_entry(final)
        if windows is None:
            raise DataError(f"The cache entry {str(final)!r} could not be written or read back.") from None
        windows.info["cache"] = {"hit": True, "path": str(final)}
        return windows
    windows = load_entry(final, replay_warnings=False)  # build just gave them
    if windows is None:
        raise DataError(f"The cache entry {str(final)!r} could not be read back after writing it.")
    windows.info["cache"] = {"hit": False, "path": str(final)}
    return windows

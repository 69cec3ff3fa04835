"""The first pass over several recordings on several cores (``modality.n_jobs``).

Each recording's heavy work (reading its samples, the channel checks, filtering, resampling, the
window statistics) runs ahead in a worker process, on a private copy of the build's state as the
recording would find it if every recording before it went as expected: the first recording's
channels as the reference, no new dead channel. The main process then goes through the recordings
in their order, as with one job. Where the state a worker assumed is the state the build has
reached, it takes the worker's result: its warnings, its share of the summary, and its windows,
which it normalises into the cache as with one job. Otherwise (a new dead channel, a skipped first
recording), or where the worker failed, it builds that recording itself. The windows, warnings and
errors are therefore those of ``n_jobs: 1``, bit for bit and sentence for sentence.

What comes back through the pipe is the smaller of the recording's preprocessed samples (float64,
normalised into windows by the main process) and its windows already normalised by the worker
(float32; smaller where the stride is at least half a window): on the benchmark's 12 files with
30-s windows every 30 s, 15 MB a file instead of 31 MB, and no normalising left to the main process.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .reading import Item


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def jobs_for(n_jobs: int, n_recordings: int) -> int:
    """Worker processes for ``n_recordings`` (``n_jobs`` -1: one per core); 1: no worker."""
    wanted = cores() if n_jobs == -1 else n_jobs
    return max(1, min(wanted, n_recordings))


@dataclass
class Assumed:
    """The part of the build's state a worker's result depends on."""

    reference_names: list[str] | None
    reference_where: str
    dead: list[str]
    dead_mostly: set[str]
    has_files: bool

    @classmethod
    def of(cls, state) -> "Assumed":
        return cls(
            None if state.reference_names is None else list(state.reference_names), state.reference_where,
            list(state.dead), set(state.dead_mostly), bool(state.files),
        )


@dataclass
class Prepared:
    """What building one recording on a private state gave: to be replayed on the real one."""

    assumed: Assumed
    truncated: str
    messages: list[str]  # through RecordingsBuild._warn, in order
    state: Any  # the private BuildState after the recording
    appended: tuple | None  # (n, shape, RecordingWindows or _Normalised, keyword arguments) of writer.append_filled


class _Normalised:
    """A recording's windows normalised in the worker (what ``RecordingWindows.fill`` writes),
    sent back instead of its samples where they are smaller."""

    def __init__(self, windows, n: int, shape: tuple) -> None:
        self.labels = windows.labels
        self.x = np.empty((n, *shape), dtype=np.float32)
        windows.fill(self.x, 0)  # each window's numbers do not depend on which others share a call

    def fill(self, out: np.ndarray, first: int = 0) -> None:
        out[...] = self.x[first : first + len(out)]


class _Recorder:
    """Stands in for the cache writer in a worker: keeps what the recording would have written."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.appended: tuple | None = None

    def warn(self, message: str) -> None:  # not reached: the worker's _warn records instead
        self.warnings.append(message)

    def append_filled(self, n, shape, fill, **kwargs) -> None:
        windows = fill.__self__
        if n * int(np.prod(shape)) * 4 < windows.data.nbytes:
            windows = _Normalised(windows, n, tuple(shape))
        self.appended = (n, tuple(shape), windows, kwargs)


def _prepare(build, item: Item, first: Item | None, common, dead, mostly) -> Prepared | None:
    """Build ``item`` on a private state, assuming the recording ``first`` (None: ``item`` is the
    first) was written before it with the same reference channels; None where that fails."""
    from .build import BuildState
    from .pipeline import LabelRule, select_channels

    messages: list[str] = []
    build._warn = lambda writer, message: messages.append(message)
    state = BuildState(dead=list(dead), dead_mostly=set(mostly))
    try:
        if first is not None:
            raw = build._read_header(first, False, _Recorder(), BuildState(dead=[]))
            if raw is None:
                return None
            state.reference_names = list(common) if common is not None else select_channels(
                list(raw.ch_names), build.config.channels, first.where
            )
            state.reference_where = first.where
            state.files.append({})  # stands for the recordings written before this one
        assumed = Assumed.of(state)
        written = len(state.files)
        recorder = _Recorder()
        rule = LabelRule(build.config.labels, build.config.label_map)
        build._build_one(recorder, item, rule, False, common, state, {})
    except Exception:  # noqa: BLE001 - the main process builds this recording itself, and says why
        return None
    state.files = state.files[written:]
    return Prepared(assumed, item.truncated, messages, state, recorder.appended)


def progress(items: list[Item]):
    """``items`` with a progress bar on a terminal (one step per recording, its name beside it)."""
    from tqdm.auto import tqdm

    bar = tqdm(items, desc="eeg windows", unit="file", leave=False, disable=None)
    for item in bar:
        bar.set_postfix_str(item.recording_id, refresh=False)
        yield item


def replay(build, writer, item: Item, state, index: dict[str, int], prepared: Prepared) -> bool:
    """Apply a worker's result for ``item`` to the build's ``state`` and ``writer``, as
    ``_build_one`` would have; False (nothing applied) where the worker assumed another state."""
    if prepared is None or prepared.assumed != Assumed.of(state):
        return False
    done = prepared.state
    item.truncated = prepared.truncated
    for message in prepared.messages:
        build._warn(writer, message)
    state.retyped.update(done.retyped)
    if state.reference_names is None:
        state.reference_names, state.reference_where = done.reference_names, done.reference_where
    for name, recordings in done.dead_where.items():
        state.dead_where.setdefault(name, []).extend(recordings)
    state.dead_mostly.update(done.dead_mostly)
    state.dead += done.dead[len(state.dead):]
    state.skipped += done.skipped
    state.descriptions.update(done.descriptions)
    state.dropped.update(done.dropped)
    state.unlabelled.update(done.unlabelled)
    if prepared.appended is not None:
        n, shape, windows, kwargs = prepared.appended
        if windows.labels is not None:  # class indices in this build's order of first appearance
            for label in windows.labels:
                if label not in index:
                    index[label] = len(state.classes)
                    state.classes.append(label)
            kwargs = {**kwargs, "labels": np.array([index[lab] for lab in windows.labels], dtype=np.int64)}
        writer.append_filled(n, shape, windows.fill, **kwargs)
    state.files += done.files
    return True


class Prefetch:
    """Workers building the recordings ahead of the main process, at most ``2 × jobs`` in flight."""

    def __init__(self, build, items: list[Item], common, dead, mostly, jobs: int):
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context)
        self.build, self.items, self.common, self.dead, self.mostly = build, items, common, dead, mostly
        self.ahead = 2 * jobs
        self.futures: deque[Future] = deque()
        self.next = 0

    def _submit(self) -> None:
        while self.next < len(self.items) and len(self.futures) < self.ahead:
            first = self.items[0] if self.next > 0 else None
            self.futures.append(self.pool.submit(
                _prepare, self.build, self.items[self.next], first, self.common, self.dead, self.mostly
            ))
            self.next += 1

    def take(self) -> Prepared | None:
        """The next recording's result, in order (None where its worker failed)."""
        self._submit()
        future = self.futures.popleft()
        self._submit()
        try:
            return future.result()
        except Exception:  # noqa: BLE001 - a worker that died: the main process builds it itself
            return None

    def close(self) -> None:
        for future in self.futures:
            future.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)

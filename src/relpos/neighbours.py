"""Batches of neighbours: windows drawn together from one recording.

A pretext that relates windows of one recording (relative positioning, temporal shuffling, CPC,
PART across windows) does not draw its windows itself: it sets ``self.window_request`` to a
*window request* and the training loop serves it. Each step the loop draws the global batch's rows
from its shared index stream (checkpointed, and the same in every process of a ``torchrun`` run,
each taking its slice of rows), so a resumed run and a distributed one see the same windows.

A request is any object with

* ``size``: K, the windows per row;
* ``draw(index, n, generator)``: a ``(n, K)`` long tensor of window indices (into the run's
  :class:`relpos.Windows`), every row from ONE recording, all randomness from ``generator``;
* ``usable(index)``: the names of the recordings it can draw from (the loop warns about each one
  left out and refuses data where none is left);
* ``describe()``: what it draws, in a few words, for those messages.

:class:`RecordingIndex` is what requests draw from: every recording's windows sorted by onset.
The built-in requests are :class:`WithinSpan`, :class:`Consecutive` and :class:`PairsBySeparation`;
each draws a whole batch at once, without a Python loop over rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .errors import DataError, PluginError, warn

#: How many left-out recordings the loop names one by one before it counts the rest.
NAMED_LEFT_OUT = 10


def uniform_integers(high: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One integer uniform in ``[0, high[i])`` per entry of the long tensor ``high`` (every entry ≥ 1),
    drawn from ``generator`` on its device and returned on the CPU."""
    u = torch.rand(high.shape, generator=generator, dtype=torch.float64, device=generator.device).cpu()
    return torch.minimum((u * high).long(), high - 1)


def _source(windows: Any) -> str:
    info = getattr(windows, "info", None) or {}
    source = info.get("source") if isinstance(info, dict) else None
    return f"{str(source)!r}" if source else "the data"


def no_recording_time(needed_by: str, windows: Any) -> DataError:
    """The one-sentence error for ``windows`` without onsets, starting with ``needed_by``."""
    return DataError(
        f"{needed_by} needs windows that know their time in a recording, but {_source(windows)} is a trial "
        f"archive (its windows have no onsets); give it continuous recordings (e.g. EDF files, or a continuous "
        f"NumPy or netCDF recording cut into windows)."
    )


class RecordingIndex:
    """Every recording's windows sorted by onset: what a window request draws from.

    Attributes
    ----------
    names : list of str
        The recordings (``Windows.groups``), in the order their first window appears.
    windows : list of torch.Tensor
        Per recording, the ``(n_r,)`` long indices of its windows into the ``Windows``, sorted by
        onset (windows with the same onset in their order in the data).
    onsets : list of torch.Tensor
        Per recording, the ``(n_r,)`` float64 onsets of those windows, ascending, in the unit of
        ``Windows.info["time_unit"]`` (seconds for eeg and timeseries).
    unit : str
        That unit.

    The same, end to end over the recordings (position ``p`` of the *flat* order), for requests
    that draw a whole batch at once: ``flat_windows`` and ``flat_onsets`` ``(P,)``,
    ``recording`` (each position's recording number), ``start`` and ``count`` (the first flat
    position and the number of windows of that recording), and ``recording_of_window``
    (``(N,)``: the recording number of each window of the ``Windows``).
    """

    def __init__(self, names: list[str], windows: list[torch.Tensor], onsets: list[torch.Tensor],
                 n_windows: int | None = None, unit: str = "s"):
        self.names = [str(name) for name in names]
        self.windows = [torch.as_tensor(w, dtype=torch.long) for w in windows]
        self.onsets = [torch.as_tensor(o, dtype=torch.float64) for o in onsets]
        self.unit = unit
        counts = torch.tensor([len(w) for w in self.windows], dtype=torch.long)
        numbers = torch.arange(len(self.names))
        firsts = torch.cumsum(counts, 0) - counts
        self.flat_windows = torch.cat(self.windows) if self.windows else torch.zeros(0, dtype=torch.long)
        self.flat_onsets = torch.cat(self.onsets) if self.onsets else torch.zeros(0, dtype=torch.float64)
        self.recording = numbers.repeat_interleave(counts)
        self.start = firsts.repeat_interleave(counts)
        self.count = counts.repeat_interleave(counts)
        self._firsts = firsts.tolist()
        self._several = (counts > 1).nonzero().flatten().tolist()
        n = int(self.flat_windows.max()) + 1 if len(self.flat_windows) else 0
        self.recording_of_window = torch.full((max(n, n_windows or 0),), -1, dtype=torch.long)
        self.recording_of_window[self.flat_windows] = self.recording
        self._searches: dict[tuple[float, str], torch.Tensor] = {}
        self._memo: dict[Any, Any] = {}

    @classmethod
    def from_windows(cls, windows: Any, needed_by: str = "Drawing windows of one recording") -> "RecordingIndex":
        """The index of ``windows`` (a :class:`relpos.Windows` with onsets).

        Raises :class:`relpos.errors.DataError` when the windows have no onsets (a trial archive),
        in one sentence that starts with ``needed_by`` (e.g. ``"Pretext 'rp'"``).
        """
        if getattr(windows, "onsets", None) is None:
            raise no_recording_time(needed_by, windows)
        onsets = np.asarray(windows.onsets, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(onsets))
        if len(bad):
            raise DataError(
                f"{needed_by} needs the onset of every window, but window {int(bad[0])} of {_source(windows)} has "
                f"onset {float(onsets[bad[0]])}; onsets must be finite numbers."
            )
        groups = np.asarray(windows.groups).astype(str)
        names, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
        appearance = np.argsort(first, kind="stable")
        number = np.empty_like(appearance)
        number[appearance] = np.arange(len(appearance))
        recording = number[inverse.reshape(-1)]
        order = np.lexsort((np.arange(len(onsets)), onsets, recording))  # by recording, then onset
        bounds = np.searchsorted(recording[order], np.arange(len(names) + 1))
        info = getattr(windows, "info", None) or {}
        return cls(
            names=[str(names[a]) for a in appearance],
            windows=[torch.from_numpy(order[bounds[r]:bounds[r + 1]].copy()) for r in range(len(names))],
            onsets=[torch.from_numpy(onsets[order[bounds[r]:bounds[r + 1]]]) for r in range(len(names))],
            n_windows=len(onsets),
            unit=str(info.get("time_unit") or "s") if isinstance(info, dict) else "s",
        )

    def __len__(self) -> int:
        """The number of windows indexed."""
        return len(self.flat_windows)

    def search(self, offset: float, side: str = "left") -> torch.Tensor:
        """For each flat position ``p``, the flat position where ``flat_onsets[p] + offset`` would be
        inserted among the onsets of ``p``'s recording (``torch.searchsorted``'s ``side``), a ``(P,)``
        long tensor. The windows of ``p``'s recording with onsets below ``onset + offset`` are then
        ``[start[p], search(offset, "left"))``; those at most ``onset + offset`` end at
        ``search(offset, "right")``."""
        key = (float(offset), side)
        if key not in self._searches:
            # a recording of one window finds its window or the end, as searchsorted would
            past = offset > 0 or (offset == 0 and side == "right")
            found = self.start + (self.count == 1).long() * int(past)
            for number in self._several:  # per recording of several windows, vectorised over them
                begin, onsets = self._firsts[number], self.onsets[number]
                found[begin:begin + len(onsets)] = begin + torch.searchsorted(onsets, onsets + offset, side=side)
            self._searches[key] = found
        return self._searches[key]

    def describe_recording(self, number: int) -> str:
        """Recording ``number`` in brief: ``"7 windows, onsets spanning 54 s"``."""
        onsets = self.onsets[number]
        if len(onsets) == 1:
            return "1 window"
        return f"{len(onsets)} windows, onsets spanning {float(onsets[-1] - onsets[0]):g} {self.unit}"

    def memo(self, key: Any, compute: Any) -> Any:
        """``compute()``, computed once per ``key`` for this index (what a request derives from it)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def names_of(self, usable: torch.Tensor) -> list[str]:
        """The names of the recordings holding at least one flat position where ``usable`` is True."""
        return [self.names[int(r)] for r in torch.unique(self.recording[usable])]


def _pick(candidates: torch.Tensor, n: int, generator: torch.Generator, request: Any) -> torch.Tensor:
    """``n`` flat positions uniform over ``candidates`` (the usable ones)."""
    if len(candidates) == 0:
        raise DataError(f"No recording is long enough for {request.describe()}.")
    return candidates[uniform_integers(torch.full((n,), len(candidates), dtype=torch.long), generator)]


def _without_replacement(counts: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """``(n, k)`` distinct integers per row, row ``i``'s uniform in ``[0, counts[i])`` (``counts`` ≥
    k), in drawing order: the t-th is uniform over the ``counts[i] - t`` not drawn yet."""
    drawn: list[torch.Tensor] = []
    for t in range(k):  # k is small; every row at once
        r = uniform_integers(counts - t, generator)
        if drawn:
            for taken in torch.stack(drawn, 1).sort(1).values.unbind(1):  # skip those drawn, in order
                r = r + (r >= taken).long()
        drawn.append(r)
    return torch.stack(drawn, 1) if drawn else torch.zeros(len(counts), 0, dtype=torch.long)


class WithinSpan:
    """``k`` windows of one recording within ``span_s`` of an anchor.

    The anchor is uniform over the windows that have at least ``k - 1`` others of their recording
    with onsets at most ``span_s`` from theirs (``|Δonset| ≤ span_s``); the other ``k - 1`` are
    distinct, uniform among those. Row order: the anchor first, then the others in drawing order.

    Parameters
    ----------
    k : int
        Windows per row, at least 2.
    span_s : float
        The largest onset difference from the anchor, in the recording's unit (seconds), > 0.
    """

    def __init__(self, k: int, span_s: float):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
            raise ValueError(f"WithinSpan needs k, the windows per row, to be an integer of at least 2, got {k!r}.")
        if not (isinstance(span_s, (int, float, np.floating)) and np.isfinite(span_s) and span_s > 0):
            raise ValueError(f"WithinSpan needs span_s to be a positive number of seconds, got {span_s!r}.")
        self.size = int(k)
        self.span_s = float(span_s)

    def describe(self) -> str:
        return f"{self.size} windows of one recording within {self.span_s:g} s of the first"

    def _candidates(self, index: RecordingIndex) -> tuple[torch.Tensor, ...]:
        def compute():
            low = index.search(-self.span_s, "left")
            others = index.search(self.span_s, "right") - low - 1  # the anchor is among them
            usable = others >= self.size - 1
            return low, others, usable, usable.nonzero().flatten()

        return index.memo(("WithinSpan", self.size, self.span_s), compute)

    def usable(self, index: RecordingIndex) -> list[str]:
        return index.names_of(self._candidates(index)[2])

    def draw(self, index: RecordingIndex, n: int, generator: torch.Generator) -> torch.Tensor:
        low, others, _, anchors = self._candidates(index)
        anchor = _pick(anchors, n, generator, self)
        offsets = _without_replacement(others[anchor], self.size - 1, generator)
        position = low[anchor].unsqueeze(1) + offsets
        position = position + (position >= anchor.unsqueeze(1)).long()  # step over the anchor
        return index.flat_windows[torch.cat([anchor.unsqueeze(1), position], dim=1)]


class Consecutive:
    """``k`` windows of one recording consecutive in time: sorted by onset, each the one after the
    previous (a dropped window between them is skipped, not waited for); the first uniform over every
    window that has ``k - 1`` after it. CPC's sequences.

    Parameters
    ----------
    k : int
        Windows per row, at least 2.
    """

    def __init__(self, k: int):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
            raise ValueError(f"Consecutive needs k, the windows per row, to be an integer of at least 2, got {k!r}.")
        self.size = int(k)

    def describe(self) -> str:
        return f"{self.size} consecutive windows of one recording"

    def _starts(self, index: RecordingIndex) -> torch.Tensor:
        """Whether each flat position can start a row."""
        return index.memo(("Consecutive", self.size),
                          lambda: torch.arange(len(index)) + self.size <= index.start + index.count)

    def usable(self, index: RecordingIndex) -> list[str]:
        return index.names_of(self._starts(index))

    def draw(self, index: RecordingIndex, n: int, generator: torch.Generator) -> torch.Tensor:
        starts = self._starts(index)
        first = _pick(index.memo(("Consecutive", self.size, "positions"), lambda: starts.nonzero().flatten()),
                      n, generator, self)
        return index.flat_windows[first.unsqueeze(1) + torch.arange(self.size)]


class PairsBySeparation:
    """Pairs of windows of one recording, close or far (Banville et al. 2021's relative positioning).

    The anchor is uniform over the windows that have both a close and a far partner (only the kind
    ever drawn when ``positive_fraction`` is 0 or 1). With probability ``positive_fraction`` the
    second window is uniform among those with ``0 < |Δonset| ≤ tau_pos_s`` (close), otherwise among
    those with ``|Δonset| ≥ tau_neg_s`` (far). Row order: the anchor, then its partner.

    Parameters
    ----------
    tau_pos_s, tau_neg_s : float
        Seconds (the recording's unit); ``0 < tau_pos_s <= tau_neg_s``.
    positive_fraction : float
        The share of close pairs, in [0, 1].
    """

    size = 2

    def __init__(self, tau_pos_s: float, tau_neg_s: float, positive_fraction: float = 0.5):
        for name, value in (("tau_pos_s", tau_pos_s), ("tau_neg_s", tau_neg_s)):
            if not (isinstance(value, (int, float, np.floating)) and np.isfinite(value) and value > 0):
                raise ValueError(f"PairsBySeparation needs {name} to be a positive number of seconds, got {value!r}.")
        if tau_neg_s < tau_pos_s:
            raise ValueError(
                f"PairsBySeparation needs tau_neg_s ({tau_neg_s:g} s) to be at least tau_pos_s ({tau_pos_s:g} s), "
                f"so that no pair is both close and far."
            )
        if not (isinstance(positive_fraction, (int, float, np.floating)) and 0 <= positive_fraction <= 1):
            raise ValueError(f"PairsBySeparation needs positive_fraction in [0, 1], got {positive_fraction!r}.")
        self.tau_pos_s, self.tau_neg_s = float(tau_pos_s), float(tau_neg_s)
        self.positive_fraction = float(positive_fraction)

    def describe(self) -> str:
        close, far = f"at most {self.tau_pos_s:g} s apart", f"at least {self.tau_neg_s:g} s apart"
        if self.positive_fraction in (0.0, 1.0):
            return f"pairs of windows of one recording {close if self.positive_fraction else far}"
        return f"pairs of windows of one recording, {self.positive_fraction:.0%} {close} and the rest {far}"

    def _candidates(self, index: RecordingIndex) -> dict[str, torch.Tensor]:
        key = ("PairsBySeparation", self.tau_pos_s, self.tau_neg_s, self.positive_fraction)
        return index.memo(key, lambda: self._compute_candidates(index))

    def _compute_candidates(self, index: RecordingIndex) -> dict[str, torch.Tensor]:
        close_low, close_high = index.search(-self.tau_pos_s, "left"), index.search(self.tau_pos_s, "right")
        same_low, same_high = index.search(0.0, "left"), index.search(0.0, "right")  # Δ = 0, the anchor too
        before = index.search(-self.tau_neg_s, "right")  # far before: [start, before)
        after = index.search(self.tau_neg_s, "left")  # far after: [after, start + count)
        c = {
            "close_low": close_low, "same_low": same_low, "same": same_high - same_low,
            "n_close": (close_high - close_low) - (same_high - same_low),
            "after": after, "n_before": before - index.start, "n_after": index.start + index.count - after,
        }
        usable = torch.ones(len(index), dtype=torch.bool)
        if self.positive_fraction > 0:
            usable &= c["n_close"] > 0
        if self.positive_fraction < 1:
            usable &= (c["n_before"] + c["n_after"]) > 0
        c["usable"], c["anchors"] = usable, usable.nonzero().flatten()
        return c

    def usable(self, index: RecordingIndex) -> list[str]:
        return index.names_of(self._candidates(index)["usable"])

    def draw(self, index: RecordingIndex, n: int, generator: torch.Generator) -> torch.Tensor:
        c = self._candidates(index)
        anchor = _pick(c["anchors"], n, generator, self)
        close = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device).cpu() < self.positive_fraction
        # a close partner: the r-th of [close_low, close_high) once the Δ = 0 block is stepped over
        r = uniform_integers(c["n_close"][anchor].clamp(min=1), generator)
        near = c["close_low"][anchor] + r
        near = near + (near >= c["same_low"][anchor]).long() * c["same"][anchor]
        # a far partner: the r-th of [start, before) followed by [after, start + count)
        n_before = c["n_before"][anchor]
        r = uniform_integers((n_before + c["n_after"][anchor]).clamp(min=1), generator)
        far = torch.where(r < n_before, index.start[anchor] + r, c["after"][anchor] + (r - n_before))
        partner = torch.where(close, near, far)
        return index.flat_windows[torch.stack([anchor, partner], dim=1)]


# -- what the training loop does with a pretext's request ----------------------------------------------
def check_request(request: Any, pretext_name: str) -> None:
    """Raise :class:`relpos.errors.PluginError` when ``request`` lacks what the loop calls."""
    missing = [name for name in ("draw", "usable", "describe") if not callable(getattr(request, name, None))]
    size = getattr(request, "size", None)
    if missing or isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        what = f"lacks {', '.join(missing)}" if missing else f"has size {size!r}"
        raise PluginError(
            f"Pretext {pretext_name!r} set a window_request that {what}, but a window request needs size (the "
            f"windows per row, an integer of at least 1), draw(index, n, generator), usable(index) and describe()."
        )


def index_for_request(request: Any, windows: Any, pretext_name: str, say: bool = True) -> RecordingIndex:
    """The :class:`RecordingIndex` ``request`` draws from, after checking it can draw from ``windows``.

    Warns (when ``say``) about each recording the request cannot draw from, as too short for it,
    and raises :class:`relpos.errors.DataError` in one sentence when it can draw from none.
    """
    check_request(request, pretext_name)
    index = RecordingIndex.from_windows(windows, needed_by=f"Pretext {pretext_name!r}")
    usable = set(request.usable(index))
    left_out = [name for name in index.names if name not in usable]
    if not usable:
        n = len(index.names)
        longest = max(range(n), key=lambda r: float(index.onsets[r][-1] - index.onsets[r][0]) if len(index.onsets[r]) else -1.0)
        raise DataError(
            f"Pretext {pretext_name!r} draws {request.describe()}, but no recording of {_source(windows)} is long "
            f"enough for that ({n} recording{'s' if n != 1 else ''}; the longest: {index.describe_recording(longest)}); give it "
            f"longer recordings or change the pretext's settings."
        )
    if say:
        for name in left_out[:NAMED_LEFT_OUT]:
            warn(f"Recording {name!r} ({index.describe_recording(index.names.index(name))}) is too short for pretext "
                 f"{pretext_name!r}, which draws {request.describe()}; it is left out of training.")
        if len(left_out) > NAMED_LEFT_OUT:
            warn(f"{len(left_out) - NAMED_LEFT_OUT} more recordings are too short for pretext {pretext_name!r} and "
                 f"are left out of training.")
    return index


def check_rows(rows: Any, request: Any, index: RecordingIndex, n: int, pretext_name: str) -> torch.Tensor:
    """``rows``, what ``request.draw(index, n, ...)`` returned, as a CPU long tensor, after checking
    it is ``(n, size)``, indexes the windows and keeps each row in one recording; else a
    :class:`relpos.errors.PluginError` naming the pretext."""
    def refuse(what: str) -> PluginError:
        return PluginError(
            f"Pretext {pretext_name!r}'s window_request drew {what}, but draw(index, n, generator) must return a "
            f"({n}, {request.size}) long tensor of window indices, each row from one recording."
        )

    if not isinstance(rows, torch.Tensor):
        raise refuse(f"a {type(rows).__name__}")
    if rows.dtype != torch.long or tuple(rows.shape) != (n, request.size):
        raise refuse(f"a {str(rows.dtype).removeprefix('torch.')} tensor of shape {tuple(rows.shape)}")
    rows = rows.cpu()
    n_windows = len(index.recording_of_window)
    if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= n_windows):
        raise refuse(f"window indices from {int(rows.min())} to {int(rows.max())} (the data holds {n_windows})")
    recordings = index.recording_of_window[rows]
    if bool((recordings != recordings[:, :1]).any()) or bool((recordings < 0).any()):
        raise refuse("rows that mix recordings")
    return rows

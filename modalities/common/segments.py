"""Reductions over many overlapping windows of a signal in one pass: cut the signal at every window
edge, reduce each segment once, then combine each window's segments (a window of W samples with
stride S costs about one pass over the data, not W / S passes)."""

from __future__ import annotations

import numpy as np


def segments(
    starts: np.ndarray, stops: np.ndarray, n: int, also: list[int] = ()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut ``[0, n)`` at every window start and stop (and at the points ``also``).

    Returns ``(cuts, first, count)``: segment ``j`` is ``[cuts[j], cuts[j + 1])`` (the last one ends at
    ``n``), and window ``i`` (``[starts[i], stops[i])``, stops at most ``n``) is exactly the
    ``count[i]`` segments from ``first[i]``. A reduction over each segment
    (``ufunc.reduceat(data, cuts)``, one pass over the data however much the windows overlap) then
    gives each window's by :func:`over_windows`.
    """
    cuts = np.unique(np.concatenate([starts, stops, np.asarray(also, dtype=np.int64)]).astype(np.int64))
    cuts = cuts[cuts < n]
    first = np.searchsorted(cuts, starts)
    count = np.searchsorted(cuts, stops) - first
    return cuts, first, count


def over_windows(per_segment: np.ndarray, first: np.ndarray, count: np.ndarray, ufunc) -> np.ndarray:
    """``ufunc`` over each window's segments: ``(C, segments)`` -> ``(C, windows)``."""
    from numpy.lib.stride_tricks import sliding_window_view

    out = np.empty((per_segment.shape[0], len(first)), dtype=per_segment.dtype)
    for k in np.unique(count):  # windows spanning the same number of segments, together
        sel = np.flatnonzero(count == k)
        spans = sliding_window_view(per_segment, int(k), axis=1)  # (C, segments - k + 1, k), no copy
        out[:, sel] = ufunc.reduce(spans[:, first[sel]], axis=2)
    return out

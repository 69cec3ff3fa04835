"""The three normalisations of the windows of the eeg and timeseries modalities (``modality.normalize``).

``instance`` (the PART paper's; what ``normalize: auto`` uses for trials): each window, each channel to mean 0 and standard
deviation 1 (:func:`normalise`; :func:`normalise_windows` and :func:`fill_normalised` give the same
values for many overlapping windows of one recording without holding them all). ``recording`` and
``file``: every window shifted and scaled by one robust centre and scale per channel, computed over
the recording (:func:`recording_stats`) or over everything one source file holds
(:func:`pooled_stats` of each recording's :func:`window_samples`), applied by :func:`scaled`.

Instance normalisation erases what many labels depend on: the gravity offset that tells postures
apart, the amplitude that tells movement intensities apart, the power of a rhythm relative to the
rest of the night. Per-recording normalisation keeps them: every window of a recording is shifted and scaled by the same two numbers
per channel, computed once from the recording and cached with the windows (``modality.normalize:
recording``, part of the cache key like every other modality option).

The two numbers are robust, so that a few minutes of movement artefact or a loose electrode do not
set the scale of a whole night:

* centre: the median of the channel's samples;
* scale: the median absolute deviation from it times 1.4826, which equals the standard deviation
  for Gaussian data. The MAD tolerates up to half of the samples being outliers (the interquartile
  range, the other common choice, a quarter), which matters for long recordings with artefacts.
  When at least half of the samples share one value (a sensor at rest most of the time) the MAD is
  0; the standard deviation is used instead, so such a channel is not blown up by 1/0.

Per-file normalisation (``modality.normalize: file``) uses the same two numbers per channel, computed
once over everything one source file holds: all of its recordings' samples pooled per channel (for
an archive of trials, the samples of every trial of the array read). It keeps what separates the
trials of one archive (their offsets and amplitudes), which ``recording`` divides away when each
trial is its own recording. For a file holding one continuous recording it equals ``recording``.
"One source file" is one array of one file: of an ``.npz`` with ``X_train``/``X_test``, the split
read; the test split of an evaluation is another array and gets its own statistics from its own
samples (labels are never used).

"The recording's samples" are the samples that lie in at least one kept window: windows dropped
for non-finite values or flat channels (whose samples were zeroed or are meaningless) and, with
labels, unlabelled stretches do not count; each sample counts once however many windows overlap it.
With ``file`` the same holds within each recording of the file.
"""

from __future__ import annotations

import numpy as np

from .segments import over_windows, segments

#: MAD × this = the standard deviation of a Gaussian (1 / Φ⁻¹(3/4)).
MAD_TO_STD = 1.4826
#: Scales at or below this are treated as zero, by instance normalisation too.
MIN_SCALE = 1e-12


# -- instance ----------------------------------------------------------------------------------
def normalise(x: np.ndarray) -> np.ndarray:
    """Per-window, per-channel instance normalisation of ``(n, C, T)`` (float64 maths, float32 out)."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    std = x.std(axis=-1, keepdims=True)
    return ((x - mean) / np.maximum(std, MIN_SCALE)).astype(np.float32)


#: A window whose squared mean (after removing a typical level of its channel) exceeds this many
#: times its variance gets its variance from its samples rather than from the sum of squares,
#: which would lose digits to cancellation.
CANCELLATION_RATIO = 1e6

#: Largest float64 scratch (bytes) of :func:`window_stats` (segments of one length summed in one
#: call) and of :func:`fill_normalised` (windows normalised in one call): each row is still summed
#: on its own, so the numbers are those of one segment or one window at a time, without a Python
#: step per segment (a 22-h night, 2 channels, 5-s stride: 0.13 s -> 0.02 s) or per window.
SEGMENT_BLOCK_BYTES = 4 * 2**20
WINDOW_GROUP_BYTES = 2**20


def window_stats(data: np.ndarray, starts: np.ndarray, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each channel of each window ``data[:, a:a + n_samples]``.

    Returns two ``(n, C)`` float64 arrays, equal to ``window.mean(-1)`` and ``window.std(-1)`` to
    float64 rounding. They come from sums and sums of squares over the segments between window
    edges (one pass over the data, however much the windows overlap), taken relative to each
    channel's mean over the first window; the rare window where that could lose digits (its mean
    far above its spread) is computed from its samples instead.
    """
    starts = np.asarray(starts, dtype=np.int64)
    n_ch, n = data.shape
    if len(starts) == 0:
        return np.zeros((0, n_ch)), np.zeros((0, n_ch))
    level = data[:, starts[0] : starts[0] + n_samples].mean(axis=1, keepdims=True)
    cuts, first, count = segments(starts, starts + n_samples, n)
    lengths = np.append(cuts[1:], n) - cuts  # the segments follow each other up to the end
    sums = np.empty((n_ch, len(cuts)))
    squares = np.empty((n_ch, len(cuts)))
    columns = max(int(lengths.max()), SEGMENT_BLOCK_BYTES // (8 * n_ch))
    scratch = np.empty((n_ch, columns))
    j = 0
    while j < len(cuts):  # a run of segments of one length: (channels, segments, length) at once
        length = int(lengths[j])
        run = 1
        most = max(1, columns // length)
        while j + run < len(cuts) and run < most and lengths[j + run] == length:
            run += 1
        a = int(cuts[j])
        part = scratch[:, : run * length]
        np.subtract(data[:, a : a + run * length], level, out=part)
        blocks = part.reshape(n_ch, run, length)
        np.sum(blocks, axis=2, out=sums[:, j : j + run])
        squares[:, j : j + run] = np.einsum("csl,csl->cs", blocks, blocks)
        j += run
    mean = over_windows(sums, first, count, np.add) / n_samples
    var = over_windows(squares, first, count, np.add) / n_samples - mean * mean
    unsure = ~(var * CANCELLATION_RATIO > mean * mean)  # also catches var <= 0
    mean += level
    std = np.sqrt(np.maximum(var, 0.0))
    for c, i in zip(*np.nonzero(unsure)):
        window = data[c, starts[i] : starts[i] + n_samples]
        mean[c, i] = window.mean()
        std[c, i] = window.std()
    return mean.T.copy(), std.T.copy()


def fill_normalised(
    out: np.ndarray,
    data: np.ndarray,
    starts: np.ndarray,
    n_samples: int,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
) -> None:
    """``out[i] = (window - mean[i]) / std[i]`` with ``window = data[:, a:a + n_samples]`` for each
    start ``a`` (float64 maths, float32 ``out``), a few windows at a time through a float64 copy of them
    (each window's numbers are those it would get alone).

    Without ``mean`` and ``std``, each window's are computed on the way, as
    :func:`normalise` does (the mean, then the spread around it), while the window is at hand.
    """
    starts = np.asarray(starts, dtype=np.int64)
    if len(starts) == 0:
        return
    n_ch = data.shape[0]
    group = max(1, WINDOW_GROUP_BYTES // (8 * n_ch * n_samples))
    every = np.lib.stride_tricks.sliding_window_view(data, n_samples, axis=1).transpose(1, 0, 2)  # (start, C, T)
    for first in range(0, len(starts), group):
        part = slice(first, first + group)
        windows = every[starts[part]]  # a float64 copy, (k, C, T)
        if mean is None:
            centre = np.add.reduce(windows, axis=2) / n_samples
            windows -= centre[:, :, None]
            spread = np.sqrt(np.einsum("kij,kij->ki", windows, windows) / n_samples)
        else:
            windows -= mean[part][:, :, None]
            spread = std[part]
        np.divide(windows, np.maximum(spread, MIN_SCALE)[:, :, None], out=out[part], casting="same_kind")


def normalise_windows(data: np.ndarray, starts: np.ndarray, n_win: int) -> np.ndarray:
    """Instance-normalised windows ``data[:, a:a + n_win]`` for each start ``a``, as ``(n, C, n_win)`` float32
    (the same values as :func:`normalise` of the stacked windows)."""
    out = np.empty((len(starts), data.shape[0], n_win), dtype=np.float32)
    mean, std = window_stats(data, starts, n_win)
    fill_normalised(out, data, starts, n_win, mean, std)
    return out


# -- recording and file ------------------------------------------------------------------------


def robust_stats(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and robust scale of each channel of ``samples``.

    Parameters
    ----------
    samples : np.ndarray
        ``(C, n)`` values of one recording, channels first.

    Returns
    -------
    centre, scale : np.ndarray
        ``(C,)`` float64 each: the median, and 1.4826 × the median absolute deviation (the standard
        deviation where that is 0), never below :data:`MIN_SCALE`.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 2 or samples.shape[1] == 0:
        raise ValueError(f"robust_stats needs (channels, samples) with at least one sample, got {samples.shape}.")
    centre = np.median(samples, axis=1)
    scale = MAD_TO_STD * np.median(np.abs(samples - centre[:, None]), axis=1)
    degenerate = scale <= MIN_SCALE
    if degenerate.any():
        scale[degenerate] = samples[degenerate].std(axis=1)
    return centre, np.maximum(scale, MIN_SCALE)


def covered(n_times: int, starts: np.ndarray, n_samples: int) -> np.ndarray:
    """``(n_times,)`` bool: the samples that lie in at least one window ``[a, a + n_samples)``."""
    edges = np.zeros(int(n_times) + 1, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    np.add.at(edges, np.clip(starts, 0, n_times), 1)
    np.add.at(edges, np.clip(starts + n_samples, 0, n_times), -1)
    return np.cumsum(edges[:-1]) > 0


def window_samples(data: np.ndarray, starts: np.ndarray, n_samples: int) -> np.ndarray:
    """``(C, n)`` samples of ``data`` (``(C, T)``) covered by the windows, each sample once."""
    return data[:, covered(data.shape[-1], starts, n_samples)]


def pooled_stats(pieces) -> tuple[np.ndarray, np.ndarray]:
    """:func:`robust_stats` over several recordings' samples pooled per channel (``normalize: file``).

    Parameters
    ----------
    pieces : sequence of np.ndarray
        ``(C, n_i)`` samples of each recording of one file (e.g. :func:`window_samples` of each
        trial), the same channels in the same order.

    Returns
    -------
    centre, scale : np.ndarray
        ``(C,)`` float64 each, as :func:`robust_stats` of the pieces concatenated along the samples.
    """
    pieces = [np.asarray(p) for p in pieces]
    if not pieces:
        raise ValueError("pooled_stats needs at least one (channels, samples) piece, got none.")
    channels = {p.shape[0] if p.ndim == 2 else None for p in pieces}
    if len(channels) != 1 or None in channels:
        shapes = sorted({p.shape for p in pieces})[:3]
        raise ValueError(f"pooled_stats needs (channels, samples) pieces with one channel count, got shapes {shapes}.")
    return robust_stats(np.concatenate(pieces, axis=1))


def recording_stats(data: np.ndarray, starts: np.ndarray, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`robust_stats` of one recording ``data`` (``(C, T)``) over the samples of its windows
    ``[a, a + n_samples)`` for each ``a`` in ``starts`` (each sample once), as ``normalize: recording``
    uses them."""
    return robust_stats(window_samples(data, starts, n_samples))


def scaled(x: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(x - centre) / scale`` per channel: ``x`` is ``(..., C, T)``, ``centre`` and ``scale`` ``(C,)``
    (from :func:`recording_stats` or :func:`pooled_stats`); float64 maths."""
    return (np.asarray(x, dtype=np.float64) - centre[:, None]) / scale[:, None]

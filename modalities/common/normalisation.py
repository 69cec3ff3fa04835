"""Per-recording and per-file normalisation: a robust z-score per channel over a whole recording or file.

Instance normalisation (each window, each channel to mean 0 and standard deviation 1) erases what
many labels depend on: the gravity offset that tells postures apart, the amplitude that tells
movement intensities apart, the power of a rhythm relative to the rest of the night. Per-recording
normalisation keeps them: every window of a recording is shifted and scaled by the same two numbers
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

#: MAD × this = the standard deviation of a Gaussian (1 / Φ⁻¹(3/4)).
MAD_TO_STD = 1.4826
#: Scales at or below this are treated as zero, as instance normalisation does.
MIN_SCALE = 1e-12


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

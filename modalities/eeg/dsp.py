"""MNE's band-pass filter and FFT resampling, computed for blocks of channels at once.

``raw.filter(l_freq, h_freq)`` and ``raw.resample(sfreq)`` with MNE's defaults (a zero-phase FIR
filter from :func:`mne.filter.create_filter`, reflect-limited edge padding; FFT resampling with
``npad="auto"``, ``window="auto"``, ``pad="auto"``) work one channel at a time: a 64-channel
recording makes 64 separate FFT calls per step. The same FFTs over a block of channels in one SciPy
call run several transforms side by side (SIMD): on a 610-s, 64-channel, 160-Hz recording the
band-pass takes 165 ms instead of 242 ms and the resampling 132 ms instead of 195 ms
(``bench/bench_eeg_dsp.py``). The numbers are MNE's: the filter is MNE's own design, the padding, spectrum scaling and
trimming follow MNE's code, and the results equal MNE's to rounding (tests compare them to
``mne.filter.filter_data`` and ``mne.filter.resample``; :func:`matches_mne` checks it again on the
installed MNE before the first recording of each setting is processed, and the pipeline falls back to
MNE's methods if they ever differ).

A recording longer than :data:`MAX_SAMPLES` is band-passed by :func:`overlap_add_`, MNE's own
overlap-add (its FFT length, segments, sums and order of additions: the same numbers bit for bit) with
a few segments per SciPy call instead of one, checked by :func:`overlap_add_matches_mne`.
"""

from __future__ import annotations

import numpy as np

#: Largest complex spectrum of one block of channels (bytes). It bounds the memory these functions
#: add; a few channels per block is all the SIMD gain needs (measured: blocks of 4 channels of ~100k
#: samples were faster than blocks of 8, 16 or 64).
BLOCK_BYTES = 4 * 2**20

#: Longest recording (samples) filtered here; longer ones go through MNE's overlap-add, faster than one
#: FFT over the whole signal there (not measured near the boundary: 98k samples gain, 8M lose 5x).
MAX_SAMPLES = 2**20

#: Relative difference to MNE's result that still counts as the same (float64 rounding is ~1e-15).
RTOL = 1e-9

#: Largest complex spectrum of the segments :func:`overlap_add_` transforms in one call (bytes): a few
#: segments, so that they stay in the CPU's cache (a 22-h night at 100 Hz, 2 channels, 32768-sample
#: FFTs: 2-4 segments per call 0.22 s, one 0.26 s, 8 or 15 0.44-0.6 s, MNE's one at a time 0.27 s).
SEGMENT_BLOCK_BYTES = 2**20


def _blocks(n_channels: int, fft_len: int):
    per_channel = (fft_len // 2 + 1) * 16
    step = max(1, min(n_channels, BLOCK_BYTES // max(per_channel, 1)))
    for first in range(0, n_channels, step):
        yield slice(first, min(first + step, n_channels))


def reflect_limited(x: np.ndarray, left: int, right: int) -> np.ndarray:
    """``x`` (..., n) padded as MNE pads before filtering and resampling (``pad="reflect_limited"``).

    Each edge is continued by the point reflection of the signal around its edge sample
    (``2 * x[0] - x[k]``), at most ``n - 1`` samples of it, then zeros.
    """
    n = x.shape[-1]
    parts = []
    if left:
        k = min(left, n - 1)
        parts.append(np.zeros(x.shape[:-1] + (left - k,), dtype=x.dtype))
        parts.append(2 * x[..., :1] - x[..., k:0:-1])
    parts.append(x)
    if right:
        k = min(right, n - 1)
        parts.append(2 * x[..., -1:] - x[..., n - 1 - k : n - 1][..., ::-1])
        parts.append(np.zeros(x.shape[:-1] + (right - k,), dtype=x.dtype))
    return np.concatenate(parts, axis=-1) if len(parts) > 1 else x


def design(sfreq: float, l_freq: float | None, h_freq: float | None) -> np.ndarray:
    """The FIR filter ``raw.filter(l_freq, h_freq)`` applies (MNE's defaults), as taps."""
    import mne

    h = mne.filter.create_filter(None, sfreq, l_freq, h_freq, verbose="error")
    return np.asarray(h, dtype=np.float64)


def band_pass_(data: np.ndarray, sfreq: float, l_freq: float | None, h_freq: float | None) -> None:
    """Filter ``data`` (channels, times), float64, in place, as ``raw.filter(l_freq, h_freq)`` does.

    MNE pads each edge by up to ``len(h) - 1`` samples, convolves and keeps the centred part; only
    the ``(len(h) - 1) // 2`` padded samples next to each edge reach the kept part, so this pads by
    that much and keeps the 'valid' part of the convolution, which is the same numbers. One FFT per
    channel over the whole signal was faster than overlap-add in segments
    (``scipy.signal.oaconvolve`` took about twice as long on 64 channels x 610 s at 160 Hz).
    """
    from scipy import fft

    h = _taps(data, sfreq, l_freq, h_freq)
    if h is None:
        return
    n_h = len(h)
    half = (n_h - 1) // 2  # zero-phase FIR filters have odd length
    n = data.shape[-1]
    n_fft = fft.next_fast_len(n + n_h - 1, real=True)  # wrap-around stays out of the kept part
    taps = fft.rfft(h, n_fft)
    for rows in _blocks(data.shape[0], n_fft):
        spectrum = fft.rfft(reflect_limited(data[rows], half, half), n_fft, axis=-1)
        spectrum *= taps
        data[rows] = fft.irfft(spectrum, n_fft, axis=-1)[:, n_h - 1 : n_h - 1 + n]


def _taps(data: np.ndarray, sfreq: float, l_freq: float | None, h_freq: float | None) -> np.ndarray | None:
    """The band-pass's taps, or None where nothing is left to do: no band, or a one-tap filter (then
    applied to ``data`` here, as a scale)."""
    if l_freq is None and h_freq is None:
        return None
    h = design(sfreq, l_freq, h_freq)
    if len(h) == 1:
        data *= h[0]
        return None
    return h


def overlap_add_fft_len(n_taps: int, n_padded: int) -> int:
    """The FFT length MNE's overlap-add filter chooses for ``n_taps`` taps and a padded signal of
    ``n_padded`` samples (``mne.filter._overlap_add_filter``: the cost in multiplications plus its
    penalty on long FFTs; a single block of MNE's next 5-smooth length where the signal is shorter)."""
    from mne.filter import next_fast_len

    min_fft = 2 * n_taps - 1
    if n_padded < min_fft:
        return int(next_fast_len(min_fft))
    lengths = 2 ** np.arange(np.ceil(np.log2(min_fft)), np.ceil(np.log2(n_padded)) + 1, dtype=int)
    cost = np.ceil(n_padded / (lengths - n_taps + 1).astype(np.float64)) * lengths * (np.log2(lengths) + 1)
    cost += 4e-5 * lengths * n_padded
    return int(lengths[np.argmin(cost)])


def overlap_add_(data: np.ndarray, sfreq: float, l_freq: float | None, h_freq: float | None) -> None:
    """Filter ``data`` (channels, times), float64, in place, as ``raw.filter(l_freq, h_freq)`` does
    with MNE's overlap-add: the same numbers, bit for bit.

    MNE pads each channel by ``len(h) - 1`` samples (reflect-limited), cuts the padded signal into
    segments of ``n_fft - len(h) + 1`` samples, filters each with one FFT of ``n_fft`` samples and
    adds the results, each segment's tail onto the next one's head. This does the same, several
    segments per FFT call (the FFTs of a batch are those of one segment at a time), and adds each
    tail to its head (a sum of two numbers, the same in either order).
    """
    from scipy import fft

    h = _taps(data, sfreq, l_freq, h_freq)
    if h is None:
        return
    n_h = len(h)
    n = data.shape[-1]
    n_edge = max(min(n_h, n) - 1, 0)
    n_padded = n + 2 * n_edge
    n_fft = overlap_add_fft_len(n_h, n_padded)
    n_seg = n_fft - n_h + 1
    n_segments = -(-n_padded // n_seg)
    shift = (n_h - 1) // 2 + n_edge  # zero phase: the filter's delay and the padding
    taps = fft.rfft(h, n_fft)
    per_call = max(1, SEGMENT_BLOCK_BYTES // ((n_fft // 2 + 1) * 16))
    padded = np.zeros(n_segments * n_seg)
    summed = np.empty((n_segments + 1) * n_seg)  # segment s adds to [s * n_seg, s * n_seg + n_fft)
    for row in range(data.shape[0]):
        padded[:n_padded] = reflect_limited(data[row : row + 1], n_edge, n_edge)[0]
        summed[:] = 0.0
        for first in range(0, n_segments, per_call):
            last = min(first + per_call, n_segments)
            spectrum = fft.rfft(padded[first * n_seg : last * n_seg].reshape(last - first, n_seg), n_fft, axis=-1)
            spectrum *= taps
            product = fft.irfft(spectrum, n_fft, axis=-1)
            heads = summed[first * n_seg : last * n_seg].reshape(last - first, n_seg)
            heads += product[:, :n_seg]
            tails = summed[(first + 1) * n_seg : (last + 1) * n_seg].reshape(last - first, n_seg)
            tails[:, : n_h - 1] += product[:, n_seg:]
        data[row] = summed[shift : shift + n]


def resample(data: np.ndarray, sfreq_new: float, sfreq_old: float) -> np.ndarray:
    """``data`` (channels, times), float64, resampled as ``raw.resample(sfreq_new)`` does (FFT method).

    Follows ``mne.filter.resample(x, up=sfreq_new, down=sfreq_old)``: padding to a power of two
    (``npad="auto"``), reflect-limited edges, a boxcar spectrum window, MNE's Nyquist-bin scaling,
    and the padding removed again.
    """
    from scipy import fft

    ratio = float(sfreq_new) / float(sfreq_old)
    x_len = data.shape[-1]
    final_len = max(int(round(ratio * x_len)), 1)
    min_add = min(x_len // 8, 100) * 2
    npad, extra = divmod(2 ** int(np.ceil(np.log2(x_len + min_add))) - x_len, 2)
    npads = (npad, npad + extra)
    orig_len = x_len + sum(npads)
    new_len = max(int(round(ratio * orig_len)), 1)
    remove_left = int(round(ratio * npads[0]))
    shorter = new_len < orig_len
    use_len = new_len if shorter else orig_len
    scale = float(new_len) / float(orig_len)  # the boxcar window times MNE's length factor
    out = np.empty((data.shape[0], final_len), dtype=np.float64)
    for rows in _blocks(data.shape[0], orig_len):
        spectrum = fft.rfft(reflect_limited(data[rows], *npads), axis=-1)
        if use_len % 2 == 0:
            nyq = use_len // 2
            spectrum[:, nyq : nyq + 1] *= 2 if shorter else 0.5
        spectrum *= scale
        y = fft.irfft(spectrum, new_len, axis=-1)
        out[rows] = y[:, remove_left : remove_left + final_len]
    return out


_CHECKED: dict[tuple, bool] = {}
CHECK_S = 600.0  # seconds of the first recording that matches_mne compares


def matches_mne(x: np.ndarray, sfreq: float, l_freq, h_freq, sfreq_new: float) -> bool:
    """Whether :func:`band_pass_` then :func:`resample` give MNE's numbers for the 1-D signal ``x``.

    Checked once per process for each setting (the code paths do not depend on the signal's
    values); False sends the pipeline back to MNE's own methods.
    """
    key = (float(sfreq), l_freq, h_freq, float(sfreq_new))
    if key not in _CHECKED:
        # 10 minutes are ample: 9x the longest default FIR (66 s at l_freq 0.1 Hz), several overlap-add
        # blocks; a whole 22-h night cost 1.8 s, half of its first pass (issue 27).
        excerpt = np.array(x, dtype=np.float64, ndmin=2)[:1, : int(CHECK_S * sfreq)]
        _CHECKED[key] = _compare(excerpt, *key)
    return _CHECKED[key]


def overlap_add_matches_mne(x: np.ndarray, sfreq: float, l_freq, h_freq) -> bool:
    """Whether :func:`overlap_add_` gives ``mne.filter.filter_data``'s numbers for the 1-D signal
    ``x`` (its first :data:`CHECK_S` seconds, several segments); checked once per process for each
    setting, as :func:`matches_mne` is."""
    key = (float(sfreq), l_freq, h_freq, "overlap-add")
    if key not in _CHECKED:
        excerpt = np.array(x, dtype=np.float64, ndmin=2)[:1, : int(CHECK_S * sfreq)]
        _CHECKED[key] = _compare_overlap_add(excerpt, float(sfreq), l_freq, h_freq)
    return _CHECKED[key]


def _compare_overlap_add(x: np.ndarray, sfreq: float, l_freq, h_freq) -> bool:
    import warnings

    import mne

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = mne.filter.filter_data(x.copy(), sfreq, l_freq, h_freq, verbose="error")
        ours = x.copy()
        overlap_add_(ours, sfreq, l_freq, h_freq)
    except Exception:  # noqa: BLE001 - any failure means: use MNE's own method
        return False
    scale = float(np.max(np.abs(ref))) or 1.0
    return ref.shape == ours.shape and bool(np.max(np.abs(ref - ours)) <= RTOL * scale)


def _compare(x: np.ndarray, sfreq: float, l_freq, h_freq, sfreq_new: float) -> bool:
    import warnings

    import mne

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = x.copy()
            if l_freq is not None or h_freq is not None:
                ref = mne.filter.filter_data(ref, sfreq, l_freq, h_freq, verbose="error")
            if sfreq_new != sfreq:
                ref = mne.filter.resample(ref, up=sfreq_new, down=sfreq, npad="auto", verbose="error")
        ours = x.copy()
        band_pass_(ours, sfreq, l_freq, h_freq)
        if sfreq_new != sfreq:
            ours = resample(ours, sfreq_new, sfreq)
    except Exception:  # noqa: BLE001 - any failure means: use MNE's own methods
        return False
    if ref.shape != ours.shape:
        return False
    scale = float(np.max(np.abs(ref))) or 1.0
    return bool(np.max(np.abs(ref - ours)) <= RTOL * scale)

"""From one MNE recording to normalised, labelled windows.

The steps, in order: pick channels (by type, then by name or pattern), check the raw samples for
non-finite values and flat channels (per window, at the file's own rate and before any filtering, so
a filter can neither hide nor spread them), notch, band-pass, re-reference, resample to the target
rate, cut windows (a fixed grid or one window per annotation), label them from annotations, drop the
bad and the unlabelled ones (counting each reason), and normalise each window per channel.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from relpos.errors import DataError

from ..common.normalisation import fill_normalised, recording_stats, window_stats
from ..common.segments import over_windows, segments

#: The AASM sleep stages of a Sleep-EDF hypnogram (R&K stages 3 and 4 both become N3).
SLEEP_STAGES = ("W", "N1", "N2", "N3", "REM")
SLEEP_LABEL_MAP = {
    "Sleep stage W": "W",
    "Sleep stage 1": "N1",
    "Sleep stage 2": "N2",
    "Sleep stage 3": "N3",
    "Sleep stage 4": "N3",
    "Sleep stage R": "REM",
}
DROP_NONFINITE = "non-finite values"
DROP_FLAT = "flat channel"
DROP_UNLABELLED = "no label"
DROP_OUTSIDE = "event window outside the recording"


@dataclass
class RecordingWindows:
    """What one recording gave: the windows to keep (not yet cut), labels (class names) and what was dropped.

    The windows are ``data[:, a:a + n_samples]`` for each ``a`` in ``starts``, normalised per channel
    with ``mean`` and ``std`` (given for overlapping windows, where they cost less computed for all
    windows at once; else computed from each window as it is written); :meth:`fill` writes them
    wherever they go (the cache's buffer), so the overlapping windows of a small stride are never
    all held in memory at once.
    """

    data: np.ndarray  # (C, samples) the preprocessed recording
    starts: np.ndarray  # (n,) first sample of each window
    n_samples: int  # window length, samples
    mean: np.ndarray | None  # (n, C) float64; None: computed window by window while filling
    std: np.ndarray | None  # (n, C) float64
    labels: list[str] | None
    dropped: Counter = field(default_factory=Counter)
    unlabelled: Counter = field(default_factory=Counter)  # annotation description -> windows
    flat_windows: Counter = field(default_factory=Counter)  # channel -> windows in which it is flat

    def __len__(self) -> int:
        return len(self.starts)

    def onsets_s(self, sfreq: float) -> np.ndarray:
        """Each kept window's start in the recording (s, from its first sample at ``sfreq``): the
        windows dropped between two kept ones leave their time between them."""
        return np.asarray(self.starts, dtype=np.float64) / float(sfreq)

    @property
    def shape(self) -> tuple[int, int]:
        """(channels, samples) of one window."""
        return (int(self.data.shape[0]), int(self.n_samples))

    def fill(self, out: np.ndarray, first: int = 0) -> None:
        """Write windows ``first, ..., first + len(out) - 1``, normalised, into ``out`` (float32 ``(k, C, T)``)."""
        part = slice(first, first + len(out))
        mean = None if self.mean is None else self.mean[part]
        std = None if self.std is None else self.std[part]
        fill_normalised(out, self.data, self.starts[part], self.n_samples, mean, std)

    @property
    def x(self) -> np.ndarray:
        """All windows as one ``(n, C, T)`` float32 array."""
        out = np.empty((len(self), *self.shape), dtype=np.float32)
        self.fill(out)
        return out


def flat_reason(channels: list[str]) -> str:
    """The drop reason of a window in which the live ``channels`` are flat, naming them."""
    from ..common.channels import format_names

    noun = "flat channel" if len(channels) == 1 else "flat channels"
    return f"{noun} {format_names(channels, limit=4)}"


def split_names(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def select_channels(available: list[str], spec: str, where: str) -> list[str]:
    """Channels named by ``spec`` (names or glob patterns, comma-separated), in ``spec`` order.

    ``spec`` empty or ``common`` keeps every available channel.
    """
    if not spec.strip() or spec.strip().lower() == "common":
        return list(available)
    chosen: list[str] = []
    for item in split_names(spec):
        if any(c in item for c in "*?["):
            matches = [ch for ch in available if fnmatch.fnmatchcase(ch, item)]
        else:
            matches = [ch for ch in available if ch == item] or [
                ch for ch in available if ch.lower() == item.lower()
            ]
        if not matches:
            raise DataError(
                f"Recording {where} has no channel matching {item!r} (modality.channels = {spec!r}); "
                f"its channels of the selected types are: {', '.join(available)}."
            )
        chosen += [m for m in matches if m not in chosen]
    return chosen


def named_channels(available: list[str], cfg) -> list[str]:
    """The channels of ``available`` the user names in modality.channels (by name or pattern; not
    'common') or modality.reference: they keep the type the file gives them (:mod:`..common.channel_types`)."""
    named = [r for r in split_names(cfg.reference) if r.lower() != "average"]
    if cfg.channels.strip().lower() != "common":
        for spec in split_names(cfg.channels):
            if any(c in spec for c in "*?["):
                named += [ch for ch in available if fnmatch.fnmatchcase(ch, spec)]
            else:
                named += [ch for ch in available if ch == spec or ch.lower() == spec.lower()]
    return named


def annotation_table(raw) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(onset_s, duration_s, description) of ``raw``'s annotations, onsets from the data's first sample."""
    ann = raw.annotations
    onset = np.asarray(ann.onset, dtype=float)
    if ann.orig_time is not None:
        onset = onset - raw.first_time
    return onset, np.asarray(ann.duration, dtype=float), [str(d) for d in ann.description]


def scan_raw(
    data: np.ndarray,
    sfreq: float,
    starts_s: np.ndarray,
    window_s: float,
    flat_threshold: float,
    rows: list[int] | None = None,
    by_channel: bool = False,
) -> tuple[bool, np.ndarray, np.ndarray]:
    """(all_finite, non_finite, flat): is every value of the raw samples ``data`` (C, samples) at
    ``sfreq`` finite, and masks over the windows starting at ``starts_s`` (s).

    Only the channels ``rows`` (default: all) count for the masks. A window is non-finite when one
    of its samples is NaN or infinite, flat when one channel's peak-to-peak is below
    ``flat_threshold`` (and it is not non-finite). The extremes of the segments between window
    edges (one pass over the data, whatever the windows' overlap) answer all three: a NaN or an
    infinity always reaches them. Only when something is not finite are the bad samples located.
    With ``by_channel``, ``flat`` is ``(len(rows), windows)``: which channel is flat in which window.
    """
    n_ch, n = data.shape
    starts_s = np.asarray(starts_s, dtype=float)
    a = np.maximum(0, np.round(starts_s * sfreq).astype(np.int64))
    b = np.minimum(n, np.maximum(a + 1, np.round((starts_s + window_s) * sfreq).astype(np.int64)))
    rows = list(range(n_ch)) if rows is None else list(rows)
    cuts, first, count = segments(a, b, n, also=[0])  # segments cover every sample
    high = low = None
    if flat_threshold > 0:
        high = np.maximum.reduceat(data, cuts, axis=1)
        low = np.minimum.reduceat(data, cuts, axis=1)
        finite = bool(np.isfinite(high).all() and np.isfinite(low).all())
    else:
        finite = all_finite(data)
    non_finite = np.zeros(len(a), dtype=bool)
    flat = np.zeros((len(rows), len(a)) if by_channel else len(a), dtype=bool)
    if len(a) == 0:
        return finite, non_finite, flat
    if not finite:
        selected = data[rows] if rows != list(range(n_ch)) else data
        bad_sample = ~np.isfinite(selected).all(axis=0)
        per_segment = np.add.reduceat(bad_sample.astype(np.int64)[None], cuts, axis=1)
        non_finite = over_windows(per_segment, first, count, np.add)[0] > 0
    if high is not None:
        high = over_windows(high[rows], first, count, np.maximum)
        low = over_windows(low[rows], first, count, np.minimum)
        with np.errstate(invalid="ignore"):  # inf - inf in a non-finite window, which is not flat
            flat = ((high - low) < flat_threshold) & ~non_finite
        if not by_channel:
            flat = flat.any(axis=0)
    return finite, non_finite, flat


def all_finite(data: np.ndarray) -> bool:
    """Whether every value is finite: one sum (a NaN or an infinity always reaches it), and only
    when that is not finite (or overflowed) a look at each value."""
    with np.errstate(invalid="ignore", over="ignore"):
        total = data.sum()
    return bool(np.isfinite(total)) or bool(np.isfinite(data).all())


def notch_freqs(notch_freq: float, sfreq: float) -> np.ndarray:
    """``notch_freq`` and its harmonics strictly below the Nyquist frequency of ``sfreq``."""
    if notch_freq <= 0:
        return np.zeros(0)
    return np.arange(notch_freq, sfreq / 2.0 - 1e-9, notch_freq)


def preprocess_raw(raw, cfg, keep: list[str], where: str) -> np.ndarray:
    """Notch, band-pass, re-reference, keep ``keep`` channels (in that order) and resample.

    Returns the preprocessed samples, ``(len(keep), samples)`` float64. ``raw`` is changed in place
    (filtered, re-referenced, picked; still at its own rate when the resampling was done outside it).
    The band-pass and the resampling are MNE's (``raw.filter``, ``raw.resample``); for the usual
    case (one continuous segment, no stim channels) :mod:`.dsp` computes the same numbers for
    blocks of channels at once, or for a long recording MNE's overlap-add band-pass with several
    segments per FFT call (bit for bit ``raw.filter``'s numbers; the resampling stays MNE's).
    """
    from . import dsp

    sfreq = float(raw.info["sfreq"])
    if sfreq <= 2 * cfg.h_freq:
        raise DataError(
            f"Recording {where} is sampled at {sfreq} Hz, not above twice the band-pass high edge "
            f"({cfg.h_freq} Hz); lower modality.h_freq."
        )
    l_freq, h_freq = cfg.l_freq or None, cfg.h_freq
    resampling = not np.isclose(cfg.sfreq, sfreq, atol=0, rtol=1e-6)  # as raw.resample decides
    # One FFT over a whole long recording loses to MNE's overlap-add (a 22-h, 2-channel night: 2.4 s
    # against 0.5 s), so long recordings keep MNE's overlap-add, with segments batched (0.21 against
    # raw.filter's 0.29 s on that night, best of 7), and MNE's resampling.
    one_segment = _batched_ok(raw)
    long = raw.n_times > dsp.MAX_SAMPLES
    batched = one_segment and not long and dsp.matches_mne(
        raw._data[0], sfreq, l_freq, h_freq, cfg.sfreq if resampling else sfreq
    )
    overlap_add = one_segment and long and dsp.overlap_add_matches_mne(raw._data[0], sfreq, l_freq, h_freq)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        freqs = notch_freqs(cfg.notch_freq, sfreq)
        if len(freqs):
            raw.notch_filter(freqs, picks="all", verbose="error")
        if batched:
            dsp.band_pass_(raw._data, sfreq, l_freq, h_freq)
        elif overlap_add:
            dsp.overlap_add_(raw._data, sfreq, l_freq, h_freq)
        else:
            raw.filter(l_freq, h_freq, picks="all", verbose="error")
        reference = cfg.reference.strip()
        if reference:
            if reference.lower() == "average":
                if set(raw.get_channel_types()) == {"eeg"}:
                    raw.set_eeg_reference("average", projection=False, verbose="error")
                else:
                    _subtract(raw, list(raw.ch_names))
            else:
                refs = split_names(reference)
                missing = [r for r in refs if r not in raw.ch_names]
                if missing:
                    raise DataError(
                        f"Recording {where} has no reference channel {', '.join(map(repr, missing))} "
                        f"(modality.reference = {cfg.reference!r}); its channels are: {', '.join(raw.ch_names)}."
                    )
                _subtract(raw, refs)
        if list(raw.ch_names) != list(keep):
            raw.pick(keep, verbose="error")
            raw.reorder_channels(keep)
        if not resampling:
            return raw._data
        if batched:
            return dsp.resample(raw._data, cfg.sfreq, sfreq)
        raw.resample(cfg.sfreq, verbose="error")
    return raw._data


def _batched_ok(raw) -> bool:
    """Whether ``raw.filter``/``raw.resample`` would treat ``raw`` as one segment of plain channels.

    MNE filters each stretch between ``edge``/``bad_acq_skip`` annotations separately, resamples
    each concatenated part separately and resamples stim channels another way; those cases stay
    with MNE's methods.
    """
    import mne

    if not getattr(raw, "preload", False) or raw._data.dtype != np.float64 or raw._data.shape[0] == 0:
        return False
    if len(getattr(raw, "_raw_lengths", ())) != 1:
        return False
    if any(str(d).upper().startswith(("EDGE", "BAD_ACQ_SKIP")) for d in raw.annotations.description):
        return False
    return len(mne.pick_types(raw.info, meg=False, stim=True, exclude=[])) == 0


def _subtract(raw, refs: list[str]) -> None:
    data = raw._data  # preloaded (C, samples)
    idx = [raw.ch_names.index(r) for r in refs]
    data -= data[idx].mean(axis=0, keepdims=True)


class LabelRule:
    """Annotation description -> class name, for ``labels: annotations | sleep``."""

    def __init__(self, mode: str, label_map: dict[str, str]):
        self.mode = mode
        if mode == "sleep":
            self.map = dict(label_map) if label_map else dict(SLEEP_LABEL_MAP)
            self.fixed_classes = None if label_map else list(SLEEP_STAGES)
        else:
            self.map = dict(label_map)
            self.fixed_classes = None
        self.identity = mode == "annotations" and not label_map

    @property
    def active(self) -> bool:
        return self.mode != "none"

    def label(self, description: str) -> str | None:
        if self.identity:
            return description
        return self.map.get(description)

    def class_names(self, seen: set[str]) -> list[str]:
        if self.fixed_classes is not None:
            return list(self.fixed_classes)
        if self.identity:
            return sorted(seen)
        ordered = list(dict.fromkeys(self.map.values()))
        return ordered


def window_starts(
    cfg, duration_s: float, ann: tuple[np.ndarray, np.ndarray, list[str]], rule: LabelRule
) -> tuple[np.ndarray, list[str | None], list[str | None], int]:
    """Window start times (s), their labels, the description under each (for unlabelled counts), and
    the number of event windows that fall outside the recording."""
    onset, duration, desc = ann
    n_win = int(round(cfg.window_s * cfg.sfreq))
    n_total = int(round(duration_s * cfg.sfreq))
    if cfg.windows == "events":
        starts, labels, under, outside = [], [], [], 0
        for o, d in zip(onset, desc):
            label = rule.label(d) if rule.active else None
            if rule.active and label is None:
                continue
            start = o + cfg.event_offset_s
            a = int(round(start * cfg.sfreq))
            if a < 0 or a + n_win > n_total:
                outside += 1
                continue
            starts.append(a / cfg.sfreq)
            labels.append(label)
            under.append(d)
        return np.asarray(starts, dtype=float), labels, under, outside
    stride = int(round(cfg.stride_s * cfg.sfreq))
    origin = 0
    if rule.active:
        mapped = [o for o, d in zip(onset, desc) if rule.label(d) is not None and o >= 0]
        first = min(mapped) if mapped else (min([o for o in onset if o >= 0], default=0.0))
        origin = int(round(first * cfg.sfreq))
        if rule.mode != "sleep":
            origin = origin % stride  # a grid through the first labelled onset, from the start
    a = np.arange(origin, n_total - n_win + 1, stride)
    starts = a / cfg.sfreq
    if not rule.active:
        return starts, [None] * len(starts), [None] * len(starts), 0
    centres = starts + cfg.window_s / 2.0
    labels, under = [], []
    for c in centres:
        label, found = None, None
        for o, d, dsc in zip(onset, duration, desc):
            if o <= c < o + d:
                found = dsc if found is None else found
                lab = rule.label(dsc)
                if lab is not None:
                    label, found = lab, dsc
                    break
        labels.append(label)
        under.append(found)
    return starts, labels, under, 0


def recording_windows(raw, cfg, keep: list[str], where: str, rule: LabelRule) -> RecordingWindows:
    """Windows of one preloaded ``raw`` whose channels are already picked by type (``keep`` is the
    final channel list; other channels may serve as a reference)."""
    sfreq0 = float(raw.info["sfreq"])
    duration_s = raw.n_times / sfreq0
    if duration_s < cfg.window_s:
        raise _TooShort(duration_s)
    ann = annotation_table(raw)
    starts, labels, under, outside = window_starts(cfg, duration_s, ann, rule)
    picks = [raw.ch_names.index(c) for c in keep]
    data0 = raw._data
    finite, non_finite, flat = scan_raw(
        data0, sfreq0, starts, cfg.window_s, cfg.flat_threshold, picks, by_channel=True
    )
    if not finite:
        # Zeroed so that the filter does not spread them; the windows that held them are dropped.
        np.nan_to_num(data0, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    data = preprocess_raw(raw, cfg, keep, where)  # (keep, samples), these channels in this order
    n_win = int(round(cfg.window_s * cfg.sfreq))
    idx = np.round(starts * cfg.sfreq).astype(np.int64)
    dropped: Counter = Counter()
    unlabelled: Counter = Counter()
    if outside:
        dropped[DROP_OUTSIDE] += outside
    chosen: list[int] = []
    for i in range(len(starts)):
        if non_finite[i]:
            dropped[DROP_NONFINITE] += 1
        elif flat[:, i].any():
            dropped[flat_reason([keep[c] for c in np.flatnonzero(flat[:, i])])] += 1
        elif rule.active and labels[i] is None:
            dropped[DROP_UNLABELLED] += 1
            unlabelled[under[i] or "(no annotation)"] += 1
        elif idx[i] + n_win <= data.shape[1]:  # False only by rounding at the very end
            chosen.append(i)
    flat_windows = Counter()
    for row, count in enumerate(flat.sum(axis=1).tolist() if len(starts) else []):
        if count:
            flat_windows[keep[row]] = int(count)
    kept_labels = [labels[i] for i in chosen]
    idx = idx[chosen]
    mean = std = None
    if cfg.normalize in ("recording", "file") and len(idx):  # a file holds one recording: the same
        # One centre and scale per channel for the whole recording, given to every window.
        centre, scale = recording_stats(data, idx, n_win)
        mean = np.broadcast_to(centre, (len(idx), len(centre)))
        std = np.broadcast_to(scale, (len(idx), len(scale)))
    elif len(idx) > 1 and np.any(np.diff(np.sort(idx)) < n_win):
        # Overlapping windows: each sample's sums are taken once for all the windows it is in.
        mean, std = window_stats(data, idx, n_win)
    return RecordingWindows(
        data=data,
        starts=idx,
        n_samples=n_win,
        mean=mean,
        std=std,
        labels=kept_labels if rule.active else None,
        dropped=dropped,
        unlabelled=unlabelled,
        flat_windows=flat_windows,
    )


class _TooShort(Exception):
    def __init__(self, duration_s: float):
        super().__init__(duration_s)
        self.duration_s = duration_s


def params_of(cfg) -> dict[str, Any]:
    """Every config field that changes the windows (not the patch geometry, not the cache switch)."""
    import dataclasses

    skip = {"patch_s", "patches_per_window", "cache", "n_jobs", "space", "montage"}  # space: placed after the windows
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in skip}

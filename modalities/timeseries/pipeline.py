"""From timeseries sources to normalised, labelled windows.

The steps, in order: open every item (with several, an unreadable one is skipped and reported),
pick the channels (``modality.channels``) and check that every source gives the same ones, settle
the rate (``sfreq_target``, else the sources' common rate) and the window and stride in samples,
skip the sources shorter than one window, leave out the channels that are flat throughout a
source or in 80% or more of its windows (:mod:`..common.channels`: a dead or non-signal channel, left out of
every source so the channel sets agree, with one warning naming it), then for each source, block by block: resample
(``scipy.signal.resample_poly``), cut windows, label them (:mod:`.labels`), drop the windows
holding NaN/inf or in which every channel is flat (counted and reported), normalise each window per
channel (or each recording, ``normalize: recording``, or each source: one array of one file,
``normalize: file``, whose statistics take a first pass over its blocks) and hand them to the
cache's writer.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from relpos.errors import DataError

from ..common.channels import (
    PIN_HINT,
    dead_channel_warning,
    dead_channels,
    flat_in_windows,
    flat_throughout,
    format_names,
    mostly_flat,
)
from ..common.normalisation import normalise, pooled_stats, recording_stats, scaled, window_samples
from ..common.normalisation_choice import resolve as resolve_normalize
from .labels import label_mapping, resampled_length, window_labels
from .readers import open_item
from .sources import Source, reason
from .windows import WindowChoice, choose_windows

#: Roughly how many values are read from a source at a time (bounded memory on large files).
CHUNK_VALUES = 1 << 24
#: Reasons for dropping windows, as counted in ``info["dropped"]``.
DROP_NONFINITE = "non-finite values"
DROP_FLAT = "flat (every channel constant)"
#: A channel is flat where its peak-to-peak is exactly 0: sensor data come in any unit, so no
#: other threshold means the same thing for every channel.
FLAT_SPAN = np.finfo(np.float64).tiny
_GLOB_CHARS = ("*", "?", "[")


def _count_windows(n: int) -> str:
    return f"{n} window" + ("" if n == 1 else "s")


def resample_ratio(sfreq: float, target: float) -> tuple[int, int]:
    """(up, down) with target / sfreq = up / down."""
    if sfreq == target:
        return 1, 1
    ratio = Fraction(target).limit_denominator(10**6) / Fraction(sfreq).limit_denominator(10**6)
    ratio = ratio.limit_denominator(1000)
    return ratio.numerator, ratio.denominator


def wanted_channels(channels: str) -> list[str]:
    """The names and patterns of ``modality.channels``."""
    return [w.strip() for w in channels.split(",") if w.strip()]


def pick_channels(src: Source, channels: str) -> list[int]:
    """Indices of the channels of ``src`` that ``modality.channels`` selects, in its order (all when empty)."""
    wanted = wanted_channels(channels)
    if not wanted:
        return list(range(len(src.ch_names)))
    picks: list[int] = []
    for pattern in wanted:
        hits = [i for i, c in enumerate(src.ch_names) if fnmatch.fnmatchcase(c, pattern) or c == pattern]
        if not hits:
            raise DataError(
                f"{src.name} has no channel matching {pattern!r} (modality.channels); available: "
                f"{', '.join(src.ch_names)}."
            )
        picks.extend(i for i in hits if i not in picks)
    return picks


def read_block(src: Source, start: int, stop: int) -> np.ndarray:
    """Samples ``[start, stop)`` of ``src``; a read that fails (a corrupt file) is a one-sentence DataError."""
    try:
        return src.read(start, stop)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - readers raise many kinds for a corrupt file
        raise DataError(f"Cannot read the samples of {src.name}: {reason(exc)}") from None


def _chunk_samples(src: Source) -> int:
    return max(1, CHUNK_VALUES // max(1, len(src.ch_names) * src.n_times))


@dataclass
class _Progress:
    """What the build has found so far: what ``relpos data inspect`` reports when nothing is usable."""

    skipped: list[dict[str, str]] = field(default_factory=list)
    files: dict[int, dict[str, Any]] = field(default_factory=dict)  # id(source) -> its report entry
    sfreq: float | None = None
    ch_names: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)


def build_windows(items: list[Any], writer, source_text: str, cfg, report: bool = False) -> None:
    """Make the windows of ``items`` (see the module docstring) into ``writer``, closing every file.

    Parameters
    ----------
    report : bool
        For ``relpos data inspect``: when nothing is usable, write no window and put the reason in
        ``writer.info["problem"]``, with every file found and its channels' status, instead of
        raising it.
    """
    sources: list[Source] = []
    progress = _Progress()
    try:
        _build(items, writer, source_text, cfg, sources, progress)
    except DataError as exc:
        if not report:
            raise
        writer.info.update({
            "sfreq": progress.sfreq,
            "ch_names": progress.ch_names,
            "dead_channels": progress.dead,
            "source": source_text,
            "files": list(progress.files.values()),
            "skipped": progress.skipped,
            "dropped": {},
            "problem": str(exc),
        })
    finally:
        for src in sources:
            if src.close is not None:
                src.close()


def _file_entry(src: Source, channels: list[str]) -> dict[str, Any]:
    """The report entry of one source before its windows are made."""
    return {
        "path": src.entry or src.path or src.name,
        "channels": list(channels),
        "sfreq": src.sfreq,
        "duration_s": src.n_samples * src.n_times / src.sfreq,
        "n_samples": src.n_samples,
        "sample_duration_s": src.n_times / src.sfreq,
        "annotations": {},
        "n_windows": 0,
        "labels": None,
        "label_counts": {},
    }


def _channel_status(
    src: Source, names: list[str], flat: np.ndarray, non_finite: np.ndarray, windows=None
) -> list[dict]:
    """Per picked channel of ``src``: name, unit, status ("ok", "flat throughout", "flat in N of M
    windows", "N non-finite samples"); ``windows`` is (flat in most windows, windows each channel is
    flat in, windows) from :func:`_scan_channels`."""
    mostly, counts, n_windows = windows if windows is not None else (np.zeros(len(names), bool), None, 0)
    out = []
    for i, (name, is_flat, n_bad) in enumerate(zip(names, flat.tolist(), non_finite.tolist())):
        parts = (["flat throughout"] if is_flat else [])
        if mostly[i] and not is_flat:
            parts.append(f"flat in {int(counts[i])} of {n_windows} windows")
        parts += [f"{n_bad} non-finite samples"] if n_bad else []
        out.append({
            "name": name, "unit": src.unit or "n/a", "status": ", ".join(parts) or "ok",
            "flat_throughout": bool(is_flat), "mostly_flat": bool(mostly[i] and not is_flat),
        })
    return out


def _open_all(items, writer, source_text, strict, skipped, cfg, sources: list[Source]) -> None:
    for item in items:
        try:
            sources.extend(open_item(item, cfg))
        except DataError as exc:
            if strict:
                raise
            skipped.append({"path": str(item), "reason": str(exc)})
            writer.warn(f"Skipping {str(item)!r}: {exc}")
    if not sources:
        raise DataError(
            f"No readable timeseries in {source_text!r}: " + " ".join(s["reason"] for s in skipped[:3])
        )
    stems = [src.group for src in sources]
    for src in sources:
        if src.path is not None and stems.count(src.group) > 1:  # same file name in two folders
            stem = Path(src.path).stem
            src.group = str(Path(src.path).with_suffix("")) + src.group[len(stem):]


def _window_geometry(sources: list[Source], cfg) -> tuple[float, dict, dict, WindowChoice]:
    """(rate in Hz, {id(source): (up, down)}, {id(source): resampled length in samples}, the window and
    stride in samples with how they were chosen: :mod:`.windows`)."""
    rates = {src.sfreq for src in sources}
    if not cfg.sfreq_target and len(rates) > 1:
        listed = ", ".join(f"{s.sfreq:g} Hz in {s.name}" for s in sources[:4])
        raise DataError(
            f"The sources have different sampling rates ({listed}); set modality.sfreq_target to "
            f"resample them to one rate."
        )
    rate = float(cfg.sfreq_target or sources[0].sfreq)
    resample = {id(src): resample_ratio(src.sfreq, rate) for src in sources}
    lengths = {id(src): resampled_length(src.n_times, *resample[id(src)]) for src in sources}
    choice = choose_windows([src.n_samples for src in sources], [lengths[id(src)] for src in sources], rate, cfg)
    return rate, resample, lengths, choice


def _scan_channels(
    src: Source, pick: list[int], held: dict[int, np.ndarray], window: int = 0, stride: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(flat, non_finite, flat_windows, n_windows): the channels with no variation within any sample
    of ``src`` (raw samples), how many non-finite values each holds (each ``(len(pick),)``), in how
    many of the ``n_windows`` windows of ``window`` samples every ``stride`` (at the source's own
    rate) each is flat.

    A source read in one block is kept in ``held`` (while the blocks kept stay under
    :data:`CHUNK_VALUES` values) so that making its windows does not read it again.
    """
    flat = np.ones(len(pick), dtype=bool)
    non_finite = np.zeros(len(pick), dtype=np.int64)
    flat_windows = np.zeros(len(pick), dtype=np.int64)
    n_windows = 0
    starts = np.arange(0, src.n_times - window + 1, max(1, stride)) if window > 0 else np.zeros(0, np.int64)
    chunk = _chunk_samples(src)
    for start in range(0, src.n_samples, chunk):
        stop = min(src.n_samples, start + chunk)
        block = read_block(src, start, stop)
        if stop - start == src.n_samples and sum(a.size for a in held.values()) + block.size <= CHUNK_VALUES:
            held[id(src)] = block
        x = block[:, pick]
        per_sample = flat_throughout(x.reshape(-1, x.shape[-1]), FLAT_SPAN).reshape(x.shape[0], x.shape[1])
        flat &= per_sample.all(axis=0)
        non_finite += np.count_nonzero(~np.isfinite(x), axis=(0, 2))
        if len(starts):
            flat_windows += flat_in_windows(x, starts, window, FLAT_SPAN).sum(axis=(0, 2))
            n_windows += x.shape[0] * len(starts)
    return flat, non_finite, flat_windows, n_windows


def _leave_out_dead_channels(
    usable, picks, names, writer, source_text, strict, progress, cfg, held, window=0, stride=0, resample=None
):
    """Drop the channels flat throughout a source, or flat in most of its windows (``window`` and
    ``stride`` samples at the target rate, ``resample`` {id(source): (up, down)}), from every source's
    pick (see :mod:`..common.channels`).

    A channel that ``modality.channels`` names exactly is kept, as asked (with a warning when it is
    flat throughout). Returns (usable sources, their picks, channel names), a source that cannot be
    read being skipped like an unreadable file when there are several.
    """
    skipped = progress.skipped
    masks: dict[str, np.ndarray] = {}
    throughout: dict[str, np.ndarray] = {}
    where: dict[str, list[str]] = {}
    mostly_names: set[str] = set()
    readable = []
    for src in usable:
        up, down = (resample or {}).get(id(src), (1, 1))
        # The windows at the source's own rate: the scan reads raw samples, before resampling.
        raw_window = max(1, int(round(window * down / up))) if window else 0
        raw_stride = max(1, int(round(stride * down / up))) if stride else raw_window
        try:
            mask, non_finite, flat_windows, n_windows = _scan_channels(
                src, picks[id(src)], held, raw_window, raw_stride
            )
        except DataError as exc:
            if strict:
                raise
            skipped.append({"path": src.entry or src.path or src.name, "reason": str(exc)})
            progress.files.pop(id(src), None)
            writer.warn(f"Skipping {src.name}: {exc}")
            continue
        mostly = mostly_flat(flat_windows, n_windows) & ~mask
        if (mask | mostly).all():
            mostly[:] = False  # every channel flat in most windows: those windows are dropped instead
        progress.files[id(src)]["channel_status"] = _channel_status(
            src, names, mask, non_finite, (mostly, flat_windows, n_windows)
        )
        readable.append(src)
        throughout[str(id(src))] = mask
        masks[str(id(src))] = mask | mostly
        for name, is_flat, is_mostly in zip(names, mask, mostly):
            if is_flat or is_mostly:
                where.setdefault(name, []).append(src.entry or src.path or src.name)
            if is_mostly:
                mostly_names.add(name)
    if not readable:
        raise DataError(
            f"No readable timeseries in {source_text!r}: " + " ".join(s["reason"] for s in skipped[-3:])
        )
    dead = dead_channels(masks, names)
    pinned = {w for w in wanted_channels(cfg.channels) if not any(c in w for c in _GLOB_CHARS)}
    if len([n for n in dead if n not in pinned]) == len(names):
        dead = dead_channels(throughout, names)  # no channel left by the window rule: windows decide
    flat_everywhere = set(dead_channels(throughout, names))
    kept_dead = [n for n in dead if n in pinned and n in flat_everywhere]
    dead = [n for n in dead if n not in pinned]
    live = [n for n in names if n not in dead]
    progress.dead = dead
    if kept_dead:
        writer.warn(
            f"{'Channel' if len(kept_dead) == 1 else 'Channels'} {format_names(kept_dead)} named in "
            f"modality.channels {'is' if len(kept_dead) == 1 else 'are'} flat throughout "
            f"{format_names(sorted({r for n in kept_dead for r in where[n]}), limit=3)}; kept as asked."
        )
    if dead and not live:
        places = format_names(sorted({r for n in dead for r in where[n]}), limit=3)
        raise DataError(
            f"Every channel of {source_text!r} ({format_names(dead)}) is flat throughout {places} (constant, "
            f"or without a finite value), so there is no signal to make windows of; check the data, or pick "
            f"other channels with modality.channels."
        )
    if dead:
        mostly = [n for n in dead if n in mostly_names]
        writer.warn(dead_channel_warning(dead, PIN_HINT, where=where, kept=live, mostly=mostly))
        keep = [i for i, n in enumerate(names) if n not in dead]
        picks = {key: [pick[i] for i in keep] for key, pick in picks.items()}
    return readable, picks, live, dead


def _build(items: list[Any], writer, source_text: str, cfg, sources: list[Source], progress: _Progress) -> None:
    strict = len(items) == 1
    skipped = progress.skipped
    _open_all(items, writer, source_text, strict, skipped, cfg, sources)
    picks = {id(src): pick_channels(src, cfg.channels) for src in sources}  # by id: two arrays share a name
    names = [sources[0].ch_names[i] for i in picks[id(sources[0])]]
    progress.ch_names = names
    progress.sfreq = sources[0].sfreq
    progress.files = {id(src): _file_entry(src, [src.ch_names[i] for i in picks[id(src)]]) for src in sources}
    for src in sources[1:]:
        these = [src.ch_names[i] for i in picks[id(src)]]
        if these != names:
            missing = [n for n in names if n not in these]
            extra = [n for n in these if n not in names]
            differ = "; ".join(part for part in (
                f"it lacks {format_names(missing)}" if missing else "",
                f"it has {format_names(extra)} too" if extra else "",
                "" if missing or extra else "in another order",
            ) if part)
            raise DataError(
                f"{src.name} has channels {', '.join(these)} but {sources[0].name} has "
                f"{', '.join(names)} ({differ}); every source must give the same channels (select them with "
                f"modality.channels)."
            )
    rate, resample, lengths, choice = _window_geometry(sources, cfg)
    window, stride = choice.window, choice.stride
    progress.sfreq = rate

    usable = []
    for src in sources:
        if lengths[id(src)] < window:
            message = (
                f"{src.name} lasts {lengths[id(src)] / rate:.6g} s per sample, shorter than one window "
                f"({choice.describe(rate)})."
            )
            if strict and len(sources) == 1:
                raise DataError(message)
            skipped.append({"path": src.name, "reason": message})
            progress.files.pop(id(src))
            writer.warn(f"Skipping {src.name}: it lasts {lengths[id(src)] / rate:.6g} s per sample, "
                        f"shorter than one window ({window / rate:.6g} s).")
        else:
            usable.append(src)
    if not usable:
        raise DataError(
            f"Every source in {source_text!r} is shorter than one window ({choice.describe(rate)}): "
            f"{'; '.join(s['reason'] for s in skipped[-3:])}"
        )

    held: dict[int, np.ndarray] = {}
    usable, picks, names, dead = _leave_out_dead_channels(
        usable, picks, names, writer, source_text, strict and len(sources) == 1, progress, cfg, held,
        window=window, stride=stride, resample=resample,
    )
    progress.ch_names = names
    mapping, class_names, label_kinds = label_mapping(usable)
    writer.class_names = class_names
    dropped = {DROP_NONFINITE: 0, DROP_FLAT: 0}
    total_made = 0
    # Windows have a time in their recording when every source is one recording cut into windows;
    # the samples of a trial archive (or samples each kept whole) are not windows of one recording.
    continuous = choice.kind != "whole" and all(src.n_samples == 1 for src in sources)
    timed_at = rate if continuous else None
    # normalize: auto is decided here, where the sources' shapes are known; the cache key holds "auto"
    # with the files and options that decide it (modalities/common/normalisation_choice.py)
    normalize, normalize_choice = resolve_normalize(cfg.normalize, continuous, len(usable))
    cfg = replace(cfg, normalize=normalize)
    for src in usable:
        kept, counts, per_source, made = _write_source(
            src, picks[id(src)], held, resample[id(src)], window, stride, mapping, writer, cfg, timed_at
        )
        total_made += made
        for why, count in per_source.items():
            dropped[why] += count
        if per_source[DROP_NONFINITE]:
            writer.warn(
                f"Dropped {_count_windows(per_source[DROP_NONFINITE])} of {src.name} holding NaN or "
                f"infinite values."
            )
        if per_source[DROP_FLAT]:
            writer.warn(
                f"Dropped {_count_windows(per_source[DROP_FLAT])} of {src.name} in which every channel "
                f"({format_names(names)}) is flat."
            )
        progress.files[id(src)].update({
            "channels": list(names),
            "n_windows": kept,
            "labels": label_kinds.get(src.name),
            "label_counts": {
                (class_names[c] if 0 <= c < len(class_names) else str(c)): n for c, n in sorted(counts.items())
            },
        })
    if writer.count == 0:
        raise DataError(
            f"Every window made from {source_text!r} was dropped ({dropped[DROP_NONFINITE]} of "
            f"{total_made} holding NaN or infinite values, {dropped[DROP_FLAT]} in which every channel "
            f"({format_names(names)}) is flat)."
        )
    kinds = sorted({k for k in label_kinds.values() if k})
    writer.info.update({
        "sfreq": rate,
        "time_unit": "s",  # of the windows' onsets and durations in their recordings (when they have them)
        "ch_names": names,
        "dead_channels": dead,
        "source": source_text,
        "n_recordings": len(usable),
        "window_samples": window,
        "stride_samples": stride,
        "window_kind": choice.kind,
        "window_choice": choice.note,
        "normalize": normalize,
        "normalize_choice": normalize_choice,
        "label_kind": kinds[0] if len(kinds) == 1 else ("mixed" if kinds else None),
        "files": list(progress.files.values()),
        "skipped": skipped,
        "dropped": {why: count for why, count in dropped.items() if count},
    })


def _recording_normalised(x, windows, starts, window, keep):
    """``windows`` (``(m · n, C, window)``, row by row) scaled by each row's robust z-score.

    Each of the ``m`` rows of ``x`` (``(m, C, T)``: a source without a sample dim, or one sample of
    a source with one) is a recording: its centre and scale per channel come from the samples of
    its kept windows (:func:`..common.normalisation.recording_stats`).
    """
    m, n_win = x.shape[0], len(starts)
    per_row = windows.reshape(m, n_win, *windows.shape[1:]).astype(np.float64)
    kept = keep.reshape(m, n_win)
    for row in range(m):
        if kept[row].any():
            per_row[row] = scaled(per_row[row], *recording_stats(x[row], starts[kept[row]], window))
    return per_row.reshape(windows.shape)


def _cut_block(src, start, stop, pick, held, ratio, window, stride, pop):
    """Samples ``[start, stop)`` of ``src`` cut into windows: ``(x, starts, windows, finite, flat)``.

    ``x`` is ``(m, C, T)`` (the picked channels, resampled), ``windows`` ``(m · n, C, window)`` row by
    row (views of ``x``), ``finite`` and ``flat`` ``(m · n,)``: the windows without NaN/inf, and the
    finite ones in which every channel is constant (both dropped). A source held from the channel
    scan is taken from ``held`` (and left there unless ``pop``).
    """
    up, down = ratio
    if id(src) in held:
        block = held.pop(id(src)) if pop else held[id(src)]
    else:
        block = read_block(src, start, stop)
    x = block[:, pick]
    if (up, down) != (1, 1):
        from scipy.signal import resample_poly

        x = resample_poly(x, up, down, axis=-1)
    starts = np.arange(0, x.shape[-1] - window + 1, stride)
    windows = np.lib.stride_tricks.sliding_window_view(x, window, axis=-1)[:, :, starts]
    windows = windows.transpose(0, 2, 1, 3).reshape(x.shape[0] * len(starts), x.shape[1], window)
    finite = np.isfinite(windows).all(axis=(1, 2))
    with np.errstate(invalid="ignore"):
        flat = finite & (np.ptp(np.where(np.isfinite(windows), windows, 0), axis=-1) == 0).all(axis=1)
    return x, starts, windows, finite, flat


def _file_stats(src, pick, held, ratio, window, stride):
    """One robust centre and scale per channel over everything ``src`` holds (``normalize: file``).

    ``src`` is one array of one file (a file's only array, or the split read from an archive with
    ``X_train``/``X_test``: the test split gets its own statistics from its own samples). Its
    samples are those of the kept windows of every row (each sample once per row, as for
    ``recording``), all rows' samples pooled per channel (:func:`..common.normalisation.pooled_stats`); read block by block
    like the windows, so the kept samples of the whole source are held once. None when no window
    is kept (the source then gives no window).
    """
    pieces = []
    for start in range(0, src.n_samples, _chunk_samples(src)):
        stop = min(src.n_samples, start + _chunk_samples(src))
        x, starts, _, finite, flat = _cut_block(src, start, stop, pick, held, ratio, window, stride, pop=False)
        kept = (finite & ~flat).reshape(x.shape[0], len(starts))
        pieces.extend(
            window_samples(x[row], starts[kept[row]], window) for row in range(x.shape[0]) if kept[row].any()
        )
    return pooled_stats(pieces) if pieces else None


def _write_source(src, pick, held, ratio, window, stride, mapping, writer, cfg, timed_at=None):
    """Cut, label, check and normalise the windows of one source into ``writer``.

    With ``timed_at`` (the windows' rate, Hz), each window's onset in its
    recording (from the recording's first sample) and its duration go with it; dropped windows leave
    their time between the kept ones.

    Returns
    -------
    tuple
        (windows kept, {class index: windows kept}, {drop reason: windows}, windows made).
    """
    up, down = ratio
    per_source = {DROP_NONFINITE: 0, DROP_FLAT: 0}
    kept = made = 0
    counts: dict[int, int] = {}
    chunk = _chunk_samples(src)
    file_stats = _file_stats(src, pick, held, ratio, window, stride) if cfg.normalize == "file" else None
    for start in range(0, src.n_samples, chunk):
        stop = min(src.n_samples, start + chunk)
        x, starts, windows, finite, flat = _cut_block(src, start, stop, pick, held, ratio, window, stride, pop=True)
        n_win = len(starts)
        labels = None
        if mapping is not None:
            raw = src.labels[start:stop]
            labels = window_labels(raw, mapping, starts, window, up, down, src.n_times, cfg.label_at)
        sample_ids = src.sample_ids[start:stop]
        groups = np.repeat(
            [f"{src.group}/{s}" if src.has_sample_dim else src.group for s in sample_ids], n_win
        )
        subjects = np.repeat(src.subjects[start:stop], n_win) if src.subjects is not None else None
        keep = finite & ~flat
        if cfg.normalize == "recording":
            windows = _recording_normalised(x, windows, starts, window, keep)
        per_source[DROP_NONFINITE] += int((~finite).sum())
        per_source[DROP_FLAT] += int(flat.sum())
        made += len(keep)
        windows = windows[keep]
        if cfg.normalize == "file" and len(windows):
            windows = scaled(windows, *file_stats)  # one pair per channel for every window of the source
        if cfg.normalize == "instance" and len(windows):
            windows = normalise(windows)
        onsets = np.tile(starts / timed_at, x.shape[0])[keep] if timed_at is not None else None
        writer.append(
            windows.astype(np.float32),
            groups[keep].tolist(),
            labels[keep] if labels is not None else None,
            subjects[keep].tolist() if subjects is not None else None,
            onsets=onsets,
            durations=window / timed_at if timed_at is not None else None,
        )
        kept += int(keep.sum())
        if labels is not None:
            for c, n in zip(*np.unique(labels[keep], return_counts=True)):
                counts[int(c)] = counts.get(int(c), 0) + int(n)
    return kept, counts, per_source, made

"""EEG trials stored as NumPy arrays, each trial a short recording.

The layout is the trial archive of :mod:`..common.trial_archive` (the UEA-archive copies in the
shared data, ``scp1.npz``, ``blink.npz``): ``X_train`` / ``X_test`` ``(n, channels, samples)``,
``y_train`` / ``y_test`` class indices, ``class_names``, ``sfreq`` (Hz), ``ch_names`` and optionally
``ch_types``. An ``.npz`` holding ``X``
(and ``y``), or an ``.npy`` array ``(n, channels, samples)`` / ``(channels, samples)`` with
``modality.source_sfreq``, works too. Trials go through the same steps as recordings, with MNE's
array functions (``mne.filter.notch_filter``, ``filter_data``, ``resample``). Each trial is its own
recording (``normalize: recording`` scales each by its own statistics); ``normalize: file`` scales
every trial of the array read (``X_train``, ``X_test``: each split its own statistics, from its own
samples) by one robust z-score per channel over all of them, so trials keep their offsets and
amplitudes relative to one another.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from relpos.errors import DataError

from ..common.channel_types import retype_by_name, retyped_hint
from ..common.channels import PIN_HINT, dead_channel_warning, flat_in_windows, mostly_flat
from ..common.normalisation import normalise, pooled_stats, recording_stats, scaled, window_samples
from ..common.numpy_files import open_numpy, read_array
from ..common.trial_archive import has_splits, split_arrays
from .channel_policy import is_are, pinned
from .pipeline import (
    DROP_NONFINITE,
    flat_reason,
    named_channels,
    notch_freqs,
    select_channels,
    split_names,
)
from .sources import subject_of

UNIT_SCALE = {"V": 1.0, "mV": 1e-3, "uV": 1e-6}
CHUNK_TRIALS = 256


def _arrays(cfg, path: Path) -> tuple[list[tuple[str, np.ndarray, np.ndarray | None]], dict[str, Any]]:
    """[(split, X, y)] and the archive's metadata."""
    where = repr(str(path))
    archive = open_numpy(path)
    if isinstance(archive, np.ndarray):
        x = archive[None] if archive.ndim == 2 else archive
        if x.ndim != 3:
            raise DataError(
                f"The array in {where} has shape {archive.shape}; EEG trials need (trials, channels, "
                f"samples) or (channels, samples)."
            )
        return [("all", x, None)], {}
    keys = set(archive.files)
    meta = {k: read_array(archive, k, path) for k in ("sfreq", "ch_names", "ch_types", "class_names") if k in keys}
    if has_splits(keys):
        out = []
        for split, data_key in split_arrays(archive.files, cfg.split, where):
            y = read_array(archive, f"y_{split}", path) if f"y_{split}" in keys else None
            out.append((split, read_array(archive, data_key, path), y))
        return out, meta
    for key in ("X", "x"):
        if key in keys:
            y = read_array(archive, "y", path) if "y" in keys else None
            return [("all", read_array(archive, key, path), y)], meta
    raise DataError(
        f"{where} holds no EEG trials: expected arrays X_train/X_test (or X), found {sorted(keys)}."
    )


def load_trials(cfg, path: Path, params: dict[str, Any], enabled: bool | None = None, report: bool = False):
    """Windows from the trials in ``path`` (cached like recordings unless ``enabled`` is False).

    With ``report`` (``relpos data inspect``'s second try), an archive that leaves no window gives
    zero windows and ``info["problem"]`` instead of an error, so its channels can still be reported.
    """
    from relpos.cache import cached_windows

    params = {**params, "input": "numpy-trials"}
    return cached_windows(
        "eeg", [path], params, lambda writer: _build(cfg, path, writer, report),
        enabled=cfg.cache if enabled is None else enabled,
    )


def _channel_scan(
    cfg, parts, rows: list[int], scale: float, starts: np.ndarray, length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(flat, non_finite, flat_windows, n_windows) per channel ``rows`` over every trial: flat
    throughout the archive (its peak-to-peak over all trials below ``flat_threshold``), its number
    of non-finite samples, and in how many of the ``n_windows`` windows (``length`` samples from each
    of ``starts``, at the trials' own rate, in every trial) it is flat."""
    high = np.full(len(rows), -np.inf)
    low = np.full(len(rows), np.inf)
    bad = np.zeros(len(rows), dtype=np.int64)
    flat_windows = np.zeros(len(rows), dtype=np.int64)
    n_windows = 0
    for _, x_all, _ in parts:
        for lo in range(0, len(x_all), CHUNK_TRIALS):
            chunk = np.asarray(x_all[lo : lo + CHUNK_TRIALS], dtype=np.float64)[:, rows] * scale
            high = np.fmax(high, np.fmax.reduce(chunk, axis=(0, 2)))  # fmax/fmin skip NaN
            low = np.fmin(low, np.fmin.reduce(chunk, axis=(0, 2)))
            bad += np.count_nonzero(~np.isfinite(chunk), axis=(0, 2))
            if len(starts):
                flat_windows += flat_in_windows(chunk, starts, length, cfg.flat_threshold).sum(axis=(0, 2))
                n_windows += len(chunk) * len(starts)
    with np.errstate(invalid="ignore"):
        span = high - low
    flat = ~(span >= cfg.flat_threshold) if cfg.flat_threshold > 0 else np.zeros(len(rows), dtype=bool)
    return flat, bad, flat_windows, n_windows


def _source_rate(cfg, meta: dict[str, Any], where: str) -> float:
    """The trials' sampling rate in Hz: ``modality.source_sfreq``, else the archive's ``sfreq``."""
    src = float(cfg.source_sfreq) if cfg.source_sfreq > 0 else float(meta["sfreq"]) if "sfreq" in meta else 0.0
    if src <= 0:
        raise DataError(
            f"{where} does not say its sampling rate (no 'sfreq' array); set modality.source_sfreq in Hz."
        )
    if src <= 2 * cfg.h_freq:
        raise DataError(
            f"Trials in {where} are sampled at {src} Hz, not above twice the band-pass high edge "
            f"({cfg.h_freq} Hz); lower modality.h_freq."
        )
    return src


def _channels(cfg, n_channels: int, meta: dict[str, Any], where: str):
    """``(ch_names, typed, selected, refs, retyped)``: the archive's channel names, those of the
    types kept (``modality.channel_types``, after retyping by name), those selected by
    ``modality.channels``, the reference channels and the channels retyped from their names."""
    ch_names = [str(c) for c in meta["ch_names"]] if "ch_names" in meta else [f"ch{i}" for i in range(n_channels)]
    ch_types = [str(c) for c in meta["ch_types"]] if "ch_types" in meta else ["eeg"] * n_channels
    retyped = retype_by_name(ch_names, ch_types, keep=named_channels(ch_names, cfg))
    ch_types = [retyped.get(n, t) for n, t in zip(ch_names, ch_types)]
    types = split_names(cfg.channel_types)
    typed = [n for n, t in zip(ch_names, ch_types) if t in types]
    if not typed:
        raise DataError(
            f"{where} has no channels of type {', '.join(types)}; its channel types are "
            f"{', '.join(sorted(set(ch_types)))} ({retyped_hint(retyped)})."
        )
    selected = select_channels(typed, cfg.channels, where)
    reference = cfg.reference.strip()
    refs = [] if reference.lower() in ("", "average") else split_names(reference)
    missing = [r for r in refs if r not in typed]
    if missing:
        raise DataError(
            f"{where} has no reference channel {', '.join(map(repr, missing))} (modality.reference = "
            f"{reference!r}); its channels are: {', '.join(typed)}."
        )
    return ch_names, typed, selected, refs, retyped


def _dead_channels(cfg, parts, rows: list[int], selected: list[str], scale: float, starts: np.ndarray,
                   length: int, where: str) -> tuple[list[str], list[dict[str, Any]], str]:
    """(dead, channel_status, unusable) of the ``selected`` channels (``rows`` of the archive) over
    every trial: those left out (flat throughout, or in most windows ``length`` samples from each of
    ``starts`` at the trials' own rate), each channel's report entry, and the sentence that says
    why nothing is usable (or "")."""
    flat, non_finite, flat_windows, n_windows = _channel_scan(cfg, parts, rows, scale, starts, length)
    # Flat in most windows (a marker line): dead too, unless every channel is (the windows are then
    # dropped one by one) or the user named it.
    mostly = mostly_flat(flat_windows, n_windows) & ~flat
    if (flat | mostly).all():
        mostly[:] = False
    mostly &= np.array([not pinned(cfg, n) for n in selected], dtype=bool)
    dead = [n for n, f, m in zip(selected, flat.tolist(), mostly.tolist()) if f or m]
    status = [
        {
            "name": n,
            "unit": cfg.npz_unit,
            "status": "; ".join(
                t for t in (
                    "left out (flat throughout every trial)" if f else "",
                    f"left out (flat in {c} of {n_windows} windows)" if m else "",
                    f"{b} non-finite samples" if b else "",
                ) if t
            ) or "ok",
            "flat_throughout": bool(f),
            "mostly_flat": bool(m),
        }
        for n, f, m, c, b in zip(selected, flat.tolist(), mostly.tolist(), flat_windows.tolist(), non_finite.tolist())
    ]
    thr = cfg.flat_threshold
    unusable = ""
    named = [n for n in dead if pinned(cfg, n)]
    if dead and len(dead) == len(selected):  # only channels flat throughout: see ``mostly`` above
        unusable = (
            f"{where} has no live channel: {is_are(dead)} flat throughout every trial (peak-to-peak below "
            f"modality.flat_threshold = {thr:g} V after modality.npz_unit = {cfg.npz_unit!r}); check the "
            f"unit or lower modality.flat_threshold."
        )
    elif named:
        unusable = (
            f"{where}: {is_are(named)} named in modality.channels but flat throughout every trial, so every "
            f"window would be dropped; leave {'it' if len(named) == 1 else 'them'} out of modality.channels."
        )
    return dead, status, unusable


def _checked_and_filtered(cfg, x, src, starts, n_win, n_src, typed, selected, pick, refs, dropped):
    """``(x, keep)`` of a chunk of trials ``x`` (``(trials, typed channels, samples)``, volts): the
    windows to keep (``(trials, windows)``: no non-finite value, no flat channel, counted in
    ``dropped`` otherwise) checked on the raw samples at the trials' own rate, then ``x`` notched,
    band-passed, re-referenced, reduced to the ``pick`` channels and resampled with MNE."""
    import mne

    keep = np.ones((len(x), len(starts)), dtype=bool)
    for j, a_t in enumerate(starts):
        a = int(round(a_t * src / cfg.sfreq))
        b = min(n_src, max(a + 1, int(round((a_t + n_win) * src / cfg.sfreq))))
        seg = x[:, pick, a:b]
        bad = ~np.isfinite(seg).all(axis=(1, 2))
        with np.errstate(invalid="ignore"):
            flat_ch = (np.ptp(seg, axis=2) < cfg.flat_threshold) & ~bad[:, None]  # (trials, channels)
        flat_ch &= cfg.flat_threshold > 0
        flat = flat_ch.any(axis=1)
        dropped[DROP_NONFINITE] += int(bad.sum())
        for combo, n in Counter(tuple(np.flatnonzero(row)) for row in flat_ch[flat]).items():
            dropped[flat_reason([selected[c] for c in combo])] += n
        keep[:, j] = ~bad & ~flat
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        freqs = notch_freqs(cfg.notch_freq, src)
        if len(freqs):
            x = mne.filter.notch_filter(x, src, freqs, verbose="error")
        x = mne.filter.filter_data(x, src, cfg.l_freq or None, cfg.h_freq, verbose="error")
        if cfg.reference.strip().lower() == "average":
            x = x - x.mean(axis=1, keepdims=True)
        elif refs:
            x = x - x[:, [typed.index(r) for r in refs]].mean(axis=1, keepdims=True)
        x = x[:, pick]
        if src != cfg.sfreq:
            x = mne.filter.resample(x, up=cfg.sfreq, down=src, axis=-1, verbose="error")
    return x, keep


def _build(cfg, path: Path, writer, report: bool = False) -> None:
    where = repr(str(path))
    parts, meta = _arrays(cfg, path)
    src = _source_rate(cfg, meta, where)
    ch_names, typed, selected, refs, retyped = _channels(cfg, int(parts[0][1].shape[1]), meta, where)
    scale = UNIT_SCALE[cfg.npz_unit]
    n_src = int(parts[0][1].shape[2])
    n_target = int(round(n_src * cfg.sfreq / src))
    n_win = int(round(cfg.window_s * cfg.sfreq))
    stride = int(round(cfg.stride_s * cfg.sfreq))
    starts = np.arange(0, n_target - n_win + 1, stride)
    dead, status, unusable = _dead_channels(
        cfg, parts, [ch_names.index(n) for n in selected], selected, scale,
        np.round(starts * src / cfg.sfreq).astype(np.int64), max(1, int(round(n_win * src / cfg.sfreq))), where,
    )
    if unusable:
        if not report:
            raise DataError(unusable)
        # inspect: say what each channel is, and why nothing is usable.
        for entry in status:
            entry["status"] = entry["status"].replace("left out (flat throughout every trial)", "flat throughout every trial")
        writer.info.update(
            {
                "sfreq": cfg.sfreq, "ch_names": [], "source": str(path), "problem": unusable, "dropped": {},
                "files": [{"path": str(path), "channels": selected, "sfreq": src, "n_windows": 0,
                           "channel_status": status}],
            }
        )
        return
    if dead:
        selected = [n for n in selected if n not in dead]
        writer.warn(dead_channel_warning(
            dead, PIN_HINT, where={n: [path.name] for n in dead}, kept=selected,
            mostly=[e["name"] for e in status if e["mostly_flat"]],
        ))
    typed_idx = [ch_names.index(n) for n in typed]
    pick = [typed.index(n) for n in selected]
    if n_target < n_win:
        raise DataError(
            f"Trials in {where} last {n_src / src:.2f} s, shorter than one window "
            f"(modality.window_s = {cfg.window_s} s)."
        )
    if cfg.windows != "fixed":
        raise DataError(
            f"{where} holds trials without annotations; use modality.windows = 'fixed' (got {cfg.windows!r})."
        )
    class_names = [str(c) for c in meta["class_names"]] if "class_names" in meta else []
    has_labels = all(y is not None for _, _, y in parts)
    if has_labels and not class_names:
        class_names = [str(c) for c in sorted({int(v) for _, _, y in parts for v in y})]
    stem = path.stem
    dropped: Counter = Counter()
    counts = {}
    # One trial in all is one recording (a (channels, samples) array): its windows know their time
    # in it. Several trials are a trial archive: no recording time (Windows.onsets None).
    one_recording = sum(len(x_all) for _, x_all, _ in parts) == 1

    def usable(x, keep):
        """``(trials, windows)``: the kept windows that end inside the (resampled) trial."""
        return keep & (starts + n_win <= x.shape[-1])[None, :]

    def emit(split, lo, x, keep, y_all, file_stats=None):
        """Write the kept windows of the trials ``lo, lo + 1, ...`` (``x``: filtered, resampled)."""
        windows, groups, subjects, labels, onsets = [], [], [], [], []
        ok = usable(x, keep)
        for i in range(len(x)):
            trial = lo + i
            rid = f"{stem}/{split}/{trial:05d}"
            sid = subject_of(path.name, cfg.subject_pattern) or rid
            trial_x = x[i]
            if file_stats is not None:
                # normalize: file: the split's one robust z-score per channel, for every trial.
                trial_x = scaled(trial_x, *file_stats)
            elif cfg.normalize == "recording" and ok[i].any():
                # Each trial is its own recording: one robust z-score per channel over the
                # samples of its kept windows.
                trial_x = scaled(trial_x, *recording_stats(trial_x, starts[ok[i]], n_win))
            for j, a in enumerate(starts):
                if ok[i, j]:
                    windows.append(trial_x[:, a : a + n_win])
                    onsets.append(a / cfg.sfreq)
                    groups.append(rid)
                    subjects.append(sid)
                    if has_labels:
                        labels.append(int(y_all[trial]))
        if windows:
            writer.append(
                normalise(np.stack(windows)) if cfg.normalize == "instance" else np.stack(windows).astype(np.float32),
                groups=groups,
                labels=np.array(labels, dtype=np.int64) if has_labels else None,
                subjects=subjects,
                onsets=np.array(onsets) if one_recording else None,
                durations=n_win / cfg.sfreq if one_recording else None,
            )

    for split, x_all, y_all in parts:
        counts[split] = int(len(x_all))
        held = []  # normalize: file: every chunk of the split, until its statistics are known
        for lo in range(0, len(x_all), CHUNK_TRIALS):
            x = np.asarray(x_all[lo : lo + CHUNK_TRIALS], dtype=np.float64)[:, typed_idx] * scale
            x, keep = _checked_and_filtered(cfg, x, src, starts, n_win, n_src, typed, selected, pick, refs, dropped)
            if cfg.normalize == "file":
                held.append((lo, x.astype(np.float32), keep))  # float32: half the memory, as written
            else:
                emit(split, lo, x, keep, y_all)
        if held:
            # normalize: file: one robust z-score per channel over the samples of the kept windows
            # of every trial of this split (each sample once per trial); another split (X_test)
            # gets its own from its own samples.
            pieces = [
                window_samples(x[i], starts[ok[i]], n_win)
                for _, x, keep in held
                for ok in (usable(x, keep),)
                for i in range(len(x))
                if ok[i].any()
            ]
            stats = pooled_stats(pieces) if pieces else None
            for lo, x, keep in held:
                emit(split, lo, x, keep, y_all, stats)
    dropped = Counter({k: v for k, v in dropped.items() if v})
    total = writer.count + sum(dropped.values())
    reasons = ", ".join(f"{n} {why}" for why, n in dropped.items()) or "there are no trials"
    if dropped:
        writer.warn(f"Dropped {sum(dropped.values())} of {total} windows in {where}: {reasons}.")
    problem = f"No window is left in {where} after dropping bad ones ({reasons})."
    if writer.count == 0 and not report:
        raise DataError(problem)
    writer.class_names = class_names if has_labels else []
    writer.info.update(
        {
            "sfreq": cfg.sfreq,
            "time_unit": "s",  # of the windows' onsets and durations, when the archive is one recording
            "ch_names": selected,
            "n_recordings": sum(counts.values()),
            "files": [
                {
                    "path": str(path),
                    "channels": selected,
                    "sfreq": src,
                    "duration_s": round(n_src / src, 6),
                    "annotations": {},
                    "n_windows": int(writer.count),
                    "trials": counts,
                    "channel_status": status,
                }
            ],
            "skipped": [],
            "dropped": dict(dropped),
            "unlabelled": {},
            "source": str(path),
            "dead_channels": dead,
            "retyped_from_names": retyped,
        }
    )
    if writer.count == 0:
        writer.info["problem"] = problem

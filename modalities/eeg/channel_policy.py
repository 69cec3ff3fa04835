"""Which channels of an EEG recording are kept: the user's pins, the reference's needs, and the
dead-channel policy (a channel flat throughout a recording, or in nearly every window of it, is left
out of every recording; :mod:`..common.channels` holds the tests of flatness shared with timeseries).
Also the per-channel report (``channel_status``) that ``relpos data inspect`` shows."""

from __future__ import annotations

from typing import Any

import numpy as np

from relpos.errors import DataError

from ..common.channels import flat_throughout, format_names, mostly_flat
from .pipeline import LabelRule, all_finite, annotation_table, scan_raw, split_names, window_starts


class MoreDeadChannels(Exception):
    """A later recording has a dead channel that earlier recordings were already cut with."""

    def __init__(self, dead: list[str], mostly=()):
        super().__init__(dead)
        self.dead = dead
        self.mostly = set(mostly)  # those of them flat in nearly every window rather than throughout


class NoLiveChannel(Exception):
    """A recording left with no channel to use: ``sentence`` for a single recording, ``reason`` (a
    clause after "Skipping X: ") for one among several."""

    def __init__(self, sentence: str, reason: str):
        super().__init__(sentence)
        self.sentence = sentence
        self.reason = reason


def is_are(names: list[str]) -> str:
    return f"channel {format_names(names)} is" if len(names) == 1 else f"channels {format_names(names)} are"


def joined(first: str, second: str) -> str:
    return "; ".join(t for t in (first, second) if t)


def status_text(first: str, entry: dict[str, Any]) -> str:
    """``first``, then the channel's non-finite samples, or "ok"."""
    n_bad = entry.get("non_finite", 0)
    return joined(first, f"{n_bad} non-finite samples" if n_bad else "") or "ok"


def channel_units(raw) -> dict[str, str]:
    """Channel -> unit as the file states it (EDF's physical dimension), else MNE's unit."""
    units = dict(getattr(raw, "_orig_units", None) or {})
    for ch in raw.info["chs"]:
        if ch["ch_name"] not in units:
            units[ch["ch_name"]] = "V" if int(ch["unit"]) == 107 else str(int(ch["unit"]))  # 107: FIFF volts
    return units


def pinned(cfg, channel: str) -> bool:
    """Whether modality.channels names ``channel`` itself (not through a pattern or 'common')."""
    spec = cfg.channels
    if spec.strip().lower() == "common":
        return False
    names = [n for n in split_names(spec) if not any(c in n for c in "*?[")]
    return any(n == channel or n.lower() == channel.lower() for n in names)


def needed_channels(cfg, available: list[str], selected: list[str], where: str) -> list[str]:
    """The selected channels plus those the reference needs."""
    reference = cfg.reference.strip()
    if reference.lower() == "average":
        return list(available)
    refs = split_names(reference)
    missing = [r for r in refs if r not in available]
    if missing:
        raise DataError(
            f"Recording {where} has no reference channel {', '.join(map(repr, missing))} "
            f"(modality.reference = {reference!r}); its channels of the selected types are: "
            f"{', '.join(available)}."
        )
    return list(selected) + [r for r in refs if r not in selected]


def channel_status(raw, selected: list[str], cfg, rule: LabelRule) -> list[dict[str, Any]]:
    """Per selected channel of the preloaded ``raw``: name, unit, flat throughout, flat in nearly
    every window (:func:`..common.channels.mostly_flat`, on the windows the recording will be cut into,
    those with non-finite samples aside), non-finite samples."""
    rows = [raw.ch_names.index(c) for c in selected]
    flat = flat_throughout(raw._data, cfg.flat_threshold)[rows]
    sfreq0 = float(raw.info["sfreq"])
    starts, _, _, _ = window_starts(cfg, raw.n_times / sfreq0, annotation_table(raw), rule)
    _, non_finite, flat_windows = scan_raw(
        raw._data, sfreq0, starts, cfg.window_s, cfg.flat_threshold, rows, by_channel=True
    )
    n_windows = int(np.count_nonzero(~non_finite))
    counts = flat_windows.sum(axis=1) if len(starts) else np.zeros(len(rows), dtype=np.int64)
    mostly = mostly_flat(counts, n_windows) & ~flat
    bad = np.zeros(len(rows), dtype=np.int64)
    if not all_finite(raw._data):
        bad = np.count_nonzero(~np.isfinite(raw._data[rows]), axis=1)
    units = channel_units(raw)
    out = []
    for name, is_flat, is_mostly, n_flat, n_bad in zip(
        selected, flat.tolist(), mostly.tolist(), counts.tolist(), bad.tolist()
    ):
        text = "flat throughout" if is_flat else f"flat in {n_flat} of {n_windows} windows" if is_mostly else "ok"
        if n_bad:
            text = joined("" if text == "ok" else text, f"{n_bad} non-finite samples")
        out.append({
            "name": name, "unit": units.get(name, "?"), "status": text, "flat_throughout": bool(is_flat),
            "mostly_flat": bool(is_mostly), "flat_windows": int(n_flat), "windows": n_windows,
            "non_finite": int(n_bad),
        })
    return out


def live_channels(cfg, item, state, selected: list[str], status: list[dict[str, Any]]) -> list[str]:
    """The channels to keep from this recording after the dead-channel policy.

    Updates ``state`` (``dead``, ``dead_where``, ``dead_mostly``) and each entry of ``status``.

    Raises
    ------
    NoLiveChannel
        When the recording has nothing to give (no live channel, or a channel the user named is dead).
    MoreDeadChannels
        When a channel is dead here that recordings already written were cut with.
    """
    thr = cfg.flat_threshold
    flat_here = [s["name"] for s in status if s["flat_throughout"]]
    if flat_here and len(flat_here) == len(selected):
        # A recording with no live channel at all is a dead recording, not a set of dead channels.
        raise NoLiveChannel(
            f"Recording {item.where} has no live channel: {is_are(flat_here)} flat throughout it "
            f"(peak-to-peak below modality.flat_threshold = {thr:g}); check the recording, or lower "
            f"modality.flat_threshold.",
            f"it has no live channel ({is_are(flat_here)} flat throughout it)",
        )
    named = [c for c in flat_here if pinned(cfg, c)]
    if named:
        raise NoLiveChannel(
            f"Recording {item.where}: {is_are(named)} named in modality.channels but flat throughout "
            f"it (peak-to-peak below modality.flat_threshold = {thr:g}), so every window would be "
            f"dropped; leave {'it' if len(named) == 1 else 'them'} out of modality.channels.",
            f"{is_are(named)} named in modality.channels but flat throughout it",
        )
    # Flat in nearly every window (a trigger line that steps once): dead too, unless every channel
    # is (then the windows are bad, dropped one by one) or the user named it (kept, as asked).
    mostly_here = [s["name"] for s in status if s["mostly_flat"]]
    if len(flat_here) + len(mostly_here) == len(selected):
        mostly_here = []
    mostly_here = [c for c in mostly_here if not pinned(cfg, c)]
    for entry in status:
        if entry["mostly_flat"] and entry["name"] not in mostly_here:
            entry["mostly_flat"] = False  # its flat windows are dropped and counted instead
            entry["status"] = status_text("", entry)
    for name in flat_here + mostly_here:
        state.dead_where.setdefault(name, []).append(item.recording_id)
    state.dead_mostly.update(mostly_here)
    new = [c for c in selected if c in flat_here + mostly_here and c not in state.dead]
    if new and state.files:
        raise MoreDeadChannels([c for c in selected if c in state.dead or c in new], state.dead_mostly)
    state.dead += new
    for entry in status:
        if entry["name"] not in state.dead:
            continue
        if entry["flat_throughout"]:
            why = "flat throughout this recording"
        elif entry["mostly_flat"]:
            why = f"flat in {entry['flat_windows']} of {entry['windows']} windows of this recording"
        elif entry["name"] in state.dead_mostly:
            why = "flat in most windows of another recording"
        else:
            why = "flat throughout another recording"
        entry["status"] = status_text(f"left out ({why})", entry)
    return [c for c in selected if c not in state.dead]

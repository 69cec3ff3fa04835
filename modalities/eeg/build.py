"""One build of the EEG windows of a list of recordings: each recording read, its channels chosen
(:mod:`.channel_policy`), cut into windows (:mod:`.pipeline`) and appended to the cache's writer;
recordings that cannot be used are skipped with a reason among several, or refused alone; the
summary (``files``, ``skipped``, ``dropped``, ...) goes to the windows' ``info``."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from relpos.errors import DataError

from ..common.channel_types import retype_by_name, retyped_hint
from ..common.channels import PIN_HINT, dead_channel_warning
from .channel_policy import NoLiveChannel, channel_status, joined, live_channels, needed_channels
from .parallel import Prefetch, jobs_for, progress, replay
from .pipeline import LabelRule, _TooShort, named_channels, recording_windows, select_channels, split_names
from .reading import Item, Unreadable, one_line


@dataclass
class BuildState:
    """What the recordings of one build have given so far."""

    dead: list[str]  # channels left out of every recording
    dead_where: dict[str, list[str]] = field(default_factory=dict)  # channel -> recordings it is dead in
    dead_mostly: set[str] = field(default_factory=set)  # dead ones flat in nearly every window, not throughout
    retyped: dict[str, str] = field(default_factory=dict)  # channel -> type from its name (channel_types)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    unlabelled: Counter = field(default_factory=Counter)
    descriptions: Counter = field(default_factory=Counter)
    classes: list[str] = field(default_factory=list)
    reference_names: list[str] | None = None
    reference_where: str = ""


class RecordingsBuild:
    """Builds the windows of recordings into a cache writer (``build(writer, items, source, dead)``).

    ``report`` (``relpos data inspect``'s second try) turns every problem of a recording into a
    report line; ``labelling`` says how ``labels: auto`` was decided. Warnings are said once per
    load, also when the build starts again with more dead channels.
    """

    def __init__(self, config, report: bool = False, labelling: str | None = None):
        self.config = config
        self.report = report
        self.labelling = labelling
        self.warned: set[str] = set()

    def _warn(self, writer, message: str) -> None:
        """Warn once per load (a build started again repeats none), and keep it for cache hits."""
        if message in self.warned:
            writer.warnings.append(message)
        else:
            self.warned.add(message)
            writer.warn(message)

    def _skip(self, writer, state: BuildState, item: Item, reason: str, **extra: Any) -> None:
        """Leave a recording out of a multi-file load: warn (replayed on cache hits) and record why."""
        self._warn(writer, f"Skipping {item.where}: {reason}.")
        state.skipped.append({"path": item.where.strip("'"), "reason": reason, **extra})

    def _fail_or_skip(self, writer, state, item, strict: bool, sentence: str, reason: str, **extra) -> None:
        """Raise ``sentence`` for a single recording; skip it (``reason``) among several or in a report."""
        if strict and not self.report:
            raise DataError(sentence)
        self._skip(writer, state, item, reason, **extra)

    def _read_header(self, item: Item, strict: bool, writer, state: BuildState) -> Any | None:
        try:
            raw = item.open()
        except Unreadable as exc:
            self._fail_or_skip(writer, state, item, strict, f"Recording {item.where} {exc}.", f"it {exc}")
            return None
        except Exception as exc:  # noqa: BLE001 - MNE raises many kinds for a bad file
            why = f"{item.truncated} ({one_line(exc)})" if item.truncated else f"cannot be read with MNE ({one_line(exc)})"
            sentence = (
                f"Recording {item.where} {why}."
                if item.truncated
                else f"Cannot read {item.where} as an EEG recording with MNE: {one_line(exc)}"
            )
            self._fail_or_skip(writer, state, item, strict, sentence, f"it {why}")
            return None
        if self.config.standardize_names:
            import mne

            mne.datasets.eegbci.standardize(raw)
        retyped = retype_by_name(raw.ch_names, raw.get_channel_types(), keep=named_channels(raw.ch_names, self.config))
        if retyped:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MNE's note that the unit changes with the type
                raw.set_channel_types(retyped, verbose="error")
            state.retyped.update(retyped)
        types = split_names(self.config.channel_types)
        present = sorted(set(raw.get_channel_types()))
        if not any(t in present for t in types):
            raise DataError(
                f"Recording {item.where} has no channels of type {', '.join(types)}; its channel "
                f"types are {', '.join(present)} ({retyped_hint(retyped)})."
            )
        raw.pick([t for t in types if t in present], verbose="error")
        return raw

    def __call__(self, writer, items: list[Item], source: str, dead: list[str], mostly=frozenset()) -> None:
        """Append the windows of ``items`` to ``writer``, leaving ``dead`` channels out of every recording."""
        cfg = self.config
        rule = LabelRule(cfg.labels, cfg.label_map)
        strict = len(items) == 1
        state = BuildState(dead=list(dead), dead_mostly=set(mostly))
        common: list[str] | None = None
        if cfg.channels.strip().lower() == "common":
            common = self._common_channels(items, writer, state)
        state.classes = rule.class_names(set()) if rule.active and not rule.identity else []
        index = {c: i for i, c in enumerate(state.classes)}
        jobs = jobs_for(cfg.n_jobs, len(items)) if all(it.raw is None for it in items) else 1
        prefetch = Prefetch(self, items, common, state.dead, state.dead_mostly, jobs) if jobs > 1 else None
        try:
            for item in progress(items):
                ahead = prefetch.take() if prefetch is not None else None  # one per item, in order
                if any(s["path"] == item.where.strip("'") for s in state.skipped):
                    continue
                try:
                    if ahead is None or not replay(self, writer, item, state, index, ahead):
                        self._build_one(writer, item, rule, strict, common, state, index)
                except DataError as exc:
                    if not self.report:
                        raise
                    self._skip(writer, state, item, str(exc).rstrip("."))
        finally:
            if prefetch is not None:
                prefetch.close()
        self._finish(writer, rule, source, state)

    def _build_one(self, writer, item: Item, rule: LabelRule, strict: bool, common, state: BuildState, index) -> None:
        cfg = self.config
        raw = self._read_header(item, strict, writer, state)
        if raw is None:
            return
        available = list(raw.ch_names)
        selected = common if common is not None else select_channels(available, cfg.channels, item.where)
        if state.reference_names is None:
            state.reference_names, state.reference_where = list(selected), item.where
        elif set(selected) != set(state.reference_names):
            only_here = sorted(set(selected) - set(state.reference_names))
            only_there = sorted(set(state.reference_names) - set(selected))
            raise DataError(
                f"Recordings {state.reference_where} and {item.where} have different channels "
                f"(only in the first: {', '.join(only_there) or 'none'}; only in the second: "
                f"{', '.join(only_here) or 'none'}); set modality.channels to 'common' to keep the "
                f"channels they share, or name the channels to use."
            )
        else:
            selected = list(state.reference_names)
        needed = needed_channels(cfg, available, selected, item.where)
        if rule.mode == "sleep" and item.path is not None and item.hypnogram is None:
            if not any(rule.label(d) is not None for d in raw.annotations.description):
                self._warn(
                    writer,
                    f"No hypnogram found for {item.where} (expected <name>-Hypnogram.edf beside it, or "
                    f"one sharing its first 6 characters); its windows have no sleep stage.",
                )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raw.pick(needed, verbose="error")
                raw.load_data(verbose="error")
        except Exception as exc:  # noqa: BLE001 - a truncated or corrupt file
            why = f"{item.truncated} ({one_line(exc)})" if item.truncated else f"its samples cannot be read ({one_line(exc)})"
            self._fail_or_skip(
                writer, state, item, strict,
                f"Recording {item.where} {why}." if item.truncated
                else f"Cannot read {item.where} as an EEG recording with MNE: {one_line(exc)}",
                why if not item.truncated else f"it {why}",
            )
            return
        sfreq0 = float(raw.info["sfreq"])
        duration_s = raw.n_times / sfreq0
        if item.truncated:
            self._warn(writer, f"Recording {item.where} {item.truncated}; reading the {duration_s:.1f} s it holds.")
        status = channel_status(raw, selected, cfg, rule)
        try:
            keep = live_channels(cfg, item, state, selected, status)
        except NoLiveChannel as refused:
            self._fail_or_skip(writer, state, item, strict, refused.sentence, refused.reason, channel_status=status)
            return
        # A dead channel has no place in an average reference either (it would dilute it).
        references = split_names(cfg.reference)
        unused = [c for c in state.dead if c in raw.ch_names and c not in references]
        if unused:
            raw.drop_channels(unused)
        ann_counts = Counter(str(d) for d in raw.annotations.description)
        state.descriptions.update(ann_counts)
        try:
            rw = recording_windows(raw, cfg, keep, item.where, rule)
        except _TooShort as short:
            self._fail_or_skip(
                writer, state, item, strict,
                f"Recording {item.where} lasts {short.duration_s:.1f} s, shorter than one window "
                f"(modality.window_s = {cfg.window_s} s).",
                f"it lasts {short.duration_s:.1f} s, shorter than one window ({cfg.window_s} s)",
                channel_status=status,
            )
            return
        state.dropped.update(rw.dropped)
        state.unlabelled.update(rw.unlabelled)
        total = len(rw) + sum(rw.dropped.values())
        for entry in status:
            flat_windows = rw.flat_windows.get(entry["name"], 0)
            if flat_windows:
                before = "" if entry["status"] == "ok" else entry["status"]
                entry["status"] = joined(before, f"flat in {flat_windows} of {total} windows (dropped)")
        labels = None
        if rule.active:
            for lab in rw.labels:
                if lab not in index:
                    index[lab] = len(state.classes)
                    state.classes.append(lab)
            labels = np.array([index[lab] for lab in rw.labels], dtype=np.int64)
        if len(rw):
            # Normalised straight into the cache's buffer: the windows are never all in memory.
            writer.append_filled(
                len(rw), rw.shape, rw.fill, groups=item.recording_id, labels=labels, subjects=item.subject_id,
                onsets=rw.onsets_s(cfg.sfreq), durations=rw.n_samples / cfg.sfreq,
            )
        state.files.append(
            {
                "path": item.where.strip("'"),
                "recording": item.recording_id,
                "subject": item.subject_id,
                "hypnogram": str(item.hypnogram) if item.hypnogram is not None else None,
                "channels": list(keep),
                "sfreq": sfreq0,
                "duration_s": round(duration_s, 6),
                "annotations": dict(ann_counts),
                "n_windows": len(rw),
                "channel_status": status,
            }
        )

    def _finish(self, writer, rule, source, state: BuildState):
        cfg = self.config
        names = [c for c in (state.reference_names or []) if c not in state.dead] if state.files else []
        info = writer.info
        info.update(
            {
                "sfreq": cfg.sfreq,
                "time_unit": "s",  # of the windows' onsets and durations in their recordings
                "ch_names": names,
                "n_recordings": len(state.files),
                "files": state.files,
                "skipped": state.skipped,
                "dropped": dict(state.dropped),
                "unlabelled": dict(state.unlabelled),
                "source": source,
                "dead_channels": list(state.dead),
                "retyped_from_names": dict(state.retyped),
                "labelling": self.labelling,
            }
        )
        if state.dead:
            self._warn(
                writer,
                dead_channel_warning(
                    state.dead, PIN_HINT, where=state.dead_where, kept=names,
                    mostly=[c for c in state.dead if c in state.dead_mostly],
                ),
            )
        try:
            self._check_result(writer, rule, source, state)
        except DataError as exc:
            if not self.report:
                raise
            info["problem"] = str(exc)
        writer.class_names = list(state.classes) if rule.active else []

    def _check_result(self, writer, rule, source, state: BuildState) -> None:
        cfg = self.config
        if not state.files:
            listed = "; ".join(f"{s['path']} ({s['reason']})" for s in state.skipped)
            raise DataError(f"No usable recording in {source!r}: every one was skipped: {listed}.")
        if rule.active and not rule.identity:
            matched = [d for d in state.descriptions if rule.label(d) is not None]
            if not matched:
                found = ", ".join(repr(d) for d in sorted(state.descriptions)) or "none"
                mapping = ", ".join(repr(k) for k in rule.map)
                raise DataError(
                    f"The label mapping (modality.labels = {cfg.labels!r}, descriptions {mapping}) matches "
                    f"none of the annotations in {source!r}; the annotation descriptions found are: {found}."
                )
        if rule.active and rule.identity and not state.descriptions:
            raise DataError(
                f"The recordings in {source!r} have no annotations to label windows with "
                f"(modality.labels = 'annotations'); use labels: none, or add annotations."
            )
        dropped = state.dropped
        total = writer.count + sum(dropped.values())
        if dropped:
            reasons = ", ".join(f"{n} {why}" for why, n in dropped.items())
            detail = ""
            if state.unlabelled:
                detail = " (" + ", ".join(f"{d!r}: {n}" for d, n in sorted(state.unlabelled.items())) + ")"
            self._warn(writer, f"Dropped {sum(dropped.values())} of {total} windows in {source!r}: {reasons}{detail}.")
        if writer.count == 0:
            reasons = ", ".join(f"{n} {why}" for why, n in dropped.items()) or "none were cut"
            raise DataError(f"No window is left in {source!r} after dropping bad or unlabelled ones ({reasons}).")

    def _common_channels(self, items, writer, state: BuildState) -> list[str]:
        common: list[str] | None = None
        for item in items:
            raw = self._read_header(item, len(items) == 1, writer, state)
            if raw is None:
                continue
            names = list(raw.ch_names)
            common = names if common is None else [c for c in common if c in names]
        if common is None:
            return []
        if not common:
            raise DataError(
                "The recordings share no channel of the selected types (modality.channels = 'common'); "
                "check modality.channel_types."
            )
        return common

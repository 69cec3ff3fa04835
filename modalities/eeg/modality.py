"""The ``eeg`` modality: 1 axis (time), samples as native units.

Recordings are read with MNE (``mne.io.read_raw``: EDF, BDF, FIF, BrainVision, EEGLAB, GDF, ...)
from a file, a folder (recursively), a glob pattern (``data/**/*.edf``) or a list file (``.txt``,
one path per line, relative to the list file, ``#`` comments); from Python also from ``mne.io.Raw``
objects. EEG trials stored as NumPy arrays (``.npz`` with ``X_train``/``y_train``/``X_test``/
``y_test``/``sfreq``, the layout of the UEA archive copies) are read too, each trial a short
recording.

Channels are picked by type (``channel_types``; a channel the file types EEG or misc whose name
states another type, ``EOG1``, ``EMG submental``, ``Event marker``, is retyped first, unless the user
names it: :mod:`..common.channel_types`), then by name or pattern (``channels``; ``common`` keeps the
channels every recording has). Each recording is notch-filtered (``notch_freq``),
band-pass filtered, re-referenced (``reference``) and resampled with MNE (the band-pass and the
resampling are MNE's ``raw.filter``/``raw.resample`` numbers, computed for blocks of channels at once
by :mod:`.dsp` where MNE would treat the recording as one segment), cut into fixed windows
(``windows: fixed``) or one window per annotation (``windows: events``), and each window is
instance-normalised per channel (``normalize: instance``), or every window of a recording is scaled
by one robust z-score per channel computed over that recording (``normalize: recording``, which
keeps amplitude differences across the night; see :mod:`..common.normalisation`), or every window of a
file by one robust z-score per channel over all of that file's samples (``normalize: file``: the
same as ``recording`` for a file holding one recording; for an ``.npz`` of trials, one pair per
channel for every trial of the split read, so trials keep their offsets and amplitudes relative to
one another, and the test split of an evaluation gets its own from its own samples). A channel
flat throughout a recording (a dead electrode, an unused ADC input), or in 80% or more of its windows
(a trigger line that steps once), is left out of every recording with one warning naming it
(:mod:`..common.channels`); windows with non-finite samples or in which a live
channel goes flat are dropped and counted, the channels named.
Labels come from annotations (``labels: annotations`` with ``label_map``), or from Sleep-EDF
hypnograms (``labels: sleep``: W, N1, N2, N3, REM); the default ``labels: auto`` stages a PSG that
has its hypnogram beside it on the hypnogram's 30-s epochs when the windows are the defaults. Every
window carries its recording id and its subject id, so splits are by recording or subject. Windows
made from files are cached on disk.

The defaults are the PART paper's sleep-EEG recipe: 0.1–30 Hz, 100 Hz, 30-second windows, 1-second
patches, 40 of them sampled per window. The package ships one real recording,
``eegmmidb_S001R02.edf`` (PhysioNet EEG Motor Movement/Imagery Dataset, subject 1, run 2; see
``ATTRIBUTION.md`` beside it). It lasts 61 s, so the default stride (5 s) overlaps windows to give it
7 of them.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from relpos.errors import DataError
from relpos.modality import Axis, Modality, Windows, npz_keys

from ..common.channel_types import retype_by_name, retyped_hint
from ..common.channels import dead_channel_warning
from ..common.trial_archive import has_both_splits
from .channel_policy import (
    MoreDeadChannels,
    NoLiveChannel,
    channel_status,
    joined,
    live_channels,
    needed_channels,
)
from .config import EEGConfig
from .pipeline import (
    PIN_HINT,
    LabelRule,
    _TooShort,
    named_channels,
    params_of,
    recording_windows,
    select_channels,
    split_names,
)
from .reading import Item, Unreadable, is_raw, mne_version, one_line
from .sources import RECORDING_SUFFIXES, resolve_recordings, strip_suffix, subject_of

SAMPLE = Path(__file__).parents[1] / "data" / "eegmmidb_S001R02.edf"
NUMPY_SUFFIXES = (".npz", ".npy")
#: Bumped when the pipeline changes what it writes, so old cache entries are not reused.
#: 2: dead channels left out, flat-window reasons name channels, labels auto; 3: channels flat in most
#: windows are dead too, channel types inferred from names (:mod:`..common.channel_types`)
PIPELINE_VERSION = 3

__all__ = ["EEGConfig", "EEGModality", "RECORDING_SUFFIXES"]


@dataclass
class _BuildState:
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


class EEGModality(Modality):
    """EEG recordings read with MNE, filtered, resampled and cut into windows."""

    name = "eeg"
    axes = (Axis("time", unit="s"),)
    Config = EEGConfig

    def __init__(self, config=None):
        super().__init__(config)
        self.config.validate()
        self._report = False  # inspect's second try: every problem of a recording becomes a report line
        self._warned: set[str] = set()

    def axis_units(self) -> tuple[Axis, ...]:
        # every window is resampled to modality.sfreq: one sample is 1 / sfreq seconds
        return (Axis("time", unit="s", scale=1.0 / self.config.sfreq),)

    def default_data(self) -> str:
        return str(SAMPLE)

    def photometric(self, patches, generator, view="global-1", per_patch=False):
        """Amplitude scaling, noise, channel dropout and time masking (see :mod:`..common.series_photometric`)."""
        from ..common.series_photometric import photometric_series

        return photometric_series(patches, generator, per_patch)

    def patch_size(self) -> tuple[float, ...]:
        return (self.config.patch_s * self.config.sfreq,)

    def default_num_patches(self, extent) -> int:
        return self.config.patches_per_window

    # -- loading -------------------------------------------------------------------------------
    def load(self, data) -> Windows:
        """Open ``data`` into windows.

        Parameters
        ----------
        data : str, pathlib.Path, mne.io.BaseRaw or list of mne.io.BaseRaw
            A recording file, a folder (searched recursively), a glob pattern, a list file
            (``.txt``), an ``.npz``/``.npy`` of trials, or Raw objects (not cached).

        Returns
        -------
        Windows
            ``(N, C, window_s * sfreq)`` float32 windows with ``groups`` (recording ids),
            ``subjects`` and, with labels, ``labels``/``class_names``; ``info`` holds ``sfreq``,
            ``ch_names``, ``files``, ``skipped``, ``dropped``, ``unlabelled``, ``dead_channels``
            and ``labelling``.
        """
        if data is None:
            data = self.default_data()
        if is_raw(data) or (isinstance(data, (list, tuple)) and data and all(is_raw(r) for r in data)):
            raws = [data] if is_raw(data) else list(data)
            items = []
            for i, raw in enumerate(raws):
                names = getattr(raw, "filenames", None) or [None]
                stem = strip_suffix(Path(str(names[0])).name) if names[0] else f"raw{i}"
                where = f"Raw object {i} ({stem})" if names[0] else f"Raw object {i}"
                rid = stem if names[0] else f"raw{i}"
                items.append(Item(where, rid, subject_of(rid, self.config.subject_pattern) or rid, raw=raw))
            source = f"{len(raws)} Raw object{'s' if len(raws) != 1 else ''}"
            worker = self._resolved([])
            windows = worker._cached_build([], items, source, enabled=False)
            self._last_info = windows.info
            return windows
        if isinstance(data, (list, tuple)):
            raise DataError(
                f"The eeg modality takes a path or mne.io.Raw objects, got a {type(data).__name__} of "
                f"{', '.join(sorted({type(r).__name__ for r in data})) or 'nothing'}."
            )
        if not isinstance(data, (str, Path)):
            raise DataError(
                f"The eeg modality takes a path or mne.io.Raw objects, got {type(data).__name__}."
            )
        path = Path(data)
        if path.is_file() and path.name.lower().endswith(NUMPY_SUFFIXES):
            from .trials import load_trials

            worker = self._resolved([])
            params = {"pipeline": PIPELINE_VERSION, "mne": mne_version(), **params_of(worker.config)}
            windows = load_trials(
                worker.config, path, params, enabled=worker.config.cache and not self._report, report=self._report
            )
            self._last_info = windows.info
            return windows
        recordings = resolve_recordings(data, self.config.subject_pattern)
        items = [
            Item(repr(str(r.path)), r.recording_id, r.subject_id, path=r.path, hypnogram=r.hypnogram)
            for r in recordings
        ]
        sources = []
        for r in recordings:
            sources.append(r.path)
            if r.hypnogram is not None:
                sources.append(r.hypnogram)
        worker = self._resolved(recordings)
        windows = worker._cached_build(sources, items, str(data), enabled=worker.config.cache and not self._report)
        self._last_info = windows.info
        return windows

    def _resolved(self, recordings: list) -> "EEGModality":
        """This modality with ``labels: auto`` decided for ``recordings`` (a copy when it changes).

        ``auto`` is the Sleep-EDF recipe (sleep stages on the hypnogram's 30-s epochs, aligned to
        it) when every recording has its hypnogram beside it and the windows are the defaults (the
        user chose neither labels nor windows); ``none`` otherwise.
        """
        import copy

        cfg = self.config
        if cfg.labels != "auto":
            return self
        defaults = EEGConfig()
        default_windows = all(
            getattr(cfg, key) == getattr(defaults, key) for key in ("windows", "window_s", "stride_s", "event_offset_s")
        )
        paired = bool(recordings) and all(r.hypnogram is not None for r in recordings)
        worker = copy.copy(self)
        if paired and default_windows:
            # Non-overlapping windows starting at the hypnogram's first stage: its own 30-s epochs.
            worker.config = replace(cfg, labels="sleep", stride_s=cfg.window_s)
            worker._labelling = (
                f"sleep stages from the hypnograms, on {cfg.window_s:g}-s epochs aligned to them "
                f"(modality.labels = 'auto'; set labels: none for unlabelled windows every {cfg.stride_s:g} s)"
            )
        else:
            worker.config = replace(cfg, labels="none")
            with_hypnogram = sum(r.hypnogram is not None for r in recordings)
            if default_windows and 0 < with_hypnogram < len(recordings):
                from relpos.errors import warn

                warn(
                    f"Only {with_hypnogram} of {len(recordings)} recordings have a hypnogram beside them, so "
                    f"the windows are not labelled (modality.labels = 'auto'); set labels: sleep to stage "
                    f"those that have one."
                )
        return worker

    def _cached_build(self, sources: list, items: list[Item], source: str, enabled: bool) -> Windows:
        """The windows of ``items``, cached; built again when a later recording reveals a dead channel."""
        from relpos.cache import cached_windows

        params = {"pipeline": PIPELINE_VERSION, "mne": mne_version(), **params_of(self.config)}
        if sources:
            params["recordings"] = [[it.recording_id, it.subject_id] for it in items]
        self._warned = set()
        dead: list[str] = []
        mostly: set[str] = set()
        while True:
            try:
                return cached_windows(
                    "eeg", sources, params, lambda w: self._build(w, items, source, dead, mostly), enabled=enabled
                )
            except MoreDeadChannels as more:
                dead, mostly = more.dead, more.mostly  # rare: start again, leaving them out of every recording

    def eval_splits(self, data) -> tuple[Windows, Windows] | None:
        """The trials of an ``.npz`` archive with ``X_train`` and ``X_test``: (train, test) windows."""
        if not has_both_splits(npz_keys(data)):
            return None
        return self.load_with(data, split="train"), self.load_with(data, split="test")

    def inspect(self, data) -> dict[str, Any]:
        """The base report, plus ``unlabelled`` ({annotation description: windows dropped for it}),
        ``dead_channels``, ``labelling`` and, when nothing is usable, ``problem`` (the sentence
        :meth:`load` raises) instead of an error: every recording's channels are still reported."""
        import copy

        self._last_info = {}
        try:
            report = super().inspect(data)
        except DataError as exc:
            if is_raw(data) or isinstance(data, (list, tuple)):
                raise
            reporter = copy.copy(self)
            reporter._report = True
            reporter._last_info = {}
            report = Modality.inspect(reporter, data)
            self._last_info = reporter._last_info
            report["problem"] = str(reporter._last_info.get("problem") or exc)
        info = self._last_info
        report["unlabelled"] = dict(info.get("unlabelled") or {})
        report["dead_channels"] = list(info.get("dead_channels") or [])
        report["retyped_from_names"] = dict(info.get("retyped_from_names") or {})
        report["labelling"] = info.get("labelling")
        return report

    # -- the build -----------------------------------------------------------------------------
    def _warn(self, writer, message: str) -> None:
        """Warn once per load (a build started again repeats none), and keep it for cache hits."""
        if message in self._warned:
            writer.warnings.append(message)
        else:
            self._warned.add(message)
            writer.warn(message)

    def _skip(self, writer, state: _BuildState, item: Item, reason: str, **extra: Any) -> None:
        """Leave a recording out of a multi-file load: warn (replayed on cache hits) and record why."""
        self._warn(writer, f"Skipping {item.where}: {reason}.")
        state.skipped.append({"path": item.where.strip("'"), "reason": reason, **extra})

    def _fail_or_skip(self, writer, state, item, strict: bool, sentence: str, reason: str, **extra) -> None:
        """Raise ``sentence`` for a single recording; skip it (``reason``) among several or in a report."""
        if strict and not self._report:
            raise DataError(sentence)
        self._skip(writer, state, item, reason, **extra)

    def _read_header(self, item: Item, strict: bool, writer, state: _BuildState) -> Any | None:
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

    def _build(self, writer, items: list[Item], source: str, dead: list[str], mostly=frozenset()) -> None:
        cfg = self.config
        rule = LabelRule(cfg.labels, cfg.label_map)
        strict = len(items) == 1
        state = _BuildState(dead=list(dead), dead_mostly=set(mostly))
        common: list[str] | None = None
        if cfg.channels.strip().lower() == "common":
            common = self._common_channels(items, writer, state)
        state.classes = rule.class_names(set()) if rule.active and not rule.identity else []
        index = {c: i for i, c in enumerate(state.classes)}
        for item in items:
            if any(s["path"] == item.where.strip("'") for s in state.skipped):
                continue
            try:
                self._build_one(writer, item, rule, strict, common, state, index)
            except DataError as exc:
                if not self._report:
                    raise
                self._skip(writer, state, item, str(exc).rstrip("."))
        self._finish(writer, rule, source, state)

    def _build_one(self, writer, item: Item, rule: LabelRule, strict: bool, common, state: _BuildState, index) -> None:
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
                len(rw), rw.shape, rw.fill, groups=item.recording_id, labels=labels, subjects=item.subject_id
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

    def _finish(self, writer, rule, source, state: _BuildState):
        cfg = self.config
        names = [c for c in (state.reference_names or []) if c not in state.dead] if state.files else []
        info = writer.info
        info.update(
            {
                "sfreq": cfg.sfreq,
                "ch_names": names,
                "n_recordings": len(state.files),
                "files": state.files,
                "skipped": state.skipped,
                "dropped": dict(state.dropped),
                "unlabelled": dict(state.unlabelled),
                "source": source,
                "dead_channels": list(state.dead),
                "retyped_from_names": dict(state.retyped),
                "labelling": getattr(self, "_labelling", None),
            }
        )
        self._last_info = info
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
            if not self._report:
                raise
            info["problem"] = str(exc)
        writer.class_names = list(state.classes) if rule.active else []

    def _check_result(self, writer, rule, source, state: _BuildState) -> None:
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

    def _common_channels(self, items, writer, state: _BuildState) -> list[str]:
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

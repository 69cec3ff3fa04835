"""The ``eeg`` modality: 1 axis (time), samples as native units.

Recordings are read with MNE (``mne.io.read_raw``: EDF, BDF, FIF, BrainVision, EEGLAB, GDF, ...)
from a file, a folder (recursively), a glob pattern (``data/**/*.edf``) or a list file (``.txt``,
one path per line, relative to the list file, ``#`` comments); from Python also from ``mne.io.Raw``
objects. EEG trials stored as NumPy arrays (``.npz`` with ``X_train``/``y_train``/``X_test``/
``y_test``/``sfreq``, the layout of the UEA archive copies) are read too, each trial a short
recording.

Channels are picked by type (``channel_types``; a channel the file types EEG or misc whose name
states another type, ``EOG1``, ``EMG submental``, ``Event marker``, is retyped first, unless the user
names it: :mod:`.channel_types`), then by name or pattern (``channels``; ``common`` keeps the
channels every recording has). Each recording is notch-filtered (``notch_freq``),
band-pass filtered, re-referenced (``reference``) and resampled with MNE (the band-pass and the
resampling are MNE's ``raw.filter``/``raw.resample`` numbers, computed for blocks of channels at once
by ``eeg_dsp`` where MNE would treat the recording as one segment), cut into fixed windows
(``windows: fixed``) or one window per annotation (``windows: events``), and each window is
instance-normalised per channel (``normalize: instance``), or every window of a recording is scaled
by one robust z-score per channel computed over that recording (``normalize: recording``, which
keeps amplitude differences across the night; see :mod:`.recording_norm`), or every window of a
file by one robust z-score per channel over all of that file's samples (``normalize: file``: the
same as ``recording`` for a file holding one recording; for an ``.npz`` of trials, one pair per
channel for every trial of the split read, so trials keep their offsets and amplitudes relative to
one another, and the test split of an evaluation gets its own from its own samples). A channel
flat throughout a recording (a dead electrode, an unused ADC input), or in 80% or more of its windows
(a trigger line that steps once), is left out of every recording with one warning naming it
(:mod:`.channels`); windows with non-finite samples or in which a live
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

import re
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from relpos import hookimpl
from relpos.config import check_fields, setting
from relpos.errors import ConfigError, DataError
from relpos.modality import Axis, Modality, Windows, npz_keys

from .channel_types import retype_by_name, retyped_hint
from .channels import dead_channel_warning, flat_throughout, format_names, mostly_flat
from .edf_header import truncation
from .eeg_pipeline import (
    PIN_HINT,
    LabelRule,
    _TooShort,
    all_finite,
    annotation_table,
    named_channels,
    params_of,
    recording_windows,
    scan_raw,
    select_channels,
    split_names,
    window_starts,
)
from .eeg_sources import RECORDING_SUFFIXES, resolve_recordings, strip_suffix, subject_of

SAMPLE = Path(__file__).parent / "data" / "eegmmidb_S001R02.edf"
NUMPY_SUFFIXES = (".npz", ".npy")
#: Bumped when the pipeline changes what it writes, so old cache entries are not reused.
#: 2: dead channels left out, flat-window reasons name channels, labels auto; 3: channels flat in most
#: windows are dead too, channel types inferred from names (:mod:`.channel_types`)
PIPELINE_VERSION = 3

__all__ = ["EEGConfig", "EEGModality", "RECORDING_SUFFIXES"]

#: Upper bounds of the EEG options: rates up to 1 MHz, durations up to 10 days (what a window's
#: sample count can hold at any sane rate), and patch counts a batch can hold.
MAX_RATE_HZ = 1e6
MAX_DURATION_S = 864000.0
MAX_PATCHES = 65536


@dataclass
class EEGConfig:
    """Options of the EEG modality (defaults: the PART paper's recipe)."""

    channel_types: str = setting("eeg", free="MNE channel types")  # to keep, comma-separated
    # "" (all of those types) | names or glob patterns, comma-separated | "common"
    channels: str = setting("", free="channel names or patterns")
    standardize_names: bool = setting(False)  # rename EEGMMIDB-style dotted labels ("Fc5." -> "FC5") first
    l_freq: float = setting(0.1, ge=0, le=MAX_RATE_HZ)  # band-pass low edge, Hz (0: low-pass only)
    h_freq: float = setting(30.0, gt=0, le=MAX_RATE_HZ)  # band-pass high edge, Hz
    sfreq: float = setting(100.0, gt=0, le=MAX_RATE_HZ)  # resampling rate, Hz
    # mains frequency to notch out, with its harmonics below Nyquist, Hz (0: off)
    notch_freq: float = setting(0.0, ge=0, le=MAX_RATE_HZ)
    reference: str = setting("", free="channel names")  # "" (keep) | "average" | channel name(s), comma-separated
    # fixed (window_s, stride_s) | events (one window per annotation)
    windows: str = setting("fixed", choices=("fixed", "events"))
    window_s: float = setting(30.0, gt=0, le=MAX_DURATION_S)  # window length, s
    # distance between window starts, s (window_s for non-overlapping)
    stride_s: float = setting(5.0, gt=0, le=MAX_DURATION_S)
    # events: window start relative to the annotation onset, s
    event_offset_s: float = setting(0.0, ge=-MAX_DURATION_S, le=MAX_DURATION_S)
    # auto (sleep with 30-s epochs where every recording has its Sleep-EDF hypnogram and the windows are
    # the defaults, else none) | none | annotations (with label_map) | sleep (Sleep-EDF hypnograms, AASM)
    labels: str = setting("auto", choices=("auto", "none", "annotations", "sleep"))
    # annotation description -> class name
    label_map: dict[str, str] = setting({}, free="annotation descriptions and class names")
    # regex on the file name, group 1 = subject ("": Sleep-EDF, EEGMMIDB); compiled in validate()
    subject_pattern: str = setting("", free="a regular expression")
    # a channel whose peak-to-peak in a window is below this (V) is flat
    flat_threshold: float = setting(1e-7, ge=0)
    split: str = setting("train", choices=("train", "test", "all"))  # .npz trials
    npz_unit: str = setting("uV", choices=("V", "mV", "uV"))  # unit of the values in .npz/.npy trials
    # sampling rate of .npy trials (which cannot store it), Hz; 0: not given
    source_sfreq: float = setting(0.0, ge=0, le=MAX_RATE_HZ)
    cache: bool = setting(True)  # cache preprocessed windows on disk ($RELPOS_CACHE_DIR or ~/.cache/relpos)
    # instance: each window, each channel to mean 0 / std 1 (the paper's); recording: one robust
    # z-score per channel over the whole recording (median, MAD × 1.4826; see recording_norm);
    # file: the same over all of a file's samples (an .npz's trials of the split read, pooled)
    normalize: str = setting("instance", choices=("instance", "recording", "file"))
    patch_s: float = setting(1.0, gt=0, le=MAX_DURATION_S)  # patch length, s
    patches_per_window: int = setting(40, ge=2, le=MAX_PATCHES)  # off-grid patches sampled per window

    def validate(self) -> None:
        check_fields(self, "modality")  # each value against its declared range (a config made in Python)
        if not 0 <= self.l_freq < self.h_freq:
            raise ConfigError(
                f"The band-pass needs 0 <= l_freq < h_freq, got l_freq={self.l_freq} Hz, h_freq={self.h_freq} Hz."
            )
        if self.h_freq >= self.sfreq / 2:
            raise ConfigError(
                f"'modality.h_freq' ({self.h_freq} Hz) must be below the Nyquist frequency of the "
                f"target rate ({self.sfreq / 2} Hz for sfreq={self.sfreq})."
            )
        if self.patch_s > self.window_s:
            raise ConfigError(
                f"'modality.patch_s' ({self.patch_s} s) is longer than 'modality.window_s' ({self.window_s} s)."
            )
        if not split_names(self.channel_types):
            raise ConfigError("'modality.channel_types' is empty; give MNE channel types, e.g. 'eeg' or 'eeg,eog'.")
        if self.subject_pattern:
            try:
                re.compile(self.subject_pattern)
            except re.error as exc:
                raise ConfigError(
                    f"Invalid value for 'modality.subject_pattern': {self.subject_pattern!r} is not a "
                    f"regular expression ({exc})."
                ) from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_raw(obj: Any) -> bool:
    # A Raw object can only exist once MNE is imported; checking sys.modules first keeps a load
    # from the cache free of the MNE import.
    if "mne" not in sys.modules:
        return False
    import mne

    return isinstance(obj, mne.io.BaseRaw)


@dataclass
class _Item:
    """One recording to open: a file, or a Raw object passed from Python."""

    where: str  # how messages name it
    recording_id: str
    subject_id: str
    path: Path | None = None
    hypnogram: Path | None = None
    raw: Any = None
    truncated: str = ""  # "is truncated: its header declares ..." when the file is shorter than declared

    def open(self):
        """The recording, not yet preloaded (a copy for Raw objects)."""
        import mne

        if self.raw is not None:
            return self.raw.copy()
        if self.path.name.lower().endswith((".edf", ".bdf")):
            cut = truncation(self.path)
            if cut is not None:
                self.truncated = cut[0]
                if cut[1]:  # the header itself is cut: MNE would fail on whatever field it meets
                    raise _Unreadable(f"{cut[0]}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a truncated file's warning: self.truncated says it better
            raw = mne.io.read_raw(self.path, preload=False, verbose="error")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.hypnogram is not None:
                ann = mne.read_annotations(self.hypnogram)
                # Hypnogram onsets count from the recording's start (Sleep-EDF: both start together).
                raw.set_annotations(
                    mne.Annotations(ann.onset, ann.duration, ann.description, orig_time=None),
                    emit_warning=False,
                    verbose="error",
                )
        return raw


class _Unreadable(Exception):
    """A recording that cannot be read, with the clause that says why (after "Recording X ...")."""


class _MoreDeadChannels(Exception):
    """A later recording has a dead channel that earlier recordings were already cut with."""

    def __init__(self, dead: list[str], mostly=()):
        super().__init__(dead)
        self.dead = dead
        self.mostly = set(mostly)  # those of them flat in nearly every window rather than throughout


def _channel_units(raw) -> dict[str, str]:
    """Channel -> unit as the file states it (EDF's physical dimension), else MNE's unit."""
    units = dict(getattr(raw, "_orig_units", None) or {})
    for ch in raw.info["chs"]:
        if ch["ch_name"] not in units:
            units[ch["ch_name"]] = "V" if int(ch["unit"]) == 107 else str(int(ch["unit"]))  # 107: FIFF volts
    return units


def _is_are(names: list[str]) -> str:
    return f"channel {format_names(names)} is" if len(names) == 1 else f"channels {format_names(names)} are"


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
        """Amplitude scaling, noise, channel dropout and time masking (see ``series_photometric``)."""
        from .series_photometric import photometric_series

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
        if _is_raw(data) or (isinstance(data, (list, tuple)) and data and all(_is_raw(r) for r in data)):
            raws = [data] if _is_raw(data) else list(data)
            items = []
            for i, raw in enumerate(raws):
                names = getattr(raw, "filenames", None) or [None]
                stem = strip_suffix(Path(str(names[0])).name) if names[0] else f"raw{i}"
                where = f"Raw object {i} ({stem})" if names[0] else f"Raw object {i}"
                rid = stem if names[0] else f"raw{i}"
                items.append(_Item(where, rid, subject_of(rid, self.config.subject_pattern) or rid, raw=raw))
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
            from .eeg_npz import load_trials

            worker = self._resolved([])
            params = {"pipeline": PIPELINE_VERSION, "mne": _mne_version(), **params_of(worker.config)}
            windows = load_trials(
                worker.config, path, params, enabled=worker.config.cache and not self._report, report=self._report
            )
            self._last_info = windows.info
            return windows
        recordings = resolve_recordings(data, self.config.subject_pattern)
        items = [
            _Item(repr(str(r.path)), r.recording_id, r.subject_id, path=r.path, hypnogram=r.hypnogram)
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

    def _cached_build(self, sources: list, items: list[_Item], source: str, enabled: bool) -> Windows:
        """The windows of ``items``, cached; built again when a later recording reveals a dead channel."""
        from relpos.cache import cached_windows

        params = {"pipeline": PIPELINE_VERSION, "mne": _mne_version(), **params_of(self.config)}
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
            except _MoreDeadChannels as more:
                dead, mostly = more.dead, more.mostly  # rare: start again, leaving them out of every recording

    def eval_splits(self, data) -> tuple[Windows, Windows] | None:
        """The trials of an ``.npz`` archive with ``X_train`` and ``X_test``: (train, test) windows."""
        if not {"X_train", "X_test"} <= set(npz_keys(data)):
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
            if _is_raw(data) or isinstance(data, (list, tuple)):
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

    def _skip(self, writer, state: _BuildState, item: _Item, reason: str, **extra: Any) -> None:
        """Leave a recording out of a multi-file load: warn (replayed on cache hits) and record why."""
        self._warn(writer, f"Skipping {item.where}: {reason}.")
        state.skipped.append({"path": item.where.strip("'"), "reason": reason, **extra})

    def _fail_or_skip(self, writer, state, item, strict: bool, sentence: str, reason: str, **extra) -> None:
        """Raise ``sentence`` for a single recording; skip it (``reason``) among several or in a report."""
        if strict and not self._report:
            raise DataError(sentence)
        self._skip(writer, state, item, reason, **extra)

    def _read_header(self, item: _Item, strict: bool, writer, state: _BuildState) -> Any | None:
        try:
            raw = item.open()
        except _Unreadable as exc:
            self._fail_or_skip(writer, state, item, strict, f"Recording {item.where} {exc}.", f"it {exc}")
            return None
        except Exception as exc:  # noqa: BLE001 - MNE raises many kinds for a bad file
            why = f"{item.truncated} ({_one_line(exc)})" if item.truncated else f"cannot be read with MNE ({_one_line(exc)})"
            sentence = (
                f"Recording {item.where} {why}."
                if item.truncated
                else f"Cannot read {item.where} as an EEG recording with MNE: {_one_line(exc)}"
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

    def _build(self, writer, items: list[_Item], source: str, dead: list[str], mostly=frozenset()) -> None:
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

    def _build_one(self, writer, item: _Item, rule: LabelRule, strict: bool, common, state: _BuildState, index) -> None:
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
        needed = self._needed_channels(available, selected, item.where)
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
            why = f"{item.truncated} ({_one_line(exc)})" if item.truncated else f"its samples cannot be read ({_one_line(exc)})"
            self._fail_or_skip(
                writer, state, item, strict,
                f"Recording {item.where} {why}." if item.truncated
                else f"Cannot read {item.where} as an EEG recording with MNE: {_one_line(exc)}",
                why if not item.truncated else f"it {why}",
            )
            return
        sfreq0 = float(raw.info["sfreq"])
        duration_s = raw.n_times / sfreq0
        if item.truncated:
            self._warn(writer, f"Recording {item.where} {item.truncated}; reading the {duration_s:.1f} s it holds.")
        status = self._channel_status(raw, selected, rule)
        keep = self._live_channels(writer, item, strict, state, selected, status)
        if keep is None:
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
                entry["status"] = _joined(before, f"flat in {flat_windows} of {total} windows (dropped)")
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

    def _channel_status(self, raw, selected: list[str], rule: LabelRule) -> list[dict[str, Any]]:
        """Per selected channel of the preloaded ``raw``: name, unit, flat throughout, flat in nearly
        every window (:func:`.channels.mostly_flat`, on the windows the recording will be cut into,
        those with non-finite samples aside), non-finite samples."""
        cfg = self.config
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
        units = _channel_units(raw)
        out = []
        for name, is_flat, is_mostly, n_flat, n_bad in zip(
            selected, flat.tolist(), mostly.tolist(), counts.tolist(), bad.tolist()
        ):
            text = "flat throughout" if is_flat else f"flat in {n_flat} of {n_windows} windows" if is_mostly else "ok"
            if n_bad:
                text = _joined("" if text == "ok" else text, f"{n_bad} non-finite samples")
            out.append({
                "name": name, "unit": units.get(name, "?"), "status": text, "flat_throughout": bool(is_flat),
                "mostly_flat": bool(is_mostly), "flat_windows": int(n_flat), "windows": n_windows,
                "non_finite": int(n_bad),
            })
        return out

    def _live_channels(self, writer, item, strict, state: _BuildState, selected, status) -> list[str] | None:
        """The channels to keep from this recording after the dead-channel policy, or None to skip it."""
        thr = self.config.flat_threshold
        flat_here = [s["name"] for s in status if s["flat_throughout"]]
        if flat_here and len(flat_here) == len(selected):
            # A recording with no live channel at all is a dead recording, not a set of dead channels.
            self._fail_or_skip(
                writer, state, item, strict,
                f"Recording {item.where} has no live channel: {_is_are(flat_here)} flat throughout it "
                f"(peak-to-peak below modality.flat_threshold = {thr:g}); check the recording, or lower "
                f"modality.flat_threshold.",
                f"it has no live channel ({_is_are(flat_here)} flat throughout it)",
                channel_status=status,
            )
            return None
        pinned = [c for c in flat_here if self._pinned(c)]
        if pinned:
            self._fail_or_skip(
                writer, state, item, strict,
                f"Recording {item.where}: {_is_are(pinned)} named in modality.channels but flat throughout "
                f"it (peak-to-peak below modality.flat_threshold = {thr:g}), so every window would be "
                f"dropped; leave {'it' if len(pinned) == 1 else 'them'} out of modality.channels.",
                f"{_is_are(pinned)} named in modality.channels but flat throughout it",
                channel_status=status,
            )
            return None
        # Flat in nearly every window (a trigger line that steps once): dead too, unless every channel
        # is (then the windows are bad, dropped one by one) or the user named it (kept, as asked).
        mostly_here = [s["name"] for s in status if s["mostly_flat"]]
        if len(flat_here) + len(mostly_here) == len(selected):
            mostly_here = []
        mostly_here = [c for c in mostly_here if not self._pinned(c)]
        for entry in status:
            if entry["mostly_flat"] and entry["name"] not in mostly_here:
                entry["mostly_flat"] = False  # its flat windows are dropped and counted instead
                entry["status"] = _status_text("", entry)
        for name in flat_here + mostly_here:
            state.dead_where.setdefault(name, []).append(item.recording_id)
        state.dead_mostly.update(mostly_here)
        new = [c for c in selected if c in flat_here + mostly_here and c not in state.dead]
        if new and state.files:
            raise _MoreDeadChannels([c for c in selected if c in state.dead or c in new], state.dead_mostly)
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
            entry["status"] = _status_text(f"left out ({why})", entry)
        return [c for c in selected if c not in state.dead]

    def _pinned(self, channel: str) -> bool:
        """Whether modality.channels names ``channel`` itself (not through a pattern or 'common')."""
        spec = self.config.channels
        if spec.strip().lower() == "common":
            return False
        names = [n for n in split_names(spec) if not any(c in n for c in "*?[")]
        return any(n == channel or n.lower() == channel.lower() for n in names)

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

    def _needed_channels(self, available: list[str], selected: list[str], where: str) -> list[str]:
        """The selected channels plus those the reference needs."""
        reference = self.config.reference.strip()
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


def _joined(first: str, second: str) -> str:
    return "; ".join(t for t in (first, second) if t)


def _status_text(first: str, entry: dict[str, Any]) -> str:
    """``first``, then the channel's non-finite samples, or "ok"."""
    n_bad = entry.get("non_finite", 0)
    return _joined(first, f"{n_bad} non-finite samples" if n_bad else "") or "ok"


def _mne_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mne")
    except PackageNotFoundError:  # pragma: no cover
        return "?"


@hookimpl
def register_modalities(register):
    register(EEGModality)


@hookimpl
def register_datasets(register):
    from .sleep_edf import SleepEDF

    register(SleepEDF)

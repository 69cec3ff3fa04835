"""The ``eeg`` modality: 1 axis (time), samples as native units.

Recordings are read with MNE (``mne.io.read_raw``: EDF, BDF, FIF, BrainVision, EEGLAB, GDF, ...)
from a file, a folder (recursively), a glob pattern (``data/**/*.edf``) or a list file (``.txt``,
one path per line, relative to the list file, ``#`` comments); from Python also from ``mne.io.Raw``
objects. EEG trials stored as NumPy arrays (``.npz`` with ``X_train``/``y_train``/``X_test``/
``y_test``/``sfreq``, the layout of the UEA archive copies) are read too, each trial a short
recording.

Channels are picked by type (``channel_types``), then by name or pattern (``channels``; ``common``
keeps the channels every recording has). Each recording is notch-filtered (``notch_freq``),
band-pass filtered, re-referenced (``reference``) and resampled with MNE (the band-pass and the
resampling are MNE's ``raw.filter``/``raw.resample`` numbers, computed for blocks of channels at once
by ``eeg_dsp`` where MNE would treat the recording as one segment), cut into fixed windows
(``windows: fixed``) or one window per annotation (``windows: events``), and each window is
instance-normalised per channel. Windows with non-finite samples or a flat channel are dropped and
counted. Labels come from annotations (``labels: annotations`` with ``label_map``), or from Sleep-EDF
hypnograms (``labels: sleep``: W, N1, N2, N3, REM). Every window carries its recording id and its
subject id, so splits are by recording or subject. Windows made from files are cached on disk.

The defaults are the PART paper's sleep-EEG recipe: 0.1–30 Hz, 100 Hz, 30-second windows, 1-second
patches, 40 of them sampled per window. The package ships one real recording,
``eegmmidb_S001R02.edf`` (PhysioNet EEG Motor Movement/Imagery Dataset, subject 1, run 2; see
``ATTRIBUTION.md`` beside it). It lasts 61 s, so the default stride (5 s) overlaps windows to give it
7 of them.
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from relpos import hookimpl
from relpos.errors import ConfigError, DataError
from relpos.modality import Modality, Windows, npz_keys

from .eeg_pipeline import (
    LabelRule,
    _TooShort,
    params_of,
    recording_windows,
    select_channels,
    split_names,
)
from .eeg_sources import RECORDING_SUFFIXES, resolve_recordings, strip_suffix, subject_of

SAMPLE = Path(__file__).parent / "data" / "eegmmidb_S001R02.edf"
NUMPY_SUFFIXES = (".npz", ".npy")
#: Bumped when the pipeline changes what it writes, so old cache entries are not reused.
PIPELINE_VERSION = 1

__all__ = ["EEGConfig", "EEGModality", "RECORDING_SUFFIXES"]


@dataclass
class EEGConfig:
    """Options of the EEG modality (defaults: the PART paper's recipe)."""

    channel_types: str = "eeg"  # MNE channel type(s) to keep, comma-separated
    channels: str = ""  # "" (all of those types) | names or glob patterns, comma-separated | "common"
    standardize_names: bool = False  # rename EEGMMIDB-style dotted labels ("Fc5." -> "FC5") first
    l_freq: float = 0.1  # band-pass low edge, Hz (0: low-pass only)
    h_freq: float = 30.0  # band-pass high edge, Hz
    sfreq: float = 100.0  # resampling rate, Hz
    notch_freq: float = 0.0  # mains frequency to notch out, with its harmonics below Nyquist, Hz (0: off)
    reference: str = ""  # "" (keep) | "average" | channel name(s), comma-separated
    windows: str = "fixed"  # fixed (window_s, stride_s) | events (one window per annotation)
    window_s: float = 30.0  # window length, s
    stride_s: float = 5.0  # distance between window starts, s (window_s for non-overlapping)
    event_offset_s: float = 0.0  # events: window start relative to the annotation onset, s
    labels: str = "none"  # none | annotations (with label_map) | sleep (Sleep-EDF hypnograms, AASM)
    label_map: dict[str, str] = field(default_factory=dict)  # annotation description -> class name
    subject_pattern: str = ""  # regex on the file name, group 1 = subject ("": Sleep-EDF, EEGMMIDB)
    flat_threshold: float = 1e-7  # a channel whose peak-to-peak in a window is below this (V) is flat
    split: str = "train"  # .npz trials: train | test | all
    npz_unit: str = "uV"  # unit of the values in .npz/.npy trials: V | mV | uV
    source_sfreq: float = 0.0  # sampling rate of .npy trials (which cannot store it), Hz
    cache: bool = True  # cache preprocessed windows on disk ($RELPOS_CACHE_DIR or ~/.cache/relpos)
    patch_s: float = 1.0  # patch length, s
    patches_per_window: int = 40  # off-grid patches sampled per window

    def validate(self) -> None:
        for key in ("sfreq", "window_s", "stride_s", "patch_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"'modality.{key}' must be positive, got {getattr(self, key)}.")
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
        if self.patches_per_window < 2:
            raise ConfigError(f"'modality.patches_per_window' must be at least 2, got {self.patches_per_window}.")
        _choice("windows", self.windows, ("fixed", "events"))
        _choice("labels", self.labels, ("none", "annotations", "sleep"))
        _choice("split", self.split, ("train", "test", "all"))
        _choice("npz_unit", self.npz_unit, ("V", "mV", "uV"))
        for key in ("notch_freq", "flat_threshold", "source_sfreq"):
            if getattr(self, key) < 0:
                raise ConfigError(f"'modality.{key}' must be >= 0, got {getattr(self, key)}.")
        if not split_names(self.channel_types):
            raise ConfigError("'modality.channel_types' is empty; give MNE channel types, e.g. 'eeg' or 'eeg,eog'.")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"Invalid value for 'modality.{key}': allowed {', '.join(allowed)}, got {value!r}."
        )


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
    notes: list[str] = field(default_factory=list)

    def open(self):
        """The recording, not yet preloaded (a copy for Raw objects)."""
        import mne

        if self.raw is not None:
            return self.raw.copy()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            raw = mne.io.read_raw(self.path, preload=False, verbose="warning")
        # A truncated EDF/BDF is read up to where it stops; tell the user rather than hide it.
        self.notes = [
            " ".join(str(w.message).split()) for w in caught if "file size" in str(w.message).lower()
        ]
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


def _skip(writer, skipped: list, item: "_Item", reason: str) -> None:
    """Leave a recording out of a multi-file load: warn (replayed on cache hits) and record why."""
    writer.warn(f"Skipping {item.where}: {reason}.")
    skipped.append({"path": item.where.strip("'"), "reason": reason})


class EEGModality(Modality):
    """EEG recordings read with MNE, filtered, resampled and cut into windows."""

    name = "eeg"
    axes = ("time",)
    Config = EEGConfig

    def __init__(self, config=None):
        super().__init__(config)
        self.config.validate()

    def default_data(self) -> str:
        return str(SAMPLE)

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
            ``ch_names``, ``files``, ``skipped``, ``dropped`` and ``unlabelled``.
        """
        from relpos.cache import cached_windows

        if data is None:
            data = self.default_data()
        params = {"pipeline": PIPELINE_VERSION, "mne": _mne_version(), **params_of(self.config)}
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
            windows = cached_windows("eeg", [], params, lambda w: self._build(w, items, source), enabled=False)
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

            windows = load_trials(self.config, path, params)
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
        params["recordings"] = [[it.recording_id, it.subject_id] for it in items]
        windows = cached_windows(
            "eeg", sources, params, lambda w: self._build(w, items, str(data)), enabled=self.config.cache
        )
        self._last_info = windows.info
        return windows

    def eval_splits(self, data) -> tuple[Windows, Windows] | None:
        """The trials of an ``.npz`` archive with ``X_train`` and ``X_test``: (train, test) windows."""
        if not {"X_train", "X_test"} <= set(npz_keys(data)):
            return None
        return self.load_with(data, split="train"), self.load_with(data, split="test")

    def inspect(self, data) -> dict[str, Any]:
        """The base report, plus ``unlabelled`` ({annotation description: windows dropped for it})."""
        self._last_info = {}
        report = super().inspect(data)
        report["unlabelled"] = dict(self._last_info.get("unlabelled") or {})
        return report

    # -- the build -----------------------------------------------------------------------------
    def _read_header(self, item: _Item, strict: bool, writer, skipped: list) -> Any | None:
        try:
            raw = item.open()
        except Exception as exc:  # noqa: BLE001 - MNE raises many kinds for a bad file
            if strict:
                raise DataError(f"Cannot read {item.where} as an EEG recording with MNE: {_one_line(exc)}") from None
            reason = f"cannot be read with MNE ({_one_line(exc)})"
            _skip(writer, skipped, item, f"it {reason}")
            return None
        if self.config.standardize_names:
            import mne

            mne.datasets.eegbci.standardize(raw)
        types = split_names(self.config.channel_types)
        present = sorted(set(raw.get_channel_types()))
        if not any(t in present for t in types):
            raise DataError(
                f"Recording {item.where} has no channels of type {', '.join(types)}; its channel "
                f"types are {', '.join(present)} (set modality.channel_types)."
            )
        raw.pick([t for t in types if t in present], verbose="error")
        return raw

    def _build(self, writer, items: list[_Item], source: str) -> None:
        cfg = self.config
        rule = LabelRule(cfg.labels, cfg.label_map)
        strict = len(items) == 1
        skipped: list[dict[str, str]] = []
        common: list[str] | None = None
        if cfg.channels.strip().lower() == "common":
            common = self._common_channels(items, writer, skipped)
        reference_names: list[str] | None = None
        reference_where = ""
        files, dropped, unlabelled, descriptions = [], Counter(), Counter(), Counter()
        classes = rule.class_names(set()) if rule.active and not rule.identity else []
        index = {c: i for i, c in enumerate(classes)}
        for item in items:
            if any(s["path"] == item.where.strip("'") for s in skipped):
                continue
            raw = self._read_header(item, strict, writer, skipped)
            if raw is None:
                continue
            available = list(raw.ch_names)
            selected = common if common is not None else select_channels(available, cfg.channels, item.where)
            if reference_names is None:
                reference_names, reference_where = list(selected), item.where
            elif set(selected) != set(reference_names):
                only_here = sorted(set(selected) - set(reference_names))
                only_there = sorted(set(reference_names) - set(selected))
                raise DataError(
                    f"Recordings {reference_where} and {item.where} have different channels "
                    f"(only in the first: {', '.join(only_there) or 'none'}; only in the second: "
                    f"{', '.join(only_here) or 'none'}); set modality.channels to 'common' to keep the "
                    f"channels they share, or name the channels to use."
                )
            else:
                selected = list(reference_names)
            needed = self._needed_channels(available, selected, item.where)
            if rule.mode == "sleep" and item.path is not None and item.hypnogram is None:
                if not any(rule.label(d) is not None for d in raw.annotations.description):
                    writer.warn(
                        f"No hypnogram found for {item.where} (expected <name>-Hypnogram.edf beside it, or "
                        f"one sharing its first 6 characters); its windows have no sleep stage."
                    )
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    raw.pick(needed, verbose="error")
                    raw.load_data(verbose="error")
            except Exception as exc:  # noqa: BLE001 - a truncated or corrupt file
                if strict:
                    raise DataError(
                        f"Cannot read {item.where} as an EEG recording with MNE: {_one_line(exc)}"
                    ) from None
                reason = f"its samples cannot be read ({_one_line(exc)})"
                _skip(writer, skipped, item, reason)
                continue
            sfreq0 = float(raw.info["sfreq"])
            duration_s = raw.n_times / sfreq0
            for note in item.notes:
                writer.warn(f"{item.where} looks truncated; reading the {duration_s:.1f} s it holds (MNE: {note})")
            ann_counts = Counter(str(d) for d in raw.annotations.description)
            descriptions.update(ann_counts)
            try:
                rw = recording_windows(raw, cfg, selected, item.where, rule)
            except _TooShort as short:
                if strict:
                    raise DataError(
                        f"Recording {item.where} lasts {short.duration_s:.1f} s, shorter than one window "
                        f"(modality.window_s = {cfg.window_s} s)."
                    ) from None
                reason = f"it lasts {short.duration_s:.1f} s, shorter than one window ({cfg.window_s} s)"
                _skip(writer, skipped, item, reason)
                continue
            dropped.update(rw.dropped)
            unlabelled.update(rw.unlabelled)
            labels = None
            if rule.active:
                for lab in rw.labels:
                    if lab not in index:
                        index[lab] = len(classes)
                        classes.append(lab)
                labels = np.array([index[lab] for lab in rw.labels], dtype=np.int64)
            if len(rw):
                # Normalised straight into the cache's buffer: the windows are never all in memory.
                writer.append_filled(
                    len(rw), rw.shape, rw.fill, groups=item.recording_id, labels=labels, subjects=item.subject_id
                )
            files.append(
                {
                    "path": item.where.strip("'"),
                    "recording": item.recording_id,
                    "subject": item.subject_id,
                    "hypnogram": str(item.hypnogram) if item.hypnogram is not None else None,
                    "channels": list(selected),
                    "sfreq": sfreq0,
                    "duration_s": round(duration_s, 6),
                    "annotations": dict(ann_counts),
                    "n_windows": len(rw),
                }
            )
            del raw, rw
        self._finish(writer, rule, source, files, skipped, dropped, unlabelled, descriptions, classes, reference_names)

    def _finish(self, writer, rule, source, files, skipped, dropped, unlabelled, descriptions, classes, names):
        cfg = self.config
        if not files:
            listed = "; ".join(f"{s['path']} ({s['reason']})" for s in skipped)
            raise DataError(f"No usable recording in {source!r}: every one was skipped: {listed}.")
        if rule.active and not rule.identity:
            matched = [d for d in descriptions if rule.label(d) is not None]
            if not matched:
                found = ", ".join(repr(d) for d in sorted(descriptions)) or "none"
                mapping = ", ".join(repr(k) for k in rule.map)
                raise DataError(
                    f"The label mapping (modality.labels = {cfg.labels!r}, descriptions {mapping}) matches "
                    f"none of the annotations in {source!r}; the annotation descriptions found are: {found}."
                )
        if rule.active and rule.identity and not descriptions:
            raise DataError(
                f"The recordings in {source!r} have no annotations to label windows with "
                f"(modality.labels = 'annotations'); use labels: none, or add annotations."
            )
        total = writer.count + sum(dropped.values())
        if dropped:
            reasons = ", ".join(f"{n} {why}" for why, n in dropped.items())
            detail = ""
            if unlabelled:
                detail = " (" + ", ".join(f"{d!r}: {n}" for d, n in sorted(unlabelled.items())) + ")"
            writer.warn(f"Dropped {sum(dropped.values())} of {total} windows in {source!r}: {reasons}{detail}.")
        if writer.count == 0:
            reasons = ", ".join(f"{n} {why}" for why, n in dropped.items()) or "none were cut"
            raise DataError(f"No window is left in {source!r} after dropping bad or unlabelled ones ({reasons}).")
        writer.class_names = list(classes) if rule.active else []
        writer.info.update(
            {
                "sfreq": cfg.sfreq,
                "ch_names": list(names or []),
                "n_recordings": len(files),
                "files": files,
                "skipped": skipped,
                "dropped": dict(dropped),
                "unlabelled": dict(unlabelled),
                "source": source,
            }
        )

    def _common_channels(self, items, writer, skipped) -> list[str]:
        common: list[str] | None = None
        for item in items:
            raw = self._read_header(item, len(items) == 1, writer, skipped)
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

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
(``windows: fixed``) or one window per annotation (``windows: events``), and normalised: by default
(``normalize: auto``, printed at load) per recording for recordings and per window for ``.npz``/``.npy``
trials (:mod:`..common.normalisation_choice`); each window is
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
patches, 40 of them sampled per window (but recordings scaled per recording, not per window). The
package ships one real recording,
``eegmmidb_S001R02.edf`` (PhysioNet EEG Motor Movement/Imagery Dataset, subject 1, run 2; see
``ATTRIBUTION.md`` beside it). It lasts 61 s, so the default stride (5 s) overlaps windows to give it
7 of them.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from relpos.errors import DataError
from relpos.modality import Axis, Modality, Windows, npz_keys

from ..common.normalisation_choice import describe as describe_normalisation
from ..common.normalisation_choice import resolve as resolve_normalize
from ..common.normalisation_choice import restored as restored_normalisation
from ..common.trial_archive import has_both_splits
from .build import RecordingsBuild
from .channel_policy import MoreDeadChannels
from .config import EEGConfig
from .pipeline import params_of
from .reading import Item, is_raw, mne_version
from .sources import RECORDING_SUFFIXES, resolve_recordings, strip_suffix, subject_of

SAMPLE = Path(__file__).parents[1] / "data" / "eegmmidb_S001R02.edf"
NUMPY_SUFFIXES = (".npz", ".npy")
#: Bumped when the pipeline changes what it writes, so old cache entries are not reused.
#: 2: dead channels left out, flat-window reasons name channels, labels auto; 3: channels flat in most
#: windows are dead too, channel types inferred from names (:mod:`..common.channel_types`)
PIPELINE_VERSION = 3

__all__ = ["EEGConfig", "EEGModality", "RECORDING_SUFFIXES"]


class EEGModality(Modality):
    """EEG recordings read with MNE, filtered, resampled and cut into windows."""

    name = "eeg"
    axes = (Axis("time", unit="s"),)
    Config = EEGConfig

    def __init__(self, config=None):
        super().__init__(config)
        self.config.validate()
        self._report = False  # inspect's second try: every problem of a recording becomes a report line
        self._announce = True  # print what normalize: auto chose (inspect reports it instead)

    def axis_units(self) -> tuple[Axis, ...]:
        # every window is resampled to modality.sfreq: one sample is 1 / sfreq seconds
        return (Axis("time", unit="s", scale=1.0 / self.config.sfreq),)

    def default_data(self) -> str:
        return str(SAMPLE)

    def gives_positions(self) -> bool:
        return self.config.space == "montage"  # every channel placed at its electrode (space.py)

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
        if self.config.space == "montage":
            from .space import load_with_positions

            windows = load_with_positions(self, data)
            self._last_info = windows.info
            return windows
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
            worker = self._resolved([])._normalisation(continuous=True, count=len(raws))
            windows = worker._cached_build([], items, source, enabled=False)
            return self._loaded(windows, worker)
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

            worker = self._resolved([])._normalisation(continuous=False)
            params = {"pipeline": PIPELINE_VERSION, "mne": mne_version(), **params_of(worker.config)}
            windows = load_trials(
                worker.config, path, params, enabled=worker.config.cache and not self._report, report=self._report
            )
            return self._loaded(windows, worker)
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
        worker = self._resolved(recordings)._normalisation(continuous=True, count=len(recordings))
        windows = worker._cached_build(sources, items, str(data), enabled=worker.config.cache and not self._report)
        return self._loaded(windows, worker)

    def _normalisation(self, continuous: bool, count: int = 1) -> "EEGModality":
        """A copy of this modality with ``normalize: auto`` decided: ``recording`` for ``continuous``
        recordings (files MNE reads, Raw objects), ``instance`` for trials (``.npz``/``.npy``); see
        :mod:`..common.normalisation_choice`. The cache key takes the value decided."""
        import copy

        used, note = resolve_normalize(self.config.normalize, continuous, count)
        worker = copy.copy(self)
        worker.config = replace(self.config, normalize=used)
        worker._normalize_choice = note
        return worker

    def _loaded(self, windows: Windows, worker: "EEGModality") -> Windows:
        """``windows`` with the normalisation used in their info (a run's ``data_info`` keeps it), said once
        when ``auto`` chose it (``relpos data inspect`` reports it instead)."""
        windows.info["normalize"] = worker.config.normalize
        windows.info["normalize_choice"] = worker._normalize_choice
        if worker._normalize_choice and self._announce:
            print(f"relpos: {worker._normalize_choice}", file=sys.stderr)
        self._last_info = windows.info
        return windows

    def restore(self, data_info: dict[str, Any]) -> None:
        """A run trained with ``normalize: auto`` opens new data with the normalisation it was trained with."""
        self.config = restored_normalisation(self.config, data_info)

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
        build = RecordingsBuild(self.config, self._report, getattr(self, "_labelling", None))
        dead: list[str] = []
        mostly: set[str] = set()
        while True:
            try:
                return cached_windows(
                    "eeg", sources, params, lambda w: build(w, items, source, dead, mostly), enabled=enabled
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
        self._announce = False
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
        finally:
            self._announce = True
        info = self._last_info
        report["unlabelled"] = dict(info.get("unlabelled") or {})
        report["dead_channels"] = list(info.get("dead_channels") or [])
        report["retyped_from_names"] = dict(info.get("retyped_from_names") or {})
        report["labelling"] = info.get("labelling")
        report["normalisation"] = describe_normalisation(info)
        if info.get("channel_contract"):
            report["channel_contract"] = info["channel_contract"]
            report["channel_sets"] = dict(info.get("channel_sets") or {})
        return report

"""The ``timeseries`` modality: custom multichannel sensor data, 1 axis (time), samples as native units.

Reads

* xarray objects (a ``DataArray``, or a ``Dataset`` with one data variable, the ``variable``
  option, or several variables over time that become the channels) with dims ``channel`` × ``time``
  and optionally one leading sample dim of any name (``sample``, ``case``, ``trial``...), in memory
  or from files: netCDF (netCDF-3 through SciPy; netCDF-4/HDF5 through h5netcdf or netCDF4, the
  engine chosen from the file's signature) and zarr stores (when ``zarr`` is installed);
* NumPy ``.npy`` (``(n, channels, time)`` or ``(channels, time)``; the rate comes from
  ``modality.sfreq``) and ``.npz`` archives holding such an array (``X``, ``x``, ``data`` or
  ``arr_0``) with an ``sfreq`` array, or the shared-data layout ``X_train``/``y_train``/``X_test``/
  ``y_test``/``sfreq``/``ch_names``/``class_names`` (choose with ``modality.split``);
* a folder (searched recursively), a glob, a list file (one path a line) or a Python list of any
  of the above; each file is a recording.

The sampling rate is read from the attributes ``sfreq``, ``sampling_rate`` or ``fs`` (Hz), else
derived from a regular numeric (seconds) or datetime64 ``time`` coordinate, else
``modality.sfreq``. Samples are optionally resampled (``scipy.signal.resample_poly``), cut into
windows of ``window_s`` every ``stride_s`` (``window_s = 0``: continuous recordings, one per source
and at least two windows long, are cut into windows of 16 patches, and trials, several samples in a
source, stay whole, one window each; :mod:`.windows`), windows holding
NaN/inf or in which every channel is flat are dropped (counted in ``info["dropped"]`` and reported), and
the windows are normalised: by default (``normalize: auto``, printed at load) per recording when every
source is one continuous recording cut into windows, per window for trials and samples kept whole
(:mod:`..common.normalisation_choice`); each window is instance-normalised per channel (``normalize:
instance``), or every window of a
recording is scaled by one robust z-score per channel over that recording (``normalize: recording``,
which keeps offsets and amplitudes: posture from gravity, movement intensity; a recording is a
source without a sample dim, or one sample of a source with one; :mod:`..common.normalisation`), or every
window of a source by one robust z-score per channel over all of its samples (``normalize: file``:
a source is one array of one file, e.g. ``X_train`` of a trial archive, whose trials then keep
what separates them; the test split of an evaluation gets its own statistics from its own
samples), or left as it is (``none``). Labels are a variable or key named ``label``,
``labels`` or ``y``: one per sample (each window takes its sample's label) or one per time step
(each window takes the label at its centre, or the majority with ``label_at: majority``).
A channel flat throughout a source (a dead sensor, an unused input), or constant in 80% or more of
its windows (a marker line that steps once), is left out of every source, with a warning naming it
(:mod:`..common.channels`). Windows made from files are cached on disk
(:func:`relpos.cache.cached_windows`).

The work is split by job: :mod:`.sources` (what ``data`` names, with the shared
:mod:`..common.sources`), :mod:`.readers` (which reader opens what: :mod:`.numpy_arrays`,
:mod:`.xarray_files`), :mod:`.labels` (labels per window) and :mod:`.pipeline` (from sources to
windows); this module holds the options and the modality class.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from relpos.config import check_fields, setting
from relpos.errors import ConfigError, DataError
from relpos.modality import Axis, Modality, Windows, npz_keys

from ..common.normalisation_choice import describe as describe_normalisation
from ..common.normalisation_choice import restored as restored_normalisation
from ..common.trial_archive import SPLITS, has_both_splits
from .labels import LABEL_AT
from .pipeline import build_windows
from .sources import describe_data, files_to_hash, find_items

__all__ = ["TimeseriesConfig", "TimeseriesModality", "BUILD_VERSION"]

#: Bumped when the windows made from the same files and options change (invalidates the cache).
#: 2: channels flat throughout a source are left out. 3: window_s = 0 cuts continuous recordings.
#: 4: channels flat in 80% or more of a source's windows are left out too.
BUILD_VERSION = 4
NORMALIZE = ("auto", "instance", "recording", "file", "none")
#: Upper bounds of the timeseries options: rates up to 1 MHz, durations up to 10 days, patch
#: counts and lengths a batch can hold (as for the eeg modality).
MAX_RATE_HZ = 1e6
MAX_DURATION_S = 864000.0
MAX_PATCHES = 65536
MAX_PATCH_SAMPLES = 2**24


@dataclass
class TimeseriesConfig:
    """Options of the timeseries modality."""

    # window length, s; 0 = chosen from the data: a source holding one recording (channels, time) is
    # continuous when the longest lasts at least 32 patches, and is then cut into windows of 16
    # patches (16 × patch_s); trials (several samples in a source, e.g. X_train) and shorter
    # recordings stay whole, one window per sample. Printed when loaded, shown by `relpos data inspect`.
    window_s: float = setting(0.0, ge=0, le=MAX_DURATION_S)
    # distance between window starts, s; 0 = window_s (no overlap)
    stride_s: float = setting(0.0, ge=0, le=MAX_DURATION_S)
    patch_s: float = setting(1.0, gt=0, le=MAX_DURATION_S)  # patch length, s (converted to samples at the data's rate)
    patch_samples: int = setting(0, ge=0, le=MAX_PATCH_SAMPLES)  # patch length in samples; overrides patch_s when > 0
    # off-grid patches sampled per window; 0 = the grid count
    patches_per_window: int = setting(0, ge=2, le=MAX_PATCHES, also=(0,))
    # sampling rate, Hz, for data that carries none (.npy, bare arrays); 0 = from the data
    sfreq: float = setting(0.0, ge=0, le=MAX_RATE_HZ)
    # resample every source to this rate, Hz (scipy resample_poly); 0 = keep
    sfreq_target: float = setting(0.0, ge=0, le=MAX_RATE_HZ)
    # auto (recording when every source is one continuous recording cut into windows, instance for
    # trials and samples kept whole; printed at load, see common/normalisation_choice.py) | instance (per
    # window, per channel: mean 0, std 1) | recording (one robust z-score per channel over each
    # recording: median, MAD × 1.4826; see common/normalisation.py) | file (the same over all the
    # samples of one source: one array of one file, e.g. X_train; X_test gets its own) | none
    normalize: str = setting("auto", choices=NORMALIZE)
    # comma-separated channel names or fnmatch patterns (acc_*); "" = all
    channels: str = setting("", free="channel names or patterns")
    # data variable of an xarray Dataset, or array in an .npz; "" = found automatically
    variable: str = setting("", free="a variable or array name")
    # labels variable / .npz key; "" = label, labels or y when present
    label_variable: str = setting("", free="a variable or array name")
    # per-time-step labels: the window's label is the one at its centre | majority
    label_at: str = setting("center", choices=LABEL_AT)
    split: str = setting("train", choices=SPLITS)  # archives with X_train/X_test: train | test | all
    time_dim: str = setting("time", free="a dimension name")  # name of the time dimension of xarray data
    channel_dim: str = setting("channel", free="a dimension name")  # name of the channel dimension of xarray data
    cache: bool = setting(True)  # cache the windows made from files on disk ($RELPOS_CACHE_DIR)

    def validate(self) -> None:
        # Single values are checked against the ranges declared above (also for a config made in
        # Python); what follows relates several fields.
        check_fields(self, "modality")
        if self.patch_samples == 0 and self.window_s > 0 and self.patch_s > self.window_s:
            raise ConfigError(
                f"'modality.patch_s' ({self.patch_s} s) is longer than 'modality.window_s' ({self.window_s} s)."
            )


class TimeseriesModality(Modality):
    """Custom multichannel sensor data (xarray, netCDF, zarr, NumPy) cut into normalised windows."""

    name = "timeseries"
    axes = (Axis("time", unit="s"),)
    Config = TimeseriesConfig

    def axis_units(self) -> tuple[Axis, ...]:
        # seconds once the rate is known (set, or read from the data); native samples until then
        cfg = self.config
        rate = cfg.sfreq_target or self._sfreq or cfg.sfreq
        return (Axis("time", unit="s", scale=1.0 / rate) if rate else Axis("time"),)

    def __init__(self, config=None):
        super().__init__(config)
        self.config.validate()
        self._sfreq: float | None = None  # the rate of the windows last loaded, Hz
        self._report = False  # inspect's second try: report what was found when nothing is usable
        self._last_info: dict[str, Any] = {}
        # print the window window_s = 0 and the normalisation normalize: auto chose (inspect reports them)
        self._announce_windows = True

    def photometric(self, patches, generator, view="global-1", per_patch=False):
        """Amplitude scaling, noise, channel dropout and time masking (see :mod:`..common.series_photometric`)."""
        from ..common.series_photometric import photometric_series

        return photometric_series(patches, generator, per_patch)

    # -- patch geometry ----------------------------------------------------------------------
    def sfreq(self) -> float:
        """Rate of the windows in Hz: ``sfreq_target``, else that of the data last loaded, else ``sfreq``."""
        cfg = self.config
        rate = cfg.sfreq_target or self._sfreq or cfg.sfreq
        if not rate:
            raise ConfigError(
                "The patch length in samples is not known before data is loaded: set "
                "modality.sfreq_target (Hz), modality.sfreq (Hz) or modality.patch_samples."
            )
        return float(rate)

    def restore(self, data_info: dict) -> None:
        if data_info.get("sfreq"):
            self._sfreq = float(data_info["sfreq"])
        # a run trained with normalize: auto opens new data with the normalisation it was trained with
        self.config = restored_normalisation(self.config, data_info)

    def patch_size(self) -> tuple[float, ...]:
        if self.config.patch_samples > 0:
            return (float(self.config.patch_samples),)
        samples = round(self.config.patch_s * self.sfreq())
        if samples < 1:
            raise ConfigError(
                f"'modality.patch_s' ({self.config.patch_s:g} s) is shorter than one sample at "
                f"{self.sfreq():g} Hz; set a longer patch_s or modality.patch_samples."
            )
        return (float(samples),)

    def default_num_patches(self, extent) -> int:
        if self.config.patches_per_window > 0:
            return self.config.patches_per_window
        return super().default_num_patches(extent)

    # -- loading -------------------------------------------------------------------------------
    def load(self, data: Any) -> Windows:
        """Open ``data`` into windows ``(N, channels, window samples)``.

        Parameters
        ----------
        data : path, str, xarray object, numpy.ndarray, mapping of arrays, or a list of them
            A file (.nc, .h5, .zarr, .npy, .npz), a folder (recursively), a glob, a list file, or
            in-memory data; see the module docstring for the layouts.

        Returns
        -------
        Windows
            With ``info``: ``sfreq`` (Hz), ``ch_names``, ``dead_channels`` (left out: flat throughout a
            source), ``source``, ``files`` (with each channel's ``channel_status``), ``skipped``,
            ``dropped`` ({reason: windows}), ``window_samples``, ``label_kind``.
        """
        from relpos.cache import cached_windows

        items = find_items(data)
        paths = [item for item in items if isinstance(item, Path)]
        in_memory = len(paths) != len(items)
        params = {k: v for k, v in asdict(self.config).items() if k != "cache"}
        params["build_version"] = BUILD_VERSION
        params["items"] = [str(item) for item in paths]
        source_text = describe_data(data)

        def build(writer) -> None:
            build_windows(items, writer, source_text, self.config, report=self._report)

        windows = cached_windows(
            "timeseries", files_to_hash(paths), params, build,
            enabled=self.config.cache and not in_memory and not self._report,
        )
        self._last_info = windows.info
        if windows.info.get("sfreq"):
            self._sfreq = float(windows.info["sfreq"])
        if windows.info.get("window_kind") == "continuous" and self._announce_windows:
            # Said on every load, cache hit or not: the user left window_s to the data.
            print(f"relpos: {windows.info['window_choice']}", file=sys.stderr)
        # Entries cached before normalize: auto existed were made with the value named in their key.
        windows.info.setdefault("normalize", self.config.normalize)
        if windows.info.get("normalize_choice") and self._announce_windows:
            print(f"relpos: {windows.info['normalize_choice']}", file=sys.stderr)
        return windows

    def eval_splits(self, data: Any) -> tuple[Windows, Windows] | None:
        """The cases of an ``.npz`` archive with ``X_train`` and ``X_test``: (train, test) windows."""
        if self.config.variable or not has_both_splits(npz_keys(data)):
            return None
        return self.load_with(data, split="train"), self.load_with(data, split="test")

    def inspect(self, data: Any) -> dict[str, Any]:
        """The base report (files with each channel's status, skipped, dropped, labels) plus
        ``dead_channels`` and the window and patch geometry; when nothing is usable, ``problem`` (the
        sentence :meth:`load` raises) instead of an error, so the files and channels are still reported."""
        import copy

        self._last_info = {}
        self._announce_windows = False
        try:
            report = super().inspect(data)
        except DataError as exc:
            if not isinstance(data, (str, Path)):
                raise
            reporter = copy.copy(self)
            reporter._report = True
            reporter._last_info = {}
            report = Modality.inspect(reporter, data)
            self._last_info = reporter._last_info
            self._sfreq = reporter._sfreq
            report["problem"] = str(self._last_info.get("problem") or exc)
        finally:
            self._announce_windows = True
        if self._sfreq is not None:
            report["sfreq"] = self._sfreq
        report["dead_channels"] = list(self._last_info.get("dead_channels") or [])
        cfg = self.config
        report["window_s"] = cfg.window_s
        report["stride_s"] = cfg.stride_s or cfg.window_s
        info = self._last_info
        if info.get("window_samples") and self._sfreq:  # the window used, also when window_s = 0 chose it
            report["window_s"] = info["window_samples"] / self._sfreq
            report["stride_s"] = info["stride_samples"] / self._sfreq
        if info.get("window_choice"):
            report["window_choice"] = info["window_choice"]
        if report["extent"] and (cfg.patch_samples or cfg.sfreq_target or self._sfreq or cfg.sfreq):
            report["patch_samples"] = int(self.patch_size()[0])
            report["patches_per_window"] = self.default_num_patches(report["extent"])
        report["normalisation"] = describe_normalisation(info) or cfg.normalize
        return report

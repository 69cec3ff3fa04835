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
windows of ``window_s`` every ``stride_s`` (``window_s = 0``: every sample whole), windows holding
NaN/inf or with every channel flat are dropped (counted in ``info["dropped"]`` and reported), and
each window is instance-normalised per channel. Labels are a variable or key named ``label``,
``labels`` or ``y``: one per sample (each window takes its sample's label) or one per time step
(each window takes the label at its centre, or the majority with ``label_at: majority``).
Windows made from files are cached on disk (:func:`relpos.cache.cached_windows`).
"""

from __future__ import annotations

import fnmatch
import glob as globlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from relpos import hookimpl
from relpos.errors import ConfigError, DataError
from relpos.modality import Modality, Windows, npz_keys

#: Bumped when the windows made from the same files and options change (invalidates the cache).
BUILD_VERSION = 1
NETCDF_SUFFIXES = (".nc", ".nc4", ".cdf", ".netcdf", ".h5", ".hdf5")
NUMPY_SUFFIXES = (".npy", ".npz")
LIST_SUFFIXES = (".txt", ".lst", ".list")
SFREQ_ATTRS = ("sfreq", "sampling_rate", "fs")
LABEL_NAMES = ("label", "labels", "y")
SUBJECT_NAMES = ("subject", "subjects")
DATA_KEYS = ("X", "x", "data", "arr_0")
CHANNEL_KEYS = ("ch_names", "channels")
SPLITS = ("train", "test", "all")
NORMALIZE = ("instance", "none")
LABEL_AT = ("center", "majority")
#: Roughly how many values are read from a source at a time (bounded memory on large files).
CHUNK_VALUES = 1 << 24
#: Reasons for dropping windows, as counted in ``info["dropped"]`` (the eeg modality's wording).
DROP_NONFINITE = "non-finite values"
DROP_FLAT = "flat (every channel constant)"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_TIME_UNITS_S = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "millisecond": 1e-3,
                 "milliseconds": 1e-3, "us": 1e-6, "microsecond": 1e-6, "microseconds": 1e-6,
                 "ns": 1e-9, "nanosecond": 1e-9, "nanoseconds": 1e-9, "min": 60.0, "minute": 60.0,
                 "minutes": 60.0, "h": 3600.0, "hour": 3600.0, "hours": 3600.0}


@dataclass
class TimeseriesConfig:
    """Options of the timeseries modality."""

    window_s: float = 0.0  # window length, s; 0 = each sample whole (one window per sample)
    stride_s: float = 0.0  # distance between window starts, s; 0 = window_s (no overlap)
    patch_s: float = 1.0  # patch length, s (converted to samples at the data's rate)
    patch_samples: int = 0  # patch length in samples; overrides patch_s when > 0
    patches_per_window: int = 0  # off-grid patches sampled per window; 0 = the grid count
    sfreq: float = 0.0  # sampling rate, Hz, for data that carries none (.npy, bare arrays); 0 = from the data
    sfreq_target: float = 0.0  # resample every source to this rate, Hz (scipy resample_poly); 0 = keep
    normalize: str = "instance"  # instance (per window, per channel: mean 0, std 1) | none
    channels: str = ""  # comma-separated channel names or fnmatch patterns (acc_*); "" = all
    variable: str = ""  # data variable of an xarray Dataset, or array in an .npz; "" = found automatically
    label_variable: str = ""  # labels variable / .npz key; "" = label, labels or y when present
    label_at: str = "center"  # per-time-step labels: the window's label is the one at its centre | majority
    split: str = "train"  # archives with X_train/X_test: train | test | all
    time_dim: str = "time"  # name of the time dimension of xarray data
    channel_dim: str = "channel"  # name of the channel dimension of xarray data
    cache: bool = True  # cache the windows made from files on disk ($RELPOS_CACHE_DIR)

    def validate(self) -> None:
        for key in ("window_s", "stride_s", "sfreq", "sfreq_target"):
            value = getattr(self, key)
            if not value >= 0:
                raise ConfigError(f"'modality.{key}' must be 0 or positive, got {value}.")
        if self.patch_samples < 0:
            raise ConfigError(
                f"'modality.patch_samples' must be 0 (use patch_s) or positive, got {self.patch_samples}."
            )
        if self.patch_samples == 0 and not self.patch_s > 0:
            raise ConfigError(f"'modality.patch_s' must be positive, got {self.patch_s}.")
        if self.patch_samples == 0 and self.window_s > 0 and self.patch_s > self.window_s:
            raise ConfigError(
                f"'modality.patch_s' ({self.patch_s} s) is longer than 'modality.window_s' ({self.window_s} s)."
            )
        if self.patches_per_window < 0 or self.patches_per_window == 1:
            raise ConfigError(
                f"'modality.patches_per_window' must be 0 (the grid count) or at least 2, got "
                f"{self.patches_per_window}."
            )
        for key, allowed in (("normalize", NORMALIZE), ("label_at", LABEL_AT), ("split", SPLITS)):
            if getattr(self, key) not in allowed:
                raise ConfigError(
                    f"Invalid value for 'modality.{key}': allowed {', '.join(allowed)}, got {getattr(self, key)!r}."
                )


@dataclass
class _Source:
    """One block of samples of equal shape, opened lazily: a file, a split of an archive, an object."""

    name: str  # for messages: a path, or a description of the in-memory object
    group: str  # recording id prefix
    n_samples: int
    n_times: int
    sfreq: float
    ch_names: list[str]
    read: Callable[[int, int], np.ndarray]  # samples [i, j) → (j - i, channels, time)
    has_sample_dim: bool = True
    sample_ids: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None  # raw: (n_samples,) or (n_samples, n_times)
    class_names: list[str] | None = None
    subjects: list[str] | None = None
    path: str | None = None  # the file it comes from
    entry: str = ""  # how `relpos data inspect` lists it (default: path, else name)
    close: Callable[[], None] | None = None  # releases the file, once the windows are made


def _describe(obj: Any) -> str:
    name = getattr(obj, "name", None)
    kind = f"{type(obj).__module__.split('.')[0]}.{type(obj).__name__}"
    return f"{kind} {name!r}" if isinstance(name, str) and name else kind


def _is_xarray(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "xarray" and hasattr(obj, "dims")


def _is_zarr_store(path: Path) -> bool:
    if path.suffix.lower() == ".zarr":
        return True
    return path.is_dir() and any((path / n).exists() for n in (".zgroup", ".zarray", "zarr.json"))


def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _strings(values: Any) -> list[str]:
    arr = np.asarray(values).reshape(-1)
    return [v.decode() if isinstance(v, bytes) else str(v) for v in arr.tolist()]


def _class_names_attr(attrs: Mapping[str, Any]) -> list[str] | None:
    """Class names from a labels variable's attrs: ``class_names``, or CF ``flag_meanings``."""
    names = attrs.get("class_names")
    if names is None and "flag_meanings" in attrs and "flag_values" not in attrs:
        names = attrs["flag_meanings"]
    if names is None:
        return None
    if isinstance(names, str):
        parts = names.split(",") if "," in names else names.split()
        return [p.strip() for p in parts if p.strip()]
    return _strings(names)


class TimeseriesModality(Modality):
    """Custom multichannel sensor data (xarray, netCDF, zarr, NumPy) cut into normalised windows."""

    name = "timeseries"
    axes = ("time",)
    Config = TimeseriesConfig

    def __init__(self, config=None):
        super().__init__(config)
        self.config.validate()
        self._sfreq: float | None = None  # the rate of the windows last loaded, Hz

    def photometric(self, patches, generator, view="global-1", per_patch=False):
        """Amplitude scaling, noise, channel dropout and time masking (see ``series_photometric``)."""
        from .series_photometric import photometric_series

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

    def patch_size(self) -> tuple[float, ...]:
        if self.config.patch_samples > 0:
            return (float(self.config.patch_samples),)
        return (float(round(self.config.patch_s * self.sfreq())),)

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
            With ``info``: ``sfreq`` (Hz), ``ch_names``, ``source``, ``files``, ``skipped``,
            ``dropped`` ({reason: windows}), ``window_samples``, ``label_kind``.
        """
        from relpos.cache import cached_windows

        items = self._items(data)
        paths = [item for item in items if isinstance(item, Path)]
        in_memory = len(paths) != len(items)
        sources: list[str] = []
        for path in paths:
            sources.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
        params = {k: v for k, v in asdict(self.config).items() if k != "cache"}
        params["build_version"] = BUILD_VERSION
        params["items"] = [str(item) for item in paths]
        source_text = str(data) if isinstance(data, (str, Path)) else (
            _describe(data) if not isinstance(data, (list, tuple)) else f"{len(data)} sources"
        )

        def build(writer) -> None:
            self._build(items, writer, source_text)

        windows = cached_windows(
            "timeseries", sources, params, build, enabled=self.config.cache and not in_memory
        )
        self._sfreq = float(windows.info["sfreq"])
        return windows

    def eval_splits(self, data: Any) -> tuple[Windows, Windows] | None:
        """The cases of an ``.npz`` archive with ``X_train`` and ``X_test``: (train, test) windows."""
        keys = set(npz_keys(data))
        if self.config.variable or not ({"X_train", "x_train"} & keys and {"X_test", "x_test"} & keys):
            return None
        return self.load_with(data, split="train"), self.load_with(data, split="test")

    def inspect(self, data: Any) -> dict[str, Any]:
        """The base report (files, skipped, dropped, labels) plus the window and patch geometry."""
        report = super().inspect(data)
        if self._sfreq is not None:
            report["sfreq"] = self._sfreq
        cfg = self.config
        report["window_s"] = cfg.window_s
        report["stride_s"] = cfg.stride_s or cfg.window_s
        report["patch_samples"] = int(self.patch_size()[0])
        report["patches_per_window"] = self.default_num_patches(report["extent"])
        report["normalize"] = cfg.normalize
        return report

    # -- what `data` names ---------------------------------------------------------------------
    def _items(self, data: Any) -> list[Any]:
        """Files (as Path) and in-memory objects, in order."""
        if data is None:
            raise DataError("The timeseries modality ships no default data; pass --data PATH.")
        if isinstance(data, (list, tuple)):
            if not data:
                raise DataError("The list of timeseries sources is empty; pass at least one file or array.")
            items: list[Any] = []
            for entry in data:
                items.extend(self._items(entry))
            return items
        if isinstance(data, (str, Path)):
            return self._resolve_path(str(data))
        if _is_xarray(data) or isinstance(data, (np.ndarray, Mapping)):
            return [data]
        raise DataError(
            f"Cannot open a {type(data).__name__} as a timeseries: pass a path, an xarray DataArray or "
            f"Dataset, a NumPy array (n, channels, time) or (channels, time), or a list of them."
        )

    def _resolve_path(self, text: str) -> list[Path]:
        path = Path(text).expanduser()
        if not path.exists():
            if _has_glob(text):
                matches = sorted(Path(p) for p in globlib.glob(str(path), recursive=True))
                if not matches:
                    raise DataError(f"The pattern {text!r} matches no files.")
                return [p for p in matches if p.is_file() or _is_zarr_store(p)]
            raise DataError(f"Data path {text!r} does not exist.")
        if _is_zarr_store(path):
            return [path]
        if path.is_dir():
            found: list[Path] = []
            for p in sorted(path.rglob("*")):
                if any(parent in found for parent in p.parents):
                    continue  # inside a zarr store already listed
                if (p.is_dir() and _is_zarr_store(p)) or (
                    p.is_file() and p.suffix.lower() in NETCDF_SUFFIXES + NUMPY_SUFFIXES
                ):
                    found.append(p)
            if not found:
                raise DataError(
                    f"No timeseries files found in folder {text!r} (looked recursively for "
                    f"{', '.join(NETCDF_SUFFIXES + NUMPY_SUFFIXES)} and .zarr stores)."
                )
            return found
        if path.suffix.lower() in LIST_SUFFIXES:
            lines = [ln.strip() for ln in path.read_text().splitlines()]
            entries = [ln for ln in lines if ln and not ln.startswith("#")]
            if not entries:
                raise DataError(f"The list file {text!r} names no files.")
            out: list[Path] = []
            for entry in entries:
                target = Path(entry).expanduser()
                out.extend(self._resolve_path(str(target if target.is_absolute() else path.parent / target)))
            return out
        return [path]

    # -- opening sources -----------------------------------------------------------------------
    def _open(self, item: Any) -> list[_Source]:
        if isinstance(item, Path):
            return self._open_path(item)
        if _is_xarray(item):
            return [self._from_xarray(item, _describe(item), "xarray", None)]
        if isinstance(item, np.ndarray):
            return [self._from_array(item, "the NumPy array", "array", None, None)]
        return self._from_archive(item, "the mapping of arrays", "arrays", None)

    def _open_path(self, path: Path) -> list[_Source]:
        suffix = path.suffix.lower()
        if _is_zarr_store(path):
            return [self._from_xarray(self._open_zarr(path), repr(str(path)), path.stem, path)]
        if suffix in NETCDF_SUFFIXES:
            return [self._from_xarray(self._open_netcdf(path), repr(str(path)), path.stem, path)]
        if suffix == ".npy":
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except Exception as exc:  # noqa: BLE001 - any unreadable file is a data error
                raise DataError(f"Cannot read {str(path)!r} as a NumPy .npy array: {_reason(exc)}") from None
            return [self._from_array(array, repr(str(path)), path.stem, None, path)]
        if suffix == ".npz":
            try:
                archive = np.load(path, allow_pickle=False)
            except Exception as exc:  # noqa: BLE001
                raise DataError(f"Cannot read {str(path)!r} as a NumPy .npz archive: {_reason(exc)}") from None
            try:
                return self._from_archive(archive, repr(str(path)), path.stem, path)
            except (ValueError, OSError, KeyError) as exc:
                raise DataError(f"Cannot read {str(path)!r} as a NumPy .npz archive: {_reason(exc)}") from None
        raise DataError(
            f"Cannot open {str(path)!r} as a timeseries: expected netCDF ({', '.join(NETCDF_SUFFIXES)}), "
            f"a .zarr store, .npy or .npz."
        )

    def _open_netcdf(self, path: Path):
        xr = _import_xarray(path)
        with open(path, "rb") as fh:
            head = fh.read(8)
        if head.startswith(b"CDF"):
            engine = "scipy"
        elif head.startswith(_HDF5_SIGNATURE):
            engine = next((e for e in ("h5netcdf", "netcdf4") if _installed(e)), None)
            if engine is None:
                raise DataError(
                    f"{str(path)!r} is a netCDF-4/HDF5 file, which needs h5netcdf: pip install h5netcdf "
                    f"(SciPy reads netCDF-3 only)."
                )
        else:
            raise DataError(
                f"Cannot read {str(path)!r} as netCDF: it starts with neither the netCDF-3 nor the HDF5 signature."
            )
        try:
            return xr.open_dataset(path, engine=engine)
        except Exception as exc:  # noqa: BLE001 - backends raise many kinds for a bad file
            raise DataError(f"Cannot read {str(path)!r} as netCDF ({engine}): {_reason(exc)}") from None

    def _open_zarr(self, path: Path):
        xr = _import_xarray(path)
        if not _installed("zarr"):
            raise DataError(f"Reading the zarr store {str(path)!r} needs the zarr package: pip install zarr.")
        try:
            return xr.open_zarr(path)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"Cannot read {str(path)!r} as a zarr store: {_reason(exc)}") from None

    def _rate(self, found: float | None, where: str, how: str) -> float:
        if found is not None:
            if not (np.isfinite(found) and found > 0):
                raise DataError(f"{where} gives a sampling rate of {found} Hz ({how}); it must be positive.")
            return float(found)
        if self.config.sfreq > 0:
            return float(self.config.sfreq)
        raise DataError(f"{where} has no sampling rate: {how}, or set modality.sfreq (Hz).")

    # NumPy ----------------------------------------------------------------------------------
    def _from_array(self, array, name, group, sfreq, path, labels=None, ch_names=None, class_names=None,
                    subjects=None, sample_ids=None) -> _Source:
        array = np.asarray(array) if not isinstance(array, np.ndarray) else array
        if array.ndim not in (2, 3) or array.size == 0 or not np.issubdtype(array.dtype, np.number):
            raise DataError(
                f"{name} holds a {array.dtype} array of shape {list(array.shape)}; expected numbers shaped "
                f"(n, channels, time) or (channels, time)."
            )
        has_sample_dim = array.ndim == 3
        n, channels, n_times = (array.shape if has_sample_dim else (1, *array.shape))
        rate = self._rate(
            sfreq, name,
            "an .npz archive needs an 'sfreq' array (Hz)" if path is not None and path.suffix == ".npz"
            else "a .npy file carries none" if path is not None else "a bare array carries none",
        )
        if ch_names is None:
            ch_names = [f"ch{i}" for i in range(channels)]
        elif len(ch_names) != channels:
            raise DataError(f"{name} names {len(ch_names)} channels but its array has {channels}.")
        if labels is not None:
            labels = self._check_labels(np.asarray(labels), n, n_times, has_sample_dim, name)

        def read(i: int, j: int) -> np.ndarray:
            block = array[i:j] if has_sample_dim else array[None]
            return np.asarray(block, dtype=np.float64)

        return _Source(
            name=name, group=group, n_samples=int(n), n_times=int(n_times), sfreq=rate,
            ch_names=[str(c) for c in ch_names], read=read, has_sample_dim=has_sample_dim,
            sample_ids=sample_ids or [str(i) for i in range(n)], labels=labels, class_names=class_names,
            subjects=subjects, path=str(path) if path is not None else None,
        )

    def _from_archive(self, archive: Mapping[str, Any], name: str, stem: str, path: Path | None) -> list[_Source]:
        cfg = self.config
        keys = list(archive.keys())

        def get(*candidates: str):
            return next((archive[k] for k in candidates if k in keys), None)

        sfreq_value = get(*SFREQ_ATTRS)
        sfreq = float(np.asarray(sfreq_value).reshape(-1)[0]) if sfreq_value is not None else None
        ch_names = get(*CHANNEL_KEYS)
        ch_names = _strings(ch_names) if ch_names is not None else None
        class_names = get("class_names")
        class_names = _strings(class_names) if class_names is not None else None
        split_layout = any(k in keys for k in ("X_train", "X_test", "x_train", "x_test")) and not cfg.variable
        if split_layout:
            splits = ["train", "test"] if cfg.split == "all" else [cfg.split]
            out = []
            for split in splits:
                data_key = next((k for k in (f"X_{split}", f"x_{split}") if k in keys), None)
                if data_key is None:
                    raise DataError(
                        f"{name} has no '{'X_' + split}' array for modality.split={cfg.split!r}; it holds "
                        f"{', '.join(keys)} (allowed splits: {', '.join(SPLITS)})."
                    )
                labels = get(*(f"{lab}_{split}" for lab in self._label_names()))
                subjects = get(f"subjects_{split}", f"subject_{split}")
                ids = get(f"groups_{split}")
                source = self._from_array(
                    archive[data_key], f"{name} ({data_key})", f"{stem}/{split}", sfreq, path,
                    labels=labels, ch_names=ch_names, class_names=class_names,
                    subjects=_strings(subjects) if subjects is not None else None,
                    sample_ids=_strings(ids) if ids is not None else None,
                )
                source.entry = f"{path if path is not None else name} ({data_key})"
                out.append(source)
            return out
        key = cfg.variable or next((k for k in DATA_KEYS if k in keys), "")
        if not key:
            arrays = [k for k in keys if np.asarray(archive[k]).ndim in (2, 3)]
            key = arrays[0] if len(arrays) == 1 else ""
        if not key or key not in keys:
            wanted = f"the array {cfg.variable!r} (modality.variable)" if cfg.variable else "a data array"
            raise DataError(
                f"{name} has no {wanted}: it holds {', '.join(keys) or 'nothing'}; set modality.variable to "
                f"the array shaped (n, channels, time) or (channels, time)."
            )
        label_names = (cfg.label_variable,) if cfg.label_variable else LABEL_NAMES
        if cfg.label_variable and cfg.label_variable not in keys:
            raise DataError(
                f"{name} has no labels array {cfg.label_variable!r} (modality.label_variable); it holds "
                f"{', '.join(keys)}."
            )
        labels = get(*label_names)
        subjects = get(*SUBJECT_NAMES)
        ids = get("groups")
        return [self._from_array(
            archive[key], name, stem, sfreq, path,
            labels=labels, ch_names=ch_names, class_names=class_names,
            subjects=_strings(subjects) if subjects is not None else None,
            sample_ids=_strings(ids) if ids is not None else None,
        )]

    # xarray ---------------------------------------------------------------------------------
    def _from_xarray(self, obj, name: str, group: str, path: Path | None) -> _Source:
        import xarray as xr

        dataset = obj if isinstance(obj, xr.Dataset) else None
        try:
            source = self._xarray_source(obj, dataset, name, group, path)
        except BaseException:
            if path is not None:
                obj.close()
            raise
        source.close = obj.close if path is not None else None
        return source

    def _xarray_source(self, obj, dataset, name: str, group: str, path: Path | None) -> _Source:
        cfg = self.config
        time_dim, channel_dim = cfg.time_dim, cfg.channel_dim
        da = self._pick_variable(dataset, name) if dataset is not None else obj
        if time_dim not in da.dims:
            raise DataError(
                f"{name} has dims ({', '.join(map(str, da.dims))}) but no time axis: expected a "
                f"{time_dim!r} dim (dims {channel_dim!r} × {time_dim!r}, optionally after a sample dim); "
                f"rename its time dimension or set modality.time_dim."
            )
        if channel_dim not in da.dims:
            da = da.expand_dims({channel_dim: [str(da.name) if da.name is not None else "ch0"]})
        others = [d for d in da.dims if d not in (time_dim, channel_dim)]
        if len(others) > 1:
            raise DataError(
                f"{name} has dims ({', '.join(map(str, da.dims))}); expected {channel_dim!r} × {time_dim!r} "
                f"with at most one more (sample) dim, but found {', '.join(map(str, others))}."
            )
        sample_dim = others[0] if others else None
        da = da.transpose(*([sample_dim] if sample_dim else []), channel_dim, time_dim)
        n = int(da.sizes[sample_dim]) if sample_dim else 1
        n_times = int(da.sizes[time_dim])
        if n == 0 or n_times == 0 or not np.issubdtype(da.dtype, np.number):
            raise DataError(
                f"{name} holds {da.dtype} data of shape {dict(da.sizes)}; expected numbers with at least "
                f"one sample and one time step."
            )
        sfreq = self._xarray_sfreq(da, dataset, name)
        ch_names = (
            _strings(da[channel_dim].values) if channel_dim in da.coords
            else [f"ch{i}" for i in range(int(da.sizes[channel_dim]))]
        )
        labels, class_names = self._xarray_labels(da, dataset, name, sample_dim)
        if labels is not None:
            labels = self._check_labels(labels, n, n_times, sample_dim is not None, name)
        subjects = next(
            (_strings(da.coords[s].values) for s in SUBJECT_NAMES
             if s in da.coords and sample_dim and da.coords[s].dims == (sample_dim,)),
            None,
        )
        if subjects is None and dataset is not None:
            subjects = next(
                (_strings(dataset[s].values) for s in SUBJECT_NAMES
                 if s in dataset.variables and sample_dim and dataset[s].dims == (sample_dim,)),
                None,
            )
        sample_ids = (
            _strings(da[sample_dim].values) if sample_dim and sample_dim in da.coords
            else [str(i) for i in range(n)]
        )

        def read(i: int, j: int) -> np.ndarray:
            block = da.isel({sample_dim: slice(i, j)}) if sample_dim else da.expand_dims("_sample", 0)
            return np.asarray(block.values, dtype=np.float64)

        return _Source(
            name=name, group=group, n_samples=n, n_times=n_times, sfreq=sfreq, ch_names=ch_names,
            read=read, has_sample_dim=sample_dim is not None, sample_ids=sample_ids, labels=labels,
            class_names=class_names, subjects=subjects, path=str(path) if path is not None else None,
        )

    def _label_names(self) -> tuple[str, ...]:
        return (self.config.label_variable,) if self.config.label_variable else LABEL_NAMES

    def _pick_variable(self, ds, name: str):
        import xarray as xr

        cfg = self.config
        variables = [str(v) for v in ds.data_vars]
        if cfg.variable:
            if cfg.variable not in variables:
                raise DataError(
                    f"{name} has no data variable {cfg.variable!r} (modality.variable); it holds "
                    f"{', '.join(variables) or 'none'}."
                )
            return ds[cfg.variable]
        skip = set(self._label_names()) | set(SUBJECT_NAMES)
        candidates = [v for v in variables if v not in skip and cfg.time_dim in ds[v].dims]
        if not candidates:
            dims = ", ".join(f"{v} ({', '.join(map(str, ds[v].dims))})" for v in variables) or "none"
            raise DataError(
                f"{name} has no data variable with a time axis: expected a {cfg.time_dim!r} dim "
                f"(dims {cfg.channel_dim!r} × {cfg.time_dim!r}); its variables are {dims}; set "
                f"modality.time_dim or modality.variable."
            )
        if len(candidates) == 1:
            return ds[candidates[0]]
        dims = {ds[v].dims for v in candidates}
        if len(dims) == 1 and cfg.channel_dim not in next(iter(dims)):
            # One variable per sensor axis (acc_x, acc_y, ...): they become the channels.
            channel = xr.DataArray(candidates, dims=cfg.channel_dim, name=cfg.channel_dim)
            stacked = xr.concat([ds[v].drop_attrs() if hasattr(ds[v], "drop_attrs") else ds[v] for v in candidates],
                                dim=channel)
            stacked.attrs = dict(ds.attrs)
            return stacked
        raise DataError(
            f"{name} has several data variables with a time axis ({', '.join(candidates)}); set "
            f"modality.variable to the one to train on."
        )

    def _xarray_sfreq(self, da, ds, name: str) -> float:
        time_dim = self.config.time_dim
        for owner in (da, ds):
            if owner is None:
                continue
            for key in SFREQ_ATTRS:
                if key in owner.attrs:
                    try:
                        value = float(np.asarray(owner.attrs[key]).reshape(-1)[0])
                    except (TypeError, ValueError):
                        raise DataError(
                            f"{name} has attrs[{key!r}] = {owner.attrs[key]!r}, which is not a number of Hz."
                        ) from None
                    return self._rate(value, name, f"attrs[{key!r}]")
        if time_dim in da.coords and da.sizes[time_dim] >= 2:
            coord = da[time_dim]
            values = np.asarray(coord.values)
            if np.issubdtype(values.dtype, np.datetime64) or np.issubdtype(values.dtype, np.timedelta64):
                steps_s = np.diff(values).astype("timedelta64[ns]").astype(np.float64) / 1e9
                tolerance = 2e-9
            elif np.issubdtype(values.dtype, np.number):
                unit = str(coord.attrs.get("units", "s")).strip().lower()
                if unit not in _TIME_UNITS_S:
                    raise DataError(
                        f"{name} has a numeric {time_dim!r} coordinate in units {unit!r}; allowed units: "
                        f"{', '.join(sorted(_TIME_UNITS_S))} (or set attrs['sfreq'] in Hz)."
                    )
                steps_s = np.diff(values.astype(np.float64)) * _TIME_UNITS_S[unit]
                tolerance = 0.0
            else:
                raise DataError(
                    f"{name} has a {values.dtype} {time_dim!r} coordinate, from which no sampling rate can be "
                    f"derived: give it numeric (seconds) or datetime64 values, or set attrs['sfreq'] in Hz."
                )
            step = float(np.median(steps_s))
            if not step > 0:
                raise DataError(
                    f"{name} has a {time_dim!r} coordinate that does not increase (median step {step} s); "
                    f"sort it, or set attrs['sfreq'] in Hz."
                )
            spread = float(np.max(np.abs(steps_s - step)))
            if spread > max(1e-3 * step, tolerance):
                raise DataError(
                    f"{name} has an irregular {time_dim!r} coordinate (steps from {float(steps_s.min()):.6g} s "
                    f"to {float(steps_s.max()):.6g} s); relpos needs a regular sampling rate: resample it "
                    f"first (e.g. xarray's .resample or .interp), or set attrs['sfreq'] in Hz."
                )
            return 1.0 / step
        if self.config.sfreq > 0:
            return float(self.config.sfreq)
        raise DataError(
            f"{name} has no sampling rate: set attrs 'sfreq', 'sampling_rate' or 'fs' (Hz), give it a regular "
            f"numeric (seconds) or datetime64 {time_dim!r} coordinate, or set modality.sfreq (Hz)."
        )

    def _xarray_labels(self, da, ds, name: str, sample_dim: str | None):
        cfg = self.config
        allowed = {d for d in (sample_dim, cfg.time_dim) if d}
        for label_name in self._label_names():
            holder = None
            if label_name in da.coords:
                holder = da.coords[label_name]
            elif ds is not None and label_name in ds.variables:
                holder = ds[label_name]
            if holder is None:
                continue
            if not set(holder.dims) <= allowed or not holder.dims:
                raise DataError(
                    f"{name} has labels {label_name!r} with dims ({', '.join(map(str, holder.dims))}); "
                    f"expected one label per sample ({sample_dim or 'no sample dim'}) or per time step "
                    f"({cfg.time_dim!r})."
                )
            order = [d for d in (sample_dim, cfg.time_dim) if d in holder.dims]
            values = np.asarray(holder.transpose(*order).values)
            return values, _class_names_attr(holder.attrs)
        if cfg.label_variable:
            raise DataError(
                f"{name} has no labels {cfg.label_variable!r} (modality.label_variable) among its variables "
                f"and coordinates."
            )
        return None, None

    @staticmethod
    def _check_labels(labels: np.ndarray, n: int, n_times: int, has_sample_dim: bool, name: str) -> np.ndarray:
        per_sample = (n,) if has_sample_dim else (1,)
        per_time = (n, n_times) if has_sample_dim else (n_times,)
        if labels.shape == () or labels.shape == per_sample:
            return labels.reshape(n)
        if labels.shape == per_time:
            return labels.reshape(n, n_times)
        raise DataError(
            f"{name} has labels of shape {list(labels.shape)}; expected one per sample {list(per_sample)} or "
            f"one per time step {list(per_time)}."
        )

    # -- building windows ----------------------------------------------------------------------
    def _build(self, items: list[Any], writer, source_text: str) -> None:
        sources: list[_Source] = []
        try:
            self._build_from(items, writer, source_text, sources)
        finally:
            for src in sources:
                if src.close is not None:
                    src.close()

    def _build_from(self, items: list[Any], writer, source_text: str, sources: list[_Source]) -> None:
        cfg = self.config
        strict = len(items) == 1
        skipped: list[dict[str, str]] = []
        for item in items:
            try:
                sources.extend(self._open(item))
            except DataError as exc:
                if strict:
                    raise
                skipped.append({"path": str(item), "reason": str(exc)})
                writer.warn(f"Skipping {str(item)!r}: {exc}")
        if not sources:
            raise DataError(
                f"No readable timeseries in {source_text!r}: "
                + " ".join(s["reason"] for s in skipped[:3])
            )
        stems = [src.group for src in sources]
        for src in sources:
            if src.path is not None and stems.count(src.group) > 1:  # same file name in two folders
                stem = Path(src.path).stem
                src.group = str(Path(src.path).with_suffix("")) + src.group[len(stem):]
        picks = [self._pick_channels(src) for src in sources]
        names = [sources[0].ch_names[i] for i in picks[0]]
        for src, pick in zip(sources[1:], picks[1:]):
            these = [src.ch_names[i] for i in pick]
            if these != names:
                raise DataError(
                    f"{src.name} has channels {', '.join(these)} but {sources[0].name} has "
                    f"{', '.join(names)}; every source must give the same channels (select them with "
                    f"modality.channels)."
                )
        rates = {src.sfreq for src in sources}
        if not cfg.sfreq_target and len(rates) > 1:
            listed = ", ".join(f"{s.sfreq:g} Hz in {s.name}" for s in sources[:4])
            raise DataError(
                f"The sources have different sampling rates ({listed}); set modality.sfreq_target to "
                f"resample them to one rate."
            )
        rate = float(cfg.sfreq_target or sources[0].sfreq)
        resample = {src.name: _resample_ratio(src.sfreq, rate) for src in sources}
        lengths = {src.name: _resampled_length(src.n_times, *resample[src.name]) for src in sources}
        if cfg.window_s > 0:
            window = int(round(cfg.window_s * rate))
            if window < 1:
                raise ConfigError(
                    f"'modality.window_s' ({cfg.window_s} s) is shorter than one sample at {rate:g} Hz."
                )
        else:
            distinct = sorted(set(lengths.values()))
            if len(distinct) > 1:
                raise DataError(
                    f"modality.window_s = 0 uses each sample whole, but the samples differ in length "
                    f"({', '.join(f'{n} samples' for n in distinct[:4])} at {rate:g} Hz); set modality.window_s."
                )
            window = distinct[0]
        stride = int(round(cfg.stride_s * rate)) if cfg.stride_s > 0 else window
        if stride < 1:
            raise ConfigError(f"'modality.stride_s' ({cfg.stride_s} s) is shorter than one sample at {rate:g} Hz.")

        usable = []
        for src in sources:
            if lengths[src.name] < window:
                message = (
                    f"{src.name} lasts {lengths[src.name] / rate:.6g} s per sample, shorter than one window "
                    f"(modality.window_s = {window / rate:.6g} s)."
                )
                if strict and len(sources) == 1:
                    raise DataError(message)
                skipped.append({"path": src.name, "reason": message})
                writer.warn(f"Skipping {src.name}: it lasts {lengths[src.name] / rate:.6g} s per sample, "
                            f"shorter than one window ({window / rate:.6g} s).")
            else:
                usable.append(src)
        if not usable:
            raise DataError(
                f"Every source in {source_text!r} is shorter than one window (modality.window_s = "
                f"{window / rate:.6g} s): {'; '.join(s['reason'] for s in skipped[-3:])}"
            )

        mapping, class_names, label_kinds = _label_mapping(usable)
        writer.class_names = class_names
        dropped = {DROP_NONFINITE: 0, DROP_FLAT: 0}
        files = []
        total_made = 0
        for src, pick in zip(sources, picks):
            if src not in usable:
                continue
            up, down = resample[src.name]
            per_source = {DROP_NONFINITE: 0, DROP_FLAT: 0}
            kept = 0
            counts: dict[int, int] = {}  # class index → windows kept
            chunk = max(1, CHUNK_VALUES // max(1, len(src.ch_names) * src.n_times))
            for start in range(0, src.n_samples, chunk):
                stop = min(src.n_samples, start + chunk)
                x = src.read(start, stop)[:, pick]
                if (up, down) != (1, 1):
                    from scipy.signal import resample_poly

                    x = resample_poly(x, up, down, axis=-1)
                n_times = x.shape[-1]
                starts = np.arange(0, n_times - window + 1, stride)
                windows = np.lib.stride_tricks.sliding_window_view(x, window, axis=-1)[:, :, starts]
                m, n_win = x.shape[0], len(starts)
                windows = windows.transpose(0, 2, 1, 3).reshape(m * n_win, x.shape[1], window)
                labels = None
                if mapping is not None:
                    raw = src.labels[start:stop]
                    labels = _window_labels(raw, mapping, starts, window, up, down, src.n_times, cfg.label_at)
                sample_ids = src.sample_ids[start:stop]
                groups = np.repeat(
                    [f"{src.group}/{s}" if src.has_sample_dim else src.group for s in sample_ids], n_win
                )
                subjects = np.repeat(src.subjects[start:stop], n_win) if src.subjects is not None else None
                finite = np.isfinite(windows).all(axis=(1, 2))
                with np.errstate(invalid="ignore"):
                    flat = finite & (np.ptp(np.where(np.isfinite(windows), windows, 0), axis=-1) == 0).all(axis=1)
                keep = finite & ~flat
                per_source[DROP_NONFINITE] += int((~finite).sum())
                per_source[DROP_FLAT] += int(flat.sum())
                total_made += len(keep)
                windows = windows[keep]
                if cfg.normalize == "instance" and len(windows):
                    mean = windows.mean(axis=-1, keepdims=True)
                    std = windows.std(axis=-1, keepdims=True)
                    windows = (windows - mean) / np.maximum(std, 1e-12)
                writer.append(
                    windows.astype(np.float32),
                    groups[keep].tolist(),
                    labels[keep] if labels is not None else None,
                    subjects[keep].tolist() if subjects is not None else None,
                )
                kept += int(keep.sum())
                if labels is not None:
                    for c, n in zip(*np.unique(labels[keep], return_counts=True)):
                        counts[int(c)] = counts.get(int(c), 0) + int(n)
            for reason, count in per_source.items():
                dropped[reason] += count
            if per_source[DROP_NONFINITE]:
                writer.warn(
                    f"Dropped {_count_windows(per_source[DROP_NONFINITE])} of {src.name} holding NaN or "
                    f"infinite values."
                )
            if per_source[DROP_FLAT]:
                writer.warn(
                    f"Dropped {_count_windows(per_source[DROP_FLAT])} of {src.name} in which every channel is flat."
                )
            files.append({
                "path": src.entry or src.path or src.name,
                "channels": [src.ch_names[i] for i in pick],
                "sfreq": src.sfreq,
                "duration_s": src.n_samples * src.n_times / src.sfreq,
                "n_samples": src.n_samples,
                "sample_duration_s": src.n_times / src.sfreq,
                "annotations": {},
                "n_windows": kept,
                "labels": label_kinds.get(src.name),
                "label_counts": {
                    (class_names[c] if 0 <= c < len(class_names) else str(c)): n for c, n in sorted(counts.items())
                },
            })
        if writer.count == 0:
            raise DataError(
                f"Every window made from {source_text!r} was dropped ({dropped[DROP_NONFINITE]} of "
                f"{total_made} holding NaN or infinite values, {dropped[DROP_FLAT]} with every channel flat)."
            )
        kinds = sorted({k for k in label_kinds.values() if k})
        writer.info.update({
            "sfreq": rate,
            "ch_names": names,
            "source": source_text,
            "n_recordings": len(usable),
            "window_samples": window,
            "stride_samples": stride,
            "label_kind": kinds[0] if len(kinds) == 1 else ("mixed" if kinds else None),
            "files": files,
            "skipped": skipped,
            "dropped": {reason: count for reason, count in dropped.items() if count},
        })

    def _pick_channels(self, src: _Source) -> list[int]:
        wanted = [w.strip() for w in self.config.channels.split(",") if w.strip()]
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


# -- helpers ------------------------------------------------------------------------------------
def _count_windows(n: int) -> str:
    return f"{n} window" + ("" if n == 1 else "s")


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if text.endswith(".") else text + "."


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _import_xarray(path: Path):
    try:
        import xarray as xr
    except ImportError:
        raise DataError(f"Reading {str(path)!r} needs the xarray package: pip install xarray.") from None
    return xr


def _resample_ratio(sfreq: float, target: float) -> tuple[int, int]:
    """(up, down) with target / sfreq = up / down."""
    if sfreq == target:
        return 1, 1
    ratio = Fraction(target).limit_denominator(10**6) / Fraction(sfreq).limit_denominator(10**6)
    ratio = ratio.limit_denominator(1000)
    return ratio.numerator, ratio.denominator


def _resampled_length(n_times: int, up: int, down: int) -> int:
    return -(-n_times * up // down)  # resample_poly's output length: ceil(n * up / down)


def _label_mapping(sources: Sequence[_Source]):
    """(raw value → class index, class names, {source name: 'per window' | 'per time step'})."""
    labelled = [s for s in sources if s.labels is not None]
    kinds = {s.name: ("per window" if s.labels.ndim == 1 else "per time step") for s in labelled}
    if not labelled:
        return None, [], kinds
    if len(labelled) != len(sources):
        missing = next(s.name for s in sources if s.labels is None)
        raise DataError(
            f"{missing} has no labels but {labelled[0].name} has; label every source or none."
        )
    values = [np.asarray(s.labels) for s in labelled]
    if any(v.dtype.kind in "USO" for v in values):
        strings = sorted({x for v in values for x in _strings(v)})
        return {x: i for i, x in enumerate(strings)}, strings, kinds
    numbers = np.concatenate([v.reshape(-1) for v in values]).astype(np.float64)
    if not np.all(np.isfinite(numbers)) or not np.all(numbers == np.round(numbers)):
        raise DataError(
            f"The labels of {labelled[0].name} are not integers or strings (found {numbers.dtype} values such "
            f"as {numbers[~(numbers == np.round(numbers))][:1].tolist() or numbers[:1].tolist()})."
        )
    names = next((s.class_names for s in labelled if s.class_names), None)
    top = int(numbers.max()) if numbers.size else -1
    if names is None:
        names = [str(i) for i in range(top + 1)]
    elif top >= len(names):
        raise DataError(
            f"The labels of {labelled[0].name} go up to {top} but only {len(names)} class names are given "
            f"({', '.join(names)})."
        )
    return "int", list(names), kinds


def _encode(raw: np.ndarray, mapping) -> np.ndarray:
    if mapping == "int":
        return np.asarray(raw).astype(np.int64)
    flat = [mapping[x] for x in _strings(raw)]
    return np.asarray(flat, dtype=np.int64).reshape(np.shape(raw))


def _window_labels(raw, mapping, starts, window, up, down, n_times, label_at) -> np.ndarray:
    """One label per window, windows ordered sample by sample."""
    codes = _encode(raw, mapping)
    n_win = len(starts)
    if codes.ndim == 1:  # one label per sample
        return np.repeat(codes, n_win)
    # One label per time step: map each resampled step back to the original step it came from.
    if (up, down) != (1, 1):
        new_len = _resampled_length(n_times, up, down)
        source_index = np.minimum((np.arange(new_len) * down) // up, n_times - 1)
        codes = codes[:, source_index]
    if label_at == "center":
        return codes[:, starts + window // 2].reshape(-1)
    low = int(codes.min())
    onehot = np.eye(int(codes.max()) - low + 1, dtype=np.int64)[codes - low]  # (m, T, K)
    cumulative = np.concatenate([np.zeros_like(onehot[:, :1]), onehot.cumsum(axis=1)], axis=1)
    counts = cumulative[:, starts + window] - cumulative[:, starts]  # (m, n_win, K)
    return (counts.argmax(axis=-1) + low).reshape(-1)  # ties: the smallest label


@hookimpl
def register_modalities(register):
    register(TimeseriesModality)

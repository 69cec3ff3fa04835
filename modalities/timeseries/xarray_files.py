"""Timeseries held in xarray: netCDF files, zarr stores and in-memory ``DataArray`` / ``Dataset`` objects.

The data are ``channel`` × ``time`` (names set by ``modality.channel_dim`` / ``modality.time_dim``),
optionally after one sample dim of any name (``sample``, ``case``, ``trial``...). A ``Dataset`` gives
the variable named by ``modality.variable``, its one variable over time, or several variables over
time that become the channels (``acc_x``, ``acc_y``...). The rate is read from the attrs ``sfreq``,
``sampling_rate`` or ``fs`` (Hz), else derived from a regular numeric (seconds, or the coordinate's
``units``) or datetime64 ``time`` coordinate, else ``modality.sfreq``. Labels and subjects are
coordinates or variables named ``label``/``labels``/``y`` and ``subject``/``subjects``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from relpos.errors import DataError

from .labels import check_labels, class_names_attr, label_names
from .sources import SFREQ_ATTRS, SUBJECT_NAMES, Source, as_strings, is_real_number, reason, source_rate

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_TIME_UNITS_S = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "millisecond": 1e-3,
                 "milliseconds": 1e-3, "us": 1e-6, "microsecond": 1e-6, "microseconds": 1e-6,
                 "ns": 1e-9, "nanosecond": 1e-9, "nanoseconds": 1e-9, "min": 60.0, "minute": 60.0,
                 "minutes": 60.0, "h": 3600.0, "hour": 3600.0, "hours": 3600.0}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _import_xarray(path: Path):
    try:
        import xarray as xr
    except ImportError:
        raise DataError(f"Reading {str(path)!r} needs the xarray package: pip install xarray.") from None
    return xr


def open_netcdf(path: Path):
    """A netCDF file, the engine chosen from its signature (netCDF-3: scipy; netCDF-4/HDF5: h5netcdf, netCDF4)."""
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
    elif not head:
        raise DataError(f"Cannot read {str(path)!r} as netCDF: the file is empty.")
    else:
        raise DataError(
            f"Cannot read {str(path)!r} as netCDF: it starts with neither the netCDF-3 nor the HDF5 signature."
        )
    try:
        return xr.open_dataset(path, engine=engine)
    except Exception as exc:  # noqa: BLE001 - backends raise many kinds for a bad file
        raise DataError(f"Cannot read {str(path)!r} as netCDF ({engine}): {reason(exc)}") from None


def open_zarr(path: Path):
    """A zarr store (needs the zarr package)."""
    xr = _import_xarray(path)
    if not _installed("zarr"):
        raise DataError(f"Reading the zarr store {str(path)!r} needs the zarr package: pip install zarr.")
    try:
        return xr.open_zarr(path)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"Cannot read {str(path)!r} as a zarr store: {reason(exc)}") from None


def from_xarray(obj, name: str, group: str, path: Path | None, cfg) -> Source:
    """An xarray object (opened from ``path``, closed on error) as a source."""
    import xarray as xr

    dataset = obj if isinstance(obj, xr.Dataset) else None
    try:
        source = _xarray_source(obj, dataset, name, group, path, cfg)
    except BaseException:
        if path is not None:
            obj.close()
        raise
    source.close = obj.close if path is not None else None
    return source


def _xarray_source(obj, dataset, name: str, group: str, path: Path | None, cfg) -> Source:
    time_dim, channel_dim = cfg.time_dim, cfg.channel_dim
    da = _pick_variable(dataset, name, cfg) if dataset is not None else obj
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
    if n == 0 or n_times == 0 or not is_real_number(da.dtype):
        raise DataError(
            f"{name} holds {da.dtype} data of shape {dict(da.sizes)}; expected numbers with at least "
            f"one sample and one time step."
        )
    sfreq = _xarray_sfreq(da, dataset, name, cfg)
    ch_names = (
        as_strings(da[channel_dim].values) if channel_dim in da.coords
        else [f"ch{i}" for i in range(int(da.sizes[channel_dim]))]
    )
    labels, class_names = _xarray_labels(da, dataset, name, sample_dim, cfg)
    if labels is not None:
        labels = check_labels(labels, n, n_times, sample_dim is not None, name)
    subjects = next(
        (as_strings(da.coords[s].values) for s in SUBJECT_NAMES
         if s in da.coords and sample_dim and da.coords[s].dims == (sample_dim,)),
        None,
    )
    if subjects is None and dataset is not None:
        subjects = next(
            (as_strings(dataset[s].values) for s in SUBJECT_NAMES
             if s in dataset.variables and sample_dim and dataset[s].dims == (sample_dim,)),
            None,
        )
    sample_ids = (
        as_strings(da[sample_dim].values) if sample_dim and sample_dim in da.coords
        else [str(i) for i in range(n)]
    )

    def read(i: int, j: int) -> np.ndarray:
        block = da.isel({sample_dim: slice(i, j)}) if sample_dim else da.expand_dims("_sample", 0)
        return np.asarray(block.values, dtype=np.float64)

    return Source(
        name=name, group=group, n_samples=n, n_times=n_times, sfreq=sfreq, ch_names=ch_names,
        read=read, has_sample_dim=sample_dim is not None, sample_ids=sample_ids, labels=labels,
        class_names=class_names, subjects=subjects, path=str(path) if path is not None else None,
        unit=str(da.attrs.get("units", "")),
    )


def _pick_variable(ds, name: str, cfg):
    """The variable of a Dataset to train on, or its time variables stacked as channels."""
    import xarray as xr

    variables = [str(v) for v in ds.data_vars]
    if cfg.variable:
        if cfg.variable not in variables:
            raise DataError(
                f"{name} has no data variable {cfg.variable!r} (modality.variable); it holds "
                f"{', '.join(variables) or 'none'}."
            )
        return ds[cfg.variable]
    skip = set(label_names(cfg)) | set(SUBJECT_NAMES)
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


def _xarray_sfreq(da, ds, name: str, cfg) -> float:
    """The rate from attrs (sfreq, sampling_rate, fs), else a regular time coordinate, else modality.sfreq."""
    time_dim = cfg.time_dim
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
                return source_rate(value, name, f"attrs[{key!r}]", cfg.sfreq)
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
        return source_rate(1.0 / step, name, f"the steps of its {time_dim!r} coordinate", cfg.sfreq)
    if cfg.sfreq > 0:
        return float(cfg.sfreq)
    raise DataError(
        f"{name} has no sampling rate: set attrs 'sfreq', 'sampling_rate' or 'fs' (Hz), give it a regular "
        f"numeric (seconds) or datetime64 {time_dim!r} coordinate, or set modality.sfreq (Hz)."
    )


def _xarray_labels(da, ds, name: str, sample_dim: str | None, cfg):
    """(raw labels, class names) from a coordinate or variable named like labels, or (None, None)."""
    allowed = {d for d in (sample_dim, cfg.time_dim) if d}
    for label_name in label_names(cfg):
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
        return values, class_names_attr(holder.attrs)
    if cfg.label_variable:
        raise DataError(
            f"{name} has no labels {cfg.label_variable!r} (modality.label_variable) among its variables "
            f"and coordinates."
        )
    return None, None

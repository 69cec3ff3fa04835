"""Which reader opens what: a file by its kind (netCDF, zarr store, ``.npy``, ``.npz``), an in-memory
object by its type, each into :class:`~.sources.Source` s."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from relpos.errors import DataError

from .numpy_arrays import from_archive, from_array, open_npy, open_npz
from .sources import NETCDF_SUFFIXES, Source, describe, is_xarray, is_zarr_store
from .xarray_files import from_xarray, open_netcdf, open_zarr


def open_item(item: Any, cfg) -> list[Source]:
    """The sources of one item of :func:`~.sources.find_items` (a Path or an in-memory object).

    Raises
    ------
    DataError
        When the item cannot be read, with the reason in one sentence.
    """
    if isinstance(item, Path):
        return open_path(item, cfg)
    if is_xarray(item):
        return [from_xarray(item, describe(item), "xarray", None, cfg)]
    if isinstance(item, np.ndarray):
        return [from_array(item, "the NumPy array", "array", None, None, cfg)]
    if isinstance(item, Mapping):
        return from_archive(item, "the mapping of arrays", "arrays", None, cfg)
    raise DataError(f"Cannot open a {type(item).__name__} as a timeseries.")


def open_path(path: Path, cfg) -> list[Source]:
    """The sources of one file or zarr store, the reader chosen by its suffix."""
    suffix = path.suffix.lower()
    if is_zarr_store(path):
        return [from_xarray(open_zarr(path), repr(str(path)), path.stem, path, cfg)]
    if suffix in NETCDF_SUFFIXES:
        return [from_xarray(open_netcdf(path), repr(str(path)), path.stem, path, cfg)]
    if suffix == ".npy":
        return open_npy(path, cfg)
    if suffix == ".npz":
        return open_npz(path, cfg)
    if path.is_dir():
        raise DataError(f"Cannot open the folder {str(path)!r} as a timeseries: it is not a zarr store.")
    raise DataError(
        f"Cannot open {str(path)!r} as a timeseries: expected netCDF ({', '.join(NETCDF_SUFFIXES)}), "
        f"a .zarr store, .npy or .npz."
    )

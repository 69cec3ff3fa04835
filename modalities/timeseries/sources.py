"""What a ``timeseries`` data value names, and the :class:`Source` record every reader returns.

:func:`find_items` turns ``--data`` (or the Python object passed to ``load``) into files, found with
the shared :mod:`..common.sources` (folders searched recursively, globs, list files, natural order), and
in-memory objects (xarray objects, NumPy arrays, mappings of arrays). A reader (:mod:`.readers`)
opens each of them into :class:`Source` s: blocks of samples of one shape, read lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from relpos.errors import DataError

from ..common.sources import FileKinds, find_files

NETCDF_SUFFIXES = (".nc", ".nc4", ".cdf", ".netcdf", ".h5", ".hdf5")
NUMPY_SUFFIXES = (".npy", ".npz")
SFREQ_ATTRS = ("sfreq", "sampling_rate", "fs")
SUBJECT_NAMES = ("subject", "subjects")
#: The fastest sampling rate a source may declare, Hz: beyond what any sensor or ADC records, so a
#: larger value is a wrong unit or a corrupt attribute (it would make patches of absurd lengths).
MAX_SOURCE_SFREQ_HZ = 1e9


@dataclass
class Source:
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
    unit: str = ""  # the unit of the values, when the source says it (xarray attrs["units"])
    close: Callable[[], None] | None = None  # releases the file, once the windows are made


def is_zarr_store(path: Path) -> bool:
    """A ``.zarr`` path, or a folder holding zarr metadata (read whole, as one source)."""
    if path.suffix.lower() == ".zarr":
        return True
    return path.is_dir() and any((path / n).exists() for n in (".zgroup", ".zarray", "zarr.json"))


def is_timeseries_file(path: Path) -> bool:
    return path.suffix.lower() in NETCDF_SUFFIXES + NUMPY_SUFFIXES


#: What the timeseries modality reads from folders, globs and list files.
TIMESERIES_FILES = FileKinds(
    noun="timeseries files",
    looked_for=f"{', '.join(NETCDF_SUFFIXES + NUMPY_SUFFIXES)} and .zarr stores",
    accepts=is_timeseries_file,
    is_store=is_zarr_store,
)


def is_xarray(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "xarray" and hasattr(obj, "dims")


def describe(obj: Any) -> str:
    """How messages name an in-memory object: ``xarray.DataArray 'signal'``, ``numpy.ndarray``."""
    name = getattr(obj, "name", None)
    kind = f"{type(obj).__module__.split('.')[0]}.{type(obj).__name__}"
    return f"{kind} {name!r}" if isinstance(name, str) and name else kind


def describe_data(data: Any) -> str:
    """How messages name the whole ``data`` value."""
    if isinstance(data, (str, Path)):
        return str(data)
    if isinstance(data, (list, tuple)):
        return f"{len(data)} sources"
    return describe(data)


def find_items(data: Any) -> list[Any]:
    """Files (as :class:`~pathlib.Path`, each once) and in-memory objects that ``data`` names, in order.

    Raises
    ------
    DataError
        For ``None``, an empty list, a path that names no timeseries file, or an object of another type.
    """
    if data is None:
        raise DataError("The timeseries modality ships no default data; pass --data PATH.")
    if isinstance(data, (list, tuple)):
        if not data:
            raise DataError("The list of timeseries sources is empty; pass at least one file or array.")
        items: list[Any] = []
        seen: set[Path] = set()
        for entry in data:
            for item in find_items(entry):
                if isinstance(item, Path):
                    if item.resolve() in seen:
                        continue  # the same file named twice is read once
                    seen.add(item.resolve())
                items.append(item)
        return items
    if isinstance(data, (str, Path)):
        return find_files(data, TIMESERIES_FILES)
    if is_xarray(data) or isinstance(data, (np.ndarray, Mapping)):
        return [data]
    raise DataError(
        f"Cannot open a {type(data).__name__} as a timeseries: pass a path, an xarray DataArray or "
        f"Dataset, a NumPy array (n, channels, time) or (channels, time), or a list of them."
    )


def files_to_hash(paths: list[Path]) -> list[Path]:
    """The files whose contents key the window cache: each file, and every file inside a store."""
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    return files


def reason(exc: BaseException) -> str:
    """An exception's text as the end of a sentence (for "Cannot read X: <reason>")."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if text.endswith(".") else text + "."


def is_real_number(dtype: np.dtype) -> bool:
    """Integers or floats: what a signal can hold (not bool, complex, strings or objects)."""
    return np.dtype(dtype).kind in "iuf"


def as_strings(values: Any) -> list[str]:
    """Names stored as an array (bytes or str or numbers) as a list of str."""
    arr = np.asarray(values).reshape(-1)
    return [v.decode() if isinstance(v, bytes) else str(v) for v in arr.tolist()]


def source_rate(found: float | None, where: str, how: str, fallback_sfreq: float) -> float:
    """The sampling rate of a source: ``found`` (checked), else ``modality.sfreq``.

    Parameters
    ----------
    found : float or None
        The rate the source carries (Hz), or None.
    where : str
        The source, for messages.
    how : str
        Where the rate was read from (or how to give one), for messages.
    fallback_sfreq : float
        ``modality.sfreq`` (Hz; 0 when unset).
    """
    if found is not None:
        if not (np.isfinite(found) and 0 < found <= MAX_SOURCE_SFREQ_HZ):
            raise DataError(
                f"{where} gives a sampling rate of {found:g} Hz ({how}); it must be positive and at most "
                f"{MAX_SOURCE_SFREQ_HZ:g} Hz."
            )
        return float(found)
    if fallback_sfreq > 0:
        return float(fallback_sfreq)
    raise DataError(f"{where} has no sampling rate: {how}, or set modality.sfreq (Hz).")

"""Timeseries held in NumPy: ``.npy`` files, ``.npz`` archives, in-memory arrays and mappings of arrays.

An ``.npy`` (or an array) is ``(n, channels, time)`` or ``(channels, time)``; its rate comes from
``modality.sfreq``. An ``.npz`` archive (or a mapping) holds such an array (``X``, ``x``, ``data``,
``arr_0``, or the one named by ``modality.variable``) with ``sfreq`` and optionally labels
(``label``, ``labels``, ``y``), ``ch_names``, ``class_names``, ``subjects`` and ``groups``; or the
trial-archive layout ``X_train``/``y_train``/``X_test``/``y_test`` (:mod:`..common.trial_archive`;
choose with ``modality.split``).

Pickles are never loaded (``allow_pickle=False``: unpickling a file can run code); a file that is not
NumPy's format, or that holds Python objects, gets a sentence saying so.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from relpos.errors import DataError

from ..common.trial_archive import has_splits, split_arrays
from .labels import check_labels, label_names
from .sources import SFREQ_ATTRS, SUBJECT_NAMES, Source, as_strings, is_real_number, reason, source_rate

DATA_KEYS = ("X", "x", "data", "arr_0")
CHANNEL_KEYS = ("ch_names", "channels")
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or the end record of an empty zip
_PICKLE_ADVICE = (
    "relpos never loads pickles (unpickling a file can run code); save the data as a numeric array"
)


def _header_dtype(fh) -> np.dtype | None:
    """The dtype an ``.npy`` stream's header declares (None for a header version NumPy keeps private)."""
    version = np.lib.format.read_magic(fh)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        return None
    return readers[version](fh)[2]


def _check_signature(path: Path, kind: str) -> None:
    """A clear sentence for a file that is empty or not in NumPy's format at all."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        raise DataError(f"Cannot read {str(path)!r} as a NumPy {kind}: the file is empty.")
    if kind == ".npy" and not head.startswith(_NPY_MAGIC):
        raise DataError(
            f"Cannot read {str(path)!r}: it is not a NumPy .npy file (it does not start with NumPy's "
            f"'\\x93NUMPY' signature)."
        )
    if kind == ".npz archive" and not head.startswith(_ZIP_MAGICS):
        raise DataError(
            f"Cannot read {str(path)!r}: it is not a NumPy .npz archive (an .npz is a zip file of .npy "
            f"arrays, and this file does not start with the zip signature)."
        )


def open_npy(path: Path, cfg) -> list[Source]:
    """An ``.npy`` file, memory-mapped, as one source."""
    _check_signature(path, ".npy")
    try:
        with open(path, "rb") as fh:
            dtype = _header_dtype(fh)
    except Exception as exc:  # noqa: BLE001 - any malformed header is a data error
        raise DataError(
            f"Cannot read {str(path)!r}: it is not a readable NumPy .npy file ({reason(exc)[:-1]})."
        ) from None
    if dtype is not None and dtype.hasobject:
        raise DataError(f"{str(path)!r} holds Python objects (a pickled {dtype} array); {_PICKLE_ADVICE}.")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a data error
        raise DataError(
            f"Cannot read {str(path)!r}: it is not a readable NumPy .npy file ({reason(exc)[:-1]})."
        ) from None
    return [from_array(array, repr(str(path)), path.stem, None, path, cfg)]


class _CheckedArchive(Mapping):
    """An open ``.npz`` whose members are read with sentences for pickled or unreadable arrays."""

    def __init__(self, archive, name: str):
        self._archive = archive
        self._name = name

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            with self._archive.zip.open(f"{key}.npy") as fh:
                dtype = _header_dtype(fh)
        except KeyError:
            dtype = None  # a member without the .npy suffix: NumPy reads it below
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"Cannot read the array {key!r} of {self._name}: {reason(exc)}") from None
        if dtype is not None and dtype.hasobject:
            raise DataError(
                f"{self._name} holds Python objects in {key!r} (a pickled {dtype} array); {_PICKLE_ADVICE}."
            )
        try:
            return self._archive[key]
        except Exception as exc:  # noqa: BLE001 - a corrupt member is a data error
            raise DataError(f"Cannot read the array {key!r} of {self._name}: {reason(exc)}") from None

    def __iter__(self):
        return iter(self._archive.files)

    def __len__(self) -> int:
        return len(self._archive.files)


def open_npz(path: Path, cfg) -> list[Source]:
    """An ``.npz`` archive as one source, or one per split of the ``X_train``/``X_test`` layout."""
    _check_signature(path, ".npz archive")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise DataError(
            f"Cannot read {str(path)!r}: it is not a readable NumPy .npz archive ({reason(exc)[:-1]})."
        ) from None
    with archive:
        if not any(name.endswith(".npy") for name in archive.zip.namelist()):
            raise DataError(
                f"Cannot read {str(path)!r} as a NumPy .npz archive: it is a zip file without any .npy array "
                f"in it."
            )
        return from_archive(_CheckedArchive(archive, repr(str(path))), repr(str(path)), path.stem, path, cfg)


def from_array(array, name, group, sfreq, path, cfg, labels=None, ch_names=None, class_names=None,
               subjects=None, sample_ids=None) -> Source:
    """One array ``(n, channels, time)`` or ``(channels, time)`` as a source."""
    array = np.asarray(array) if not isinstance(array, np.ndarray) else array
    if array.ndim not in (2, 3) or array.size == 0 or not is_real_number(array.dtype):
        raise DataError(
            f"{name} holds a {array.dtype} array of shape {list(array.shape)}; expected numbers shaped "
            f"(n, channels, time) or (channels, time)."
        )
    has_sample_dim = array.ndim == 3
    n, channels, n_times = (array.shape if has_sample_dim else (1, *array.shape))
    if sfreq is not None:
        how = "its 'sfreq' array"
    elif path is not None:
        how = "an .npz archive needs an 'sfreq' array (Hz)" if path.suffix == ".npz" else "a .npy file carries none"
    else:
        how = "a bare array carries none"
    rate = source_rate(sfreq, name, how, cfg.sfreq)
    if ch_names is None:
        ch_names = [f"ch{i}" for i in range(channels)]
    elif len(ch_names) != channels:
        raise DataError(f"{name} names {len(ch_names)} channels but its array has {channels}.")
    if labels is not None:
        labels = check_labels(np.asarray(labels), n, n_times, has_sample_dim, name)

    def read(i: int, j: int) -> np.ndarray:
        block = array[i:j] if has_sample_dim else array[None]
        return np.asarray(block, dtype=np.float64)

    return Source(
        name=name, group=group, n_samples=int(n), n_times=int(n_times), sfreq=rate,
        ch_names=[str(c) for c in ch_names], read=read, has_sample_dim=has_sample_dim,
        sample_ids=sample_ids or [str(i) for i in range(n)], labels=labels, class_names=class_names,
        subjects=subjects, path=str(path) if path is not None else None,
    )


def _archive_sfreq(value: Any, name: str) -> float | None:
    if value is None:
        return None
    values = np.asarray(value).reshape(-1)
    try:
        return float(values[0])
    except (IndexError, TypeError, ValueError):
        raise DataError(
            f"{name} has an 'sfreq' of {values.tolist()!r}, which is not a number of Hz."
        ) from None


def from_archive(archive: Mapping[str, Any], name: str, stem: str, path: Path | None, cfg) -> list[Source]:
    """A mapping of arrays (an open ``.npz`` or a dict) as sources; see the module docstring."""
    keys = list(archive.keys())
    labels_under = label_names(cfg)

    def get(*candidates: str):
        return next((archive[k] for k in candidates if k in keys), None)

    def names_or_none(*candidates: str) -> list[str] | None:
        value = get(*candidates)
        return as_strings(value) if value is not None else None

    sfreq = _archive_sfreq(get(*SFREQ_ATTRS), name)
    ch_names = names_or_none(*CHANNEL_KEYS)
    class_names = names_or_none("class_names")
    if has_splits(keys) and not cfg.variable:
        out = []
        for split, data_key in split_arrays(keys, cfg.split, name):
            source = from_array(
                archive[data_key], f"{name} ({data_key})", f"{stem}/{split}", sfreq, path, cfg,
                labels=get(*(f"{lab}_{split}" for lab in labels_under)), ch_names=ch_names,
                class_names=class_names, subjects=names_or_none(f"subjects_{split}", f"subject_{split}"),
                sample_ids=names_or_none(f"groups_{split}"),
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
    if cfg.label_variable and cfg.label_variable not in keys:
        raise DataError(
            f"{name} has no labels array {cfg.label_variable!r} (modality.label_variable); it holds "
            f"{', '.join(keys)}."
        )
    return [from_array(
        archive[key], name, stem, sfreq, path, cfg,
        labels=get(*labels_under), ch_names=ch_names, class_names=class_names,
        subjects=names_or_none(*SUBJECT_NAMES), sample_ids=names_or_none("groups"),
    )]

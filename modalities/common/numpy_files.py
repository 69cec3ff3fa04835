"""Opening ``.npz``/``.npy`` files for the built-in modalities, with one clear sentence when they are not.

``np.load`` meets a file that is neither a zip archive (``.npz``) nor an ``.npy`` file by trying to
unpickle it, and with ``allow_pickle=False`` answers "Cannot load file containing pickled data when
allow_pickle=False", which reads as advice to load the file unsafely. relpos never unpickles data
(unpickling can run code); these helpers look at the file's signature first and say what the file is
not, and say that an array of Python objects is refused rather than how to load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from relpos.errors import DataError

#: The first bytes of a zip archive (an ``.npz``; an empty archive starts with the end record).
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
NPY_SIGNATURE = b"\x93NUMPY"

__all__ = ["open_numpy", "read_array"]


def _is_object_array_error(exc: BaseException) -> bool:
    return isinstance(exc, ValueError) and "allow_pickle" in str(exc)


def _objects_refused(where: str) -> DataError:
    return DataError(
        f"{where} holds Python objects (a pickled object array), which relpos does not load because "
        f"unpickling can run code; save it with numeric arrays (e.g. strings as a unicode array)."
    )


def open_numpy(path: str | Path) -> Any:
    """``np.load(path, allow_pickle=False)``: an ``NpzFile`` for a zip archive, an array for ``.npy``.

    Raises
    ------
    relpos.errors.DataError
        When the file is neither (it is not a NumPy archive), holds pickled objects, or cannot be
        read; one sentence naming the file.
    """
    path = Path(path)
    where = repr(str(path))
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(NPY_SIGNATURE))
    except OSError as exc:
        raise DataError(f"Cannot read {where}: {exc.strerror or exc}.") from None
    if not head.startswith(ZIP_SIGNATURES) and not head.startswith(NPY_SIGNATURE):
        what = "an empty file" if not head else f"a file starting with {head!r}"
        raise DataError(
            f"{where} is not a NumPy archive: an .npz is a zip archive and an .npy starts with "
            f"{NPY_SIGNATURE!r}, but this is {what}."
        )
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - numpy and zipfile raise several kinds for a damaged file
        if _is_object_array_error(exc):
            raise _objects_refused(where) from None
        kind = "zip archive (.npz)" if head.startswith(ZIP_SIGNATURES) else ".npy file"
        raise DataError(
            f"{where} looks like a NumPy {kind} but cannot be read (damaged or truncated?): "
            f"{' '.join(str(exc).split()) or type(exc).__name__}."
        ) from None


def read_array(archive: Any, key: str, path: str | Path) -> np.ndarray:
    """``archive[key]`` of an opened ``.npz``, with the same sentences as :func:`open_numpy`."""
    where = repr(f"{path}:{key}")
    try:
        return archive[key]
    except Exception as exc:  # noqa: BLE001 - a damaged member raises zipfile's or numpy's errors
        if _is_object_array_error(exc):
            raise _objects_refused(where) from None
        raise DataError(
            f"The array {key!r} in {str(path)!r} cannot be read (damaged or truncated?): "
            f"{' '.join(str(exc).split()) or type(exc).__name__}."
        ) from None

"""Checks on paths given by the user, made before anything is opened."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from .errors import DataError

_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def special_file_kind(path: str | Path) -> str | None:
    """What ``path`` is when it exists but is neither a regular file nor a folder, else None.

    ``os.stat`` does not open the file, so asking never blocks, even on a pipe nobody writes to.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    for is_kind, kind in _SPECIAL_KINDS:
        if is_kind(mode):
            return kind
    return None


def refuse_special_file(data: Any, what: str = "Data path", origin: str = "") -> None:
    """Raise :class:`DataError` when ``data`` names a pipe, socket or device instead of a file or folder.

    Reading such a path can block forever (a pipe with no writer) or never end (``/dev/zero``), so
    it is refused before anything opens it. Anything that is not a path (arrays, patterns that
    match nothing yet) passes through. ``origin`` follows the path in the message, e.g.
    ``" (line 3 of list file 'files.txt')"``.
    """
    if not isinstance(data, (str, os.PathLike)):
        return
    kind = special_file_kind(Path(data).expanduser())
    if kind is not None:
        raise DataError(
            f"{what} {str(data)!r}{origin} is {kind}, not a file or folder; relpos reads data from regular "
            f"files and folders only."
        )

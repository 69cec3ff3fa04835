"""Checks on paths given by the user, made before anything is opened."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

from .errors import DataError, OutputError

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


def path_kind(path: str | Path) -> str | None:
    """What stands at ``path``, in words ("a folder", "a file", "a named pipe (FIFO)", ...), or None.

    None means nothing is there (also when a folder on the way is missing). Symbolic links are
    followed; one that loops or points nowhere is named as such, so a message can say what the
    path *is* instead of calling it missing. Nothing is opened, so asking never blocks.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError) as exc:
        if getattr(exc, "errno", None) == errno.ELOOP:
            return "a symbolic link that loops back on itself"
        try:
            if os.path.islink(path):
                return f"a symbolic link to {os.readlink(path)!r}, which does not exist"
        except OSError:
            pass
        if getattr(exc, "errno", None) == errno.ENOTDIR:
            return None
        if isinstance(exc, PermissionError):
            return "a path that cannot be looked at (permission denied)"
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    for is_kind, kind in _SPECIAL_KINDS:
        if is_kind(mode):
            return kind
    return "neither a file nor a folder"


def _blocking_ancestor(path: Path) -> tuple[Path, str | None]:
    """The nearest existing path at or above ``path``, and what it is."""
    existing = path
    while path_kind(existing) is None and existing != existing.parent:
        existing = existing.parent
    return existing, path_kind(existing)


def check_output_folder(folder: str | Path, what: str, hint: str) -> None:
    """Raise :class:`OutputError` unless ``folder`` is a folder, or can be created, and is writable.

    Called before any expensive work, so that an evaluation or an export is not computed only to
    be lost when its result cannot be written. ``what`` names the outputs in the message ("the
    evaluation results"), ``hint`` says what to do instead ("pass another run, or fix its
    permissions").
    """
    folder = Path(folder)
    existing, kind = _blocking_ancestor(folder)
    if existing == folder and kind != "a folder":
        raise OutputError(f"Cannot write {what} into {str(folder)!r}: it is {kind}, not a folder; {hint}.")
    if kind != "a folder":
        raise OutputError(
            f"Cannot write {what} into {str(folder)!r}: {str(existing)!r} is {kind or 'missing'}, not a "
            f"folder; {hint}."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(
            f"Cannot write {what} into {str(folder)!r}: {str(existing)!r} is not writable (permission "
            f"denied); {hint}."
        )


def check_output_file(path: str | Path, what: str, hint: str) -> None:
    """Raise :class:`OutputError` unless ``path`` can be written: its folder by
    :func:`check_output_folder`, and the file itself absent or a writable regular file."""
    path = Path(path)
    check_output_folder(path.parent, what, hint)
    kind = path_kind(path)
    if kind is not None and kind != "a file":
        raise OutputError(f"Cannot write {what} to {str(path)!r}: it is {kind}, not a file; {hint}.")
    if kind == "a file" and not os.access(path, os.W_OK):
        raise OutputError(
            f"Cannot write {what} to {str(path)!r}: the file is read-only (permission denied); {hint}."
        )


def write_failure(exc: BaseException, what: str, path: str | Path, hint: str) -> OutputError:
    """The one-sentence error for an OS error met while writing ``what`` to ``path``."""
    reason = getattr(exc, "strerror", None) or " ".join(str(exc).split()) or type(exc).__name__
    return OutputError(f"Cannot write {what} to {str(path)!r}: {reason}; {hint}.")


def new_file_mode() -> int:
    """The permission bits a new file gets (0o666 less the umask), as ``open()`` gives them.

    Writers that create files through a private temporary file (safetensors writes them 0600) set
    these on the result, so an export is as readable as every other file of a run.
    """
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask

"""Finding the files a ``--data`` value names: a file, a folder (searched recursively), a glob
pattern, a list file (one entry a line), for every modality that reads files.

A modality says what it reads with a :class:`FileKinds` (which files are data, which folders are one
source as a whole, like a zarr store) and :func:`find_files` returns those files, each once, in natural
order (``vol2`` before ``vol10``, as a person numbers them, where plain string order puts ``vol10``
first), so the recordings and their windows come in the same order on every machine.
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from relpos.errors import DataError
from relpos.paths import refuse_special_file
from relpos.modality import natural_key as natural_text_key

LIST_SUFFIXES = (".txt", ".lst", ".list")
_GLOB_CHARS = ("*", "?", "[")


def _never(path: Path) -> bool:
    return False


@dataclass(frozen=True)
class FileKinds:
    """What a modality reads, for finding it and for saying what was looked for."""

    noun: str  # what the messages call the files: "recordings", "timeseries files"
    looked_for: str  # what a folder is searched for, as the messages say it (".edf, .bdf, ...")
    accepts: Callable[[Path], bool]  # a file that is data
    is_store: Callable[[Path], bool] = _never  # a folder read whole as one source (a zarr store)


def natural_key(path: Path) -> tuple:
    """Sort key ordering numbers inside names by value, ignoring case: ``vol0, vol1, Vol2, vol10``.

    Each part of the path is keyed by :func:`relpos.modality.natural_key` (the order of
    ``relpos data inspect``'s recordings), so folders order before their contents as with plain path
    order; the path itself breaks ties (``vol01`` against ``vol1``) so the order never depends on the
    input order.
    """
    return tuple(natural_text_key(part) for part in Path(path).parts), str(path)


def natural_sorted(paths) -> list[Path]:
    """``paths`` in natural order (see :func:`natural_key`)."""
    return sorted(paths, key=natural_key)


def is_list_file(path: Path) -> bool:
    """A text file naming one entry a line (``.txt``, ``.lst``, ``.list``)."""
    return path.is_file() and path.name.lower().endswith(LIST_SUFFIXES)


def _search_folder(folder: Path, kinds: FileKinds) -> list[Path]:
    found: list[Path] = []
    stores: list[Path] = []
    for path in folder.rglob("*"):
        if any(store in path.parents for store in stores):
            continue  # a file inside a store already found
        if path.is_dir() and kinds.is_store(path):
            stores.append(path)
            found.append(path)
        elif path.is_file() and kinds.accepts(path):
            found.append(path)
    return natural_sorted(p for p in found if not any(store in p.parents for store in stores))


def _expand(entry: str, base: Path | None, origin: str, kinds: FileKinds, lists_seen: set[Path]) -> list[Path]:
    """One entry (file, folder, glob or list file) -> the data files it names."""
    path = Path(entry).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    if kinds.is_store(path) and path.exists():
        return [path]
    if path.is_dir():
        files = _search_folder(path, kinds)
        if not files:
            raise DataError(
                f"No {kinds.noun} found in folder {str(path)!r}{origin} (looked recursively for {kinds.looked_for})."
            )
        return files
    if is_list_file(path):
        return _read_list(path, kinds, lists_seen)
    if path.exists():
        refuse_special_file(path, origin=origin)  # a pipe or device would block the reader forever
        return [path]  # named explicitly: read whatever its kind, so a wrong kind gets its own message
    if any(c in str(path) for c in _GLOB_CHARS):
        matches = [Path(p) for p in glob.glob(str(path), recursive=True)]
        files = natural_sorted(p for p in matches if (p.is_file() and kinds.accepts(p)) or kinds.is_store(p))
        if not files:
            others = natural_sorted(p for p in matches if p.is_file())
            seen = (
                f" (it matches {len(others)} other file{'s' if len(others) != 1 else ''}, such as "
                f"{others[0].name!r}; looked for {kinds.looked_for})" if others else ""
            )
            raise DataError(f"The pattern {str(path)!r}{origin} matches no {kinds.noun}{seen}.")
        return files
    raise DataError(f"Data path {str(path)!r}{origin} does not exist.")


def _read_list(path: Path, kinds: FileKinds, lists_seen: set[Path]) -> list[Path]:
    """The files a list file names: one file, folder, glob or list file a line, relative to the list
    file's folder, ``#`` starting a comment."""
    key = path.resolve()
    if key in lists_seen:
        raise DataError(f"The list file {str(path)!r} names itself, directly or through another list file.")
    lists_seen = lists_seen | {key}
    files: list[Path] = []
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"The list file {str(path)!r} cannot be read as text (one path a line): "
            f"{' '.join(str(exc).split())}."
        ) from None
    if "\x00" in text:
        raise DataError(f"The list file {str(path)!r} is not a text file (one path a line): it holds NUL bytes.")
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            origin = f" (line {number} of list file {str(path)!r})"
            files += _expand(entry, path.parent, origin, kinds, lists_seen)
    if not files:
        raise DataError(f"The list file {str(path)!r} names no {kinds.noun}.")
    return files


def find_files(data: str | Path, kinds: FileKinds) -> list[Path]:
    """The data files ``data`` names, each once, folders and globs in natural order.

    Parameters
    ----------
    data : str or Path
        A file, a folder (searched recursively), a glob pattern (``**`` recursive) or a list file
        (``.txt``, ``.lst``, ``.list``: one such entry a line, relative to the list file, ``#``
        comments).
    kinds : FileKinds
        What the modality reads.

    Returns
    -------
    list of Path
        A file named twice (by two lines of a list, or a folder and a glob) is kept at its first place.

    Raises
    ------
    DataError
        When a path does not exist, or a folder, pattern or list file gives no data file.
    """
    files = _expand(str(data), None, "", kinds, set())
    seen: set[Path] = set()
    unique: list[Path] = []
    for path in files:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique

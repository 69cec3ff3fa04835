"""Which EEG recordings ``--data`` names, and what belongs to each: hypnogram, recording and subject id.

:func:`resolve_recordings` finds the signal files (files, folders, globs, list files: the shared
:mod:`..common.sources`, in natural order) and turns them into :class:`Recording` s: one signal file each,
with the hypnogram found beside it (if any), its recording id (the ``groups`` of its windows) and its
subject id (the ``subjects``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from relpos.errors import ConfigError, DataError

from ..common.sources import FileKinds, find_files, natural_sorted

RECORDING_SUFFIXES = (".edf", ".bdf", ".fif", ".fif.gz", ".vhdr", ".set", ".gdf", ".cnt", ".mff", ".nxe")
#: Built-in subject patterns, tried in order on the file name: Sleep-EDF cassette / telemetry
#: ("SC4ssN..." / "ST7ssN...": subject "ss"), then EEGMMIDB ("S001R02": subject "001").
DEFAULT_SUBJECT_PATTERNS = (r"^S[CT][47](\d\d)\d", r"(?<![A-Za-z0-9])S(\d{3})(?:R\d+)?")


@dataclass
class Recording:
    """One signal file to read, with what belongs to it."""

    path: Path
    hypnogram: Path | None = None
    recording_id: str = ""
    subject_id: str = ""


def strip_suffix(name: str) -> str:
    """File name without its recording suffix (``x.fif.gz`` -> ``x``)."""
    lower = name.lower()
    for suffix in sorted(RECORDING_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_hypnogram(path: Path) -> bool:
    """Sleep-EDF style hypnograms (``*-Hypnogram.edf``) hold annotations only, no signals."""
    return "hypnogram" in path.name.lower()


def is_recording(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in RECORDING_SUFFIXES) and not is_hypnogram(path)


#: What the eeg modality reads from folders, globs and list files.
RECORDING_FILES = FileKinds(
    noun="recordings", looked_for=", ".join(RECORDING_SUFFIXES), accepts=is_recording
)


def find_hypnogram(psg: Path) -> Path | None:
    """The hypnogram beside ``psg``: ``<stem>-Hypnogram.*`` for ``<stem>-PSG.*``, else a
    ``*-Hypnogram.*`` sharing the first 6 characters (Sleep-EDF: ``SC4001E0-PSG.edf`` pairs with
    ``SC4001EC-Hypnogram.edf``)."""
    if not psg.parent.is_dir():
        return None
    candidates = natural_sorted(p for p in psg.parent.iterdir() if p.is_file() and is_hypnogram(p))
    stem = strip_suffix(psg.name)
    if stem.lower().endswith("-psg"):
        stem = stem[:-4]
    for cand in candidates:
        if strip_suffix(cand.name).lower() == f"{stem}-hypnogram".lower():
            return cand
    prefix = psg.name[:6]
    same = [c for c in candidates if len(prefix) == 6 and c.name[:6] == prefix]
    return same[0] if len(same) == 1 else None


def subject_of(name: str, pattern: str) -> str | None:
    """Subject id parsed from a file name (first capture group), or None when nothing matches."""
    patterns = [pattern] if pattern else list(DEFAULT_SUBJECT_PATTERNS)
    for pat in patterns:
        try:
            match = re.search(pat, name)
        except re.error as exc:
            raise ConfigError(
                f"Invalid value for 'modality.subject_pattern': {pat!r} is not a regular expression ({exc})."
            ) from None
        if match:
            return match.group(1) if match.groups() else match.group(0)
    return None


def recording_ids(paths: list[Path]) -> list[str]:
    """File stems, or paths relative to the common folder when two stems collide."""
    stems = [strip_suffix(p.name) for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    resolved = [p.resolve() for p in paths]
    parts = [r.parts for r in resolved]
    n = 0
    while all(len(p) > n + 1 for p in parts) and len({p[n] for p in parts}) == 1:
        n += 1
    common = Path(*parts[0][:n])
    return [str(Path(*r.relative_to(common).parts[:-1], strip_suffix(r.name)).as_posix()) for r in resolved]


def resolve_recordings(data, subject_pattern: str = "") -> list[Recording]:
    """``--data`` (file, folder, glob pattern or list file) -> recordings with hypnograms and ids."""
    unique = find_files(data, RECORDING_FILES)
    if len(unique) == 1 and is_hypnogram(unique[0]):
        raise DataError(
            f"{str(unique[0])!r} is a hypnogram (annotations only); pass its PSG recording, or the "
            f"folder holding both."
        )
    ids = recording_ids(unique)
    return [
        Recording(
            path=f,
            hypnogram=find_hypnogram(f),
            recording_id=rid,
            subject_id=subject_of(f.name, subject_pattern) or rid,
        )
        for f, rid in zip(unique, ids)
    ]

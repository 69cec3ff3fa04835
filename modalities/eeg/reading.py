"""Opening one EEG recording: a file read with MNE (a truncated EDF/BDF said in one clause), or a
Raw object passed from Python, with its hypnogram's annotations when it has one."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .edf_header import truncation


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def is_raw(obj: Any) -> bool:
    # A Raw object can only exist once MNE is imported; checking sys.modules first keeps a load
    # from the cache free of the MNE import.
    if "mne" not in sys.modules:
        return False
    import mne

    return isinstance(obj, mne.io.BaseRaw)


@dataclass
class Item:
    """One recording to open: a file, or a Raw object passed from Python."""

    where: str  # how messages name it
    recording_id: str
    subject_id: str
    path: Path | None = None
    hypnogram: Path | None = None
    raw: Any = None
    truncated: str = ""  # "is truncated: its header declares ..." when the file is shorter than declared

    def open(self):
        """The recording, not yet preloaded (a copy for Raw objects)."""
        import mne

        if self.raw is not None:
            return self.raw.copy()
        if self.path.name.lower().endswith((".edf", ".bdf")):
            cut = truncation(self.path)
            if cut is not None:
                self.truncated = cut[0]
                if cut[1]:  # the header itself is cut: MNE would fail on whatever field it meets
                    raise Unreadable(f"{cut[0]}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a truncated file's warning: self.truncated says it better
            raw = mne.io.read_raw(self.path, preload=False, verbose="error")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.hypnogram is not None:
                ann = mne.read_annotations(self.hypnogram)
                # Hypnogram onsets count from the recording's start (Sleep-EDF: both start together).
                raw.set_annotations(
                    mne.Annotations(ann.onset, ann.duration, ann.description, orig_time=None),
                    emit_warning=False,
                    verbose="error",
                )
        return raw


class Unreadable(Exception):
    """A recording that cannot be read, with the clause that says why (after "Recording X ...")."""


def mne_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mne")
    except PackageNotFoundError:  # pragma: no cover
        return "?"

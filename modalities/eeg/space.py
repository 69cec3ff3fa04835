"""``modality.space: montage``: EEG windows whose channels carry their electrode positions.

Each recording is opened on its own with the ordinary pipeline (``space: none``, cached as before), so
recordings with different channel sets (a 64-channel cap, six 10-20 electrodes, two bipolar
derivations) are read each with its own channels; every channel is placed by :mod:`.montage`, and the
recordings are stacked with :func:`relpos.space.stack_channel_sets` (absent channels padded when a
batch is read). Windows of a recording with a hypnogram keep their sleep stages, the others get -1
(unlabelled), when the classes agree.

The channel contract (``Windows.info["channel_contract"]``, kept in a run's checkpoint) lists every
channel name with its position, where the position came from, the reference and the units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from relpos.errors import DataError
from relpos.modality import Windows
from relpos.space import CONTRACT_KEY, stack_channel_sets

from .montage import HEAD_RADIUS_M, SPACE_AXES, electrode_names, place_channels, read_montage_file, recording_montage
from .reading import is_raw
from .sources import resolve_recordings, strip_suffix, subject_of

NUMPY_SUFFIXES = (".npz", ".npy")


def _parts(modality, data) -> list[tuple[Windows, dict, str, str | None, str | None]]:
    """(windows, the recording's own montage, where, recording id, subject id) per recording, each opened alone."""
    if is_raw(data) or (isinstance(data, (list, tuple)) and data and all(is_raw(r) for r in data)):
        raws = [data] if is_raw(data) else list(data)
        parts = []
        for i, raw in enumerate(raws):  # ids as the eeg modality gives Raw objects opened together
            names = getattr(raw, "filenames", None) or [None]
            rid = strip_suffix(Path(str(names[0])).name) if names[0] else f"raw{i}"
            parts.append((modality.load_with(raw, space="none"), recording_montage(raw), f"Raw object {i}", rid,
                          subject_of(rid, modality.config.subject_pattern) or rid))
        return parts
    if isinstance(data, (str, Path)) and str(data).lower().endswith(NUMPY_SUFFIXES):
        return [(modality.load_with(data, space="none"), {}, repr(str(data)), None, None)]
    if not isinstance(data, (str, Path)):
        return [(modality.load_with(data, space="none"), {}, "the data", None, None)]  # its own sentence
    parts = []
    for r in resolve_recordings(data, modality.config.subject_pattern):
        windows = modality.load_with(str(r.path), space="none")
        parts.append((windows, recording_montage(r.path), repr(str(r.path)), r.recording_id, r.subject_id))
    return parts


def _labels(parts: list[Windows]) -> tuple[torch.Tensor | None, list[str]]:
    """Labels of the stacked windows: each part's, -1 for an unlabelled part, when the labelled parts agree."""
    labelled = [w for w in parts if w.labels is not None]
    if not labelled or any(w.class_names != labelled[0].class_names for w in labelled):
        return None, []
    labels = [w.labels if w.labels is not None else torch.full((len(w),), -1, dtype=torch.long) for w in parts]
    return torch.cat(labels), list(labelled[0].class_names)


def load_with_positions(modality, data) -> Windows:
    """Open ``data`` with every channel placed: ``Windows.positions`` ``(N, C_max, 3)`` in head radii."""
    config = modality.config
    montage_file = read_montage_file(config.montage) if config.montage else None  # before any data is read
    opened = _parts(modality, data)
    stacked, contract, channel_sets = [], {}, {}
    for windows, own, where, rid, sid in opened:
        if rid is not None:
            windows.groups = np.array([rid] * len(windows))
            windows.subjects = np.array([sid] * len(windows))
        names = [str(n) for n in windows.info.get("ch_names") or []]
        if len(names) != windows.channels:
            raise DataError(f"{where} opens into {windows.channels} channels without their names, so they cannot be "
                            f"placed (modality.space=montage needs channel names).")
        positions, sources = place_channels(names, where, montage_file, own)
        stacked.append((windows.x, torch.as_tensor(positions, dtype=torch.float32)))
        recording = rid or (str(windows.groups[0]) if len(windows) else where)
        channel_sets[recording] = names
        for name, position, source in zip(names, positions, sources):
            contract.setdefault(name, {"name": name, "electrodes": electrode_names(name),
                                       "position": [round(float(v), 6) for v in position], "source": source})
    if not stacked or sum(len(w) for w, *_ in opened) == 0:
        raise DataError(f"No windows could be made from {str(data)!r}.")
    parts = [w for w, *_ in opened]
    x, positions = stack_channel_sets(stacked)
    labels, class_names = _labels(parts)
    info = dict(parts[0].info)
    info["ch_names"] = list(contract)
    info["source"] = str(data) if isinstance(data, (str, Path)) else info.get("source")
    for key in ("files", "skipped"):
        info[key] = [item for w in parts for item in (w.info.get(key) or [])]
    dropped: dict[str, int] = {}
    for w in parts:
        for reason, count in (w.info.get("dropped") or {}).items():
            dropped[reason] = dropped.get(reason, 0) + int(count)
    info["dropped"] = dropped
    info["channel_sets"] = channel_sets
    info[CONTRACT_KEY] = {
        "axes": list(SPACE_AXES),
        "unit": f"head radii (1 = {HEAD_RADIUS_M} m; MNE head coordinates: x right, y nasion, z up)",
        "reference": config.reference or "as recorded (a derivation A-B is A minus B)",
        "signal_unit": "normalised (modality.normalize); V before",
        "channels": list(contract.values()),
    }
    with_time = all(w.onsets is not None for w in parts)
    return Windows(
        x=x, labels=labels, groups=np.concatenate([np.asarray(w.groups) for w in parts]), class_names=class_names,
        info=info, subjects=np.concatenate([np.asarray(w.subjects) for w in parts]),
        onsets=np.concatenate([w.onsets for w in parts]) if with_time else None,
        durations=np.concatenate([w.durations for w in parts]) if with_time else None,
        positions=positions,
    )

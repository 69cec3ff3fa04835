"""Electrode positions for ``modality.space: montage``: from a montage file, the recording's montage, or
MNE's standard 10-05 montage by channel name.

Positions are MNE's 3-D head coordinates (x towards the right ear, y towards the nasion, z up)
divided by :data:`HEAD_RADIUS_M` (0.095 m, MNE's default head size), so they are in **head radii**:
a standard cap's electrodes lie about 1 from the head's centre, Fpz and Oz about 2 apart.

A channel's position is the first of:

1. its entry in ``modality.montage`` (a file ``mne.channels.read_custom_montage`` reads: ``.elc``,
   ``.sfp``, ``.loc``/``.locs``, ``.bvef``, ``.csd``, ``.elp``, ``.hpts``, ``.txt``), by name,
   case-insensitive;
2. the recording's own montage (``raw.get_montage()``: FIF, BrainVision or EEGLAB files with digitised
   positions), by name;
3. MNE's standard 10-05 montage by the electrode names read from the channel name
   (:func:`electrode_names`): case-insensitive, a type prefix (``EEG Fpz-Cz``) and EEGMMIDB's trailing
   dots (``Fc5.``) dropped; a bipolar derivation ``A-B`` (``Fpz-Cz``) sits at the **midpoint** of its
   two electrodes; ``A-REF`` (``REF``, ``LE``, ``RE``, ``AR``, ``AVG``, ``CAR``: a reference, not an
   electrode) sits at ``A``.

A channel none of them places is refused in one sentence naming it, as are two channels of one
recording at the same position.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from relpos.errors import ConfigError, DataError

#: MNE's default head radius (``make_standard_montage(head_size=0.095)``): the unit of positions.
HEAD_RADIUS_M = 0.095
#: The second part of ``A-B`` that names a reference rather than an electrode.
REFERENCE_WORDS = frozenset({"REF", "LE", "RE", "AR", "AVG", "AVERAGE", "CAR"})
#: The spatial axes channel tokens carry, in front of time.
SPACE_AXES = ("x", "y", "z")
#: Two positions closer than this (head radii, 0.1 mm) are the same position.
SAME_POSITION = 1e-3
#: The names of the montage files MNE's ``read_custom_montage`` reads.
MONTAGE_SUFFIXES = (".elc", ".sfp", ".loc", ".locs", ".eloc", ".bvef", ".csd", ".elp", ".hpts", ".txt")

_STANDARD: dict[str, np.ndarray] | None = None


def standard_positions() -> dict[str, np.ndarray]:
    """MNE's standard 10-05 montage (``colin27_1005``, formerly ``standard_1005``): lower-case name → metres."""
    global _STANDARD
    if _STANDARD is None:
        import mne

        name = "colin27_1005" if "colin27_1005" in mne.channels.get_builtin_montages() else "standard_1005"
        montage = mne.channels.make_standard_montage(name)
        _STANDARD = {k.lower(): np.asarray(v, dtype=np.float64) for k, v in montage.get_positions()["ch_pos"].items()}
    return _STANDARD


def electrode_names(channel: str) -> list[str]:
    """The electrodes a channel name speaks of: one, or two for a bipolar derivation.

    >>> electrode_names("EEG Fpz-Cz")
    ['Fpz', 'Cz']
    >>> electrode_names("Fc5.")
    ['Fc5']
    >>> electrode_names("EEG FP1-REF")
    ['FP1']
    """
    text = re.sub(r"^\s*EEG[\s_:]+", "", str(channel), flags=re.IGNORECASE).strip()
    parts = [p.strip().strip(".").strip() for p in re.split(r"\s*-\s*", text)]
    parts = [p for p in parts if p]
    if len(parts) == 2 and parts[1].upper() in REFERENCE_WORDS:
        parts = parts[:1]
    return parts


def _by_name(positions: dict[str, Any] | None) -> dict[str, np.ndarray]:
    if not positions:
        return {}
    out = {}
    for name, value in positions.items():
        value = np.asarray(value, dtype=np.float64)
        if value.shape == (3,) and np.isfinite(value).all():
            out[str(name).lower()] = value
    return out


def read_montage_file(path: str) -> dict[str, np.ndarray]:
    """The positions (metres) of a montage file, by lower-case name; one sentence when it does not parse."""
    import mne

    where = Path(path)
    if not where.is_file():
        raise ConfigError(f"Invalid value for 'modality.montage': {path!r} is not a file; give a montage file "
                          f"({', '.join(MONTAGE_SUFFIXES)}) or leave it empty.")
    try:
        montage = mne.channels.read_custom_montage(where, verbose="error")
        positions = _by_name(montage.get_positions()["ch_pos"])
    except Exception as exc:  # noqa: BLE001 - any parser failure is the same answer to the user
        text = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ConfigError(
            f"The montage file {path!r} (modality.montage) does not parse as a montage MNE reads "
            f"({', '.join(MONTAGE_SUFFIXES)}): {text.rstrip('.')}."
        ) from None
    if not positions:
        raise ConfigError(f"The montage file {path!r} (modality.montage) holds no electrode with a position.")
    return positions


def recording_montage(source: Any) -> dict[str, np.ndarray]:
    """A recording's own electrode positions (metres) by lower-case name: a Raw's montage, or the montage
    in a file's header (none for EDF)."""
    try:
        if hasattr(source, "get_montage"):
            montage = source.get_montage()
        else:
            import mne

            montage = mne.io.read_raw(str(source), preload=False, verbose="error").get_montage()
    except Exception:  # noqa: BLE001 - a file MNE cannot read is reported by the pipeline itself
        return {}
    return _by_name(montage.get_positions()["ch_pos"]) if montage is not None else {}


def place_channels(
    ch_names: list[str], where: str, montage_file: dict[str, np.ndarray] | None = None,
    own: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Positions of ``ch_names`` in head radii, and where each came from.

    Returns
    -------
    positions : numpy.ndarray
        ``(C, 3)`` float64, head radii.
    sources : list of str
        Per channel: ``"montage file"``, ``"recording's montage"``, ``"standard 10-05"`` or
        ``"midpoint of A and B (standard 10-05)"``.

    Raises
    ------
    DataError
        Channels without a position, or two channels at the same position (one sentence).
    """
    standard = standard_positions()
    montage_file, own = montage_file or {}, own or {}
    positions, sources, missing = [], [], []
    for name in ch_names:
        key = str(name).lower()
        if key in montage_file:
            positions.append(montage_file[key]), sources.append("montage file")
            continue
        if key in own:
            positions.append(own[key]), sources.append("recording's montage")
            continue
        electrodes = electrode_names(name)
        if electrodes and all(e.lower() in standard for e in electrodes):
            positions.append(np.mean([standard[e.lower()] for e in electrodes], axis=0))
            sources.append("standard 10-05" if len(electrodes) == 1
                           else f"midpoint of {electrodes[0]} and {electrodes[1]} (standard 10-05)")
            continue
        missing.append(str(name))
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise DataError(
            f"{where} has {len(missing)} channel(s) without an electrode position ({shown}): their names are not "
            f"10-05 electrodes or derivations of two, and no montage gives them; with modality.space=montage give "
            f"a montage file (modality.montage=FILE), pick placed channels (modality.channels), or use "
            f"modality.space=none."
        )
    placed = np.asarray(positions, dtype=np.float64).reshape(-1, 3) / HEAD_RADIUS_M
    distance = np.linalg.norm(placed[:, None] - placed[None], axis=-1) + np.eye(len(placed)) * 1e9
    if len(placed) > 1 and distance.min() < SAME_POSITION:
        i, j = np.unravel_index(np.argmin(distance), distance.shape)
        raise DataError(
            f"{where} has two channels at the same electrode position, {ch_names[i]!r} and {ch_names[j]!r}; "
            f"with modality.space=montage every channel of a recording needs its own position (pick one of them "
            f"with modality.channels)."
        )
    return placed, sources

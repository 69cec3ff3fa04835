"""Channel types from channel names, the way MNE users set them by hand.

EDF has no field for a channel's type, so MNE reads every EDF channel as EEG: a polysomnogram's
``EOG horizontal``, ``EMG submental``, ``Resp oro-nasal`` or ``Event marker`` would be pretrained on
as EEG. MNE's tutorials fix this with ``raw.set_channel_types`` from the names; this module does the
same from the names alone, so that the eeg modality's type pick (``modality.channel_types``, ``eeg``
by default) keeps the EEG channels.

A name is split into words at anything that is not a letter or a digit (case-insensitive); the first
word that matches gives the type:

==============  ==========================================================================
type            words
==============  ==========================================================================
``eog``         ``EOG``, ``EOG1``, ``EOGL``, ``HEOG``, ``VEOG`` (``eog`` plus anything, or ``h``/``v`` + ``eog``)
``emg``         ``EMG``, ``EMG1``, ``EMGchin`` (``emg`` plus anything)
``ecg``         ``ECG``, ``EKG``, ``ECG2`` (``ecg``/``ekg`` plus anything)
``resp``        ``Resp``, ``Respiration``, ``Airflow``, ``Thorax``/``Thor``, ``Abdomen``/``Abdo``
``stim``        ``STI``, ``STI014``, ``Stim``, ``Status``, ``Trigger``/``Trig``, ``Event``, ``Marker``
``temperature`` ``Temp``, ``Temperature``
==============  ==========================================================================

Only channels the file types ``eeg`` or ``misc`` (what MNE gives a channel whose type the file does
not state) are retyped: a type the file states otherwise (a BDF ``Status`` line is ``stim``, a FIF
states every type) is never overridden. A name whose first word is ``EEG`` (``EEG Fpz-Cz``) says
it is EEG and stays so, and so does every channel the user names (see :func:`retype_by_name`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["RETYPED_FROM", "infer_type", "retype_by_name", "retyped_hint"]

#: The file's types that a name may override (MNE's type for a channel whose type is not stated).
RETYPED_FROM = ("eeg", "misc")

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("eog", re.compile(r"[hv]?eog[a-z0-9]*")),
    ("emg", re.compile(r"emg[a-z0-9]*")),
    ("ecg", re.compile(r"(ecg|ekg)[a-z0-9]*")),
    ("resp", re.compile(r"resp[a-z0-9]*|airflow|thor|thorax|abdo|abdomen")),
    ("stim", re.compile(r"sti[0-9]*|stim[a-z0-9]*|status|trig|trigger[a-z0-9]*|event[a-z0-9]*|marker[a-z0-9]*")),
    ("temperature", re.compile(r"temp|temperature")),
)


def infer_type(name: str) -> str | None:
    """The MNE channel type that ``name`` states, or None when it states none (or states EEG).

    Examples: ``'EOG horizontal'`` -> ``'eog'``, ``'EMG2'`` -> ``'emg'``, ``'Resp oro-nasal'`` ->
    ``'resp'``, ``'Event marker'`` -> ``'stim'``, ``'EEG Fpz-Cz'`` -> None, ``'Cz'`` -> None.
    """
    words = [w for w in re.split(r"[^a-z0-9]+", str(name).lower()) if w]
    if not words or words[0] == "eeg":
        return None
    for word in words:
        for kind, pattern in _RULES:
            if pattern.fullmatch(word):
                return kind
    return None


def retype_by_name(names: Sequence[str], types: Sequence[str], keep: Iterable[str] = ()) -> dict[str, str]:
    """The channels to retype from their names: ``{name: new MNE type}``.

    Parameters
    ----------
    names, types : sequence of str
        The channels and the types the file gives them (MNE's ``raw.get_channel_types()``).
    keep : iterable of str
        Channels the user named (picked or used as a reference): they keep the file's type, so an
        explicit pick always wins.

    Returns
    -------
    dict of str to str
        Only channels typed ``eeg`` or ``misc`` by the file whose name states another type.
    """
    keep = set(keep)
    out: dict[str, str] = {}
    for name, kind in zip(names, types):
        if kind not in RETYPED_FROM or name in keep:
            continue
        inferred = infer_type(name)
        if inferred is not None and inferred != kind:
            out[str(name)] = inferred
    return out


def retyped_hint(retyped: dict[str, str], limit: int = 6) -> str:
    """What to do when no channel of the wanted types is left: set ``modality.channel_types``, or,
    when some channels were retyped from their names, name them to keep the file's types."""
    if not retyped:
        return "set modality.channel_types"
    shown = ", ".join(f"{name!r} as {kind}" for name, kind in list(retyped.items())[:limit])
    more = f" and {len(retyped) - limit} more" if len(retyped) > limit else ""
    return (
        f"typed from their names: {shown}{more}; set modality.channel_types, or name the channels to use "
        f"in modality.channels to keep the types the file gives them"
    )

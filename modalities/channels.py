"""Dead channels: the policy every multichannel modality (eeg, timeseries) shares.

A channel that is flat throughout a recording (its peak-to-peak over the whole recording below the
modality's ``flat_threshold``) is a dead electrode or a channel that carries no signal (an unused
ADC input, a trigger line that never fired). It is not a bad *window*: dropping every window for it
would drop the whole recording. So such a channel is left out of **every** recording (the channel
sets of all windows must agree), the user is warned once, naming it and saying how to pin the
channels to use; windows are dropped for flatness only where a *live* channel goes flat.

A modality computes, per recording, a boolean mask "flat throughout" over its channel names (e.g.
with :func:`flat_throughout`), then calls :func:`dead_channels` and :func:`dead_channel_warning`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["dead_channels", "dead_channel_warning", "flat_throughout", "format_names"]


def flat_throughout(data: np.ndarray, flat_threshold: float) -> np.ndarray:
    """Which rows of ``data`` ``(channels, samples)`` are flat over all their samples.

    Parameters
    ----------
    data : numpy.ndarray
        ``(C, samples)`` samples of one recording, in the unit ``flat_threshold`` is given in.
    flat_threshold : float
        A channel whose peak-to-peak over its finite samples is below this is flat. ``0`` (the
        flat check switched off) marks nothing.

    Returns
    -------
    numpy.ndarray
        ``(C,)`` bool. A channel with no finite sample at all counts as flat: it carries no signal.
    """
    data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"flat_throughout() takes (channels, samples), got shape {data.shape}.")
    if flat_threshold <= 0 or data.shape[1] == 0:
        return np.zeros(data.shape[0], dtype=bool)
    # fmax/fmin skip NaN (a few NaN samples do not make a live channel dead); an infinity is a
    # huge peak-to-peak, so never flat.
    with np.errstate(invalid="ignore"):
        high = np.fmax.reduce(data, axis=1)
        low = np.fmin.reduce(data, axis=1)
        span = high - low
    return ~(span >= flat_threshold)  # NaN span (no finite sample) counts as flat


def dead_channels(flat_per_recording: Mapping[str, np.ndarray], names: Sequence[str]) -> list[str]:
    """The channels flat throughout at least one recording, in ``names`` order.

    Parameters
    ----------
    flat_per_recording : mapping of str to numpy.ndarray
        Recording id -> ``(len(names),)`` bool, True where that channel is flat throughout that
        recording (:func:`flat_throughout`).
    names : sequence of str
        The channel names the masks refer to (the same channels, in the same order, for every
        recording).

    Returns
    -------
    list of str
        Channels to leave out of every recording, so that every recording keeps the same channels.
    """
    names = [str(n) for n in names]
    dead = np.zeros(len(names), dtype=bool)
    for recording, mask in flat_per_recording.items():
        mask = np.asarray(mask, dtype=bool).reshape(-1)
        if len(mask) != len(names):
            raise ValueError(
                f"dead_channels(): the mask of recording {recording!r} has {len(mask)} entries for "
                f"{len(names)} channel names."
            )
        dead |= mask
    return [n for n, d in zip(names, dead) if d]


def format_names(names: Sequence[str], limit: int = 8) -> str:
    """``'A', 'B' and 'C'``; past ``limit`` names, the first ones and how many more."""
    quoted = [repr(str(n)) for n in names]
    if len(quoted) > limit:
        return ", ".join(quoted[:limit]) + f" and {len(quoted) - limit} more"
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def dead_channel_warning(
    names: Sequence[str],
    pin_hint: str,
    where: Mapping[str, Sequence[str]] | None = None,
    kept: Sequence[str] | None = None,
) -> str:
    """The one warning that says which channels were left out as dead, and how to choose channels.

    Parameters
    ----------
    names : sequence of str
        The dead channels (:func:`dead_channels`).
    pin_hint : str
        How the user names the channels to use in this modality, e.g.
        ``"set modality.channels to the channels to use"``.
    where : mapping of str to sequence of str, optional
        Channel -> the recordings it is flat throughout (the first few are named).
    kept : sequence of str, optional
        The channels that are kept, given as the example of what to pin.

    Returns
    -------
    str
        One sentence, e.g. ``"Channel 'RAW-0' is flat throughout recording 'x' (a dead or non-signal
        channel), so it is left out of every recording; set modality.channels to the channels to use
        (e.g. 'RAW-1') to choose them yourself."``
    """
    names = [str(n) for n in names]
    if not names:
        return ""
    subject = f"Channel {format_names(names)} is" if len(names) == 1 else f"Channels {format_names(names)} are"
    recordings: list[str] = []
    if where:
        for name in names:
            for recording in where.get(name, ()):
                if recording not in recordings:
                    recordings.append(str(recording))
    if recordings:
        plural = "recording" if len(recordings) == 1 else "recordings"
        place = f" {plural} {format_names(recordings, limit=3)}"
    else:
        place = " a recording"
    pronoun = "it is" if len(names) == 1 else "they are"
    example = f" (e.g. {','.join(kept)!r})" if kept else ""
    return (
        f"{subject} flat throughout{place} (a dead or non-signal channel), so {pronoun} left out of "
        f"every recording; {pin_hint}{example} to choose the channels yourself."
    )

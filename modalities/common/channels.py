"""Dead channels: the policy every multichannel modality (eeg, timeseries) shares.

A channel that is flat throughout a recording (its peak-to-peak over the whole recording below the
modality's ``flat_threshold``) is a dead electrode or a channel that carries no signal (an unused
ADC input, a trigger line that never fired). It is not a bad *window*: dropping every window for it
would drop the whole recording. So such a channel is left out of **every** recording (the channel
sets of all windows must agree), the user is warned once, naming it and saying how to pin the
channels to use; windows are dropped for flatness only where a *live* channel goes flat.

A channel flat in nearly every window of a recording (at least :data:`MOSTLY_FLAT_FRACTION`, 80%,
of its windows, by the same ``flat_threshold``) is dead in the same way: a trigger or marker line
typed as a signal, which steps once or twice in hours, would otherwise make nearly every window be
dropped. It is left out of every recording with the same warning. Why 80% and not 90%: one step
spoils every window that holds it, ``window_s / stride_s`` overlapping windows (6 at the eeg
defaults, 30-s windows every 5 s), so a 90% rule would miss a single step in any recording shorter
than 60 windows (5.4 min); at 80% it is caught from 30 windows (175 s) on, while a line that stays
live (pulses every 40 s: flat in a third of the windows) is kept and only its flat windows dropped. The window rule applies only while
some channel of the recording is live by it; when every channel is flat in nearly every window, the
windows themselves are bad, and are dropped one by one as before.

A modality computes, per recording, a boolean mask "flat throughout" over its channel names (e.g.
with :func:`flat_throughout`), and, from the windows it cuts, which channels are flat in nearly every
window (:func:`flat_in_windows`, :func:`mostly_flat`), then calls :func:`dead_channels` and
:func:`dead_channel_warning`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "MOSTLY_FLAT_FRACTION",
    "dead_channels",
    "dead_channel_warning",
    "flat_in_windows",
    "flat_throughout",
    "format_names",
    "mostly_flat",
]

#: A channel flat in at least this fraction of a recording's windows is dead (a trigger line that
#: steps once is flat in all windows but those that hold the step; see the module docstring).
MOSTLY_FLAT_FRACTION = 0.8
#: How the user pins the channels to use, quoted in every message about dead channels.
PIN_HINT = "set modality.channels to the channels to use"


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


def flat_in_windows(data: np.ndarray, starts: np.ndarray, length: int, flat_threshold: float) -> np.ndarray:
    """Which rows of ``data`` are flat in each window ``[start, start + length)`` of their last axis.

    Parameters
    ----------
    data : numpy.ndarray
        ``(..., samples)``, e.g. ``(C, samples)`` of one recording, in the unit ``flat_threshold``
        is given in.
    starts : numpy.ndarray
        ``(W,)`` first sample of each window; a window is cut short at the end of ``data``.
    length : int
        Window length, samples.
    flat_threshold : float
        As for :func:`flat_throughout` (peak-to-peak below it over the window's finite samples;
        ``0`` marks nothing).

    Returns
    -------
    numpy.ndarray
        ``(..., W)`` bool.
    """
    data = np.asarray(data)
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    n = data.shape[-1] if data.ndim else 0
    out = np.zeros(data.shape[:-1] + (len(starts),), dtype=bool)
    if flat_threshold <= 0 or len(starts) == 0 or n == 0:
        return out
    from numpy.lib.stride_tricks import sliding_window_view

    starts = np.clip(starts, 0, n - 1)
    stops = np.minimum(n, np.maximum(starts + 1, starts + int(length)))
    # One pass over the data: the extremes of the segments between window edges, then of each
    # window's segments (however much the windows overlap).
    cuts = np.unique(np.concatenate([[0], starts, stops]))
    cuts = cuts[cuts < n]
    first = np.searchsorted(cuts, starts)
    count = np.searchsorted(cuts, stops) - first
    with np.errstate(invalid="ignore"):
        high = np.fmax.reduceat(data, cuts, axis=-1)
        low = np.fmin.reduceat(data, cuts, axis=-1)
        for k in np.unique(count):
            sel = np.flatnonzero(count == k)
            top = np.fmax.reduce(sliding_window_view(high, int(k), axis=-1)[..., first[sel], :], axis=-1)
            bottom = np.fmin.reduce(sliding_window_view(low, int(k), axis=-1)[..., first[sel], :], axis=-1)
            out[..., sel] = ~((top - bottom) >= flat_threshold)  # no finite sample: flat
    return out


def mostly_flat(flat_windows: np.ndarray, n_windows: int) -> np.ndarray:
    """Which channels are flat in at least :data:`MOSTLY_FLAT_FRACTION` of ``n_windows`` windows.

    Parameters
    ----------
    flat_windows : numpy.ndarray
        ``(C,)`` number of windows in which each channel is flat.
    n_windows : int
        Number of windows they were counted over (none: nothing is marked).

    Returns
    -------
    numpy.ndarray
        ``(C,)`` bool.
    """
    flat_windows = np.asarray(flat_windows).reshape(-1)
    if n_windows <= 0:
        return np.zeros(len(flat_windows), dtype=bool)
    return flat_windows >= MOSTLY_FLAT_FRACTION * n_windows - 1e-9  # 8 of 10 is 80%, whatever the rounding


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
    mostly: Sequence[str] = (),
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
    mostly : sequence of str, optional
        Those of ``names`` that are flat in nearly every window (:func:`mostly_flat`) rather than
        throughout; with any, the sentence says "flat in 80% or more of the windows of".

    Returns
    -------
    str
        One sentence, e.g. ``"Channel 'RAW-0' is flat throughout recording 'x' (a dead or non-signal
        channel), so it is left out of every recording; set modality.channels to the channels to use
        (e.g. 'RAW-1') to choose them yourself."``; with ``mostly``, "is flat in 80% or more of the
        windows of recording 'x'".
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
    how = "flat throughout"
    if any(str(n) in names for n in mostly):
        how = f"flat in {MOSTLY_FLAT_FRACTION:.0%} or more of the windows of"
    return (
        f"{subject} {how}{place} (a dead or non-signal channel), so {pronoun} left out of "
        f"every recording; {pin_hint}{example} to choose the channels yourself."
    )

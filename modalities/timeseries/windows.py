"""How long the windows of timeseries sources are: ``modality.window_s``, or the rule for ``window_s = 0``.

With ``window_s = 0`` the data decide:

* **trials**: when a source holds several samples (an ``.npz`` with ``X_train`` shaped
  ``(n_trials, channels, time)``, a UEA set, an xarray object with a sample dim), or when no
  recording is long enough for the rule below, each sample is one window, whole (the samples must
  then be of equal length);
* **continuous recordings**: when every source holds one recording (a ``(channels, time)`` array,
  or a sample dim of length 1) and the longest lasts at least :data:`CONTINUOUS_MIN_WINDOWS`
  derived windows, every recording is cut into windows of :data:`AUTO_WINDOW_PATCHES` patches
  (``16 × patch_s``), every ``stride_s`` (default: the window, no overlap). A recording shorter
  than one such window is skipped with a warning, as with a ``window_s`` that is set.

Sixteen patches give every built-in pretext what it needs from one window (PART's pairs, DINO's
and PW-Self's local crops of 0.1–0.3 of a window holding at least one patch, MAE's, MP3's and
DropPos's grids, SOVE's masked tokens) and two windows or more give what the methods that compare
windows need (DINO's centring, Spatial Reasoning's negatives, SOVE's memories).
"""

from __future__ import annotations

from dataclasses import dataclass

from relpos.errors import ConfigError, DataError

#: Patches per window when ``modality.window_s = 0`` cuts continuous recordings.
AUTO_WINDOW_PATCHES = 16
#: A recording is continuous when the longest lasts at least this many derived windows.
CONTINUOUS_MIN_WINDOWS = 2


@dataclass(frozen=True)
class WindowChoice:
    """The window and stride in samples, and how they were chosen.

    Attributes
    ----------
    window, stride : int
        Samples at the rate of the windows.
    kind : str
        ``"set"`` (``modality.window_s``), ``"continuous"`` (derived from the patch length) or
        ``"whole"`` (each sample one window).
    note : str
        With ``window_s = 0``, the sentence that says what was chosen and why (printed when the data
        are loaded, shown by ``relpos data inspect``); ``""`` when ``window_s`` is set.
    """

    window: int
    stride: int
    kind: str
    note: str = ""


    def describe(self, rate: float) -> str:
        """The window for messages: ``modality.window_s = 10 s``, or how ``window_s = 0`` derived it."""
        if self.kind == "set":
            return f"modality.window_s = {_seconds(self.window, rate)}"
        if self.kind == "continuous":
            return (
                f"{_seconds(self.window, rate)}, {AUTO_WINDOW_PATCHES} patches: modality.window_s = 0 on "
                f"continuous recordings"
            )
        return f"{_seconds(self.window, rate)}, each sample whole: modality.window_s = 0"


def _seconds(samples: int, rate: float) -> str:
    return f"{samples / rate:.6g} s"


def _patch_samples(cfg, rate: float) -> int:
    """The patch length in samples at ``rate`` (at least 1: a shorter patch is refused later, by name)."""
    return max(1, int(cfg.patch_samples) or int(round(cfg.patch_s * rate)))


def choose_windows(n_samples: list[int], lengths: list[int], rate: float, cfg) -> WindowChoice:
    """The window and stride of sources holding ``n_samples[i]`` samples of ``lengths[i]`` time steps each.

    Parameters
    ----------
    n_samples : list of int
        Samples per source (1 for a ``(channels, time)`` recording).
    lengths : list of int
        Time steps per sample of each source, at ``rate`` (after resampling).
    rate : float
        The rate of the windows, Hz.
    cfg : TimeseriesConfig
        ``window_s``, ``stride_s``, ``patch_s`` and ``patch_samples`` are read.

    Raises
    ------
    ConfigError
        When ``window_s`` or ``stride_s`` is shorter than one sample at ``rate``.
    DataError
        When samples of different lengths would each be one window.
    """
    if cfg.window_s > 0:
        window = int(round(cfg.window_s * rate))
        if window < 1:
            raise ConfigError(
                f"'modality.window_s' ({cfg.window_s} s) is shorter than one sample at {rate:g} Hz."
            )
        kind, note = "set", ""
    else:
        patch = _patch_samples(cfg, rate)
        derived = AUTO_WINDOW_PATCHES * patch
        trials = any(n > 1 for n in n_samples)
        if not trials and max(lengths) >= CONTINUOUS_MIN_WINDOWS * derived:
            window, kind = derived, "continuous"
            what = "a continuous recording" if len(lengths) == 1 else f"{len(lengths)} continuous recordings"
            stride = int(round(cfg.stride_s * rate)) if cfg.stride_s > 0 else window
            note = (
                f"modality.window_s = 0 on {what}: cutting {'it' if len(lengths) == 1 else 'them'} into windows "
                f"of {_seconds(window, rate)} ({AUTO_WINDOW_PATCHES} patches of {_seconds(patch, rate)}), "
                f"stride {_seconds(max(stride, 1), rate)}; set modality.window_s to choose."
            )
        else:
            distinct = sorted(set(lengths))
            if len(distinct) > 1:
                why = (
                    "the sources hold trials" if trials else
                    f"no recording lasts {CONTINUOUS_MIN_WINDOWS} windows of {AUTO_WINDOW_PATCHES} patches "
                    f"({_seconds(CONTINUOUS_MIN_WINDOWS * derived, rate)}), which would make it a continuous "
                    f"recording to cut"
                )
                raise DataError(
                    f"modality.window_s = 0 keeps each sample whole here ({why}), but the samples differ in "
                    f"length ({', '.join(f'{n} samples' for n in distinct[:4])} at {rate:g} Hz); set "
                    f"modality.window_s."
                )
            window, kind = distinct[0], "whole"
            count = sum(n_samples)
            held = "trials" if trials else "recordings shorter than " + _seconds(
                CONTINUOUS_MIN_WINDOWS * derived, rate)
            note = (
                f"modality.window_s = 0 on {count} {'sample' if count == 1 else 'samples'} ({held}): each "
                f"sample is one window of {_seconds(window, rate)}."
            )
    stride = int(round(cfg.stride_s * rate)) if cfg.stride_s > 0 else window
    if stride < 1:
        raise ConfigError(f"'modality.stride_s' ({cfg.stride_s} s) is shorter than one sample at {rate:g} Hz.")
    return WindowChoice(window, stride, kind, note)

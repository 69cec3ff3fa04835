"""The options of the ``eeg`` modality (defaults: the PART paper's sleep-EEG recipe) and their checks."""

from __future__ import annotations

import re
from dataclasses import dataclass

from relpos.config import check_fields, setting
from relpos.errors import ConfigError

from .pipeline import split_names

#: Upper bounds of the EEG options: rates up to 1 MHz, durations up to 10 days (what a window's
#: sample count can hold at any sane rate), and patch counts a batch can hold.
MAX_RATE_HZ = 1e6
MAX_DURATION_S = 864000.0
MAX_PATCHES = 65536


@dataclass
class EEGConfig:
    """Options of the EEG modality (defaults: the PART paper's recipe)."""

    channel_types: str = setting("eeg", free="MNE channel types")  # to keep, comma-separated
    # "" (all of those types) | names or glob patterns, comma-separated | "common"
    channels: str = setting("", free="channel names or patterns")
    standardize_names: bool = setting(False)  # rename EEGMMIDB-style dotted labels ("Fc5." -> "FC5") first
    l_freq: float = setting(0.1, ge=0, le=MAX_RATE_HZ)  # band-pass low edge, Hz (0: low-pass only)
    h_freq: float = setting(30.0, gt=0, le=MAX_RATE_HZ)  # band-pass high edge, Hz
    sfreq: float = setting(100.0, gt=0, le=MAX_RATE_HZ)  # resampling rate, Hz
    # mains frequency to notch out, with its harmonics below Nyquist, Hz (0: off)
    notch_freq: float = setting(0.0, ge=0, le=MAX_RATE_HZ)
    reference: str = setting("", free="channel names")  # "" (keep) | "average" | channel name(s), comma-separated
    # fixed (window_s, stride_s) | events (one window per annotation)
    windows: str = setting("fixed", choices=("fixed", "events"))
    window_s: float = setting(30.0, gt=0, le=MAX_DURATION_S)  # window length, s
    # distance between window starts, s (window_s for non-overlapping)
    stride_s: float = setting(5.0, gt=0, le=MAX_DURATION_S)
    # events: window start relative to the annotation onset, s
    event_offset_s: float = setting(0.0, ge=-MAX_DURATION_S, le=MAX_DURATION_S)
    # auto (sleep with 30-s epochs where every recording has its Sleep-EDF hypnogram and the windows are
    # the defaults, else none) | none | annotations (with label_map) | sleep (Sleep-EDF hypnograms, AASM)
    labels: str = setting("auto", choices=("auto", "none", "annotations", "sleep"))
    # annotation description -> class name
    label_map: dict[str, str] = setting({}, free="annotation descriptions and class names")
    # regex on the file name, group 1 = subject ("": Sleep-EDF, EEGMMIDB); compiled in validate()
    subject_pattern: str = setting("", free="a regular expression")
    # a channel whose peak-to-peak in a window is below this (V) is flat
    flat_threshold: float = setting(1e-7, ge=0)
    split: str = setting("train", choices=("train", "test", "all"))  # .npz trials
    npz_unit: str = setting("uV", choices=("V", "mV", "uV"))  # unit of the values in .npz/.npy trials
    # sampling rate of .npy trials (which cannot store it), Hz; 0: not given
    source_sfreq: float = setting(0.0, ge=0, le=MAX_RATE_HZ)
    cache: bool = setting(True)  # cache preprocessed windows on disk ($RELPOS_CACHE_DIR or ~/.cache/relpos)
    # recordings processed at once on the first pass (-1: one per CPU core; 1: one after the other in
    # this process); the windows are the same bit for bit (see parallel.py)
    n_jobs: int = setting(-1, ge=-1, le=4096)
    # auto: recording for recordings (EDF, BDF, FIF..., Raw objects), instance for .npz/.npy trials
    # (printed at load; see common/normalisation_choice.py); instance: each window, each channel to
    # mean 0 / std 1 (the paper's); recording: one robust z-score per channel over the whole recording
    # (median, MAD × 1.4826; see common/normalisation.py); file: the same over all of a file's samples
    # (an .npz's trials of the split read, pooled)
    normalize: str = setting("auto", choices=("auto", "instance", "recording", "file"))
    patch_s: float = setting(1.0, gt=0, le=MAX_DURATION_S)  # patch length, s
    patches_per_window: int = setting(40, ge=2, le=MAX_PATCHES)  # off-grid patches sampled per window
    # none: a token is a patch of every channel over time; montage: a token is one channel's patch, placed at its
    # electrode (x, y, z in head radii) and time (see montage.py, space.py, docs/eeg_space.md)
    space: str = setting("none", choices=("none", "montage"))
    # with space montage: a montage file MNE reads (.elc, .sfp, .loc, .bvef, ...) whose positions come first
    montage: str = setting("", free="a montage file")

    def validate(self) -> None:
        check_fields(self, "modality")  # each value against its declared range (a config made in Python)
        if self.n_jobs == 0:
            raise ConfigError(
                "Invalid value for 'modality.n_jobs': got 0; allowed values are -1 (one process per CPU "
                "core) or a number of processes from 1 (1: one recording after the other)."
            )
        if not 0 <= self.l_freq < self.h_freq:
            raise ConfigError(
                f"The band-pass needs 0 <= l_freq < h_freq, got l_freq={self.l_freq} Hz, h_freq={self.h_freq} Hz."
            )
        if self.h_freq >= self.sfreq / 2:
            raise ConfigError(
                f"'modality.h_freq' ({self.h_freq} Hz) must be below the Nyquist frequency of the "
                f"target rate ({self.sfreq / 2} Hz for sfreq={self.sfreq})."
            )
        if self.patch_s > self.window_s:
            raise ConfigError(
                f"'modality.patch_s' ({self.patch_s} s) is longer than 'modality.window_s' ({self.window_s} s)."
            )
        if self.montage and self.space != "montage":
            raise ConfigError(
                f"'modality.montage' ({self.montage!r}) places channels for 'modality.space' 'montage', but "
                f"'modality.space' is {self.space!r}; set modality.space=montage or leave modality.montage empty."
            )
        if not split_names(self.channel_types):
            raise ConfigError("'modality.channel_types' is empty; give MNE channel types, e.g. 'eeg' or 'eeg,eog'.")
        if self.subject_pattern:
            try:
                re.compile(self.subject_pattern)
            except re.error as exc:
                raise ConfigError(
                    f"Invalid value for 'modality.subject_pattern': {self.subject_pattern!r} is not a "
                    f"regular expression ({exc})."
                ) from None

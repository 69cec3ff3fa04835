"""The ``eeg`` modality: recordings read with MNE, or trials stored as NumPy arrays, cut into windows.

Modules: :mod:`.config` (the options), :mod:`.modality` (the Modality class), :mod:`.sources`
(finding recordings, hypnograms and subjects), :mod:`.reading` (opening one recording),
:mod:`.build` (recordings to the cached windows), :mod:`.channel_policy` (which channels are kept),
:mod:`.pipeline` (one recording to windows),
:mod:`.dsp` (MNE's filter and resampling numbers for blocks of channels), :mod:`.trials` (NumPy
trial archives), :mod:`.edf_header` (truncated EDF files) and :mod:`.sleep_edf` (the Sleep-EDF data
set). The pluggy hooks that register it are here.
"""

from __future__ import annotations

from relpos import hookimpl

from .config import EEGConfig
from .modality import SAMPLE, EEGModality
from .sources import RECORDING_SUFFIXES

__all__ = ["EEGConfig", "EEGModality", "RECORDING_SUFFIXES", "SAMPLE"]


@hookimpl
def register_modalities(register):
    register(EEGModality)


@hookimpl
def register_datasets(register):
    from .sleep_edf import SleepEDF

    register(SleepEDF)

"""The ``eeg`` modality: 1 axis (time), samples as native units.

Recordings are read with MNE (``mne.io.read_raw``: EDF, BDF, FIF, BrainVision, EEGLAB, GDF, ...),
EEG channels are picked, band-pass filtered and resampled, cut into fixed windows, and each window is
instance-normalised per channel. The defaults are the PART paper's sleep-EEG recipe: 0.1–30 Hz,
100 Hz, 30-second windows, 1-second patches, 40 of them sampled per window. Each patch spans every
channel and is tokenised by one linear layer.

The package ships one real recording, ``eegmmidb_S001R02.edf`` (PhysioNet EEG Motor
Movement/Imagery Dataset, subject 1, run 2; see ``ATTRIBUTION.md`` beside it). It lasts 61 s, so the
default stride (5 s) overlaps windows to give it 7 of them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from relpos import hookimpl
from relpos.errors import ConfigError, DataError, warn
from relpos.modality import Modality, Windows

RECORDING_SUFFIXES = (".edf", ".bdf", ".fif", ".fif.gz", ".vhdr", ".set", ".gdf", ".cnt", ".mff", ".nxe")
SAMPLE = Path(__file__).parent / "data" / "eegmmidb_S001R02.edf"


@dataclass
class EEGConfig:
    """Options of the EEG modality (defaults: the PART paper's recipe)."""

    channel_types: str = "eeg"  # MNE channel type(s) to keep, comma-separated
    l_freq: float = 0.1  # band-pass low edge, Hz
    h_freq: float = 30.0  # band-pass high edge, Hz
    sfreq: float = 100.0  # resampling rate, Hz
    window_s: float = 30.0  # window length, s
    stride_s: float = 5.0  # distance between window starts, s (window_s for non-overlapping)
    patch_s: float = 1.0  # patch length, s
    patches_per_window: int = 40  # off-grid patches sampled per window

    def validate(self) -> None:
        for key in ("sfreq", "window_s", "stride_s", "patch_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"'modality.{key}' must be positive, got {getattr(self, key)}.")
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
        if self.patches_per_window < 2:
            raise ConfigError(f"'modality.patches_per_window' must be at least 2, got {self.patches_per_window}.")


def _is_recording(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in RECORDING_SUFFIXES)


class EEGModality(Modality):
    """EEG recordings read with MNE, filtered, resampled and cut into windows."""

    name = "eeg"
    axes = ("time",)
    Config = EEGConfig

    def __init__(self, config=None):
        super().__init__(config)
        self.config.validate()

    def default_data(self) -> str:
        return str(SAMPLE)

    def patch_size(self) -> tuple[float, ...]:
        return (self.config.patch_s * self.config.sfreq,)

    def default_num_patches(self, extent) -> int:
        return self.config.patches_per_window

    # -- loading -------------------------------------------------------------------------------
    def load(self, data) -> Windows:
        paths = self._resolve_paths(data)
        windows, groups, names, skipped = [], [], None, []
        for path in paths:
            raw = self._read(path)
            x = self._windows_of(raw, path, strict=len(paths) == 1)
            if x is None:
                skipped.append(path.name)
                continue
            if names is None:
                names = raw.ch_names
            elif len(raw.ch_names) != len(names):
                raise DataError(
                    f"Recording {str(path)!r} has {len(raw.ch_names)} channels but earlier recordings "
                    f"have {len(names)}; all recordings must share their channels."
                )
            windows.append(x)
            groups.extend([path.stem] * len(x))
        if not windows:
            raise DataError(
                f"Every recording in {str(data)!r} is shorter than one window "
                f"({self.config.window_s} s): {', '.join(skipped)}."
            )
        x = torch.from_numpy(np.concatenate(windows)).float()
        info = {
            "sfreq": self.config.sfreq,
            "ch_names": list(names),
            "n_recordings": len(windows),
            "skipped": skipped,
            "source": str(data),
        }
        return Windows(x=x, labels=None, groups=np.array(groups), info=info)

    def _resolve_paths(self, data) -> list[Path]:
        path = Path(data)
        if not path.exists():
            raise DataError(f"Data path {str(path)!r} does not exist.")
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and _is_recording(p))
            if not files:
                raise DataError(
                    f"No recordings found in folder {str(path)!r} (looked recursively for "
                    f"{', '.join(RECORDING_SUFFIXES)})."
                )
            return files
        return [path]

    def _read(self, path: Path):
        import mne

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raw = mne.io.read_raw(path, preload=True, verbose="error")
        except Exception as exc:  # noqa: BLE001 - MNE raises many kinds for a bad file
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise DataError(f"Cannot read {str(path)!r} as an EEG recording with MNE: {reason}") from None
        types = [t.strip() for t in self.config.channel_types.split(",") if t.strip()]
        present = sorted(set(raw.get_channel_types()))
        if not any(t in present for t in types):
            raise DataError(
                f"Recording {str(path)!r} has no channels of type {', '.join(types)}; its channel "
                f"types are {', '.join(present)} (set modality.channel_types)."
            )
        raw.pick([t for t in types if t in present], verbose="error")
        cfg = self.config
        if raw.info["sfreq"] <= 2 * cfg.h_freq:
            raise DataError(
                f"Recording {str(path)!r} is sampled at {raw.info['sfreq']} Hz, not above twice the "
                f"band-pass high edge ({cfg.h_freq} Hz); lower modality.h_freq."
            )
        raw.filter(cfg.l_freq or None, cfg.h_freq, verbose="error")
        if raw.info["sfreq"] != cfg.sfreq:
            raw.resample(cfg.sfreq, verbose="error")
        return raw

    def _windows_of(self, raw, path: Path, strict: bool) -> np.ndarray | None:
        cfg = self.config
        data = raw.get_data()  # (channels, samples), volts
        window = int(round(cfg.window_s * cfg.sfreq))
        stride = int(round(cfg.stride_s * cfg.sfreq))
        duration = data.shape[1] / cfg.sfreq
        if data.shape[1] < window:
            if strict:
                raise DataError(
                    f"Recording {str(path)!r} lasts {duration:.1f} s, shorter than one window "
                    f"(modality.window_s = {cfg.window_s} s)."
                )
            warn(f"Skipping {str(path)!r}: it lasts {duration:.1f} s, shorter than one window ({cfg.window_s} s).")
            return None
        starts = np.arange(0, data.shape[1] - window + 1, stride)
        x = np.lib.stride_tricks.sliding_window_view(data, window, axis=1)[:, starts]  # (C, W, T)
        x = np.ascontiguousarray(x.transpose(1, 0, 2), dtype=np.float64)
        mean = x.mean(axis=-1, keepdims=True)
        std = x.std(axis=-1, keepdims=True)
        return ((x - mean) / np.maximum(std, 1e-12)).astype(np.float32)


@hookimpl
def register_modalities(register):
    register(EEGModality)

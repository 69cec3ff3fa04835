"""An example third-party relpos plugin: the ``npysignal`` modality.

It opens a NumPy ``.npy`` file holding signals ``(n_signals, n_channels, n_samples)`` and
standardises each signal per channel. PART (and every other pretext that works on one axis) then
trains on it with no further code::

    pip install -e examples/relpos-npysignal
    relpos plugins                       # lists npysignal, from relpos-npysignal
    relpos train --modality npysignal --pretext part --data signals.npy
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import relpos
from relpos.config import setting
from relpos.errors import DataError


@dataclass
class NpySignalConfig:
    # Each field declares the values it accepts; relpos checks them when the config is resolved
    # (`relpos train --print-config` already rejects --set modality.patch_size=0).
    patch_size: int = setting(16, ge=1, le=2**20)  # samples per patch
    patches_per_signal: int = setting(0, also=(0,), ge=2, le=65536)  # 0: as many as fit on the grid


class NpySignal(relpos.Modality):
    """Signals (n, channels, samples) from a NumPy .npy file."""

    name = "npysignal"
    axes = ("time",)
    Config = NpySignalConfig

    def load(self, data):
        array = data if isinstance(data, np.ndarray) else None
        if array is None:
            path = Path(data)
            if not path.is_file():
                raise DataError(f"Data path {str(path)!r} does not exist.")
            try:
                array = np.load(path, allow_pickle=False)
            except Exception as exc:  # noqa: BLE001
                raise DataError(f"Cannot read {str(path)!r} as a .npy array: {exc}.") from None
        if array.ndim != 3:
            raise DataError(f"Expected an array (n_signals, n_channels, n_samples), got shape {list(array.shape)}.")
        x = torch.as_tensor(array, dtype=torch.float32)
        x = (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True).clamp_min(1e-8)
        return relpos.Windows(x=x)

    def default_num_patches(self, extent):
        return self.config.patches_per_signal or super().default_num_patches(extent)


@relpos.hookimpl
def register_modalities(register):
    register(NpySignal)

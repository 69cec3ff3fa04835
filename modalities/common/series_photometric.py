"""Augmentation of time-series views' patches (EEG, sensor data), batched on the batch's device.

The standard EEG augmentations, as braindecode's ``augmentation`` module defines them, written on
the ``(R, N, C, T)`` patches of ``R`` views (braindecode's transforms take whole ``(B, C, T)``
windows and one parameter set per call, so they cannot draw per view or per patch). Each is applied
with p = 0.5, with parameters drawn per view (every patch of a view alike) or per patch
(PW-Self's patch-level augmentation), from the run's ``torch.Generator``:

* amplitude scaling by a factor ~ U(0.5, 2) per channel (braindecode's ``AmplitudeScale``
  default range);
* Gaussian noise of σ = 0.1 (``GaussianNoise``; windows are normalised to unit variance);
* channel dropout, each channel zeroed with probability 0.2 (``ChannelsDropout``);
* time masking: a stretch of up to 10 % of the view (``SmoothTimeMask``, here with hard edges)
  set to zero; per patch, up to 10 % of the patch.

The view kind (global or local) does not change the recipe for time series.
"""

from __future__ import annotations

import torch

APPLY_P = 0.5
SCALE_RANGE = (0.5, 2.0)
NOISE_STD = 0.1
CHANNEL_DROP_P = 0.2
MASK_FRACTION = 0.1


def photometric_series(patches: torch.Tensor, generator: torch.Generator, per_patch: bool) -> torch.Tensor:
    """Augment ``(R, N, C, T)`` patches of ``R`` views (see the module docstring)."""
    rows, n_patches, channels, length = patches.shape
    device = patches.device
    units = (rows, n_patches) if per_patch else (rows, 1)

    def chance(shape=()):
        return torch.rand((*units, *shape), generator=generator) < APPLY_P

    def spread(t: torch.Tensor) -> torch.Tensor:  # (rows, 1 | N, ...) → (rows, N, ...)
        return t.expand(rows, n_patches, *t.shape[2:]).to(device)

    x = patches
    low, high = SCALE_RANGE
    scale = low + (high - low) * torch.rand((*units, channels), generator=generator)
    scale = torch.where(chance((1,)), scale, torch.ones_like(scale))
    x = x * spread(scale).unsqueeze(-1).to(x.dtype)

    noise = torch.randn(x.shape, generator=generator).to(device, x.dtype)
    x = x + noise * NOISE_STD * spread(chance((1, 1))).to(x.dtype)

    dropped = (torch.rand((*units, channels), generator=generator) < CHANNEL_DROP_P) & chance((1,))
    x = x * (~spread(dropped)).unsqueeze(-1).to(x.dtype)

    # A masked stretch in the view's (or the patch's) own time: positions along the view run over
    # its N patches of T samples.
    span = length if per_patch else n_patches * length
    mask_len = (torch.rand(units, generator=generator) * MASK_FRACTION * span).floor()
    mask_start = (torch.rand(units, generator=generator) * (span - mask_len)).floor()
    mask_len = torch.where(chance(), mask_len, torch.zeros_like(mask_len))
    if per_patch:
        t = torch.arange(length).view(1, 1, length)
    else:
        t = (torch.arange(n_patches).view(1, n_patches, 1) * length + torch.arange(length).view(1, 1, length))
    masked = (t >= mask_start.unsqueeze(-1)) & (t < (mask_start + mask_len).unsqueeze(-1))  # (rows, N, T)
    x = x.masked_fill(masked.to(device).unsqueeze(2), 0.0)
    return x

"""Photometric augmentation of image views' patches (kornia), batched with per-view or per-patch parameters.

The views of a multi-view pretext are never materialised as images: every token patch is cut from
the sample directly (:func:`relpos.views.extract_view_tokens`). The augmentations therefore run on
the ``(R, N, C, P, P)`` patches of ``R`` views, with parameters drawn per view (every patch of a
view gets the same colour jitter, as if the view had been jittered) or per patch (PW-Self §3.3).
Parameters come from the run's ``torch.Generator`` (so resume stays exact) and the operations are
kornia's, on the batch's device.

DINO's recipe (``view``): colour jitter (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1)
with p = 0.8, greyscale with p = 0.2, Gaussian blur with p = 1.0 / 0.1 / 0.5 for the first global /
second global / local views and solarisation with p = 0.2 on the second global view.
Differences from torchvision's pipeline, all for batching: the jitter applies its four operations in
a fixed order (brightness, contrast, saturation, hue) rather than a random one; the blur runs on each
patch with reflected borders (a patch is blurred without its neighbours), its σ ~ U(0.1, 2.0) px is
scaled by ``image_size / 224`` and its kernel is the largest odd size ≤ 23 that fits a patch.

PW-Self's patch-level recipe (``per_patch=True``): each patch independently draws each of colour
jitter, solarisation, Gaussian blur and Gaussian noise (σ ~ U(0, 0.1) of the [0, 1] range) with
p = 0.5.
"""

from __future__ import annotations

import math

import torch

#: Blur and solarisation probabilities per view kind (DINO's ``DataAugmentationDINO``).
VIEW_RECIPES = {
    "global-1": {"blur": 1.0, "solarize": 0.0},
    "global-2": {"blur": 0.1, "solarize": 0.2},
    "local": {"blur": 0.5, "solarize": 0.0},
}
JITTER_P, GREY_P = 0.8, 0.2
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0.4, 0.4, 0.2, 0.1
PATCH_OP_P = 0.5
NOISE_MAX = 0.1


def _uniform(shape, low, high, generator, device):
    return (low + (high - low) * torch.rand(shape, generator=generator)).to(device)


def _chance(shape, p, generator, device):
    return (torch.rand(shape, generator=generator) < p).to(device)


class _Draw:
    """Draws one parameter per view (broadcast over its N patches) or one per patch."""

    def __init__(self, rows: int, n_patches: int, per_patch: bool, generator: torch.Generator, device):
        self.shape = (rows, n_patches) if per_patch else (rows, 1)
        self.full = (rows, n_patches)
        self.generator = generator
        self.device = device

    def uniform(self, low: float, high: float) -> torch.Tensor:
        return _uniform(self.shape, low, high, self.generator, self.device).expand(self.full).reshape(-1)

    def chance(self, p: float) -> torch.Tensor:
        return _chance(self.shape, p, self.generator, self.device).expand(self.full).reshape(-1)


def _select(mask: torch.Tensor, changed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, *([1] * (original.dim() - 1))), changed, original)


def _grey(x: torch.Tensor) -> torch.Tensor:
    import kornia

    return kornia.color.rgb_to_grayscale(x) if x.shape[1] == 3 else x


def colour_jitter(x: torch.Tensor, draw: _Draw, apply: torch.Tensor, rows: int) -> torch.Tensor:
    """Brightness, contrast, saturation and hue; contrast blends towards the mean grey of each view."""
    import kornia

    out = x * draw.uniform(1 - BRIGHTNESS, 1 + BRIGHTNESS).view(-1, 1, 1, 1)
    out = out.clamp(0, 1)
    # Contrast blends towards the mean grey level of the image, as torchvision's does: the view's
    # (all its patches) for view-level parameters, the patch's own for patch-level ones.
    grey = _grey(out)
    if draw.shape[1] == 1:
        per_view = grey.reshape(rows, -1).mean(1)
        grey_mean = per_view.repeat_interleave(out.shape[0] // rows).view(-1, 1, 1, 1)
    else:
        grey_mean = grey.mean(dim=(1, 2, 3), keepdim=True)
    factor = draw.uniform(1 - CONTRAST, 1 + CONTRAST).view(-1, 1, 1, 1)
    out = (grey_mean + factor * (out - grey_mean)).clamp(0, 1)
    if x.shape[1] == 3:
        out = kornia.enhance.adjust_saturation(out, draw.uniform(1 - SATURATION, 1 + SATURATION))
        out = kornia.enhance.adjust_hue(out, draw.uniform(-HUE, HUE) * 2 * math.pi)
    return _select(apply, out, x)


def gaussian_blur(x: torch.Tensor, draw: _Draw, apply: torch.Tensor, image_size: int) -> torch.Tensor:
    import kornia

    side = min(x.shape[-2:])
    kernel = min(23, side if side % 2 else side - 1)
    if kernel < 3:
        return x  # a patch of 1–2 px cannot be blurred on its own
    sigma = draw.uniform(0.1, 2.0) * (image_size / 224)
    blurred = kornia.filters.gaussian_blur2d(x, (kernel, kernel), torch.stack([sigma, sigma], -1))
    return _select(apply, blurred, x)


def solarize(x: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    import kornia

    return _select(apply, kornia.enhance.solarize(x, 0.5), x)


def photometric_images(
    patches: torch.Tensor,
    generator: torch.Generator,
    view: str,
    per_patch: bool,
    image_size: int,
) -> torch.Tensor:
    """Augment ``(R, N, C, P, P)`` patches in the modality's normalised range (``(x − 0.5) / 0.5``).

    See the module docstring for the recipes.
    """
    if view not in VIEW_RECIPES:
        raise ValueError(f"Unknown view kind {view!r}; expected one of {', '.join(VIEW_RECIPES)}.")
    rows, n_patches = patches.shape[:2]
    device = patches.device
    x = (patches.reshape(rows * n_patches, *patches.shape[2:]).float() * 0.5 + 0.5).clamp(0, 1)
    draw = _Draw(rows, n_patches, per_patch, generator, device)
    if per_patch:
        x = colour_jitter(x, draw, draw.chance(PATCH_OP_P), rows)
        x = solarize(x, draw.chance(PATCH_OP_P))
        x = gaussian_blur(x, draw, draw.chance(PATCH_OP_P), image_size)
        noise_std = draw.uniform(0.0, NOISE_MAX) * draw.chance(PATCH_OP_P)
        noise = torch.randn(x.shape, generator=generator).to(device)
        x = (x + noise * noise_std.view(-1, 1, 1, 1)).clamp(0, 1)
    else:
        recipe = VIEW_RECIPES[view]
        x = colour_jitter(x, draw, draw.chance(JITTER_P), rows)
        if x.shape[1] == 3:
            x = _select(draw.chance(GREY_P), _grey(x).expand_as(x), x)
        x = gaussian_blur(x, draw, draw.chance(recipe["blur"]), image_size)
        if recipe["solarize"] > 0:
            x = solarize(x, draw.chance(recipe["solarize"]))
    return ((x - 0.5) / 0.5).reshape(patches.shape).to(patches.dtype)

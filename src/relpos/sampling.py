"""Patch samplers: where the boxes go.

All samplers are batched (one call gives every box of every sample), draw their randomness from a
``torch.Generator`` so that a run is reproducible and resumable, and work for any number of axes.
Random numbers are drawn on the generator's device (CPU by default) and the boxes are then moved to
the requested device, so the same seed gives the same boxes on CPU and GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .errors import ConfigError
from .geometry import Boxes, BoxLayout
from .transfer import to_device


def _as_tuple(value: float | Sequence[float], n_axes: int, name: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        return (float(value),) * n_axes
    value = tuple(float(v) for v in value)
    if len(value) != n_axes:
        raise ConfigError(f"'{name}' needs one value per axis ({n_axes}), got {list(value)}.")
    return value


def _check_range(name: str, value: Sequence[float], lowest: float) -> tuple[float, float]:
    value = tuple(float(v) for v in value)
    if len(value) != 2 or not (lowest < value[0] <= value[1]):
        raise ConfigError(
            f"Invalid value for '{name}': expected [low, high] with {lowest} < low <= high, "
            f"got {list(value)}."
        )
    return value  # type: ignore[return-value]


def check_size_ranges(
    scale_range: Sequence[float], aspect_range: Sequence[float], prefix: str = ""
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Check PART's box size ranges together: ``(scale_range, aspect_range)`` as float pairs.

    ``scale_range`` bounds every side's factor (side / patch size); a box of aspect ratio ``a`` has
    sides in the ratio ``a``, so every ``a`` of ``aspect_range`` must satisfy
    ``low / high <= a <= high / low``, or no box of that shape fits the side bounds.

    Parameters
    ----------
    scale_range, aspect_range : (low, high)
        Both with ``0 < low <= high``.
    prefix : str
        Put before the keys in messages, e.g. ``"pretext."``.

    Raises
    ------
    ConfigError
        One sentence naming the key, the value received and what is allowed.
    """
    lo_s, hi_s = _check_range(f"{prefix}scale_range", scale_range, 0.0)
    lo_a, hi_a = _check_range(f"{prefix}aspect_range", aspect_range, 0.0)
    widest = hi_s / lo_s
    # A relative tolerance, so [0.5, 2] with [0.25, 4] (exactly the widest) is accepted.
    if lo_a * widest < 1 - 1e-9 or hi_a > widest * (1 + 1e-9):
        raise ConfigError(
            f"Invalid value for '{prefix}aspect_range': with '{prefix}scale_range' {[lo_s, hi_s]} every side "
            f"stays within {lo_s:g} to {hi_s:g} patch sizes, so the aspect ratio (width / height) must lie "
            f"within [{1 / widest:.4g}, {widest:.4g}], got {[lo_a, hi_a]}; widen '{prefix}scale_range' "
            f"(e.g. [0.5, 2.0] allows aspect ratios [0.25, 4])."
        )
    return (lo_s, hi_s), (lo_a, hi_a)


def sample_offgrid(
    batch_size: int,
    extent: Sequence[int],
    patch_size: float | Sequence[float],
    n_patches: int,
    generator: torch.Generator | None = None,
    scale_range: Sequence[float] = (1.0, 1.0),
    aspect_range: Sequence[float] = (1.0, 1.0),
    device: torch.device | str | None = None,
) -> Boxes:
    """Sample boxes at continuous uniform positions (PART's off-grid sampling).

    ``scale_range`` bounds every side: side ``d`` of every box lies in ``[low · patch_d, high ·
    patch_d]``, as PART's extension keeps each patch side within half and twice the ViT patch size.
    Each box has a scale ``s`` (its size factor, the geometric mean of its sides' factors) and, with
    two or more axes, an aspect ratio ``a ~ logU(aspect_range)`` that stretches the last axis by
    ``sqrt(a)`` and shrinks the one before by ``sqrt(a)`` (width / height = a). For the drawn ``a``,
    ``s`` is uniform over the scales that keep both stretched sides within the bounds,
    ``[low · max(√a, 1/√a), high · min(√a, 1/√a)]`` (all of ``scale_range`` when ``a = 1``), so
    both ends of the side range are reached at every aspect ratio. ``aspect_range`` must therefore
    lie within ``[low / high, high / low]`` (:func:`check_size_ranges`). Box corners are drawn
    uniformly so that every box lies inside the sample, as in the paper (top-left corner uniform in
    ``[0, W − w]``).

    Parameters
    ----------
    batch_size : int
        Number of samples B.
    extent : sequence of int
        Sample extent per axis in native units, e.g. ``(H, W)`` or ``(T,)``.
    patch_size : float or sequence of float
        Box size per axis at scale 1, in native units.
    n_patches : int
        Boxes per sample N.
    scale_range, aspect_range : (low, high)
        Range of every side's factor (side / patch size) and of the aspect ratio; ``(1, 1)`` for
        both keeps every box at ``patch_size``.

    Returns
    -------
    Boxes
        ``(B, N, D)`` centres and sizes.
    """
    n_axes = len(extent)
    base = torch.tensor(_as_tuple(patch_size, n_axes, "patch_size"), dtype=torch.float32)
    ext = torch.tensor([float(e) for e in extent], dtype=torch.float32)
    if n_axes < 2 and tuple(float(v) for v in aspect_range) != (1.0, 1.0):
        raise ConfigError(
            f"'aspect_range' needs at least 2 axes, but this data has {n_axes}; use scale_range."
        )
    (lo_s, hi_s), (lo_a, hi_a) = check_size_ranges(scale_range, aspect_range)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    shape = (batch_size, n_patches)
    size = base.to(gen_device).expand(*shape, n_axes).clone()
    stretch = None
    if (lo_a, hi_a) != (1.0, 1.0):
        log_a = math.log(lo_a) + (math.log(hi_a) - math.log(lo_a)) * torch.rand(
            shape, generator=generator, device=gen_device
        )
        stretch = torch.exp(log_a / 2)  # √a
    if (lo_s, hi_s) != (1.0, 1.0):
        # The scales that keep both stretched sides, s·√a and s/√a, within [lo_s, hi_s].
        longest = torch.maximum(stretch, 1 / stretch) if stretch is not None else torch.ones(shape, device=gen_device)
        low, high = lo_s * longest, hi_s / longest
        scale = low + (high - low) * torch.rand(shape, generator=generator, device=gen_device)
        size = size * scale.unsqueeze(-1)
    if stretch is not None:
        size[..., -1] = size[..., -1] * stretch
        size[..., -2] = size[..., -2] / stretch
    ext = ext.to(gen_device)
    size = torch.minimum(size, ext)  # a box never exceeds the sample
    free = ext - size
    start = torch.rand((*shape, n_axes), generator=generator, device=gen_device) * free
    # At scale 1 every box has the patch size (at most the extent) and lies inside: said on the host
    # so that extraction reads nothing back (geometry.BoxLayout).
    unscaled = tuple(scale_range) == (1.0, 1.0) and tuple(aspect_range) == (1.0, 1.0)
    layout = None
    if unscaled:
        sides = (float(np.float32(p)) for p in _as_tuple(patch_size, n_axes, "patch_size"))  # the float32 sizes
        layout = BoxLayout(tuple(min(p, float(e)) for p, e in zip(sides, extent)), tuple(int(e) for e in extent))
    boxes = Boxes(center=start + size / 2, size=size, layout=layout)
    return boxes.to(device) if device is not None else boxes


def grid_boxes(
    extent: Sequence[int],
    patch_size: float | Sequence[float],
    device: torch.device | str | None = None,
) -> Boxes:
    """Non-overlapping boxes on a regular grid, row-major (the ViT / PART-grid patching).

    The grid covers ``floor(extent / patch_size)`` cells per axis starting at 0; a remainder at the
    far edge is left out, as a ViT patch embedding does.

    Returns
    -------
    Boxes
        ``(N, D)`` with ``N = prod(floor(extent_d / patch_d))``.
    """
    n_axes = len(extent)
    size = _as_tuple(patch_size, n_axes, "patch_size")
    counts = [int(math.floor(e / s + 1e-9)) for e, s in zip(extent, size)]
    if min(counts) < 1:
        raise ConfigError(
            f"The patch size {list(size)} does not fit in a sample of extent {list(extent)}."
        )
    axes = [(torch.arange(n, dtype=torch.float32) + 0.5) * s for n, s in zip(counts, size)]
    centers = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, n_axes)
    sizes = torch.tensor(size, dtype=torch.float32).expand_as(centers).clone()
    layout = BoxLayout(tuple(float(s) for s in size), tuple(int(e) for e in extent),
                       integer=all(float(s).is_integer() for s in size))  # cell i starts at i · size
    boxes = Boxes(centers, sizes, layout)
    return boxes.to(device) if device is not None else boxes


def grid_count(extent: Sequence[int], patch_size: float | Sequence[float]) -> int:
    """Number of grid patches that fit in ``extent``."""
    size = _as_tuple(patch_size, len(extent), "patch_size")
    return int(math.prod(int(math.floor(e / s + 1e-9)) for e, s in zip(extent, size)))


def sample_pairs(
    batch_size: int,
    n_patches: int,
    n_pairs: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (reference, target) index pairs with reference ≠ target, drawn with replacement.

    Returns
    -------
    ref, tgt : torch.Tensor
        ``(B, n_pairs)`` long tensors of patch indices.
    """
    if n_patches < 2:
        raise ConfigError(f"Relative pairs need at least 2 patches per sample, got {n_patches}.")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    shape = (batch_size, n_pairs)
    ref = torch.randint(0, n_patches, shape, generator=generator, device=gen_device)
    offset = torch.randint(1, n_patches, shape, generator=generator, device=gen_device)
    tgt = (ref + offset) % n_patches
    if device is not None:
        ref, tgt = to_device(ref, device), to_device(tgt, device)
    return ref, tgt


def sample_near_pairs(
    boxes: Boxes,
    n_pairs: int,
    max_offset: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (reference, target) pairs whose centres are at most ``max_offset`` reference sizes apart.

    The reference is drawn uniformly; the target uniformly among the other patches whose centre
    lies within ``max_offset`` times the reference's size of the reference's centre on every axis.
    A reference without such a neighbour is paired with its nearest other patch (largest offset
    over the axes smallest), not with any patch: a far pair is what the option exists to avoid.

    Parameters
    ----------
    boxes : Boxes
        ``(B, N, D)`` the sample's boxes.
    n_pairs : int
    max_offset : float
        Largest |Δc| / s_ref per axis, e.g. 1.0 for patches that overlap or touch.
    generator : torch.Generator, optional

    Returns
    -------
    ref, tgt : torch.Tensor
        ``(B, n_pairs)`` long tensors of patch indices, on the boxes' device.
    """
    center, size = boxes.center, boxes.size
    batch_size, n_patches = center.shape[:2]
    if n_patches < 2:
        raise ConfigError(f"Relative pairs need at least 2 patches per sample, got {n_patches}.")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    ref = torch.randint(0, n_patches, (batch_size, n_pairs), generator=generator, device=gen_device)
    # (B, ref, tgt): offsets in units of the reference's size, on every axis.
    offset = (center[:, None, :, :] - center[:, :, None, :]).abs() / size[:, :, None, :]
    other = ~torch.eye(n_patches, dtype=torch.bool, device=center.device)
    near = (offset <= max_offset).all(dim=-1) & other
    largest = offset.amax(dim=-1).masked_fill(~other, float("inf"))
    nearest = (largest == largest.amin(dim=-1, keepdim=True)) & other
    allowed = torch.where(near.any(dim=-1, keepdim=True), near, nearest)
    # The k-th allowed target of each pair's reference, k uniform: (B, n_pairs, N) counts, which
    # is smaller than the (B, n_pairs, dim) pair queries PART's head builds anyway.
    rows = allowed.to(gen_device).gather(1, ref.unsqueeze(-1).expand(-1, -1, n_patches))
    counts = rows.sum(dim=-1)
    k = (torch.rand((batch_size, n_pairs), generator=generator, device=gen_device) * counts).long()
    k = torch.minimum(k, counts - 1)
    tgt = (rows.cumsum(dim=-1) > k.unsqueeze(-1)).to(torch.int8).argmax(dim=-1)
    return ref.to(center.device), tgt.to(center.device)

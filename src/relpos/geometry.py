"""Axis-generic patch geometry.

A patch is a box with a centre and a size per axis, in the sample's native units (pixels for
images, samples for time series). Axis order follows the tensor layout: for an image ``(C, H, W)``
the axes are ``(row, col)``; for a time series ``(C, T)`` there is one axis, ``time``.

The relative transform from a reference box to a target box is PART's equation (1) and its
scale/aspect extension, written once for any number of axes::

    Δc_d = (c_tgt,d − c_ref,d) / s_ref,d          (Δt for 1 axis; Δy, Δx for 2)
    Δs_d = s_tgt,d / s_ref,d                      (Δh, Δw when sizes vary)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .transfer import to_device


@dataclass(frozen=True)
class BoxLayout:
    """What a sampler knows of all its boxes, on the host: read by :func:`relpos.extract_patches`
    instead of the boxes' values, so that choosing its road reads nothing back from an accelerator.

    A promise about every box: a layout that does not hold gives wrong patches. The built-in samplers
    set it (:func:`relpos.sample_offgrid` at scale 1, :func:`relpos.grid_boxes`, the views' token
    boxes through :func:`relpos.extraction.layout_of`); boxes made by hand have none, and extraction
    then reads their values.

    Attributes
    ----------
    size : tuple of float or None
        The size of every box, per axis; None: the boxes are not all of the patch size, so they are
        resampled (``grid_sample``), wherever they lie.
    extent : tuple of int
        The sample extent every box lies within (corners in ``[0, extent]`` on every axis).
    integer : bool
        Every box starts at a whole number on every axis (grid patches).
    """

    size: tuple[float, ...] | None
    extent: tuple[int, ...]
    integer: bool = False


@dataclass(frozen=True)
class Boxes:
    """A batch of axis-aligned boxes.

    Attributes
    ----------
    center : torch.Tensor
        ``(..., D)`` box centres in native units.
    size : torch.Tensor
        ``(..., D)`` box sizes (extent per axis) in native units, all positive.
    layout : BoxLayout or None
        What the sampler knows of every box (host-side; see :class:`BoxLayout`), or None.
    """

    center: torch.Tensor
    size: torch.Tensor
    layout: BoxLayout | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.center.shape != self.size.shape:
            raise ValueError(
                f"Boxes need centre and size of the same shape, got {tuple(self.center.shape)} "
                f"and {tuple(self.size.shape)}."
            )

    @property
    def n_axes(self) -> int:
        return self.center.shape[-1]

    @property
    def start(self) -> torch.Tensor:
        """Lower corner (inclusive) per axis."""
        return self.center - self.size / 2

    @property
    def end(self) -> torch.Tensor:
        """Upper corner (exclusive) per axis."""
        return self.center + self.size / 2

    @classmethod
    def from_corners(cls, start: torch.Tensor, end: torch.Tensor) -> "Boxes":
        start = torch.as_tensor(start, dtype=torch.float32)
        end = torch.as_tensor(end, dtype=torch.float32)
        return cls(center=(start + end) / 2, size=end - start)

    def to(self, device: torch.device | str) -> "Boxes":
        # pinned and without blocking from the host to CUDA (relpos.transfer)
        return Boxes(to_device(self.center, device), to_device(self.size, device), self.layout)

    def expand(self, batch_size: int) -> "Boxes":
        """``(N, D)`` boxes (one sample's) as ``(batch_size, N, D)``, without a copy."""
        return Boxes(self.center.expand(batch_size, -1, -1), self.size.expand(batch_size, -1, -1), self.layout)

    def gather(self, index: torch.Tensor) -> "Boxes":
        """Select boxes along the patch dimension: ``(B, N, D)`` boxes and ``(B, M)`` indices."""
        idx = index.unsqueeze(-1).expand(*index.shape, self.n_axes)
        return Boxes(self.center.gather(-2, idx), self.size.gather(-2, idx), self.layout)


def relative_transform(ref: Boxes, tgt: Boxes, with_size: bool = False) -> torch.Tensor:
    """Relative transform θ that maps the reference box onto the target box.

    Parameters
    ----------
    ref, tgt : Boxes
        Boxes of the same shape ``(..., D)``.
    with_size : bool
        Also return the size ratios ``s_tgt / s_ref`` per axis (PART's Δw, Δh extension).

    Returns
    -------
    torch.Tensor
        ``(..., D)`` centre offsets in units of the reference size, followed by ``(..., D)`` size
        ratios when ``with_size`` is true (so ``(..., 2D)``).
    """
    delta_center = (tgt.center - ref.center) / ref.size
    if not with_size:
        return delta_center
    return torch.cat([delta_center, tgt.size / ref.size], dim=-1)


def target_dim(n_axes: int, with_size: bool) -> int:
    """Number of values :func:`relative_transform` returns per pair."""
    return 2 * n_axes if with_size else n_axes

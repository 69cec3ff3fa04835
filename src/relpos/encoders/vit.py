"""``vit``: relpos's patch transformer (:class:`relpos.PatchEncoder`) as a registered encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..encoder import EncoderConfig, PatchEncoder
from ..extraction import extract_patches
from ..geometry import Boxes
from ..sampling import grid_boxes
from .base import Encoder


class ViTEncoder(PatchEncoder, Encoder):
    """Patch transformer over tokens of any number of axes (per-token outputs and a CLS vector)."""

    name = "vit"
    outputs = ("tokens", "vector")
    n_axes = (1, 2, 3)
    Config = EncoderConfig  # dim, depth, heads (dividing dim), mlp_ratio, drop_path, pos_embed, pos_mask_ratio

    def __init__(self, config: Any, in_channels: int, patch_shape: Sequence[int]):
        PatchEncoder.__init__(self, config, in_channels, patch_shape)

    @property
    def feature_dim(self) -> int:
        return self.dim

    def embed_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The CLS token of each input read on its regular grid of patches of :attr:`patch_shape`.

        The grid's box centres are the positions (used when ``pos_embed="sincos"``), so an input
        the size of the training samples is read exactly as :meth:`relpos.PretrainedEncoder.embed`
        reads it.
        """
        grid = grid_boxes(tuple(x.shape[2:]), [float(p) for p in self.patch_shape], device=x.device)
        center = grid.center.expand(len(x), -1, -1)
        size = grid.size.expand(len(x), -1, -1)
        patches = extract_patches(x, Boxes(center, size), self.patch_shape)
        return self(patches, center)[:, 0]

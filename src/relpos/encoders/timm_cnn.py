"""``timm:NAME``: any timm CNN by name, as one vector per 2-D input.

Built with ``timm.create_model(NAME, pretrained=False, num_classes=0, in_chans=C)``: timm's own
classifier is removed, so the model returns its pooled features (``num_features`` wide).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ConfigError, did_you_mean
from .base import Encoder


class TimmEncoder(Encoder):
    """A timm model by name (timm:resnet18), randomly initialised: one vector per image."""

    name = "timm"
    outputs = ("vector",)
    n_axes = (2,)
    takes_variant = True

    def __init__(self, config: Any, in_channels: int, patch_shape: Sequence[int]):
        super().__init__(config, in_channels, patch_shape)
        import timm

        self.check_variant(self.variant)
        self.model = timm.create_model(self.variant, pretrained=False, num_classes=0, in_chans=self.in_channels)
        self.feature_dim = int(self.model.num_features)

    @classmethod
    def check_variant(cls, variant: str) -> None:
        super().check_variant(variant)
        import timm

        if not timm.is_model(variant):
            names = timm.list_models()
            raise ConfigError(
                f"Invalid value for 'encoder.arch': timm has no model {variant!r}."
                f"{did_you_mean(variant, names)} See timm.list_models() for the {len(names)} it has "
                f"(e.g. 'timm:resnet18', 'timm:efficientnet_b0')."
            )

    def embed_inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images to ``(B, num_features)`` vectors."""
        return self.embed_inputs(x)

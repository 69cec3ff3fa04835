"""``timm:NAME``: any timm CNN by name, as one vector per 2-D input.

Built with ``timm.create_model(NAME, pretrained=False, num_classes=0, in_chans=C)``: timm's own
classifier is removed, so the model returns its pooled features (``num_features`` wide).

timm builds its vision transformers for one input size (``vit_tiny_patch16_224``: 224 × 224), and
they assert it at the first forward pass. Where the model takes them, relpos passes
``dynamic_img_size=True`` and ``dynamic_img_pad=True``, so the model reads inputs of any size (its
position embeddings interpolated, the input padded to whole patches); a fixed-size model that takes
neither is refused, in one sentence naming both sizes, when its inputs are known
(:meth:`TimmEncoder.check_input_shape`), before training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ConfigError, did_you_mean
from .base import Encoder, EncoderOptions, shape_text


def fixed_input_size(name: str) -> tuple[int, ...] | None:
    """The ``(height, width)`` timm builds model ``name`` for when it asserts that size, else None."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not getattr(cfg, "fixed_input_size", False):
        return None
    return tuple(int(s) for s in cfg.input_size[1:])


class TimmEncoder(Encoder):
    """A timm model by name (timm:resnet18), randomly initialised: one vector per image."""

    name = "timm"
    outputs = ("vector",)
    n_axes = (2,)
    takes_variant = True
    Config = EncoderOptions  # arch alone: timm:NAME says everything timm builds

    def __init__(self, config: Any, in_channels: int, patch_shape: Sequence[int]):
        super().__init__(config, in_channels, patch_shape)
        import timm

        self.check_variant(self.variant)
        options = {"pretrained": False, "num_classes": 0, "in_chans": self.in_channels}
        #: ``(height, width)`` the model takes and no other, or None when any size goes
        self.fixed_input_size: tuple[int, ...] | None = None
        fixed = fixed_input_size(self.variant)
        try:
            self.model = timm.create_model(
                self.variant, **options, **({"dynamic_img_size": True, "dynamic_img_pad": True} if fixed else {})
            )
        except TypeError:  # its constructor has no dynamic size: it takes its one size only
            self.model = timm.create_model(self.variant, **options)
            self.fixed_input_size = fixed
        self.feature_dim = int(self.model.num_features)

    def check_input_shape(self, shape: Sequence[int], what: str) -> None:
        super().check_input_shape(shape, what)
        shape = tuple(int(s) for s in shape)
        if self.fixed_input_size is not None and shape != self.fixed_input_size:
            raise ConfigError(
                f"Encoder {self.config.arch!r} is built by timm for inputs of {shape_text(self.fixed_input_size)} "
                f"pixels only, but {what} are {shape_text(shape)}; resize the inputs to "
                f"{shape_text(self.fixed_input_size)} or use another encoder.arch (e.g. timm:resnet18)."
            )

    @classmethod
    def check_variant(cls, variant: str) -> None:
        if not variant:
            raise ConfigError(
                "Invalid value for 'encoder.arch': 'timm:' names no timm model; use timm:NAME, e.g. timm:resnet18."
            )
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

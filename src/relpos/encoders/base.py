"""What an encoder is, for the encoder registry.

An encoder plugin subclasses :class:`Encoder` (an ``nn.Module``) and registers it through the
``register_encoders(register)`` hook, as modalities and pretexts are registered. ``encoder.arch``
names it: ``NAME`` or ``NAME:VARIANT`` (``timm:resnet18``), the variant being read by the encoder
class itself (:meth:`Encoder.check_variant`).

Two kinds of output exist, and a pretext says which it needs (:attr:`relpos.Pretext.encoder_output`):

* ``"tokens"``: the encoder reads patches cut from boxes, ``forward(patches, centers, ...)`` returns
  ``(B, 1 + N, dim)`` (a CLS token then one token per patch), as :class:`relpos.PatchEncoder` does.
  PART, PW-Self, SOVE, MAE, MP3 and DropPos need it.
* ``"vector"``: :meth:`Encoder.embed_inputs` turns whole inputs ``(B, C, *extent)`` into one vector
  each, ``(B, F)``. Spatial Reasoning needs only that; the ViT provides it too (its CLS token over
  the input's regular patch grid), a CNN provides only that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, ClassVar

import torch
from torch import nn

#: The two kinds of output an encoder may give (see the module docstring).
ENCODER_OUTPUTS = ("tokens", "vector")
#: How a sentence names each kind of output.
OUTPUT_WORDS = {"tokens": "per-token outputs", "vector": "one vector per input"}


class Encoder(nn.Module):
    """Base class of registered encoders.

    Attributes
    ----------
    name : str
        Registry name, the part of ``encoder.arch`` before any ``:``.
    outputs : tuple of str
        What it gives: ``("tokens", "vector")`` for a patch transformer, ``("vector",)`` for a CNN.
    n_axes : tuple of int
        The numbers of positional axes of the inputs it embeds (``(2,)`` for a 2-D CNN).
    takes_variant : bool
        Whether ``encoder.arch`` must name a variant after a colon (``timm:resnet18``).
    description : str
        One line for ``relpos plugins``.
    feature_dim : int
        Width F of one output vector (set by the instance).

    Parameters
    ----------
    config : relpos.EncoderConfig
        The resolved ``encoder`` section (``arch`` included).
    in_channels : int
        Channels C of the inputs.
    patch_shape : sequence of int
        The modality's patch resolution per axis (what a token encoder tokenises with; a CNN may
        ignore it).
    """

    name: ClassVar[str] = ""
    outputs: ClassVar[tuple[str, ...]] = ("vector",)
    n_axes: ClassVar[tuple[int, ...]] = (1, 2, 3)
    takes_variant: ClassVar[bool] = False
    description: ClassVar[str] = ""

    def __init__(self, config: Any = None, in_channels: int = 0, patch_shape: Sequence[int] = ()):
        # Defaults only so that a class mixing this in after an existing module (the ViT wraps
        # PatchEncoder, whose constructor calls ``super().__init__()``) can chain to it.
        super().__init__()
        self.config = config
        self.in_channels = int(in_channels)
        self.patch_shape = tuple(int(p) for p in patch_shape)

    @property
    def per_token_outputs(self) -> bool:
        """Whether :meth:`forward` gives one output per patch token."""
        return "tokens" in self.outputs

    @property
    def variant(self) -> str:
        """What ``encoder.arch`` names after the colon (``""`` when nothing)."""
        return str(self.config.arch).partition(":")[2]

    @classmethod
    def check_variant(cls, variant: str) -> None:
        """Raise :class:`relpos.errors.ConfigError` when ``variant`` (after the colon) is not buildable.

        Called before any data is read. The base accepts only an empty variant, or requires one
        when :attr:`takes_variant`.
        """
        from ..errors import ConfigError

        if cls.takes_variant and not variant:
            raise ConfigError(
                f"Invalid value for 'encoder.arch': encoder {cls.name!r} needs a variant, e.g. "
                f"'{cls.name}:NAME', got {cls.name!r}."
            )
        if not cls.takes_variant and variant:
            raise ConfigError(
                f"Invalid value for 'encoder.arch': encoder {cls.name!r} has no variants, got "
                f"{cls.name + ':' + variant!r}; use {cls.name!r}."
            )

    def init_args(self) -> dict:
        """Arguments that rebuild this encoder (stored in checkpoints): the ``encoder`` section with
        its ``arch``, the channels and the patch shape."""
        return {
            "config": asdict(self.config),
            "in_channels": self.in_channels,
            "patch_shape": list(self.patch_shape),
        }

    def embed_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """One vector per whole input.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, C, *extent)`` inputs.

        Returns
        -------
        torch.Tensor
            ``(B, feature_dim)``.
        """
        raise NotImplementedError(f"Encoder {self.name!r} does not embed whole inputs.")

    @classmethod
    def describe(cls) -> str:
        """The line ``relpos plugins`` shows: :attr:`description`, else the docstring's first line."""
        from ..plugins import class_description

        return class_description(cls)

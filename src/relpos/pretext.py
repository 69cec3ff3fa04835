"""What a pretext task is.

A pretext plugin subclasses :class:`Pretext` (an ``nn.Module``). It owns everything specific to its
method: the encoder it trains, its heads, teachers and memories. The training loop only calls
:meth:`Pretext.forward` and :meth:`Pretext.after_step`, so one loop trains every method.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .encoder import EncoderConfig, PatchEncoder
from .modality import Modality, Windows


class Pretext(nn.Module):
    """Base class of pretext plugins.

    Attributes
    ----------
    name : str
        Registry name (``--pretext NAME``).
    Config : type
        Dataclass with the method's options.
    modalities : tuple of str or None
        Names of the modalities this pretext supports; None means every modality.
    min_axes : int
        Fewest positional axes the method needs.
    description : str
        One line for ``relpos plugins``.
    log_keys : tuple of str
        Names of the extra values :meth:`forward` returns, logged as metrics.csv columns.

    Parameters
    ----------
    config : Config instance
    modality : Modality
        The modality the data comes from (patch geometry, augmentations).
    encoder_config : EncoderConfig
    data : Windows
        The training windows (to read channels and extent; the pretext must not keep them).
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    modalities: ClassVar[tuple[str, ...] | None] = None
    min_axes: ClassVar[int] = 1
    description: ClassVar[str] = ""
    log_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any, modality: Modality, encoder_config: EncoderConfig, data: Windows):
        super().__init__()
        self.config = config
        self.modality = modality
        self.extent = data.extent
        self.encoder = PatchEncoder(encoder_config, data.channels, modality.patch_shape())

    @classmethod
    def supports(cls, modality: Modality | type[Modality]) -> bool:
        """Whether this pretext can train on ``modality``."""
        if cls.modalities is not None and modality.name not in cls.modalities:
            return False
        return len(modality.axes) >= cls.min_axes

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """One training step's loss.

        Parameters
        ----------
        batch : dict
            ``{"x": (B, C, *extent), ...}`` on the training device.
        generator : torch.Generator
            The run's random stream for sampling (saved in checkpoints, so resume is exact).

        Returns
        -------
        loss : torch.Tensor
            Scalar to minimise.
        logs : dict of str to float
            Extra values for the metrics log.
        """
        raise NotImplementedError(f"Pretext {self.name!r} does not implement forward().")

    def after_step(self, step: int) -> None:
        """Called after each optimiser step (EMA teachers, memory banks)."""

    @classmethod
    def describe(cls) -> str:
        return cls.description or (cls.__doc__ or "").strip().splitlines()[0]

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

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..contracts import check_config, check_names_tuple, check_signature, class_description, declare_contract
from ..ranges import setting

#: The two kinds of output an encoder may give (see the module docstring).
ENCODER_OUTPUTS = ("tokens", "vector")
#: How a sentence names each kind of output.
OUTPUT_WORDS = {"tokens": "per-token outputs", "vector": "one vector per input"}


def shape_text(shape: Sequence[int]) -> str:
    """``(7, 7)`` → ``"7 × 7"``, as a sentence names an input size."""
    return " × ".join(str(int(s)) for s in shape)


@dataclass
class EncoderOptions:
    """The ``encoder`` options every encoder has: ``arch``, the registered encoder it names.

    An encoder's own options are fields of a subclass, its :attr:`Encoder.Config` (the ViT's is
    :class:`relpos.EncoderConfig`: ``dim``, ``depth``, ``heads``, ...), declared with
    :func:`relpos.config.setting` and checked, with the class's ``validate()``, when the
    configuration is resolved. ``relpos train --print-config`` lists exactly these fields.
    """

    # which registered encoder (relpos.encoders): 'vit' (this transformer), 'resnet32', 'timm:NAME'
    arch: str = setting(
        "vit", pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*(:[A-Za-z0-9][A-Za-z0-9_.-]*)?",
        pattern_help="an encoder name such as 'vit' or 'resnet32', or 'timm:NAME' for a timm model",
    )

    @property
    def pos_embed(self) -> str:
        """``"none"``: an encoder without a ``pos_embed`` option adds no position embeddings (a CNN
        reads whole inputs, where positions are its pixels' order), so a pretext's
        :meth:`relpos.Pretext.check_encoder` reads the same attribute for every encoder."""
        return "none"


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
    Config : type
        The dataclass of its ``encoder`` options: :class:`EncoderOptions` (``arch`` alone, the
        default) or a subclass of it adding the encoder's own fields.
    min_input : int or tuple of int
        The fewest samples (pixels) along each axis of an input it can embed, one number for every
        axis or one per axis (a CNN whose convolutions shrink its input needs at least their
        receptive field); :meth:`min_input_shape` may derive it from the options instead.
    feature_dim : int
        Width F of one output vector (set by the instance).

    Parameters
    ----------
    config : Config instance
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
    Config: ClassVar[type] = EncoderOptions
    min_input: ClassVar[int | tuple[int, ...]] = 1
    #: True inside :meth:`without_positions`: no position embeddings are added (centres are ignored).
    positions_dropped: bool = False

    def __init__(self, config: Any = None, in_channels: int = 0, patch_shape: Sequence[int] = ()):
        # Defaults only so that a class mixing this in after an existing module (the ViT wraps
        # PatchEncoder, whose constructor calls ``super().__init__()``) can chain to it.
        super().__init__()
        self.config = config
        self.in_channels = int(in_channels)
        self.patch_shape = tuple(int(p) for p in patch_shape)

    @contextlib.contextmanager
    def without_positions(self) -> Iterator["Encoder"]:
        """Run forwards without the encoder's position embeddings, whatever ``pos_embed`` says.

        For a pretext trained without positions on an encoder that has them: a component of a
        composed pretext (:mod:`relpos.compose`), e.g. PART beside SOVE. Centres passed meanwhile
        are ignored; an encoder without position embeddings is unchanged.
        """
        previous = self.positions_dropped
        self.positions_dropped = True
        try:
            yield self
        finally:
            self.positions_dropped = previous

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

    @classmethod
    def min_input_shape(cls, config: Any, n_axes: int) -> tuple[int, ...]:
        """The fewest samples along each of ``n_axes`` axes of an input it can embed.

        The base reads :attr:`min_input`; an encoder whose minimum depends on its options (a
        kernel size) overrides it.
        """
        minimum = cls.min_input
        if isinstance(minimum, int):
            return (int(minimum),) * int(n_axes)
        return tuple(int(m) for m in minimum)

    def check_input_shape(self, shape: Sequence[int], what: str) -> None:
        """Raise :class:`relpos.errors.ConfigError` when inputs of ``shape`` (samples per axis) are
        smaller than :meth:`min_input_shape`, before any of them reaches :meth:`forward`.

        Called when a pretext builds its encoder: with the patch shape for a ``"tokens"`` encoder
        and with the training windows' extent for a ``"vector"`` one. ``what`` names those inputs
        in the sentence (e.g. "the patches (modality.patch_size)"). An encoder that cannot take
        some sizes for another reason (a fixed input size) extends it.
        """
        from ..errors import ConfigError

        shape = tuple(int(s) for s in shape)
        minimum = self.min_input_shape(self.config, len(shape))
        if len(minimum) == len(shape) and all(s >= m for s, m in zip(shape, minimum)):
            return
        raise ConfigError(
            f"Encoder {str(self.config.arch)!r} embeds inputs of at least {shape_text(minimum)} samples, "
            f"but {what} are {shape_text(shape)}; use larger inputs or another encoder.arch."
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
        return class_description(cls)


def check_encoder_class(cls: type[Encoder]) -> None:
    """Raise ``TypeError`` with one sentence when a registered encoder class breaks the contract of
    :class:`Encoder`."""
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, EncoderOptions)):
        raise TypeError(
            f"{cls.__qualname__}.Config must be relpos.encoders.EncoderOptions or a dataclass subclassing it "
            f"(its arch field), got {cls.Config!r}."
        )
    check_config(cls, "encoder")

    check_names_tuple(cls, "outputs", "('vector',)")
    if not cls.outputs or not set(cls.outputs) <= set(ENCODER_OUTPUTS):
        raise TypeError(
            f"{cls.__qualname__}.outputs must name some of {', '.join(map(repr, ENCODER_OUTPUTS))}, got {cls.outputs!r}."
        )
    axes = cls.n_axes
    if not isinstance(axes, (tuple, list)) or not axes or not all(
        isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 3 for n in axes
    ):
        raise TypeError(f"{cls.__qualname__}.n_axes must be a tuple of axis counts from 1 to 3, got {axes!r}.")
    check_signature(cls, "__init__", ("config", "in_channels", "patch_shape"))
    if "vector" in cls.outputs and cls.embed_inputs is Encoder.embed_inputs:
        raise TypeError(f"{cls.__qualname__} gives one vector per input but does not implement embed_inputs(x).")
    minimum = cls.min_input
    if not (
        (isinstance(minimum, int) and not isinstance(minimum, bool) and minimum >= 1)
        or (isinstance(minimum, tuple) and len(minimum) in cls.n_axes
            and all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in minimum))
    ):
        raise TypeError(
            f"{cls.__qualname__}.min_input must be a whole number of samples of at least 1, or a tuple of one "
            f"per axis, got {minimum!r}."
        )


declare_contract("encoder", Encoder, check_encoder_class)

"""The encoder registry: ``encoder.arch`` names a registered :class:`Encoder`.

Built in: ``vit`` (:class:`relpos.PatchEncoder`, any number of axes), ``resnet32`` (the CIFAR
ResNet-32 of the Spatial Reasoning paper) and ``timm:NAME`` (any timm CNN by name). A plugin adds
one with the ``register_encoders(register)`` hook; see docs/plugins.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..hookspecs import hookimpl
from .base import ENCODER_OUTPUTS, OUTPUT_WORDS, Encoder

__all__ = [
    "ENCODER_OUTPUTS", "Encoder", "build_encoder", "check_encoder_arch", "get_encoder_class", "list_encoders",
    "rebuild_encoder", "split_arch",
]

#: ``encoder.arch`` of checkpoints written before encoders were a registry.
LEGACY_ARCH = "vit"


def split_arch(arch: str) -> tuple[str, str]:
    """``"timm:resnet18"`` → ``("timm", "resnet18")``; ``"vit"`` → ``("vit", "")``."""
    name, _, variant = str(arch).partition(":")
    return name, variant


def list_encoders(pattern: str = "*") -> list[str]:
    """Names of the registered encoders matching a wildcard pattern."""
    from ..plugins import get_registry

    return get_registry().names("encoder", pattern)


def get_encoder_class(arch: str) -> type[Encoder]:
    """The encoder class ``arch`` names, its variant checked.

    Raises
    ------
    relpos.errors.ConfigError
        For a name nobody registered (with the nearest name and the list) or a variant the class
        refuses (``timm:`` with a model timm does not have).
    """
    from ..errors import ConfigError, did_you_mean
    from ..plugins import get_registry

    name, variant = split_arch(arch)
    table = get_registry().entries["encoder"]
    if name not in table:
        names = sorted(table)
        listed = ", ".join(repr(n) for n in names) or "none are installed"
        raise ConfigError(
            f"Invalid value for 'encoder.arch': unknown encoder {name!r}.{did_you_mean(name, names)} "
            f"Registered encoders: {listed} (a timm model as 'timm:NAME')."
        )
    cls = table[name].cls
    cls.check_variant(variant)
    return cls


def check_encoder_arch(encoder_config: Any, modality: Any = None, pretext: Any = None) -> type[Encoder]:
    """Check ``encoder.arch`` against the modality's axes and the pretext's needs, before data is read.

    Parameters
    ----------
    encoder_config : relpos.EncoderConfig
    modality : Modality class or instance, optional
        Its ``name`` and ``axes``.
    pretext : Pretext class, optional
        Its ``name`` and ``encoder_output`` (``"tokens"`` or ``"vector"``).

    Returns
    -------
    type
        The encoder class.
    """
    from ..errors import ConfigError

    cls = get_encoder_class(encoder_config.arch)
    if modality is not None and len(modality.axes) not in cls.n_axes:
        fitting = [
            n for n in list_encoders() if len(modality.axes) in get_encoder_class_unchecked(n).n_axes
        ]
        axes = len(modality.axes)
        raise ConfigError(
            f"Encoder {encoder_config.arch!r} embeds inputs with {' or '.join(map(str, cls.n_axes))} "
            f"positional axes, but modality {modality.name!r} has {axes} ({', '.join(modality.axes)}); "
            f"encoders for {axes}-axis data: {', '.join(map(repr, fitting)) or 'none'}."
        )
    needs = getattr(pretext, "encoder_output", "tokens") if pretext is not None else None
    if needs is not None and needs not in cls.outputs:
        fitting = [n for n in list_encoders() if needs in get_encoder_class_unchecked(n).outputs]
        raise ConfigError(
            f"Pretext {pretext.name!r} needs an encoder with {OUTPUT_WORDS[needs]}, but encoder "
            f"{encoder_config.arch!r} gives {' and '.join(OUTPUT_WORDS[o] for o in cls.outputs)}; "
            f"encoders with {OUTPUT_WORDS[needs]}: {', '.join(map(repr, fitting)) or 'none'}."
        )
    return cls


def get_encoder_class_unchecked(name: str) -> type[Encoder]:
    """The class registered as ``name`` (no variant check)."""
    from ..plugins import get_registry

    return get_registry().get("encoder", name)


def build_encoder(config: Any, in_channels: int, patch_shape: Sequence[int]) -> Encoder:
    """Build the encoder ``config.arch`` names for inputs of ``in_channels`` channels."""
    config.validate()
    return get_encoder_class(config.arch)(config, in_channels, patch_shape)


def rebuild_encoder(args: dict) -> Encoder:
    """Rebuild an encoder from its :meth:`Encoder.init_args` (a checkpoint's ``encoder`` entry).

    A checkpoint written before encoders were a registry has no ``arch``: it held a ``vit``.
    """
    from ..encoder import EncoderConfig

    values = dict(args["config"])
    values.setdefault("arch", LEGACY_ARCH)
    return build_encoder(EncoderConfig(**values), args["in_channels"], args["patch_shape"])


@hookimpl
def register_encoders(register):
    from .resnet import ResNet32Encoder
    from .timm_cnn import TimmEncoder
    from .vit import ViTEncoder

    register(ViTEncoder)
    register(ResNet32Encoder)
    register(TimmEncoder)

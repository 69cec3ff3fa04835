"""The encoder registry: ``encoder.arch`` names a registered :class:`Encoder`.

Built in: ``vit`` (:class:`relpos.PatchEncoder` and its options :class:`relpos.EncoderConfig`, in
:mod:`relpos.encoders.vit`, any number of axes), ``resnet32`` (the CIFAR
ResNet-32 of the Spatial Reasoning paper) and ``timm:NAME`` (any timm CNN by name). A plugin adds
one with the ``register_encoders(register)`` hook; see docs/plugins.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from ..hookspecs import hookimpl
from .base import ENCODER_OUTPUTS, OUTPUT_WORDS, Encoder, EncoderOptions, shape_text

__all__ = [
    "ENCODER_OUTPUTS", "Encoder", "EncoderOptions", "build_data_encoder", "build_encoder", "check_encoder_arch",
    "get_encoder_class", "list_encoders", "rebuild_encoder", "resolve_encoder_options", "split_arch",
]

#: ``encoder.arch`` of checkpoints written before encoders were a registry.
LEGACY_ARCH = "vit"
#: ``encoder.arch`` when the configuration names none.
DEFAULT_ARCH = "vit"


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


def arch_value(value: Any) -> Any:
    """``encoder.arch`` as the user meant it: ``--set encoder.arch=timm:`` reaches the config as the
    YAML mapping ``{'timm': None}``, which is the text ``'timm:'``."""
    if isinstance(value, Mapping) and len(value) == 1:
        (name, variant), = value.items()
        if isinstance(name, str) and variant in (None, ""):
            return f"{name}:"
    return value


def option_names(cls: type[Encoder]) -> list[str]:
    """The ``encoder`` keys encoder class ``cls`` accepts: the fields of its ``Config``."""
    return [f.name for f in dataclasses.fields(cls.Config) if f.init]


def resolve_encoder_options(
    values: Mapping[str, Any], defaults: Mapping[str, Any] | None = None, stored: bool = False,
) -> EncoderOptions:
    """The ``encoder`` section as the options of the encoder its ``arch`` names, checked.

    Parameters
    ----------
    values : mapping
        The section as written (``arch`` and the encoder's own keys); ``arch`` defaults to ``vit``.
    defaults : mapping, optional
        A pretext's ``encoder_defaults``; only those the chosen encoder declares apply, and the
        user's values win.
    stored : bool
        The section comes from a checkpoint or an export: relpos wrote the ViT's options
        (``dim``, ``depth``, ...) for every encoder before encoders declared their own, so those
        are left out, not refused, for an encoder that does not declare them. Without it, such a
        key is left out only when it holds the value relpos wrote (the ViT's default, or the
        pretext's ``encoder_defaults``), so an older run's ``config.yaml`` still loads.

    Returns
    -------
    EncoderOptions
        An instance of the encoder class's ``Config``, its ranges and ``validate()`` checked.

    Raises
    ------
    relpos.errors.ConfigError
        For an unknown ``arch``, a key of another encoder (naming it) or a misspelled key (with
        the nearest one), and any value out of its range.
    """
    from ..coercion import build_dataclass
    from .vit import EncoderConfig
    from ..errors import ConfigError

    values = dict(values)
    values["arch"] = arch_value(values.get("arch", DEFAULT_ARCH))
    if isinstance(values["arch"], str) and values["arch"].endswith(":"):
        get_encoder_class(values["arch"])  # 'timm:' names no model: the encoder's own sentence says so
    arch = build_dataclass(EncoderOptions, {"arch": values["arch"]}, "encoder").arch  # its type and pattern
    cls = get_encoder_class(arch)
    names = option_names(cls)
    # what relpos wrote for every encoder before each declared its own options
    legacy = {f.name: f.default for f in dataclasses.fields(EncoderConfig) if f.name != "arch"}
    legacy.update({k: v for k, v in (defaults or {}).items() if k in legacy})
    for key in list(values):
        if key in names:
            continue
        if key in legacy and (stored or values[key] == legacy[key]):
            del values[key]
            continue
        owners = [n for n in list_encoders() if key in option_names(get_encoder_class_unchecked(n))]
        if owners:
            raise ConfigError(
                f"'encoder.{key}' is an option of encoder {' and '.join(map(repr, owners))}, not of "
                f"{arch!r}; the options of {arch!r} are {', '.join(names)}."
            )
    applicable = {k: v for k, v in (defaults or {}).items() if k in names}
    return build_dataclass(cls.Config, {**applicable, **values}, "encoder")  # a misspelled key: "did you mean"


def get_encoder_class_unchecked(name: str) -> type[Encoder]:
    """The class registered as ``name`` (no variant check)."""
    from ..plugins import get_registry

    return get_registry().get("encoder", name)


def build_encoder(
    config: Any, in_channels: int, patch_shape: Sequence[int], input_extent: Sequence[int] | None = None,
) -> Encoder:
    """Build the encoder ``config.arch`` names for inputs of ``in_channels`` channels.

    Parameters
    ----------
    config : EncoderOptions
        The encoder's options. Options of another class (``EncoderConfig(arch="resnet32")``) are
        reduced to the fields the encoder's ``Config`` declares.
    in_channels : int
    patch_shape : sequence of int
        The modality's patch resolution per axis: what a ``"tokens"`` encoder embeds, checked
        against its :meth:`Encoder.min_input_shape`.
    input_extent : sequence of int, optional
        The extent of the whole inputs a ``"vector"``-only encoder will embed (the training
        windows), checked the same way, so a too-small input is one sentence before training
        rather than a torch error at step 1.
    """
    from ..ranges import check_fields

    cls = get_encoder_class(config.arch)
    names = option_names(cls)
    if not isinstance(config, cls.Config) or [f.name for f in dataclasses.fields(config) if f.init] != names:
        config = cls.Config(**{name: getattr(config, name) for name in names if hasattr(config, name)})
    check_fields(config, "encoder")
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    encoder = cls(config, in_channels, patch_shape)
    if "tokens" in cls.outputs:
        encoder.check_input_shape(patch_shape, "the patches (the modality's patch size)")
    elif input_extent is not None:
        encoder.check_input_shape(input_extent, "the training windows")
    return encoder


def build_data_encoder(config: Any, modality: Any, data: Any) -> Encoder:
    """The encoder a pretext trains on ``data``: the one ``config.arch`` names, for the windows'
    channels, the modality's patch shape and the windows' extent (:func:`build_encoder`).

    Parameters
    ----------
    config : EncoderOptions
        The resolved ``encoder`` section.
    modality : relpos.Modality
        Its :meth:`~relpos.Modality.patch_shape`.
    data : relpos.Windows
        The training windows: their ``channels`` and ``extent`` (a CNN reading whole windows
        refuses too small ones here, before training).
    """
    # Windows whose channels have positions are read one channel per token (relpos.space).
    channels = 1 if getattr(data, "positions", None) is not None else data.channels
    return build_encoder(config, channels, modality.patch_shape(), data.extent)


def rebuild_encoder(args: dict) -> Encoder:
    """Rebuild an encoder from its :meth:`Encoder.init_args` (a checkpoint's ``encoder`` entry).

    A checkpoint written before encoders were a registry has no ``arch``: it held a ``vit``; one
    written before encoders declared their own options holds the ViT's for every encoder, which
    an encoder without them leaves out (:func:`resolve_encoder_options` with ``stored=True``).
    """
    values = dict(args["config"])
    values.setdefault("arch", LEGACY_ARCH)
    config = resolve_encoder_options(values, stored=True)
    return build_encoder(config, args["in_channels"], args["patch_shape"])


@hookimpl
def register_encoders(register):
    from .resnet import ResNet32Encoder
    from .timm_cnn import TimmEncoder
    from .vit import ViTEncoder

    register(ViTEncoder)
    register(ResNet32Encoder)
    register(TimmEncoder)

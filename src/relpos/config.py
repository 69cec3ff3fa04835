"""Run configuration: dataclass defaults < YAML file < ``--modality/--pretext`` < ``--set key=value``.

The resolved configuration has six sections::

    data: PATH            # None: the modality's bundled sample
    out: DIR              # None: runs/<modality>-<pretext>
    modality: {name: eeg, ...the modality's Config fields}
    pretext:  {name: part, ...the pretext's Config fields}
    encoder:  {...EncoderConfig}
    train:    {...TrainConfig}

Unknown keys and values of the wrong type are :class:`~relpos.errors.ConfigError` s that name the key
and suggest the nearest valid one. Values are coerced to the field's declared type, so a YAML
``lr: 3e-4`` (which YAML reads as a string) becomes a float.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .encoder import EncoderConfig
from .errors import ConfigError, did_you_mean


@dataclass
class TrainConfig:
    """Options of the training loop, the same for every pretext."""

    steps: int = 300
    batch_size: int = 16
    lr: float = 5e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_steps: int = 20
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    amp: bool = True  # bf16 autocast when training on CUDA
    log_every: int = 10
    ckpt_every: int = 50
    tensorboard: bool = True
    progress: bool = True

    def validate(self) -> None:
        for key in ("steps", "batch_size", "log_every", "ckpt_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"'train.{key}' must be at least 1, got {getattr(self, key)}.")
        if self.warmup_steps < 0:
            raise ConfigError(f"'train.warmup_steps' must be >= 0, got {self.warmup_steps}.")
        if not self.lr > 0:
            raise ConfigError(f"'train.lr' must be positive, got {self.lr}.")


SECTIONS = ("data", "out", "modality", "pretext", "encoder", "train")
DEFAULT_MODALITY = "eeg"
DEFAULT_PRETEXT = "part"


@dataclass
class RunConfig:
    """A fully resolved run configuration."""

    modality: str
    pretext: str
    modality_config: Any
    pretext_config: Any
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: str | None = None
    out: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Nested plain-Python form, the layout of the YAML file."""
        return {
            "data": self.data,
            "out": self.out,
            "modality": {"name": self.modality, **_plain(dataclasses.asdict(self.modality_config))},
            "pretext": {"name": self.pretext, **_plain(dataclasses.asdict(self.pretext_config))},
            "encoder": _plain(dataclasses.asdict(self.encoder)),
            "train": _plain(dataclasses.asdict(self.train)),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / f"{self.modality}-{self.pretext}"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# -- type coercion ------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(
            f"Invalid value for {key!r}: expected {' or '.join(_type_name(a) for a in args)}, "
            f"got {value!r}."
        )
    if origin is dict or tp is dict:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip() else {}
            except yaml.YAMLError:
                pass
        if not isinstance(value, dict):
            raise ConfigError(f"Invalid value for {key!r}: expected a mapping, got {value!r}.")
        key_type, value_type = args if len(args) == 2 else (Any, Any)
        return {_coerce(k, key_type, key): _coerce(v, value_type, key) for k, v in value.items()}
    if origin in (tuple, list):
        if isinstance(value, str):
            parsed = yaml.safe_load(value)
            value = parsed if isinstance(parsed, list) else [parsed]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"Invalid value for {key!r}: expected a list, got {value!r}.")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(
                    f"Invalid value for {key!r}: expected {len(args)} values, got {list(value)}."
                )
            items = [_coerce(v, a, key) for v, a in zip(value, args)]
        else:
            inner = args[0] if args else Any
            items = [_coerce(v, inner, key) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"Invalid value for {key!r}: expected true or false, got {value!r}.")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"Invalid value for {key!r}: expected an integer, got {value!r}.")
        if isinstance(value, int):
            return value
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"Invalid value for {key!r}: expected an integer, got {value!r}.") from None
        if not as_float.is_integer():
            raise ConfigError(f"Invalid value for {key!r}: expected an integer, got {value!r}.")
        return int(as_float)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"Invalid value for {key!r}: expected a number, got {value!r}.")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"Invalid value for {key!r}: expected a number, got {value!r}.") from None
    if tp is str:
        if isinstance(value, (dict, list, tuple)):
            raise ConfigError(f"Invalid value for {key!r}: expected a string, got {value!r}.")
        return str(value)
    return value


def build_dataclass(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from ``values``, rejecting unknown keys and coercing types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            full = f"{prefix}.{key}" if prefix else key
            valid = ", ".join(names)
            raise ConfigError(
                f"Unknown config key {full!r}.{did_you_mean(key, names)} Valid keys in "
                f"'{prefix or 'the top level'}': {valid}."
            )
        kwargs[key] = _coerce(value, hints[key], f"{prefix}.{key}" if prefix else key)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid '{prefix}' options: {exc}.") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


# -- merging --------------------------------------------------------------------------------------
def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name)
    if value is None:
        value = {}
    elif isinstance(value, str) and name in ("modality", "pretext"):
        value = {"name": value}
    elif not isinstance(value, dict):
        raise ConfigError(f"Config section {name!r} must be a mapping, got {value!r}.")
    raw[name] = value
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (an empty file is an empty config)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {str(path)!r} is not valid YAML: {' '.join(str(exc).split())}.") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"Config file {str(path)!r} must hold a mapping, got {type(raw).__name__}.")
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=value"`` into ``(["a", "b"], value)``; the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"Invalid --set {text!r}: expected key=value, e.g. train.steps=200.")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"Invalid --set {text!r}: expected key=value, e.g. train.steps=200.")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def _apply_override(raw: dict[str, Any], path: list[str], value: Any) -> None:
    top = path[0]
    if top not in SECTIONS:
        raise ConfigError(
            f"Unknown config key {'.'.join(path)!r}.{did_you_mean(top, SECTIONS)} "
            f"Top-level keys: {', '.join(SECTIONS)}."
        )
    if top in ("data", "out"):
        if len(path) != 1:
            raise ConfigError(f"Config key {top!r} takes a value, not {'.'.join(path)!r}.")
        raw[top] = value
        return
    section = _section(raw, top)
    if len(path) == 1:
        if top in ("modality", "pretext"):
            section["name"] = value
            return
        raise ConfigError(f"Config key {top!r} is a section; set one of its keys, e.g. '{top}.KEY=VALUE'.")
    node = section
    for part in path[1:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def resolve_config(
    config_file: str | Path | Mapping[str, Any] | None = None,
    modality: str | None = None,
    pretext: str | None = None,
    overrides: Iterable[str] = (),
) -> RunConfig:
    """Resolve a run configuration.

    Parameters
    ----------
    config_file : path or mapping, optional
        A YAML file (or an already-loaded dict in the same layout).
    modality, pretext : str, optional
        Names that override the file's ``modality.name`` / ``pretext.name``.
    overrides : iterable of str
        ``"key.sub=value"`` strings applied last, in order.

    Returns
    -------
    RunConfig
    """
    from .plugins import get_modality, get_pretext

    if config_file is None:
        raw: dict[str, Any] = {}
    elif isinstance(config_file, Mapping):
        raw = _plain(dict(config_file))
    else:
        raw = load_yaml(config_file)
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(
                f"Unknown config key {key!r}.{did_you_mean(key, SECTIONS)} Top-level keys: {', '.join(SECTIONS)}."
            )
    for name in ("modality", "pretext", "encoder", "train"):
        _section(raw, name)
    if modality is not None:
        raw["modality"]["name"] = modality
    if pretext is not None:
        raw["pretext"]["name"] = pretext
    for text in overrides:
        path, value = parse_override(text)
        _apply_override(raw, path, value)

    mod_values = dict(raw["modality"])
    pre_values = dict(raw["pretext"])
    mod_name = str(mod_values.pop("name", None) or DEFAULT_MODALITY)
    pre_name = str(pre_values.pop("name", None) or DEFAULT_PRETEXT)
    mod_cls = get_modality(mod_name)
    pre_cls = get_pretext(pre_name)
    if not pre_cls.supports(mod_cls):
        supported = (
            ", ".join(repr(m) for m in pre_cls.modalities)
            if pre_cls.modalities is not None
            else f"modalities with at least {pre_cls.min_axes} axes"
        )
        raise ConfigError(
            f"Pretext {pre_name!r} does not support modality {mod_name!r}; it supports {supported}."
        )
    data = raw.get("data")
    out = raw.get("out")
    modality_config = build_dataclass(mod_cls.Config, mod_values, "modality")
    pretext_config = build_dataclass(pre_cls.Config, pre_values, "pretext")
    encoder = build_dataclass(EncoderConfig, raw["encoder"], "encoder")
    pre_cls.check_encoder(encoder)  # e.g. position embeddings for a pretext that passes no centres
    return RunConfig(
        modality=mod_name,
        pretext=pre_name,
        modality_config=modality_config,
        pretext_config=pretext_config,
        encoder=encoder,
        train=build_dataclass(TrainConfig, raw["train"], "train"),
        data=None if data in (None, "") else str(data),
        out=None if out in (None, "") else str(out),
    )


def config_from_dict(values: Mapping[str, Any]) -> RunConfig:
    """Rebuild a :class:`RunConfig` from :meth:`RunConfig.to_dict` output (e.g. a checkpoint)."""
    return resolve_config(values)

"""Config dataclasses from plain values: each value coerced to its field's type, then checked.

:func:`build_dataclass` turns a mapping (a YAML section, ``--set`` strings) into an instance of a
config dataclass (the core's, a modality's, a pretext's, an encoder's, a third-party plugin's):
unknown keys are refused with the nearest valid one, values are coerced to the annotated type (a
YAML ``lr: 3e-4`` read as a string becomes a float), and every field is checked against the range
it declares (:mod:`relpos.ranges`). :mod:`relpos.config` assembles a run's sections with it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

import yaml

from .errors import ConfigError, did_you_mean
from .ranges import check_fields


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
            except (yaml.YAMLError, RecursionError):
                pass  # reported below as "expected a mapping"
        if not isinstance(value, dict):
            raise ConfigError(f"Invalid value for {key!r}: expected a mapping, got {value!r}.")
        key_type, value_type = args if len(args) == 2 else (Any, Any)
        return {_coerce(k, key_type, key): _coerce(v, value_type, key) for k, v in value.items()}
    if origin in (tuple, list):
        if isinstance(value, str):
            try:
                parsed = yaml.safe_load(value)
            except (yaml.YAMLError, RecursionError):
                raise ConfigError(
                    f"Invalid value for {key!r}: expected a list such as [1, 2], got {value!r}."
                ) from None
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
    """Instantiate dataclass ``cls`` from ``values``: reject unknown keys, coerce types, check ranges.

    Every field (given or default) is checked against the :class:`~relpos.ranges.Range` it declares
    (a float without one must be finite, an integer fit an int64), then ``validate()`` runs, if the
    class has one, for the checks that relate several fields.
    """
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
    check_fields(obj, prefix)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def check_override_path(cls: type, path: list[str]) -> None:
    """Reject ``--set section.key.sub=value`` unless ``section.key`` is a mapping field of ``cls``.

    Unknown keys are left to :func:`build_dataclass`, which suggests the nearest one.
    """
    if len(path) <= 2:
        return
    hints = typing.get_type_hints(cls)
    tp = hints.get(path[1])
    if tp is None or tp is Any or tp is dict or typing.get_origin(tp) is dict:
        return
    raise ConfigError(f"Config key {'.'.join(path[:2])!r} takes a value, not {'.'.join(path)!r}.")

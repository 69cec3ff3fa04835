"""Declared value ranges of config fields: checked when a config is resolved, before any data is read.

A config dataclass (the core's, a modality's, a pretext's, a third-party plugin's) declares what each
field accepts next to its default::

    from relpos.config import setting

    @dataclass
    class MyConfig:
        patch_size: int = setting(16, ge=1, le=4096)
        mode: str = setting("fast", choices=("fast", "exact"))
        scale_range: tuple[float, float] = setting((1.0, 1.0), gt=0, ordered=True)

:func:`relpos.config.build_dataclass` coerces each value to the field's type, then checks it against
its :class:`Range`, so ``relpos train --print-config`` already rejects a bad value with one sentence
(the key, the value received, what is allowed). A field without a declared range still gets the
checks that hold for every number: a float must be finite and an integer must fit an int64. Checks
that relate several fields (``l_freq < h_freq``) stay in the dataclass's ``validate()``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, did_you_mean

#: Largest ``train.steps`` (and other step counts): the loop precomputes one float64 learning rate per
#: step, so 10**8 steps is an 800 MB schedule array, the most a config should be able to ask for.
MAX_STEPS = 10**8
#: Largest seed: NumPy's legacy ``np.random.seed`` (seeded with ``torch`` and ``random``) takes 32 bits.
MAX_SEED = 2**32 - 1
#: Largest value any integer field holds unless its range says otherwise: what a C ``int64`` holds.
MAX_INT = 2**63 - 1
_RANGE_KEY = "relpos_range"


@dataclass(frozen=True)
class Range:
    """The values a config field accepts, declared next to the field with :func:`setting`.

    Numbers are checked against ``ge``/``gt``/``le``/``lt``; for a list or tuple field every item is.
    Floats must be finite unless ``allow_inf`` (NaN never passes); integers must also fit an int64.
    ``also`` lists values accepted outside the bounds (e.g. ``0`` meaning "the default").

    Parameters
    ----------
    ge, gt, le, lt : float, optional
        Inclusive / exclusive lower and upper bounds.
    also : tuple, optional
        Extra allowed values, e.g. ``(0,)`` for "0 = automatic, else at least 2".
    choices : tuple of str, optional
        The only strings allowed.
    pattern : str, optional
        A regular expression the whole string must match; ``pattern_help`` says it in words.
    ordered : bool
        A ``(low, high)`` pair must have ``low <= high``.
    min_items : int
        The fewest items a list, tuple or mapping may have; for a string, ``1`` means it must not
        be blank.
    allow_inf : bool
        Accept ``inf`` / ``-inf`` (when within the bounds).
    free : str
        For a string without a choice set or pattern: what it holds, e.g. "channel names"
        (declares that any text is accepted on purpose).
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    also: tuple = ()
    choices: tuple[str, ...] | None = None
    pattern: str | None = None
    pattern_help: str = ""
    ordered: bool = False
    min_items: int = 0
    allow_inf: bool = False
    free: str = ""

    def describe_number(self, integer: bool) -> str:
        """The allowed numbers in words, e.g. ``"an integer >= 1 and <= 100000000"``."""
        parts = []
        for op, bound in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt)):
            if bound is not None:
                parts.append(f"{op} {_fmt(int(bound) if integer else bound)}")
        kind = "an integer" if integer else ("a number" if self.allow_inf else "a finite number")
        text = f"{kind} {' and '.join(parts)}" if parts else kind
        if self.also:
            text = f"{' or '.join(_fmt(v) for v in self.also)} or {text}"
        return text

    def number_ok(self, value: float) -> bool:
        """Whether ``value`` is one of ``also`` or a number within the bounds (finite unless allowed)."""
        if value in self.also:
            return True
        if value != value:  # NaN
            return False
        if math.isinf(value) and not self.allow_inf:
            return False
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )


def bounds(**range_options: Any) -> dict[str, Range]:
    """Field metadata declaring a :class:`Range`: ``field(default=..., metadata=bounds(ge=1))``."""
    return {_RANGE_KEY: Range(**range_options)}


def setting(default: Any, **range_options: Any) -> Any:
    """A dataclass field with a default and its :class:`Range`, e.g. ``steps: int = setting(300, ge=1)``.

    A list or dict default is copied for every instance (a ``default_factory``).
    """
    metadata = bounds(**range_options)
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def field_range(f: dataclasses.Field) -> Range | None:
    """The :class:`Range` a dataclass field declares, or None."""
    return f.metadata.get(_RANGE_KEY)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) and abs(value) >= 10**12:
        return f"{float(value):g}"  # what the user most likely typed (1e30), not 31 digits
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def check_value(key: str, value: Any, tp: Any, allowed: Range | None) -> None:
    """Raise :class:`ConfigError` unless ``value`` (already coerced to ``tp``) is in ``allowed``.

    Without a declared range a float must still be finite and an integer fit an int64; this applies
    to the items of lists, tuples and mappings too.
    """
    rng = allowed or Range()
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if value is None:
            return
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = inner[0] if len(inner) == 1 else Any
    _check_type(key, value, tp)
    if isinstance(value, (list, tuple, dict)):
        items = list(value.values()) if isinstance(value, dict) else list(value)
        if len(items) < rng.min_items:
            raise ConfigError(
                f"Invalid value for {key!r}: allowed at least {rng.min_items} "
                f"item{'s' if rng.min_items > 1 else ''}, got {_fmt(list(items))}."
            )
        for item in items:
            if isinstance(item, (int, float)) and not isinstance(item, bool) and not _number_fits(item, rng):
                what = rng.describe_number(isinstance(item, int))
                raise ConfigError(f"Invalid value for {key!r}: every item must be {what}, got {_fmt(value)}.")
            if isinstance(item, str):
                _check_string(key, item, rng)
        if rng.ordered and len(items) == 2 and not items[0] <= items[1]:
            raise ConfigError(
                f"Invalid value for {key!r}: expected [low, high] with low <= high, got {_fmt(value)}."
            )
        return
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        if not _number_fits(value, rng):
            raise ConfigError(
                f"Invalid value for {key!r}: allowed {rng.describe_number(isinstance(value, int))}, "
                f"got {_fmt(value)}."
            )
        return
    if isinstance(value, str):
        _check_string(key, value, rng)


def _check_type(key: str, value: Any, tp: Any) -> None:
    """A config built in Python skips the coercion of :func:`relpos.config.build_dataclass`."""
    expected = {
        int: ("an integer", lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)),
        float: ("a number", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)),
        bool: ("true or false", lambda v: isinstance(v, bool)),
        str: ("a string", lambda v: isinstance(v, str)),
    }.get(tp)
    if expected is not None and not expected[1](value):
        raise ConfigError(f"Invalid value for {key!r}: expected {expected[0]}, got {value!r}.")


def _number_fits(value: float, rng: Range) -> bool:
    if isinstance(value, int) and abs(value) > MAX_INT:
        return False
    return rng.number_ok(value)


def _check_string(key: str, value: str, rng: Range) -> None:
    if rng.choices is not None and value not in rng.choices:
        allowed = ", ".join(repr(c) for c in rng.choices[:-1])
        allowed = f"{allowed} or {rng.choices[-1]!r}" if allowed else repr(rng.choices[-1])
        raise ConfigError(
            f"Invalid value for {key!r}: allowed {allowed}, got {value!r}.{did_you_mean(value, rng.choices)}"
        )
    if rng.pattern is not None and not re.fullmatch(rng.pattern, value):
        raise ConfigError(
            f"Invalid value for {key!r}: allowed {rng.pattern_help or 'text matching ' + repr(rng.pattern)}, "
            f"got {value!r}."
        )
    if rng.min_items and not value.strip():
        raise ConfigError(f"Invalid value for {key!r}: it must not be empty, got {value!r}.")


def check_fields(obj: Any, prefix: str) -> None:
    """Check every init field of dataclass instance ``obj`` against its declared :class:`Range`.

    :func:`relpos.config.build_dataclass` calls this for every config it builds; a ``validate()``
    that may also be called on a config made in Python (``EncoderConfig(heads=0).validate()``)
    calls it first.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if f.init:
            key = f"{prefix}.{f.name}" if prefix else f.name
            check_value(key, getattr(obj, f.name), hints[f.name], field_range(f))

"""What a registered class must provide: the checks every kind shares, and each kind's contract.

A kind's base class (:class:`relpos.Modality`, :class:`relpos.Pretext`, :class:`relpos.datasets.Dataset`,
:class:`relpos.encoders.Encoder`) keeps the rules of its own contract beside it, in a function of its
module, and declares them here with :func:`declare_contract` when that module is imported. The
plugin loader (:mod:`relpos.plugins`) checks each class a plugin registers against the contract of
its kind (:func:`check_registered_class`), so it needs none of the kinds' modules itself: a class
that subclasses a base class was made after the base's module was imported, so its contract is
declared by then.

Everything the engine later reads from a class is checked when the plugin registers it, so a mistake
in a plugin is reported as that plugin's failure instead of a traceback in a later command.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass

#: Names users type (``--modality NAME``) and that end up in run directories (``runs/<m>-<p>``).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: What ``relpos plugins`` shows for a class with neither a ``description`` nor a docstring.
NO_DESCRIPTION = "(no description)"


def one_line(exc: BaseException) -> str:
    """An exception as one line: ``TypeError: what it said`` (its type alone when it said nothing)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def class_description(cls: type) -> str:
    """The one line ``relpos plugins`` shows for a registered class: its own ``description``, else
    the first non-blank line of its own docstring (a base class's docstring says nothing about the
    plugin), else :data:`NO_DESCRIPTION`."""
    text = getattr(cls, "description", "") or ""
    if not (isinstance(text, str) and text.strip()):
        text = cls.__dict__.get("__doc__") or ""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else NO_DESCRIPTION


# -- checks every kind shares -------------------------------------------------------------------------
def check_name(cls: type, attribute: str = "name") -> None:
    value = getattr(cls, attribute, None)
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise TypeError(
            f"{cls.__qualname__}.{attribute} must be a name of letters, digits, '-', '_' or '.' "
            f"starting with a letter or digit, got {value!r}."
        )


def check_describe(cls: type) -> None:
    # ``relpos plugins`` lists every class in one go, so one describe() that raises would hide all.
    try:
        text = cls.describe()
    except Exception as exc:  # noqa: BLE001 - whatever an override raises
        raise TypeError(
            f"{cls.__qualname__}.describe() raised {one_line(exc)}; it must return the one line of text "
            f"`relpos plugins` shows."
        ) from None
    if not isinstance(text, str):
        raise TypeError(
            f"{cls.__qualname__}.describe() must return the one line of text `relpos plugins` shows, "
            f"got {text!r}."
        )


def check_config(cls: type, kind: str) -> None:
    """``cls.Config`` is a dataclass whose every option has a default and resolvable annotations."""
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        raise TypeError(f"{cls.__qualname__}.Config must be a dataclass, got {config!r}.")
    required = [
        f.name for f in dataclasses.fields(config)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if required:
        # Users set only the options they want to change (``--set KIND.KEY=VALUE``).
        raise TypeError(
            f"{cls.__qualname__}.Config field(s) {', '.join(map(repr, required))} have no default; "
            f"every {kind} option needs one."
        )
    try:
        typing.get_type_hints(config)  # what the config resolver reads to coerce values
    except Exception as exc:  # noqa: BLE001 - NameError, TypeError, ... from any annotation
        raise TypeError(
            f"The type annotations of {cls.__qualname__}.Config cannot be resolved ({one_line(exc)}); "
            f"import every type they name at module level."
        ) from None


def check_signature(cls: type, method: str, arguments: tuple[str, ...]) -> None:
    """``cls.method`` can be called with ``arguments`` (positionally, after ``self``)."""
    try:
        inspect.signature(getattr(cls, method)).bind("self", *arguments)
    except TypeError:
        wanted = ", ".join(("self", *arguments))
        raise TypeError(
            f"{cls.__qualname__}.{method} must accept ({wanted}), "
            f"got {method}{inspect.signature(getattr(cls, method))}."
        ) from None


def check_names_tuple(cls: type, attribute: str, example: str, allow_none: bool = False) -> None:
    """``cls.attribute`` is a tuple (or list) of non-empty names, or None where ``allow_none``."""
    value = getattr(cls, attribute)
    if allow_none and value is None:
        return
    # A bare string would be read character by character ("eeg" as ("e", "e", "g")).
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) and v for v in value):
        allowed = "None or " if allow_none else ""
        raise TypeError(
            f"{cls.__qualname__}.{attribute} must be {allowed}a tuple of names, e.g. {example}, got {value!r}."
        )


# -- each kind's contract, declared by its base class's module ----------------------------------------
@dataclass(frozen=True)
class Contract:
    """What a registered class of one kind must be: a subclass of ``base`` that passes ``check``."""

    kind: str
    base: type
    check: Callable[[type], None]


_CONTRACTS: dict[str, Contract] = {}


def declare_contract(kind: str, base: type, check: Callable[[type], None]) -> None:
    """Declare the contract of ``kind``: called once by the module that defines its base class."""
    _CONTRACTS[kind] = Contract(kind, base, check)


def check_registered_class(kind: str, cls: typing.Any, base_name: str) -> None:
    """Raise ``TypeError`` with one sentence unless ``cls`` fulfils the contract of ``kind``.

    ``base_name`` is how the sentence names the base class (``relpos.Pretext``). A kind whose base
    class's module was never imported has no contract declared, and then no class can subclass it.
    """
    contract = _CONTRACTS.get(kind)
    if contract is None or not (isinstance(cls, type) and issubclass(cls, contract.base)):
        raise TypeError(f"register() for a {kind} takes a subclass of {base_name}, got {cls!r}.")
    check_name(cls)
    check_describe(cls)
    contract.check(cls)

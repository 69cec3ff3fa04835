"""Plugin loading and the registry of modalities, pretexts, data sets and encoders.

Plugins are modules advertised in the ``relpos`` entry-point group; relpos's own modalities and
pretexts are registered exactly that way, and load first. Loading is lazy (nothing happens at
import time) and each plugin is isolated: one that fails to import, whose hook raises, that
registers a class relpos cannot use, or that registers a name another plugin already took, is
reported in one line and skipped as a whole (nothing it registered stays registered), and the
other plugins load as usual. ``RELPOS_STRICT_PLUGINS=1`` raises instead.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import os
import re
import sys
import typing
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError, did_you_mean, unknown_name

ENTRY_POINT_GROUP = "relpos"
KINDS = ("modality", "pretext", "dataset", "encoder")
_HOOKS = {
    "modality": "register_modalities", "pretext": "register_pretexts", "dataset": "register_datasets",
    "encoder": "register_encoders",
}
#: The distribution whose plugins load first, so a third-party name clash never displaces a built-in.
BUILTIN_DISTRIBUTION = "relpos"
#: The "distribution" of plugins added with :func:`register_plugin` (none: they are not installed).
RUN_TIME = "registered at run time"
#: What a plugin's import or hook may raise without taking relpos down: any error, and a
#: ``sys.exit()`` too (only Ctrl-C gets through).
PLUGIN_ERRORS = (Exception, SystemExit)
#: Names users type (``--modality NAME``) and that end up in run directories (``runs/<m>-<p>``).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def origin(plugin: str, distribution: str, in_parentheses: bool = False) -> str:
    """Where a plugin comes from, for a sentence: ``plugin 'eeg' from relpos``, or
    ``plugin 'mine' (registered at run time)``; ``in_parentheses`` gives
    ``plugin 'mine', registered at run time`` for text that is already in parentheses."""
    if distribution == RUN_TIME:
        return f"plugin {plugin!r}, {RUN_TIME}" if in_parentheses else f"plugin {plugin!r} ({RUN_TIME})"
    return f"plugin {plugin!r} from {distribution}"


#: What ``relpos plugins`` shows for a class with neither a ``description`` nor a docstring.
NO_DESCRIPTION = "(no description)"


def class_description(cls: type) -> str:
    """The one line ``relpos plugins`` shows for a registered class: its own ``description``, else
    the first non-blank line of its own docstring (a base class's docstring says nothing about the
    plugin), else :data:`NO_DESCRIPTION`."""
    text = getattr(cls, "description", "") or ""
    if not (isinstance(text, str) and text.strip()):
        text = cls.__dict__.get("__doc__") or ""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else NO_DESCRIPTION


@dataclass(frozen=True)
class Entry:
    """A registered class and where it came from."""

    kind: str
    name: str
    cls: type
    plugin: str
    distribution: str

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "plugin": self.plugin,
            "distribution": self.distribution,
            "class": f"{self.cls.__module__}.{self.cls.__qualname__}",
            "description": self.cls.describe(),  # checked at registration: one line of text
        }


@dataclass(frozen=True)
class Failure:
    """A plugin that could not be loaded, and why (one line)."""

    plugin: str
    distribution: str
    error: str

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass
class Registry:
    """Everything the installed plugins registered."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    failures: list[Failure] = field(default_factory=list)

    def get(self, kind: str, name: str) -> type:
        table = self.entries[kind]
        if name not in table:
            raise PluginError(unknown_name(kind, name, table))
        return table[name].cls

    def names(self, kind: str, pattern: str = "*") -> list[str]:
        return sorted(n for n in self.entries[kind] if fnmatch.fnmatch(n, pattern))

    def entry(self, kind: str, name: str) -> Entry:
        self.get(kind, name)
        return self.entries[kind][name]


class DuplicateName(Exception):
    """A plugin registered a name another plugin (or the same one) registered first."""


class UnknownHook(Exception):
    """A plugin implements a hook relpos does not define (a misspelled one, most likely)."""


def _strict() -> bool:
    return os.environ.get("RELPOS_STRICT_PLUGINS", "").strip().lower() in ("1", "true", "yes")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, (DuplicateName, UnknownHook)):
        return text  # already a sentence that says what happened
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- what a registered class must provide -----------------------------------------------------------
# Everything the engine later reads from a class is checked here, when the plugin registers it, so
# a mistake in a plugin is reported as that plugin's failure instead of a traceback in a later
# command.
def _check_name(cls: type, attribute: str = "name") -> None:
    value = getattr(cls, attribute, None)
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise TypeError(
            f"{cls.__qualname__}.{attribute} must be a name of letters, digits, '-', '_' or '.' "
            f"starting with a letter or digit, got {value!r}."
        )


def _check_describe(cls: type) -> None:
    # ``relpos plugins`` lists every class in one go, so one describe() that raises would hide all.
    try:
        text = cls.describe()
    except Exception as exc:  # noqa: BLE001 - whatever an override raises
        raise TypeError(
            f"{cls.__qualname__}.describe() raised {_one_line(exc)}; it must return the one line of text "
            f"`relpos plugins` shows."
        ) from None
    if not isinstance(text, str):
        raise TypeError(
            f"{cls.__qualname__}.describe() must return the one line of text `relpos plugins` shows, "
            f"got {text!r}."
        )


def _check_config(cls: type, kind: str) -> None:
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
            f"The type annotations of {cls.__qualname__}.Config cannot be resolved ({_one_line(exc)}); "
            f"import every type they name at module level."
        ) from None


def _check_signature(cls: type, method: str, arguments: tuple[str, ...]) -> None:
    try:
        inspect.signature(getattr(cls, method)).bind("self", *arguments)
    except TypeError:
        wanted = ", ".join(("self", *arguments))
        raise TypeError(
            f"{cls.__qualname__}.{method} must accept ({wanted}), "
            f"got {method}{inspect.signature(getattr(cls, method))}."
        ) from None


def _check_names_tuple(cls: type, attribute: str, example: str, allow_none: bool = False) -> None:
    value = getattr(cls, attribute)
    if allow_none and value is None:
        return
    # A bare string would be read character by character ("eeg" as ("e", "e", "g")).
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) and v for v in value):
        allowed = "None or " if allow_none else ""
        raise TypeError(
            f"{cls.__qualname__}.{attribute} must be {allowed}a tuple of names, e.g. {example}, got {value!r}."
        )


def _check_modality(cls: type) -> None:
    from .modality import Modality

    _check_names_tuple(cls, "axes", "('time',)")
    axes = tuple(cls.axes)
    if not 1 <= len(axes) <= 3 or len(set(axes)) != len(axes):
        raise TypeError(
            f"{cls.__qualname__}.axes must name 1 to 3 distinct positional axes, got {cls.axes!r}."
        )
    _check_config(cls, "modality")
    if cls.load is Modality.load:
        raise TypeError(f"{cls.__qualname__} does not implement load(data).")
    _check_signature(cls, "load", ("data",))
    _check_signature(cls, "augment", ("x", "generator"))
    _check_signature(cls, "photometric", ("patches", "generator", "view", "per_patch"))
    flip_axes = getattr(cls, "flip_axes", ())
    if not isinstance(flip_axes, property):  # a property depends on the options: read per instance
        _check_names_tuple(cls, "flip_axes", "('col',)")
        if not set(flip_axes) <= set(axes):
            raise TypeError(
                f"{cls.__qualname__}.flip_axes must name some of its axes ({', '.join(axes)}), got {flip_axes!r}."
            )
    if cls.patch_size is Modality.patch_size:
        fields = {f.name: f for f in dataclasses.fields(cls.Config)}
        if "patch_size" not in fields:
            raise TypeError(
                f"{cls.__qualname__}.Config has no 'patch_size' field and {cls.__qualname__} does not "
                f"override patch_size(); give it one of the two."
            )
        default = fields["patch_size"]
        value = default.default if default.default is not dataclasses.MISSING else default.default_factory()
        values = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        if (
            not isinstance(values, (list, tuple))
            or len(values) not in (1, len(axes))
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values)
        ):
            raise TypeError(
                f"{cls.__qualname__}.Config.patch_size must default to a positive number or one per "
                f"axis ({len(axes)}), got {value!r}."
            )


def _check_pretext(cls: type) -> None:
    from .pretext import Pretext

    _check_config(cls, "pretext")
    if cls.forward is Pretext.forward:
        raise TypeError(f"{cls.__qualname__} does not implement forward(batch, generator).")
    _check_signature(cls, "forward", ("batch", "generator"))
    _check_signature(cls, "after_step", ("step",))
    _check_signature(cls, "__init__", ("config", "modality", "encoder_config", "data"))
    _check_names_tuple(cls, "modalities", "('eeg', 'timeseries')", allow_none=True)
    _check_names_tuple(cls, "log_keys", "('accuracy',)")
    if not isinstance(cls.min_axes, int) or isinstance(cls.min_axes, bool) or cls.min_axes < 1:
        raise TypeError(f"{cls.__qualname__}.min_axes must be an integer of at least 1, got {cls.min_axes!r}.")
    from .pretext import POS_EMBEDS

    allowed = cls.encoder_pos_embed
    if not isinstance(allowed, (tuple, list)) or not allowed or not set(allowed) <= set(POS_EMBEDS):
        raise TypeError(
            f"{cls.__qualname__}.encoder_pos_embed must be a non-empty tuple of "
            f"{', '.join(map(repr, POS_EMBEDS))}, got {allowed!r}."
        )
    from .encoders.base import ENCODER_OUTPUTS

    if getattr(cls, "encoder_output", None) not in ENCODER_OUTPUTS:
        raise TypeError(
            f"{cls.__qualname__}.encoder_output must be one of {', '.join(map(repr, ENCODER_OUTPUTS))}, "
            f"got {getattr(cls, 'encoder_output', None)!r}."
        )
    from .encoder import EncoderConfig

    defaults = getattr(cls, "encoder_defaults", {})
    options = [f.name for f in dataclasses.fields(EncoderConfig)]
    if not isinstance(defaults, dict) or not set(defaults) <= set(options):
        raise TypeError(
            f"{cls.__qualname__}.encoder_defaults must be a dict of encoder options "
            f"({', '.join(options)}), got {defaults!r}."
        )
    if defaults.get("pos_embed", allowed[0]) not in allowed:
        # Every run with the default settings would be refused.
        raise TypeError(
            f"{cls.__qualname__}.encoder_defaults sets pos_embed={defaults['pos_embed']!r}, which its "
            f"encoder_pos_embed {tuple(allowed)!r} does not allow."
        )


def _check_dataset(cls: type) -> None:
    if not isinstance(cls.modality, str):
        raise TypeError(f"{cls.__qualname__}.modality must be a modality name (a string), got {cls.modality!r}.")
    from .datasets import Dataset

    if cls.fetch is Dataset.fetch:
        raise TypeError(f"{cls.__qualname__} does not implement fetch(dest, subjects=None, **options).")
    try:
        inspect.signature(cls.fetch).bind("self", "dest", subjects=None)
    except TypeError:
        raise TypeError(
            f"{cls.__qualname__}.fetch must accept (self, dest, subjects=None, **options), "
            f"got fetch{inspect.signature(cls.fetch)}."
        ) from None


def _check_encoder(cls: type) -> None:
    from .encoders.base import ENCODER_OUTPUTS, Encoder, EncoderOptions

    if not (isinstance(cls.Config, type) and issubclass(cls.Config, EncoderOptions)):
        raise TypeError(
            f"{cls.__qualname__}.Config must be relpos.encoders.EncoderOptions or a dataclass subclassing it "
            f"(its arch field), got {cls.Config!r}."
        )
    _check_config(cls, "encoder")

    _check_names_tuple(cls, "outputs", "('vector',)")
    if not cls.outputs or not set(cls.outputs) <= set(ENCODER_OUTPUTS):
        raise TypeError(
            f"{cls.__qualname__}.outputs must name some of {', '.join(map(repr, ENCODER_OUTPUTS))}, got {cls.outputs!r}."
        )
    axes = cls.n_axes
    if not isinstance(axes, (tuple, list)) or not axes or not all(
        isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 3 for n in axes
    ):
        raise TypeError(f"{cls.__qualname__}.n_axes must be a tuple of axis counts from 1 to 3, got {axes!r}.")
    _check_signature(cls, "__init__", ("config", "in_channels", "patch_shape"))
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


def _check_class(kind: str, cls: Any) -> None:
    from .datasets import Dataset
    from .encoders.base import Encoder
    from .modality import Modality
    from .pretext import Pretext

    base = {"modality": Modality, "pretext": Pretext, "dataset": Dataset, "encoder": Encoder}[kind]
    where = {"dataset": "relpos.datasets", "encoder": "relpos.encoders"}.get(kind, "relpos")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"register() for a {kind} takes a subclass of {where}.{base.__name__}, got {cls!r}.")
    _check_name(cls)
    _check_describe(cls)
    checks = {"modality": _check_modality, "pretext": _check_pretext, "dataset": _check_dataset, "encoder": _check_encoder}
    checks[kind](cls)


# -- loading ----------------------------------------------------------------------------------------
class _Loader:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.distributions: dict[str, str] = {}
        self.order: list[str] = []
        self.failures: list[Failure] = []

    def fail(self, plugin: str, distribution: str, exc: BaseException) -> None:
        if _strict():
            raise PluginError(f"Plugin {plugin!r} from {distribution!r} failed: {_one_line(exc)}") from exc
        self.failures.append(Failure(plugin, distribution, _one_line(exc)))

    def add(self, module: Any, name: str, distribution: str) -> None:
        try:
            if self.pm.get_plugin(name) is not None:
                other = self.distributions.get(name, "?")
                raise ValueError(f"a plugin named {name!r} is already loaded from {other!r}")
            self.pm.register(module, name=name)
        except Exception as exc:  # noqa: BLE001 - any plugin error is isolated
            self.fail(name, distribution, exc)
            return
        try:
            self._check_hook_names(module)
            self.pm.check_pending()
            if not self.pm.get_hookcallers(module):
                # e.g. hook functions without the @relpos.hookimpl decorator: nothing would load.
                raise TypeError(
                    f"{module!r} implements none of the relpos hooks ({', '.join(_HOOKS.values())}); "
                    f"decorate them with @relpos.hookimpl."
                )
        except Exception as exc:  # noqa: BLE001 - misspelled or missing hooks
            self.pm.unregister(name=name)
            self.fail(name, distribution, exc)
            return
        self.distributions[name] = distribution
        self.order.append(name)

    def _check_hook_names(self, module: Any) -> None:
        """Refuse a hook relpos does not define (a misspelling such as ``register_encoder``), naming
        the nearest hook; pluggy's own check_pending() names neither."""
        unknown = sorted(caller.name for caller in self.pm.get_hookcallers(module) or () if caller.spec is None)
        if unknown:
            raise UnknownHook(
                f"{'Unknown hook' if len(unknown) == 1 else 'Unknown hooks'} {', '.join(map(repr, unknown))}."
                f"{did_you_mean(unknown[0], _HOOKS.values())} The relpos hooks are "
                f"{', '.join(_HOOKS.values())}."
            )

    def _stage(self, plugin: str, dist: str) -> list[Entry]:
        """Call every hook of one plugin; what it registered, or an exception for the whole plugin."""
        staged: list[Entry] = []
        for kind in KINDS:
            caller = getattr(self.pm.hook, _HOOKS[kind])
            for impl in caller.get_hookimpls():
                if impl.plugin_name != plugin:
                    continue

                def register(cls: Any, _kind: str = kind) -> None:
                    _check_class(_kind, cls)
                    staged.append(Entry(_kind, cls.name, cls, plugin, dist))

                returned = impl.function(**{arg: register for arg in impl.argnames})
                if returned is not None:
                    # A hook that returns its classes (instead of calling register) registers nothing.
                    raise TypeError(
                        f"{_HOOKS[kind]}() returned {returned!r}; it must call register(cls) for each "
                        f"class and return None."
                    )
        return staged

    def build(self) -> Registry:
        registry = Registry(failures=self.failures)
        for plugin in self.order:  # registration order: the first registration of a name wins
            dist = self.distributions[plugin]
            try:
                staged = self._stage(plugin, dist)
                seen: set[tuple[str, str]] = set()
                for entry in staged:
                    key = (entry.kind, entry.name)
                    first = registry.entries[entry.kind].get(entry.name)
                    if key in seen:
                        raise DuplicateName(
                            f"{origin(plugin, dist)} registers the {entry.kind} name {entry.name!r} twice."
                        )
                    if first is not None:
                        raise DuplicateName(
                            f"Duplicate {entry.kind} name {entry.name!r}: registered first by "
                            f"{origin(first.plugin, first.distribution)} and again by {origin(plugin, dist)}; "
                            f"uninstall or rename one."
                        )
                    seen.add(key)
            except PLUGIN_ERRORS as exc:  # a broken hook is isolated
                # Nothing of a failed plugin is kept: "skipped" means skipped.
                self.fail(plugin, dist, exc)
                continue
            for entry in staged:
                registry.entries[entry.kind][entry.name] = entry
        return registry


_registry: Registry | None = None
_extra_plugins: dict[str, Any] = {}


def load_registry() -> Registry:
    """Load every plugin: relpos's own, then other distributions' entry points, then plugins added
    with :func:`register_plugin`."""
    loader = _Loader()

    def load_order(ep) -> tuple[bool, str]:
        dist = ep.dist.name if ep.dist is not None else ""
        return (dist != BUILTIN_DISTRIBUTION, ep.name)

    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=load_order):
        dist = ep.dist.name if ep.dist is not None else "?"
        try:
            module = ep.load()
        except PLUGIN_ERRORS as exc:  # import errors of any kind are isolated
            loader.fail(ep.name, dist, exc)
            continue
        loader.add(module, ep.name, dist)
    for name, plugin in _extra_plugins.items():
        loader.add(plugin, name, RUN_TIME)
    return loader.build()


def get_registry() -> Registry:
    """The registry, loaded on first use."""
    global _registry
    if _registry is None:
        _registry = load_registry()
        for failure in _registry.failures:
            print(
                f"relpos: {origin(failure.plugin, failure.distribution)} was skipped: {failure.error}",
                file=sys.stderr,
            )
    return _registry


def reset_registry() -> None:
    """Forget the loaded registry (after installing plugins, or in tests)."""
    global _registry
    _registry = None


def register_plugin(plugin: Any, name: str) -> None:
    """Add a plugin object (a module or an instance with hook methods) at run time."""
    _extra_plugins[name] = plugin
    reset_registry()


def unregister_plugin(name: str) -> None:
    """Remove a plugin added with :func:`register_plugin`."""
    _extra_plugins.pop(name, None)
    reset_registry()


def get_modality(name: str) -> type:
    """The modality class registered as ``name`` (with a did-you-mean error otherwise)."""
    return get_registry().get("modality", name)


def get_pretext(name: str) -> type:
    """The pretext class registered as ``name`` (with a did-you-mean error otherwise)."""
    return get_registry().get("pretext", name)


def get_dataset(name: str) -> type:
    """The data-set class registered as ``name`` (with a did-you-mean error otherwise)."""
    return get_registry().get("dataset", name)


def list_modalities(pattern: str = "*") -> list[str]:
    return get_registry().names("modality", pattern)


def list_pretexts(pattern: str = "*") -> list[str]:
    return get_registry().names("pretext", pattern)


def list_datasets(pattern: str = "*") -> list[str]:
    return get_registry().names("dataset", pattern)


def compatible_pairs() -> list[tuple[str, str]]:
    """Every (modality, pretext) pair that can train together."""
    reg = get_registry()
    pairs = []
    for m in reg.names("modality"):
        mod_cls = reg.get("modality", m)
        for p in reg.names("pretext"):
            if reg.get("pretext", p).supports(mod_cls):
                pairs.append((m, p))
    return pairs

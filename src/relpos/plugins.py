"""Plugin loading and the registry of modalities, pretexts, data sets and encoders.

This module loads and records; what each kind of class must provide is checked by the rules its
base class declares (:mod:`relpos.contracts`), so the registry imports none of the kinds.

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
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs
from .contracts import check_registered_class, one_line
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


def origin(plugin: str, distribution: str, in_parentheses: bool = False) -> str:
    """Where a plugin comes from, for a sentence: ``plugin 'eeg' from relpos``, or
    ``plugin 'mine' (registered at run time)``; ``in_parentheses`` gives
    ``plugin 'mine', registered at run time`` for text that is already in parentheses."""
    if distribution == RUN_TIME:
        return f"plugin {plugin!r}, {RUN_TIME}" if in_parentheses else f"plugin {plugin!r} ({RUN_TIME})"
    return f"plugin {plugin!r} from {distribution}"


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
    if isinstance(exc, (DuplicateName, UnknownHook)):
        return " ".join(str(exc).split())  # already a sentence that says what happened
    return one_line(exc)


# -- what a registered class must provide -----------------------------------------------------------
#: How a sentence names each kind's base class; the rules of each kind's contract live beside that
#: class (:mod:`relpos.contracts`).
BASE_CLASSES = {
    "modality": "relpos.Modality", "pretext": "relpos.Pretext", "dataset": "relpos.datasets.Dataset",
    "encoder": "relpos.encoders.Encoder",
}


def _check_class(kind: str, cls: Any) -> None:
    check_registered_class(kind, cls, BASE_CLASSES[kind])


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
    """The pretext class registered as ``name`` (with a did-you-mean error otherwise). A
    ``+``-joined name (``part+sove``) is a composition of registered ones: look it up with
    :func:`relpos.get_pretext` (:func:`relpos.compose.get_pretext`), which takes both."""
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

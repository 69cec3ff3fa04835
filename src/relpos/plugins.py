"""Plugin loading and the registry of modalities, pretexts and data sets.

Plugins are modules advertised in the ``relpos`` entry-point group; relpos's own modalities and
pretexts are registered exactly that way. Loading is lazy (nothing happens at import time), each
plugin is isolated (one that fails to import, or whose hook raises, is reported in one line and
skipped; ``RELPOS_STRICT_PLUGINS=1`` raises instead), and two plugins that register the same name
are an error that names both.
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
from .errors import PluginError, unknown_name

ENTRY_POINT_GROUP = "relpos"
KINDS = ("modality", "pretext", "dataset")
_HOOKS = {"modality": "register_modalities", "pretext": "register_pretexts", "dataset": "register_datasets"}


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
            "description": self.cls.describe() if hasattr(self.cls, "describe") else "",
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


def _strict() -> bool:
    return os.environ.get("RELPOS_STRICT_PLUGINS", "").strip().lower() in ("1", "true", "yes")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check_class(kind: str, cls: Any) -> None:
    from .datasets import Dataset
    from .modality import Modality
    from .pretext import Pretext

    base = {"modality": Modality, "pretext": Pretext, "dataset": Dataset}[kind]
    where = "relpos.datasets" if kind == "dataset" else "relpos"
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"register() for a {kind} takes a subclass of {where}.{base.__name__}, got {cls!r}")
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise TypeError(f"{cls.__qualname__} has no 'name'")
    if kind == "dataset":
        if not isinstance(cls.modality, str):
            raise TypeError(f"{cls.__qualname__}.modality must be a modality name (a string)")
        return
    if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
        raise TypeError(f"{cls.__qualname__}.Config must be a dataclass")
    if kind == "modality" and not cls.axes:
        raise TypeError(f"{cls.__qualname__} declares no 'axes'")


class _Loader:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.distributions: dict[str, str] = {}
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
            self.pm.check_pending()
        except Exception as exc:  # noqa: BLE001 - misspelled hook names
            self.pm.unregister(name=name)
            self.fail(name, distribution, exc)
            return
        self.distributions[name] = distribution

    def build(self) -> Registry:
        registry = Registry(failures=self.failures)
        for kind in KINDS:
            caller = getattr(self.pm.hook, _HOOKS[kind])
            for impl in reversed(caller.get_hookimpls()):  # registration order
                plugin = impl.plugin_name
                dist = self.distributions.get(plugin, "?")
                staged: list[Entry] = []

                def register(cls: Any, _kind: str = kind, _plugin: str = plugin, _dist: str = dist) -> None:
                    _check_class(_kind, cls)
                    staged.append(Entry(_kind, cls.name, cls, _plugin, _dist))

                try:
                    impl.function(**{arg: register for arg in impl.argnames})
                except Exception as exc:  # noqa: BLE001 - a broken hook is isolated
                    self.fail(plugin, dist, exc)
                    continue
                table = registry.entries[kind]
                for entry in staged:
                    if entry.name in table:
                        first = table[entry.name]
                        raise PluginError(
                            f"Duplicate {kind} name {entry.name!r}: registered by plugin "
                            f"{first.plugin!r} ({first.distribution}) and by plugin "
                            f"{entry.plugin!r} ({entry.distribution}); uninstall or rename one."
                        )
                    table[entry.name] = entry
        return registry


_registry: Registry | None = None
_extra_plugins: dict[str, Any] = {}


def load_registry() -> Registry:
    """Load every plugin (entry points, then plugins added with :func:`register_plugin`)."""
    loader = _Loader()
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else "?"
        try:
            module = ep.load()
        except Exception as exc:  # noqa: BLE001 - import errors of any kind are isolated
            loader.fail(ep.name, dist, exc)
            continue
        loader.add(module, ep.name, dist)
    for name, plugin in _extra_plugins.items():
        loader.add(plugin, name, "(registered at run time)")
    return loader.build()


def get_registry() -> Registry:
    """The registry, loaded on first use."""
    global _registry
    if _registry is None:
        _registry = load_registry()
        for failure in _registry.failures:
            print(
                f"relpos: plugin {failure.plugin!r} ({failure.distribution}) was skipped: {failure.error}",
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

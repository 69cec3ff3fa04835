"""The example plugins in examples/, as installed or straight from their sources.

``.ci/run`` installs them, so they load through their entry points like any third-party plugin;
on a machine where they are not installed, :func:`registered` loads their source files and
registers them at run time instead, so the tests that use them run either way.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import relpos.plugins

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
#: distribution → (package, entry-point name), as each example's pyproject.toml declares them.
EXAMPLE_PLUGINS = {
    "relpos-npysignal": ("relpos_npysignal", "npysignal"),
    "relpos-jigsaw": ("relpos_jigsaw", "jigsaw"),
}


def installed(distribution: str) -> bool:
    """Whether ``distribution`` is installed (its entry points are then loaded by relpos)."""
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@contextlib.contextmanager
def registered(*distributions: str) -> Iterator[dict[str, ModuleType]]:
    """Make the example plugins available; yields ``{distribution: module}``."""
    modules: dict[str, ModuleType] = {}
    added: list[tuple[str, str]] = []  # (plugin name, sys.modules key)
    try:
        for distribution in distributions:
            package, plugin_name = EXAMPLE_PLUGINS[distribution]
            if installed(distribution):
                modules[distribution] = importlib.import_module(package)
                continue
            spec = importlib.util.spec_from_file_location(
                f"{package}_from_source", EXAMPLES / distribution / package / "__init__.py"
            )
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # dataclasses look their module up there
            spec.loader.exec_module(module)
            relpos.plugins.register_plugin(module, name=plugin_name)
            added.append((plugin_name, spec.name))
            modules[distribution] = module
        relpos.plugins.reset_registry()
        yield modules
    finally:
        for plugin_name, module_name in added:
            relpos.plugins.unregister_plugin(plugin_name)
            sys.modules.pop(module_name, None)
        relpos.plugins.reset_registry()

"""Plugins: discovery through entry points, isolation of broken plugins, duplicates, the CLI listing,
and documentation of every hook."""

from __future__ import annotations

import inspect
import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import relpos
import relpos.plugins
from relpos import hookspecs
from relpos.errors import PluginError
from relpos.modality import Modality
from relpos.pretext import Pretext

REPO = Path(__file__).resolve().parents[1]
BUILTINS = {("modality", "eeg"), ("modality", "image"), ("pretext", "part"), ("pretext", "part-grid")}

FAKEWAVE_SOURCE = '''
from dataclasses import dataclass

import relpos
from relpos.modality import Modality


@dataclass
class FakeWaveConfig:
    patch_size: int = 10


class FakeWave(Modality):
    """A fake one-axis signal."""

    name = "fakewave"
    axes = ("time",)
    Config = FakeWaveConfig


@relpos.hookimpl
def register_modalities(register):
    register(FakeWave)
'''


# -- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture
def clean_registry():
    """Start and finish with no cached registry, so no test sees another's plugins."""
    relpos.plugins.reset_registry()
    yield
    relpos.plugins.reset_registry()


@pytest.fixture
def install(tmp_path, monkeypatch, clean_registry):
    """Factory: ``install(module, source, dist=..., entry=...)`` writes a module and a ``*.dist-info``
    advertising it in the ``relpos`` entry-point group, as ``pip install`` would, on a fresh sys.path
    entry. Everything is undone afterwards (path, imported modules, registry)."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules: list[str] = []

    def make(module: str, source: str, dist: str = "fake-relpos-plugin", entry: str | None = None) -> None:
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[relpos]\n{entry or module} = {module}\n")
        modules.append(module)

    yield make
    for module in modules:
        sys.modules.pop(module, None)


@pytest.fixture
def plugin(clean_registry):
    """Factory: ``plugin(obj, name)`` registers a class-based plugin for this test only."""
    names: list[str] = []

    def add(obj, name: str):
        relpos.plugins.register_plugin(obj, name)
        names.append(name)
        return obj

    yield add
    for name in names:
        relpos.plugins.unregister_plugin(name)


def names_of(registry) -> set[tuple[str, str]]:
    return {(kind, name) for kind, table in registry.entries.items() for name in table}


# -- class-based plugins used below ------------------------------------------------------------------
@dataclass
class _PatchConfig:
    patch_size: int = 4


class DuplicateEEG(Modality):
    """A second modality that claims the name 'eeg'."""

    name = "eeg"
    axes = ("time",)
    Config = _PatchConfig


class ToyPretext(Pretext):
    """A toy pretext for 2-D data only."""

    name = "toy"
    Config = _PatchConfig
    min_axes = 2


class DuplicatePlugin:
    @relpos.hookimpl
    def register_modalities(self, register):
        register(DuplicateEEG)


class MisspelledPlugin:
    @relpos.hookimpl
    def register_modality(self, register):  # the hook is register_modalities
        raise AssertionError("never called")


class ToyPlugin:
    @relpos.hookimpl
    def register_pretexts(self, register):
        register(ToyPretext)


class RaisingPlugin:
    @relpos.hookimpl
    def register_pretexts(self, register):
        raise RuntimeError("the toy hook is broken\nacross two lines")


class NotAClassPlugin:
    @relpos.hookimpl
    def register_modalities(self, register):
        register("eeg")


# -- built-ins ------------------------------------------------------------------------------------------
def test_builtins_are_registered_by_the_relpos_distribution(clean_registry):
    registry = relpos.plugins.load_registry()
    assert BUILTINS <= names_of(registry)
    for kind, name in BUILTINS:
        assert registry.entry(kind, name).distribution == "relpos"
    assert registry.entry("modality", "eeg").plugin == "eeg"
    assert registry.entry("pretext", "part-grid").plugin == "part"
    assert registry.failures == []


def test_listing_with_wildcards(clean_registry):
    assert relpos.plugins.list_pretexts("part*") == ["part", "part-grid"]
    assert relpos.plugins.list_modalities("e*") == ["eeg"]
    assert relpos.plugins.list_pretexts("nothing*") == []


def test_compatible_pairs_of_the_builtins(clean_registry):
    # part and part-grid accept any modality with at least one axis
    pairs = relpos.plugins.compatible_pairs()
    assert {("eeg", "part"), ("eeg", "part-grid"), ("image", "part"), ("image", "part-grid")} <= set(pairs)


def test_unknown_name_suggests_and_lists(clean_registry):
    with pytest.raises(PluginError) as info:
        relpos.plugins.get_modality("imag")
    assert "Did you mean 'image'" in str(info.value)
    assert "'eeg'" in str(info.value)


# -- third-party distributions through entry points ------------------------------------------------------
def test_third_party_distribution_is_found(install):
    install("fake_relpos_plugin", FAKEWAVE_SOURCE, dist="fake-relpos-plugin", entry="fakewave")
    registry = relpos.plugins.load_registry()
    entry = registry.entry("modality", "fakewave")
    assert entry.distribution == "fake-relpos-plugin"
    assert entry.plugin == "fakewave"
    assert entry.cls.__module__ == "fake_relpos_plugin"
    assert BUILTINS <= names_of(registry)  # the built-ins still load beside it
    assert registry.failures == []
    # the lazily built registry sees it too, and a pretext for any modality pairs with it
    assert relpos.get_modality("fakewave") is entry.cls
    assert ("fakewave", "part") in relpos.plugins.compatible_pairs()


def test_third_party_modality_is_usable_in_a_config(install):
    install("fake_relpos_plugin", FAKEWAVE_SOURCE, entry="fakewave")
    cfg = relpos.resolve_config(modality="fakewave", overrides=["modality.patch_size=25"])
    assert cfg.modality == "fakewave"
    assert cfg.modality_config.patch_size == 25


def test_broken_plugin_is_reported_in_one_line_and_skipped(install, capsys):
    install("broken_relpos_plugin", 'raise ImportError("needs the missing package foo\\nat all")\n',
            dist="broken-relpos-plugin", entry="broken")
    registry = relpos.plugins.load_registry()
    assert BUILTINS <= names_of(registry)
    assert len(registry.failures) == 1
    failure = registry.failures[0]
    assert failure.plugin == "broken"
    assert failure.distribution == "broken-relpos-plugin"
    assert failure.error == "ImportError: needs the missing package foo at all"
    assert "\n" not in failure.error
    # first use of the registry tells the user, in one line on stderr
    relpos.plugins.get_registry()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "'broken'" in err[0] and "broken-relpos-plugin" in err[0] and "skipped" in err[0]


def test_broken_plugin_does_not_hide_a_working_one(install):
    install("broken_relpos_plugin", "import relpos_no_such_module\n", dist="broken-relpos-plugin", entry="broken")
    install("fake_relpos_plugin", FAKEWAVE_SOURCE, entry="fakewave")
    registry = relpos.plugins.load_registry()
    assert ("modality", "fakewave") in names_of(registry)
    assert [f.plugin for f in registry.failures] == ["broken"]
    assert registry.failures[0].error.startswith("ModuleNotFoundError:")


def test_strict_mode_raises_for_a_broken_plugin(install, monkeypatch):
    install("broken_relpos_plugin", 'raise ImportError("nope")\n', dist="broken-relpos-plugin", entry="broken")
    monkeypatch.setenv("RELPOS_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError) as info:
        relpos.plugins.load_registry()
    assert "'broken'" in str(info.value)
    assert "broken-relpos-plugin" in str(info.value)
    assert "nope" in str(info.value)


def test_duplicate_distribution_name_is_an_error_naming_both(install):
    source = FAKEWAVE_SOURCE.replace('name = "fakewave"', 'name = "eeg"')
    install("eeg_clone_plugin", source, dist="eeg-clone", entry="eegclone")
    with pytest.raises(PluginError) as info:
        relpos.plugins.load_registry()
    message = str(info.value)
    assert "'eeg'" in message
    assert "'eegclone'" in message and "eeg-clone" in message
    assert "plugin 'eeg' (relpos)" in message


# -- class-based plugins registered at run time --------------------------------------------------------------
def test_duplicate_modality_name_is_an_error_naming_both_plugins(plugin):
    plugin(DuplicatePlugin(), "second-eeg")
    with pytest.raises(PluginError) as info:
        relpos.plugins.load_registry()
    message = str(info.value)
    assert "Duplicate modality name 'eeg'" in message
    assert "'eeg'" in message and "'second-eeg'" in message


def test_misspelled_hook_is_reported_as_a_failure(plugin):
    plugin(MisspelledPlugin(), "typo")
    registry = relpos.plugins.load_registry()
    assert BUILTINS <= names_of(registry)
    assert [f.plugin for f in registry.failures] == ["typo"]
    assert "register_modality" in registry.failures[0].error
    assert "\n" not in registry.failures[0].error


def test_misspelled_hook_raises_in_strict_mode(plugin, monkeypatch):
    plugin(MisspelledPlugin(), "typo")
    monkeypatch.setenv("RELPOS_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="typo"):
        relpos.plugins.load_registry()


def test_hook_that_raises_is_isolated(plugin):
    plugin(RaisingPlugin(), "raising")
    registry = relpos.plugins.load_registry()
    assert BUILTINS <= names_of(registry)
    assert len(registry.failures) == 1
    assert registry.failures[0].plugin == "raising"
    assert registry.failures[0].error == "RuntimeError: the toy hook is broken across two lines"


def test_registering_something_that_is_not_a_class_is_a_failure(plugin):
    plugin(NotAClassPlugin(), "not-a-class")
    registry = relpos.plugins.load_registry()
    assert [f.plugin for f in registry.failures] == ["not-a-class"]
    assert "subclass of relpos.Modality" in registry.failures[0].error


def test_class_based_plugin_adds_a_pretext_and_is_removed_again(plugin):
    plugin(ToyPlugin(), "toy-plugin")
    entry = relpos.plugins.get_registry().entry("pretext", "toy")
    assert entry.cls is ToyPretext
    assert entry.plugin == "toy-plugin"
    assert entry.distribution == "(registered at run time)"
    # min_axes = 2: pairs with images only
    pairs = relpos.plugins.compatible_pairs()
    assert ("image", "toy") in pairs and ("eeg", "toy") not in pairs
    relpos.plugins.unregister_plugin("toy-plugin")
    assert "toy" not in relpos.plugins.list_pretexts()


# -- `relpos plugins` ---------------------------------------------------------------------------------------
def test_plugins_command_json_lists_builtins_and_failures(install, capsys):
    install("broken_relpos_plugin", 'raise ImportError("no foo")\n', dist="broken-relpos-plugin", entry="broken")
    from relpos.cli import main

    assert main(["plugins", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    listed = {(p["kind"], p["name"]): p for p in out["plugins"]}
    assert BUILTINS <= set(listed)
    for key in BUILTINS:
        assert listed[key]["distribution"] == "relpos"
    assert {"eeg", "image"} <= set(listed[("pretext", "part")]["modalities"])
    assert out["failed"] == [
        {"plugin": "broken", "distribution": "broken-relpos-plugin", "error": "ImportError: no foo"}
    ]


def test_plugins_command_text_names_the_failure(install, capsys):
    install("broken_relpos_plugin", 'raise ImportError("no foo")\n', dist="broken-relpos-plugin", entry="broken")
    from relpos.cli import main

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "Modalities:" in out and "Pretexts:" in out
    assert "part-grid" in out
    assert "broken (broken-relpos-plugin): ImportError: no foo" in out


# -- documentation -------------------------------------------------------------------------------------------
def hook_functions():
    return [
        (name, fn)
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("register_")
    ]


def test_the_hooks_exist():
    assert {name for name, _ in hook_functions()} == {"register_modalities", "register_pretexts", "register_datasets"}


@pytest.mark.parametrize("name, fn", hook_functions(), ids=[n for n, _ in hook_functions()])
def test_every_hook_is_documented_with_its_signature(name, fn):
    sig = inspect.signature(fn)
    bare = sig.replace(
        parameters=[p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()],
        return_annotation=inspect.Signature.empty,
    )
    expected = f"{name}{bare}"  # e.g. "register_modalities(register)"
    docs = REPO / "docs" / "plugins.md"
    assert docs.is_file(), f"{docs} is missing"
    assert expected in docs.read_text(), f"docs/plugins.md does not document {expected}"

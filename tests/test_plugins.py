"""Plugins: discovery through entry points, isolation of broken plugins, duplicates, the CLI listing,
and documentation of every hook."""

from __future__ import annotations

import inspect
import json
import sys
import textwrap
import types
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

    def load(self, data):
        raise NotImplementedError("registration only")


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

    def load(self, data):
        raise NotImplementedError("registration only")


class ToyPretext(Pretext):
    """A toy pretext for 2-D data only."""

    name = "toy"
    Config = _PatchConfig
    min_axes = 2

    def forward(self, batch, generator):
        raise NotImplementedError("registration only")


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


@pytest.mark.parametrize("body, error", [
    ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
    ("raise SystemExit('plugin gave up')\n", "SystemExit: plugin gave up"),
    ("import relpos\n\n@relpos.hookimpl\ndef register_modalities(register):\n    raise SystemExit(4)\n", "SystemExit: 4"),
], ids=["exit-at-import", "exit-message", "exit-in-hook"])
def test_a_plugin_that_exits_is_a_failure_not_the_end_of_relpos(install, body, error):
    install("exiting_relpos_plugin", body, dist="exiting-plugin", entry="exiting")
    registry = relpos.plugins.load_registry()
    assert [(f.plugin, f.error) for f in registry.failures] == [("exiting", error)]
    assert BUILTINS <= names_of(registry)


def test_a_plugin_without_decorated_hooks_is_a_failure(install):
    undecorated = FAKEWAVE_SOURCE.replace("@relpos.hookimpl\n", "")
    install("undecorated_plugin", undecorated, dist="undecorated", entry="undecorated")
    registry = relpos.plugins.load_registry()
    assert "fakewave" not in registry.names("modality")
    [failure] = registry.failures
    assert failure.plugin == "undecorated"
    assert "implements none of the relpos hooks (register_modalities, register_pretexts, register_datasets, register_encoders)" in failure.error
    assert failure.error.endswith("decorate them with @relpos.hookimpl.")


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


def test_duplicate_name_keeps_the_first_and_reports_the_second_naming_both(install):
    source = FAKEWAVE_SOURCE.replace('name = "fakewave"', 'name = "eeg"')
    install("eeg_clone_plugin", source, dist="eeg-clone", entry="eegclone")
    registry = relpos.plugins.load_registry()
    # the built-in keeps the name; everything else still loads
    assert registry.entry("modality", "eeg").distribution == "relpos"
    assert BUILTINS <= names_of(registry)
    assert [(f.plugin, f.distribution) for f in registry.failures] == [("eegclone", "eeg-clone")]
    message = registry.failures[0].error
    assert message.startswith("Duplicate modality name 'eeg':")
    assert "registered first by plugin 'eeg' from relpos and again by plugin 'eegclone' from eeg-clone;" in message
    assert "\n" not in message


def test_a_third_party_name_sorting_first_never_displaces_a_builtin(install):
    # Entry points load in name order; relpos's own load before every other distribution's.
    source = FAKEWAVE_SOURCE.replace('name = "fakewave"', 'name = "image"')
    install("aaa_plugin", source, dist="aaa-dist", entry="aaa")
    registry = relpos.plugins.load_registry()
    assert registry.entry("modality", "image").plugin == "image"
    assert [f.plugin for f in registry.failures] == ["aaa"]


def test_duplicate_name_skips_the_whole_second_plugin(plugin):
    class ClashAndMore:
        @relpos.hookimpl
        def register_pretexts(self, register):
            register(ToyPretext)  # a new name: rolled back too, the plugin is skipped as a whole

        @relpos.hookimpl
        def register_modalities(self, register):
            register(DuplicateEEG)

    plugin(ClashAndMore(), "clash")
    registry = relpos.plugins.load_registry()
    assert "toy" not in registry.names("pretext")
    assert registry.entry("modality", "eeg").plugin == "eeg"
    assert [f.plugin for f in registry.failures] == ["clash"]
    assert "again by plugin 'clash' (registered at run time);" in registry.failures[0].error


def test_duplicate_between_two_third_party_plugins_keeps_the_first_loaded(install, plugin):
    install("fake_relpos_plugin", FAKEWAVE_SOURCE, entry="fakewave")

    class SecondFakeWave:
        @relpos.hookimpl
        def register_modalities(self, register):
            register(type("OtherWave", (DuplicateEEG,), {"name": "fakewave"}))

    plugin(SecondFakeWave(), "second-wave")
    registry = relpos.plugins.load_registry()
    assert registry.entry("modality", "fakewave").plugin == "fakewave"
    assert [f.plugin for f in registry.failures] == ["second-wave"]
    assert "registered first by plugin 'fakewave' from fake-relpos-plugin" in registry.failures[0].error


def test_one_plugin_registering_a_name_twice_is_a_failure(plugin):
    class Twice:
        @relpos.hookimpl
        def register_pretexts(self, register):
            register(ToyPretext)
            register(ToyPretext)

    plugin(Twice(), "twice")
    registry = relpos.plugins.load_registry()
    assert "toy" not in registry.names("pretext")
    assert "registers the pretext name 'toy' twice" in registry.failures[0].error


def test_duplicate_name_raises_in_strict_mode_naming_both(install, monkeypatch):
    source = FAKEWAVE_SOURCE.replace('name = "fakewave"', 'name = "eeg"')
    install("eeg_clone_plugin", source, dist="eeg-clone", entry="eegclone")
    monkeypatch.setenv("RELPOS_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError) as info:
        relpos.plugins.load_registry()
    message = str(info.value)
    assert "Duplicate modality name 'eeg'" in message
    assert "plugin 'eeg' from relpos" in message and "plugin 'eegclone' from eeg-clone" in message


def test_commands_keep_working_beside_a_duplicate(install, capsys):
    source = FAKEWAVE_SOURCE.replace('name = "fakewave"', 'name = "eeg"')
    install("eeg_clone_plugin", source, dist="eeg-clone", entry="eegclone")
    from relpos.cli import main

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "eegclone (eeg-clone): Duplicate modality name 'eeg'" in out
    assert main(["train", "--modality", "eeg", "--print-config"]) == 0
    captured = capsys.readouterr()
    assert "name: eeg" in captured.out
    assert "eegclone" in captured.err and "skipped" in captured.err


# -- class-based plugins registered at run time --------------------------------------------------------------
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


def test_a_skipped_run_time_plugin_is_reported_in_one_readable_line(plugin, capsys):
    plugin(RaisingPlugin(), "raising")
    relpos.plugins.get_registry()
    assert capsys.readouterr().err == (
        "relpos: plugin 'raising' (registered at run time) was skipped: "
        "RuntimeError: the toy hook is broken across two lines\n"
    )


def test_class_based_plugin_adds_a_pretext_and_is_removed_again(plugin):
    plugin(ToyPlugin(), "toy-plugin")
    entry = relpos.plugins.get_registry().entry("pretext", "toy")
    assert entry.cls is ToyPretext
    assert entry.plugin == "toy-plugin"
    assert entry.distribution == "registered at run time"
    # min_axes = 2: pairs with images only
    pairs = relpos.plugins.compatible_pairs()
    assert ("image", "toy") in pairs and ("eeg", "toy") not in pairs
    relpos.plugins.unregister_plugin("toy-plugin")
    assert "toy" not in relpos.plugins.list_pretexts()


# -- skipped means skipped --------------------------------------------------------------------------------
class RegistersThenRaisesInLaterHook:
    """register_modalities succeeds; register_pretexts registers one class, then raises."""

    @relpos.hookimpl
    def register_modalities(self, register):
        register(type("GoodWave", (DuplicateEEG,), {"name": "goodwave"}))

    @relpos.hookimpl
    def register_pretexts(self, register):
        register(ToyPretext)
        raise RuntimeError("broken halfway")


class RegistersThenRegistersABadClass:
    @relpos.hookimpl
    def register_pretexts(self, register):
        register(ToyPretext)
        register(type("NoForward", (Pretext,), {"name": "no-forward", "Config": _PatchConfig}))


@pytest.mark.parametrize(
    "broken, error",
    [
        (RegistersThenRaisesInLaterHook(), "RuntimeError: broken halfway"),
        (RegistersThenRegistersABadClass(), "TypeError: NoForward does not implement forward(batch, generator)."),
    ],
    ids=["hook-raises", "second-class-invalid"],
)
def test_a_failed_plugin_leaves_nothing_registered(plugin, broken, error):
    plugin(broken, "half")
    registry = relpos.plugins.load_registry()
    assert [(f.plugin, f.error) for f in registry.failures] == [("half", error)]
    assert names_of(registry) & {("modality", "goodwave"), ("pretext", "toy")} == set()
    with pytest.raises(PluginError, match="Unknown pretext 'toy'"):
        registry.get("pretext", "toy")
    assert BUILTINS <= names_of(registry)


def test_a_hook_that_returns_its_classes_is_a_failure(plugin):
    class ReturnsAList:  # datasette's list-returning style: nothing would be registered
        @relpos.hookimpl
        def register_pretexts(self, register):
            return [ToyPretext]

    plugin(ReturnsAList(), "returns")
    registry = relpos.plugins.load_registry()
    assert "toy" not in registry.names("pretext")
    assert "register_pretexts() returned [" in registry.failures[0].error
    assert "must call register(cls)" in registry.failures[0].error


# -- what a registered class must provide -------------------------------------------------------------------
@dataclass
class _NoPatchConfig:
    window: int = 8


@dataclass
class _RequiredFieldConfig:
    patch_size: int  # no default: users could never leave it out


@dataclass
class _ThreePatchConfig:
    patch_size: tuple = (4, 4, 4)


@dataclass
class _ZeroPatchConfig:
    patch_size: float = 0.0


@dataclass
class _BadHintConfig:
    patch_size: "NotImported" = 4  # noqa: F821 - the resolver cannot coerce values to this type


def _modality(name="wave", **attributes):
    body = {"name": name, "axes": ("time",), "Config": _PatchConfig, "load": lambda self, data: None}
    body.update(attributes)
    return type("BadWave", (Modality,), body)


BAD_MODALITIES = {
    "no-patch-size": (_modality(Config=_NoPatchConfig), "Config has no 'patch_size' field"),
    "patch-size-per-axis-mismatch": (_modality(Config=_ThreePatchConfig), "one per axis (1), got (4, 4, 4)"),
    "patch-size-zero": (_modality(Config=_ZeroPatchConfig), "must default to a positive number"),
    "config-not-dataclass": (_modality(Config=dict), "Config must be a dataclass, got <class 'dict'>"),
    "config-field-without-default": (_modality(Config=_RequiredFieldConfig), "'patch_size' have no default"),
    "config-hint-unresolvable": (_modality(Config=_BadHintConfig), "NameError"),
    "axes-a-string": (_modality(axes="time"), "axes must be a tuple of names, e.g. ('time',), got 'time'"),
    "axes-empty": (_modality(axes=()), "1 to 3 distinct positional axes, got ()"),
    "axes-four": (_modality(axes=("a", "b", "c", "d")), "1 to 3 distinct"),
    "axes-repeated": (_modality(axes=("row", "row")), "distinct"),
    "name-empty": (_modality(name=""), "name must be a name of letters"),
    "name-with-space": (_modality(name="my wave"), "got 'my wave'"),
    "name-with-slash": (_modality(name="a/b"), "got 'a/b'"),
    "name-not-a-string": (_modality(name=3), "got 3"),
    "no-load": (_modality(load=Modality.load), "does not implement load(data)"),
    "load-takes-nothing": (_modality(load=lambda self: None), "load must accept (self, data)"),
    "augment-without-generator": (_modality(augment=lambda self, x: x), "augment must accept (self, x, generator)"),
    "flip-axes-not-an-axis": (_modality(flip_axes=("col",)), "flip_axes must name some of its axes (time), got ('col',)"),
    "flip-axes-a-string": (_modality(flip_axes="time"), "flip_axes must be a tuple of names"),
}


class _Pretext(Pretext):
    name = "p"
    Config = _PatchConfig

    def forward(self, batch, generator):
        raise NotImplementedError


def _pretext(**attributes):
    return type("BadPretext", (_Pretext,), {"name": "p", **attributes})


BAD_PRETEXTS = {
    "no-forward": (_pretext(forward=Pretext.forward), "does not implement forward(batch, generator)"),
    "forward-without-generator": (_pretext(forward=lambda self, batch: None), "forward must accept (self, batch, generator)"),
    "init-without-data": (_pretext(__init__=lambda self, config, modality: None), "__init__ must accept"),
    "after-step-without-step": (_pretext(after_step=lambda self: None), "after_step must accept (self, step)"),
    "modalities-a-string": (_pretext(modalities="eeg"), "modalities must be None or a tuple of names"),
    "log-keys-a-string": (_pretext(log_keys="acc"), "log_keys must be a tuple of names"),
    "min-axes-zero": (_pretext(min_axes=0), "min_axes must be an integer of at least 1, got 0"),
    "pos-embed-misspelled": (_pretext(encoder_pos_embed=("none", "sin-cos")), "encoder_pos_embed must be"),
    "config-not-dataclass": (_pretext(Config=object), "Config must be a dataclass"),
    "encoder-defaults-unknown-option": (_pretext(encoder_defaults={"width": 8}), "encoder_defaults must be a dict of encoder options"),
    "encoder-defaults-refused-positions": (
        _pretext(encoder_defaults={"pos_embed": "sincos"}),
        "encoder_defaults sets pos_embed='sincos', which its encoder_pos_embed ('none',) does not allow",
    ),
    "config-field-without-default": (_pretext(Config=_RequiredFieldConfig), "have no default"),
    "name-with-equals": (_pretext(name="a=b"), "got 'a=b'"),
}


def _registering(kind, cls):
    hook = {"modality": "register_modalities", "pretext": "register_pretexts"}[kind]

    def register_it(self, register):
        register(cls)

    register_it.__name__ = hook
    return type("OnePlugin", (), {hook: relpos.hookimpl(register_it)})()


@pytest.mark.parametrize("cls, expected", BAD_MODALITIES.values(), ids=list(BAD_MODALITIES))
def test_a_modality_relpos_cannot_use_is_rejected_at_registration(plugin, cls, expected):
    plugin(_registering("modality", cls), "bad-modality")
    registry = relpos.plugins.load_registry()
    assert [f.plugin for f in registry.failures] == ["bad-modality"]
    assert expected in registry.failures[0].error
    assert "\n" not in registry.failures[0].error
    assert cls not in [e.cls for e in registry.entries["modality"].values()]


@pytest.mark.parametrize("cls, expected", BAD_PRETEXTS.values(), ids=list(BAD_PRETEXTS))
def test_a_pretext_relpos_cannot_use_is_rejected_at_registration(plugin, cls, expected):
    plugin(_registering("pretext", cls), "bad-pretext")
    registry = relpos.plugins.load_registry()
    assert [f.plugin for f in registry.failures] == ["bad-pretext"]
    assert expected in registry.failures[0].error
    assert "p" not in registry.names("pretext")


def test_a_patch_size_method_instead_of_a_field_is_accepted(plugin):
    cls = _modality(name="methodwave", Config=_NoPatchConfig, patch_size=lambda self: (8.0,))
    plugin(_registering("modality", cls), "method-patch")
    registry = relpos.plugins.load_registry()
    assert registry.failures == []
    assert registry.get("modality", "methodwave") is cls


def test_a_patch_size_per_axis_is_accepted(plugin):
    cls = _modality(name="cube", axes=("z", "y", "x"), Config=_ThreePatchConfig)
    plugin(_registering("modality", cls), "cube")
    registry = relpos.plugins.load_registry()
    assert registry.failures == []
    assert cls(cls.Config()).patch_shape() == (4, 4, 4)


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
    assert {name for name, _ in hook_functions()} == {
        "register_modalities", "register_pretexts", "register_datasets", "register_encoders"
    }


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


def _documented_form(name, fn) -> str:
    """``name(a, b=None, **rest)``: the signature without self, annotations or return type."""
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    bare = inspect.Signature([p.replace(annotation=inspect.Parameter.empty) for p in params])
    return f"{name}{bare}"


def _contract(cls):
    methods = [
        (name, getattr(cls, name)) for name, value in vars(cls).items()
        if not name.startswith("_") and isinstance(value, (types.FunctionType, classmethod))
    ]
    class_vars = [name for name, hint in cls.__annotations__.items() if str(hint).startswith("ClassVar")]
    return methods, class_vars


@pytest.mark.parametrize("cls", [Modality, Pretext], ids=["Modality", "Pretext"])
def test_every_part_of_the_plugin_contract_is_documented(cls):
    # A method or class attribute a plugin may set or override, added without documenting it
    # (with its exact signature), fails here: docs/plugins.md is all a third-party author reads.
    docs = (REPO / "docs" / "plugins.md").read_text()
    methods, class_vars = _contract(cls)
    missing = [f"`{_documented_form(n, fn)}`" for n, fn in methods if f"`{_documented_form(n, fn)}`" not in docs]
    missing += [f"`{name}`" for name in class_vars if f"`{name}`" not in docs]
    assert not missing, f"docs/plugins.md does not document {cls.__name__}'s {', '.join(missing)}"


def test_the_encoder_call_is_documented_with_its_signature():
    from relpos.encoders.vit import PatchEncoder

    docs = (REPO / "docs" / "plugins.md").read_text()
    assert f"`self.encoder{_documented_form('', PatchEncoder.forward)}`" in docs


# -- a class with neither a description nor a docstring ------------------------------------------------------
class UndocumentedPretext(Pretext):
    name = "undocumented"
    Config = _PatchConfig

    def forward(self, batch, generator):
        raise NotImplementedError("registration only")


class UndocumentedPlugin:
    @relpos.hookimpl
    def register_pretexts(self, register):
        register(UndocumentedPretext)


def test_plugins_command_lists_a_class_without_docstring_and_everything_else(plugin, capsys):
    plugin(UndocumentedPlugin(), "undocumented")
    from relpos.cli import main

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.strip().startswith("undocumented "))
    assert "(no description)" in line
    assert "part-grid" in out and "Failed to load" not in out
    assert main(["plugins", "--json"]) == 0
    listed = {(p["kind"], p["name"]): p for p in json.loads(capsys.readouterr().out)["plugins"]}
    assert listed[("pretext", "undocumented")]["description"] == "(no description)"
    assert listed[("pretext", "part")]["description"] == relpos.plugins.get_pretext("part").describe() != ""


def test_the_description_is_the_first_non_blank_line_of_the_class_own_docstring():
    class Blank(Pretext):
        """

        Second line is the first that says something.
        More.
        """

    class Inheriting(Blank):
        pass  # no docstring of its own: a base class's docstring says nothing about it

    assert Blank.describe() == "Second line is the first that says something."
    assert Inheriting.describe() == "(no description)"
    Inheriting.description = "Set explicitly."
    assert Inheriting.describe() == "Set explicitly."


class RaisingDescribePretext(UndocumentedPretext):
    name = "raising-describe"

    @classmethod
    def describe(cls):
        raise KeyError("nope")


def test_a_describe_that_raises_is_that_plugin_failure_only(plugin, capsys):
    plugin(_registering("pretext", RaisingDescribePretext), "raising-describe")
    from relpos.cli import main

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "part-grid" in out
    assert "raising-describe (registered at run time): TypeError: RaisingDescribePretext.describe() raised" in out


# -- a misspelled hook names the nearest one -------------------------------------------------------------------
def test_a_misspelled_hook_is_reported_with_the_nearest_hook_name(install, capsys):
    install("typo_relpos_plugin", """
        import relpos

        @relpos.hookimpl
        def register_encoder(register):  # the hook is register_encoders
            raise AssertionError("never called")
    """, dist="typo-relpos-plugin", entry="typo")
    registry = relpos.plugins.get_registry()
    assert BUILTINS <= names_of(registry)
    assert [f.error for f in registry.failures] == [
        "Unknown hook 'register_encoder'. Did you mean 'register_encoders'? The relpos hooks are "
        "register_modalities, register_pretexts, register_datasets, register_encoders."
    ]
    err = capsys.readouterr().err
    assert "plugin 'typo' from typo-relpos-plugin was skipped: Unknown hook 'register_encoder'. Did you mean" in err


def test_a_misspelled_hook_of_a_class_based_plugin_names_the_nearest_hook(plugin):
    plugin(MisspelledPlugin(), "typo")
    (failure,) = relpos.plugins.load_registry().failures
    assert failure.error.startswith("Unknown hook 'register_modality'. Did you mean 'register_modalities'?")

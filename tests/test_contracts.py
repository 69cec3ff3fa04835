"""Each contract owns its room: no import circle in the core, a registry that imports none of the
kinds it registers, and pretexts handed the encoder relpos built."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import relpos
from relpos.encoders import build_data_encoder
from relpos.errors import ConfigError
from relpos.pretext import construct_pretext

from example_plugins import registered

SRC = Path(__file__).resolve().parents[1] / "src"


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of relpos it imports}``, counting imports at any depth (inside functions too)."""
    modules = {}
    for path in (SRC / "relpos").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join([*base, node.module] if node.module else base)
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    graph[name].add(full if full in modules else target)
            elif isinstance(node, ast.Import):
                graph[name].update(alias.name for alias in node.names)
        graph[name] = {t for t in graph[name] if t in modules and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or through others (Tarjan's SCCs of size > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_circle_finder_finds_a_known_circle():
    # a -> b -> c -> a is one circle; d only imports into it
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_core():
    graph = import_graph()
    assert "relpos.encoders.vit" in graph and "relpos.encoder" not in graph  # encoder.py folded into encoders/
    assert circles(graph) == []


def test_the_registry_imports_none_of_the_kinds_it_registers():
    graph = import_graph()
    kinds = {"relpos.modality", "relpos.pretext", "relpos.datasets", "relpos.encoders", "relpos.encoders.base"}
    assert graph["relpos.plugins"] & kinds == set()
    assert graph["relpos.api"].isdisjoint({"relpos.export"})  # loading an export lives with loading a run
    code = (
        "import sys, relpos.plugins; "
        "print(sorted(m for m in ('relpos.modality', 'relpos.pretext', 'relpos.datasets', 'relpos.encoders') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def tiny_part(seed: int = 0):
    config = relpos.resolve_config(
        modality="image", pretext="part",
        overrides=["encoder.dim=16", "encoder.depth=1", "encoder.heads=2", "pretext.n_patches=4"],
    )
    modality = relpos.get_modality("image")(config.modality_config)
    windows = relpos.Windows(x=torch.zeros(2, 3, 16, 16))
    return config, modality, windows


def test_build_pretext_hands_over_the_encoder_it_is_given():
    config, modality, windows = tiny_part()
    encoder = build_data_encoder(config.encoder, modality, windows)
    part = relpos.get_pretext("part")
    pretext = construct_pretext(part, config.pretext_config, modality, config.encoder, windows, encoder)
    assert pretext.encoder is encoder
    # taken once: the next pretext, built directly, gets an encoder of its own
    other = relpos.get_pretext("part")(config.pretext_config, modality, config.encoder, windows)
    assert other.encoder is not encoder


def test_building_the_encoder_first_gives_the_weights_of_a_pretext_built_directly():
    # Same seed, same weights, heads included: the encoder is still drawn first, as when the
    # pretext built it itself, so a run's initial weights did not change.
    config, modality, windows = tiny_part()
    torch.manual_seed(3)
    handed = construct_pretext(relpos.get_pretext("part"), config.pretext_config, modality, config.encoder, windows)
    torch.manual_seed(3)
    direct = relpos.get_pretext("part")(config.pretext_config, modality, config.encoder, windows)
    assert list(handed.state_dict()) == list(direct.state_dict())
    for name, value in handed.state_dict().items():
        assert torch.equal(value, direct.state_dict()[name]), name


def test_a_third_party_pretext_on_the_documented_signature_receives_the_encoder():
    # examples/relpos-jigsaw: __init__(config, modality, encoder_config, data) -> super().__init__(...)
    with registered("relpos-jigsaw"):
        cls = relpos.get_pretext("jigsaw")
        config = relpos.resolve_config(
            modality="image", pretext="jigsaw", overrides=["encoder.dim=16", "encoder.depth=1", "encoder.heads=2"],
        )
        modality = relpos.get_modality("image")(config.modality_config)
        windows = relpos.Windows(x=torch.zeros(2, 3, 8, 8))  # 2 × 2 cells of the 4-px default patch
        encoder = build_data_encoder(config.encoder, modality, windows)
        pretext = construct_pretext(cls, config.pretext_config, modality, config.encoder, windows, encoder)
    assert pretext.encoder is encoder
    assert pretext.n_cells == 4


def test_a_pretext_refused_by_its_encoder_check_builds_no_encoder(monkeypatch):
    config, modality, windows = tiny_part()
    built = []
    monkeypatch.setattr("relpos.pretext.build_data_encoder", lambda *args: built.append(args))
    config.encoder.pos_embed = "sincos"  # MP3 predicts positions: its encoder must not see them
    with pytest.raises(ConfigError, match="'mp3' trains its encoder without position embeddings"):
        mp3 = relpos.get_pretext("mp3")
        construct_pretext(mp3, mp3.Config(), modality, config.encoder, windows)
    assert built == []

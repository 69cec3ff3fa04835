"""The benchmark runner (bench/run.py): recipes, the data-set table, resumable cells and the report."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "bench" / "recipes").glob("*.yaml"))


@pytest.fixture(scope="module")
def run():
    spec = importlib.util.spec_from_file_location("relpos_bench_run", REPO / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _cell(seed: int, pretrained: float, random: float, ratio: float) -> dict:
    def scores(kappa):
        return {"linear": {"cohen_kappa": kappa, "accuracy": 0.8, "balanced_accuracy": 0.75, "macro_f1": 0.7,
                           "n_train": 40, "n_test": 40, "features": "mean", "seconds": 1.0}}

    return {
        "recipe": "payoff", "dataset": "basicmotions", "method": "part", "setting": "recipe", "seed": seed,
        "pretrain": {"ratio_last": ratio, "loss_first": 1.0, "baseline_first": 1.0, "loss_last": ratio,
                     "baseline_last": 1.0, "warned_stuck": False, "seconds": 2.0, "steps": 5,
                     "curve": [[1, 1.0, 1.0], [5, ratio, 1.0]], "timed_share": {}},
        "eval": {"pretrained": scores(pretrained), "random": scores(random)},
        "machine": {"cpu": "test cpu", "cpu_count": 2, "python": "3", "torch": "2", "device": "cpu"},
        "command": "python bench/run.py payoff",
    }


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_loads_and_its_defaults_name_existing_configs_and_pretexts(run, path):
    from relpos.plugins import list_pretexts

    recipe = run.load_recipe(path)
    for ds in recipe.defaults["datasets"]:
        for name in recipe.defaults["methods"]:
            method = recipe.method(name)
            assert method.pretext in list_pretexts()
            config, _ = method.base_config(run.DATASETS[ds])
            assert config is None or config.is_file(), f"{path.name}: {ds} / {name} has no {config}"


def test_the_data_table_names_data_relative_to_the_data_root(run, monkeypatch, tmp_path):
    for ds in run.DATASETS.values():
        assert not Path(ds.file).is_absolute()
    monkeypatch.delenv("RELPOS_SHARED_DATA", raising=False)
    assert run.DATASETS["blink"].path == REPO.parent / "shared" / "data" / "eeg" / "blink.npz"
    monkeypatch.setenv("RELPOS_SHARED_DATA", str(tmp_path))
    assert run.DATASETS["blink"].path == tmp_path / "eeg" / "blink.npz"
    assert run.DATASETS["mnist"].recipe("pw-self") == REPO / "bench" / "configs" / "mnist_pw_self.yaml"


def test_a_mistake_in_a_recipe_is_one_sentence_and_exit_status_2(run, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [blink]\nmethods: [{pretext: part, confg: dataset}]\nseeds: [0]\nsteps: 5\n")
    with pytest.raises(SystemExit) as exit_info:
        run.main([str(bad), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'confg'" in err and "allowed: name, pretext, config, overrides" in err
    assert not (tmp_path / "out").exists()

    with pytest.raises(SystemExit) as exit_info:
        run.main(["payoff", "--methods", "part", "nope", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "--methods got 'nope'" in capsys.readouterr().err


def test_the_report_pools_seeds_as_computed_by_hand(run, tmp_path, capsys):
    cells = tmp_path / "cells"
    cells.mkdir()
    # seed 0: 0.5 vs 0.4, seed 1: 0.7 vs 0.4 -> pretrained 0.600 ± 0.141 (sample std), Δ = (0.1 + 0.3) / 2
    for cell in (_cell(0, 0.5, 0.4, 0.5), _cell(1, 0.7, 0.4, 0.7)):
        (cells / f"basicmotions-part-recipe-s{cell['seed']}.json").write_text(json.dumps(cell))
    assert run.main(["payoff", "--out", str(tmp_path), "--report-only"]) == 0
    report = (tmp_path / "results.md").read_text()
    assert ("| basicmotions | part | recipe | linear | mean | 0.600 ± 0.141 | 0.400 ± 0.000 | +0.200 ✓ | 0,1 | 0.600 |"
            in report)
    assert (tmp_path / "results.png").is_file() and (tmp_path / "loss.png").is_file()


def test_a_cell_already_written_is_not_run_again(run, tmp_path, capsys, shared_data):
    cells = tmp_path / "cells"
    cells.mkdir()
    (cells / "basicmotions-part-recipe-s0.json").write_text(json.dumps(_cell(0, 0.5, 0.4, 0.5)))
    assert run.main(["payoff", "--datasets", "basicmotions", "--seeds", "0", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 cell(s), 1 already done, 0 to run" in out
    assert not (tmp_path / "runs").exists()  # nothing was trained
    assert "+0.100" in (tmp_path / "results.md").read_text()

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
            assert set(method.pretext.split("+")) <= set(list_pretexts())  # part+sove: a composition
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


# -- the sleep night's baselines (bench/bench_braindecode_rp.py, recipe sleep_rp) ----------------
def _load_bench_module(name: str):
    spec = importlib.util.spec_from_file_location(f"relpos_bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_log_band_powers_of_sines_match_the_hand_computation():
    import numpy as np

    common = _load_bench_module("_common")
    t = np.arange(3000) / 100.0  # one 30-s window at 100 Hz
    # A sine of amplitude A has power A² / 2: 2 µV at 10 Hz -> 2 µV² in alpha (8-12 Hz);
    # 4 µV at 2 Hz -> 8 µV² in delta (0.5-4 Hz). Both on Welch bins, so nothing leaks to other bands.
    x = np.stack([2.0 * np.sin(2 * np.pi * 10.0 * t), 4.0 * np.sin(2 * np.pi * 2.0 * t)])[None]
    feats = common.log_band_powers(x, 100.0)
    names = [name for name, _, _ in common.SLEEP_BANDS]
    assert names == ["delta", "theta", "alpha", "sigma", "beta", "total"]
    assert feats.shape == (1, 12)
    ch0, ch1 = dict(zip(names, feats[0, :6])), dict(zip(names, feats[0, 6:]))
    assert ch0["alpha"] == pytest.approx(np.log10(2.0), abs=1e-3)
    assert ch0["total"] == pytest.approx(np.log10(2.0), abs=1e-3)
    assert ch1["delta"] == pytest.approx(np.log10(8.0), abs=1e-3)
    assert ch1["total"] == pytest.approx(np.log10(8.0), abs=1e-3)
    assert max(ch0["delta"], ch0["theta"], ch0["sigma"], ch0["beta"]) < -10  # below 1e-10 µV²
    assert max(ch1["theta"], ch1["alpha"], ch1["sigma"], ch1["beta"]) < -10


def test_the_braindecode_benchmark_refuses_in_one_sentence_without_its_environment(tmp_path):
    import os
    import subprocess

    env = {**os.environ, "RELPOS_BRAINDECODE_ENV": str(tmp_path / "absent"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_braindecode_rp.py"), "--seeds", "0",
                           "--out", str(out)], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert f"braindecode is not installed in {tmp_path / 'absent'}" in err and "docs/history.md" in err
    assert not out.exists()  # refused before anything was read or written


def test_rows_without_a_trained_encoder_get_their_own_table_as_computed_by_hand(run, tmp_path):
    cells = tmp_path / "cells"
    cells.mkdir()

    def scores(kappa, balanced):
        return {p: {"cohen_kappa": kappa, "accuracy": 0.9, "balanced_accuracy": balanced, "macro_f1": 0.7,
                    "n_train": 40, "n_test": 40, "features": "embedding", "seconds": 1.0}
                for p in ("linear", "knn")}

    base = {"recipe": "sleep_rp", "dataset": "sleep", "machine": {"cpu": "test cpu"}, "command": "test"}
    for seed, (kappa, balanced) in enumerate([(0.9, 0.8), (0.8, 0.6)]):
        band = {**base, "method": "band-powers", "setting": "none", "seed": seed, "normalize": "none",
                "pretrain": None, "eval": {"fixed": scores(kappa, balanced)}}
        (cells / f"sleep-band-powers-none-s{seed}.json").write_text(json.dumps(band))
    # RP-like: 10 s for 2,000 windows -> 5.00 s per 1,000; trained 0.7 vs random 0.5
    rp = {**base, "method": "braindecode-rp", "setting": "example", "seed": 0, "normalize": "instance",
          "pretrain": {"ratio_last": 0.8, "loss_first": 0.69, "baseline_first": 0.69, "loss_last": 0.55,
                       "baseline_last": 0.69, "warned_stuck": False, "seconds": 10.0, "steps": 25,
                       "windows_seen": 2000, "curve": [[1, 0.69, 0.69], [25, 0.55, 0.69]], "timed_share": {}},
          "eval": {"pretrained": scores(0.7, 0.6), "random": scores(0.5, 0.4)}}
    (cells / "sleep-braindecode-rp-example-s0.json").write_text(json.dumps(rp))
    assert run.main(["sleep_rp", "--out", str(tmp_path), "--report-only"]) == 0
    report = (tmp_path / "results.md").read_text()
    # seeds 0.9 and 0.8: mean 0.850, sample std 0.0707; balanced 0.8 and 0.6: 0.700 ± 0.141
    assert ("| sleep | band-powers | none | hand-crafted | none | 0.850 ± 0.071 | 0.700 ± 0.141 | 0.850 ± 0.071 | "
            "0.700 ± 0.141 | – | 0,1 |") in report
    assert "| sleep | braindecode-rp | example | trained | instance | 0.700 ± 0.000 | 0.600 ± 0.000 |" in report
    assert "| 5.00 | 0 |" in report
    assert "| sleep | braindecode-rp | example | random init | instance | 0.500 ± 0.000 | 0.400 ± 0.000 |" in report
    # the Δ table holds the trained method only
    assert "| sleep | braindecode-rp | example | linear | embedding | 0.700 ± 0.000 | 0.500 ± 0.000 | +0.200 ✓ |" in report
    assert "| sleep | band-powers | none | linear |" not in report


def test_a_cell_counts_every_window_of_a_sample_in_its_time_per_1000_windows(run, tmp_path, shared_data):
    # RP's sample is a pair of windows: 2 steps of 3 pairs are 12 windows seen, not 6 (braindecode's
    # rows count a pair as two as well), so relpos's time per 1,000 windows compares with theirs.
    recipe = tmp_path / "tiny_rp.yaml"
    recipe.write_text(
        "datasets: [sleep]\n"
        "methods:\n"
        "  - {name: rp, pretext: rp, overrides: [encoder.dim=16, encoder.depth=1, encoder.heads=1,"
        " train.batch_size=3, train.warmup_steps=0]}\n"
        "seeds: [0]\nsteps: 2\n"
        "evaluate: {inits: [pretrained], features: mean, protocols: [knn]}\n"
    )
    assert run.main([str(recipe), "--out", str(tmp_path), "--data-root", str(shared_data)]) == 0
    pretrain = json.loads((tmp_path / "cells" / "sleep-rp-recipe-s0.json").read_text())["pretrain"]
    assert pretrain["windows_per_sample"] == 2
    assert pretrain["windows_seen"] == 12


def test_a_composed_runs_loss_over_baseline_is_each_pretexts_own(run):
    """part+sove logs no baseline of its weighted total: the report gives each pretext's ratio over the
    last tenth of the rows (hand-computed: part 116.2 / 140 = 0.830, sove 3.2 / 5 = 0.640)."""
    rows = [{"step": 10 * i, "loss": 150.0, "part/loss": 140.0, "part/loss_baseline": 140.0, "sove/loss": 5.0,
             "sove/loss_baseline": 5.0} for i in range(1, 10)]
    rows.append({"step": 100, "loss": 120.0, "part/loss": 116.2, "part/loss_baseline": 140.0, "sove/loss": 3.2,
                 "sove/loss_baseline": 5.0})
    summary = run.loss_summary(rows)
    assert summary["ratio_last"] is None
    assert summary["components"]["part"]["ratio_last"] == pytest.approx(0.83)
    assert run.ratio_text(summary) == "part 0.830, sove 0.640"
    assert run.ratio_text([summary, summary]) == "part 0.830, sove 0.640"
    single = run.loss_summary([{"step": 1, "loss": 1.0, "loss_baseline": 2.0}])
    assert single["components"] == {} and run.ratio_text(single) == "0.500"

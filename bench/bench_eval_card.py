"""Calibration of the evaluation card's interval for pretrained − random (issue 26's goal).

For each labelled data set of the payoff benchmark (bench/recipes/payoff.yaml), PART with the
payoff's default recipe is pretrained once (train.seed 0, the recipe's 300 steps unless --steps), then
``relpos.evaluation.card.write_card`` scores the linear probe (mean features, as the payoff does)
with evaluation seeds {0, 1, 2}: its 95 % interval for pretrained − random Cohen's κ is checked
against the mean difference of three fresh evaluation seeds {3, 4, 5} (a second card). The goal: the
interval contains the fresh mean on at least 4 of the 5 data sets.

What a fresh seed changes is the evaluation's randomness (the random encoder's weights, the probe's
validation split, the fold of a single recording), not the pretraining run.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_eval_card.py                 # pretrain, then the cards
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_eval_card.py --phase pretrain
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_eval_card.py --phase cards --datasets scp1 blink
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_eval_card.py --phase cards --datasets sleep --repeats 5 \
        --stem sleep_repeats5      # seeds 0-4 (every fold of the night once) against seeds 5-9

Results: bench/results/eval_card/results.{md,json}; the runs under bench/results/eval_card/runs/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import run as bench_run  # noqa: E402

OUT = _common.RESULTS_DIR / "eval_card"


def run_dir(ds: str) -> Path:
    return OUT / "runs" / f"{ds}-part-seed0"


def pretrain(datasets: list[str], steps: list[str]) -> dict[str, float]:
    import relpos

    args, recipe = bench_run.parse_args(["payoff", "--datasets", *datasets, "--methods", "part", "--settings",
                                         "recipe", "--seeds", "0", "--device", "cpu",
                                         *(["--steps", *steps] if steps else [])])
    seconds = {}
    for ds in datasets:
        target = run_dir(ds)
        if (target / "checkpoints" / "last.pt").is_file():
            print(f"[{ds}] already pretrained in {target}", flush=True)
            continue
        config_path, overrides = bench_run.run_overrides(recipe, ds, recipe.method("part"), recipe.setting("recipe"),
                                                         0, target, args)
        kind = _common.DATASETS[ds]
        config = (relpos.resolve_config(modality=kind.modality, pretext="part", overrides=overrides)
                  if config_path is None else relpos.resolve_config(config_path, pretext="part", overrides=overrides))
        t0 = time.perf_counter()
        relpos.train(config)
        seconds[ds] = time.perf_counter() - t0
        print(f"[{ds}] pretrained {args.steps_by_ds[ds]} steps in {seconds[ds]:.0f} s", flush=True)
    return seconds


def cards(datasets: list[str], repeats: int) -> list[dict]:
    from relpos.evaluation.card import write_card

    first, fresh = tuple(range(repeats)), tuple(range(repeats, 2 * repeats))

    rows = []
    for ds in datasets:
        kind = _common.DATASETS[ds]
        extra = dict(kind.eval_options, progress=False)
        t0 = time.perf_counter()
        first_card = write_card(run_dir(ds), "linear", features="mean", seed=first[0], repeats=repeats, write=False,
                                **extra)
        fresh_card = write_card(run_dir(ds), "linear", features="mean", seed=fresh[0], repeats=repeats, write=False,
                                **extra)
        row_first = first_card.curve[-1]["difference"]["cohen_kappa"]
        row_fresh = fresh_card.curve[-1]["difference"]["cohen_kappa"]
        low, high = row_first["ci"]
        inside = low <= row_fresh["mean"] <= high
        rows.append({"dataset": ds, "mean_first": row_first["mean"], "ci": [low, high], "seed_std": row_first["seed_std"],
                     "mean_fresh": row_fresh["mean"], "inside": inside, "split": first_card.split["kind"],
                     "n_test": first_card.split["test_windows"], "seconds": time.perf_counter() - t0})
        print(f"[{ds}] Δκ seeds {first[0]}-{first[-1]} {row_first['mean']:+.3f} [{low:+.3f}, {high:+.3f}]; seeds "
              f"{fresh[0]}-{fresh[-1]} "
              f"{row_fresh['mean']:+.3f}: {'inside' if inside else 'OUTSIDE'}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", choices=("all", "pretrain", "cards"), default="all")
    parser.add_argument("--datasets", nargs="+", default=list(_common.DATASETS))
    parser.add_argument("--steps", nargs="+", default=[], metavar="N|NAME=N", help="pretraining steps (default: 300)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="seeds of each card: 0..N-1 give the interval, N..2N-1 the fresh mean (default: 3)")
    parser.add_argument("--stem", default="results", help="name of the result files (default: results)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.phase in ("all", "pretrain"):
        seconds = pretrain(args.datasets, args.steps)
        (OUT / f"pretrain-{int(time.time())}.json").write_text(json.dumps(seconds, indent=2))
    if args.phase in ("all", "cards"):
        rows = cards(args.datasets, args.repeats)
        r = args.repeats
        hits = sum(r["inside"] for r in rows)
        lines = [
            f"# Card calibration: does the interval of seeds 0-{r - 1} hold the mean of seeds {r}-{2 * r - 1}?", "",
            f"Machine: {_common.machine_info()}", "",
            _common.markdown_table(
                ["data set", "split", "test windows", f"Δκ seeds 0-{r - 1}", "95 % interval", "seed std",
                 f"Δκ seeds {r}-{2 * r - 1}",
                 "inside", "s"],
                [[r["dataset"], r["split"], r["n_test"], f"{r['mean_first']:+.3f}",
                  f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]", f"{r['seed_std']:.3f}", f"{r['mean_fresh']:+.3f}",
                  "yes" if r["inside"] else "no", f"{r['seconds']:.0f}"] for r in rows]),
            "", f"{hits} of {len(rows)} inside (goal: at least 4 of 5).",
        ]
        _common.write_results(args.stem, "\n".join(lines) + "\n", {"rows": rows, "hits": hits, "repeats": r}, OUT)
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

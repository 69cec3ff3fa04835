"""What the collapse monitors cost: RankMe every train.monitor_every steps against the training step.

For each labelled data set of the payoff benchmark, PART with its payoff recipe trains for
``--steps`` steps with the monitors off (``train.monitor_every=0``); the median step time is read from
the rows of metrics.csv (every step logged). Then ``relpos.monitors.Monitors.measure`` (RankMe on the
default 256 windows, and separately with the online kNN) is timed on the trained encoder, and the
overhead at the default interval is ``measure / (monitor_every × step)``. A whole run with the
monitors on against one with them off is also timed (noisier on a shared machine).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_monitors.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_monitors.py --datasets sleep --steps 100

Results: bench/results/monitors/results.{md,json}.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import run as bench_run  # noqa: E402

OUT = _common.RESULTS_DIR / "monitors"


def train(ds: str, steps: int, out: Path, every: int) -> tuple[Path, float]:
    import relpos

    args, recipe = bench_run.parse_args(["payoff", "--datasets", ds, "--methods", "part", "--settings", "recipe",
                                         "--seeds", "0", "--device", "cpu", "--steps", str(steps)])
    config_path, overrides = bench_run.run_overrides(recipe, ds, recipe.method("part"), recipe.setting("recipe"), 0,
                                                     out, args)
    overrides += ["train.log_every=1", f"train.monitor_every={every}"]
    kind = _common.DATASETS[ds]
    config = (relpos.resolve_config(modality=kind.modality, pretext="part", overrides=overrides)
              if config_path is None else relpos.resolve_config(config_path, pretext="part", overrides=overrides))
    t0 = time.perf_counter()
    relpos.train(config)
    return Path(config.run_dir()), time.perf_counter() - t0


def step_seconds(run_dir: Path, batch: int) -> float:
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return statistics.median(batch / float(r["samples_per_s"]) for r in rows[5:])  # after the first steps


def main() -> int:
    import relpos
    from relpos.monitors import Monitors
    from relpos.training import open_data

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(_common.DATASETS))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--every", type=int, default=100, help="the interval judged (default: train.monitor_every's)")
    args = parser.parse_args()
    rows = []
    for ds in args.datasets:
        run_dir, off_s = train(ds, args.steps, OUT / "runs" / f"{ds}-off", 0)
        loaded = relpos.load_encoder(run_dir)
        step = step_seconds(run_dir, loaded.config.train.batch_size)
        windows = open_data(loaded.modality, loaded.config.data)
        timings = {}
        for knn in (False, True):
            if knn and (windows.labels is None or len(set(windows.groups.tolist())) < 2
                        and len(set(windows.subjects.tolist())) < 2):
                continue
            monitors = Monitors(windows, loaded.modality, 256, knn=knn, seed=0)
            monitors.measure(loaded.encoder, loaded.config)  # warm-up
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                values = monitors.measure(loaded.encoder, loaded.config)
                times.append(time.perf_counter() - t0)
            timings["knn" if knn else "rankme"] = (statistics.median(times), values)
        _, on_s = train(ds, args.steps, OUT / "runs" / f"{ds}-on", max(1, args.steps // 4))
        rankme_s, values = timings["rankme"]
        row = {"dataset": ds, "step_s": step, "rankme_s": rankme_s, "rankme": values["rankme"],
               "overhead": rankme_s / (args.every * step),
               "knn_s": timings.get("knn", (None,))[0], "knn": timings.get("knn", (None, {}))[1].get("knn"),
               "run_off_s": off_s, "run_on_s": on_s, "on_every": max(1, args.steps // 4)}
        if row["knn_s"] is not None:
            row["overhead_knn"] = row["knn_s"] / (args.every * step)
        rows.append(row)
        print(f"[{ds}] step {step * 1e3:.0f} ms, RankMe {rankme_s * 1e3:.0f} ms ({values['rankme']:.1f}): "
              f"{100 * row['overhead']:.2f} % at every {args.every} steps", flush=True)
    table = _common.markdown_table(
        ["data set", "step (ms)", "RankMe on 256 windows (ms)", "RankMe", f"overhead at every {args.every}",
         "with kNN (ms)", f"overhead with kNN", f"run of {args.steps} steps off / on every {args.steps // 4} (s)"],
        [[r["dataset"], f"{r['step_s'] * 1e3:.0f}", f"{r['rankme_s'] * 1e3:.0f}", f"{r['rankme']:.1f}",
          f"{100 * r['overhead']:.2f} %", "-" if r["knn_s"] is None else f"{r['knn_s'] * 1e3:.0f}",
          "-" if r["knn_s"] is None else f"{100 * r['overhead_knn']:.2f} %",
          f"{r['run_off_s']:.1f} / {r['run_on_s']:.1f}"] for r in rows])
    text = (f"# Collapse monitors' cost\n\nMachine: {_common.machine_info()}\n\n{table}\n\n"
            f"Worst overhead at the default interval: {100 * max(r['overhead'] for r in rows):.2f} % (goal: at most 3 %).\n")
    _common.write_results("results", text, {"rows": rows, "steps": args.steps, "every": args.every}, OUT)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does pretraining learn anything? PART vs PART-grid vs random init on the real data sets.

For each data set in ``../shared/data`` (SelfRegulationSCP1 and Blink through ``--modality eeg``,
BasicMotions through ``timeseries``, MNIST through ``image``), the script

1. times a few pretraining steps of PART and PART-grid (calibration) and turns the time budget into
   one number of steps per data set, the same for both methods;
2. pretrains PART and PART-grid on the training split (``relpos.resolve_config`` + ``relpos.train``);
3. scores the frozen encoders on a validation split carved from the *training* data (linear and
   kNN, CLS and mean features): the only numbers used to choose anything, here which features are
   reported (``--features auto``);
4. evaluates PART, PART-grid and the random-init encoder of the PART run (``relpos.evaluate``,
   ``init="random"``) with the linear and kNN protocols on each data set's own test split;
5. writes ``results.md`` (table), ``results.json`` (everything) and ``results.png`` (κ per data set
   and method, linear and kNN) under ``--out``, plus ``pretrain_loss.png`` (loss curves).

Run from the repository root::

    .venv/bin/python bench/bench_eval.py                      # ~30 min on 2 CPU cores
    .venv/bin/python bench/bench_eval.py --budget-min 240 --device cuda   # the same, scaled up
    # the GPU-scale run reported in bench/README.md (one H100; ~6 min per data set):
    OMP_NUM_THREADS=4 .venv/bin/python bench/bench_eval.py --device cuda --steps 2000 \
        --set mnist:train.batch_size=128 --set scp1:train.batch_size=64 --set blink:train.batch_size=64
    .venv/bin/python bench/bench_eval.py --datasets scp1 --steps 100      # a quick look

The time budget covers the whole script: calibration, pretraining (``--pretrain-share`` of what is
left after calibration, split evenly over the data sets) and evaluation. ``--steps`` fixes the
number of steps instead (one number, or ``NAME=N`` per data set).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Contention, fmt, machine_info, markdown_table  # noqa: E402

import relpos  # noqa: E402
from relpos.distributed import resolve_device  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
#: The shared data folder; ``--data-root`` or ``$RELPOS_SHARED_DATA`` point elsewhere (e.g. on a GPU machine
#: where only a copy of the four files travels with the repository).
DATA_ROOT = Path(os.environ.get("RELPOS_SHARED_DATA", REPO.parent / "shared" / "data"))
METHODS = ("part", "part-grid")
INITS = ("pretrained", "random")
PROTOCOLS = ("linear", "knn")
FEATURES = ("cls", "mean")
#: κ by which PART must beat random init to count as "clearly": 0.10 for EEG (the issue's goal),
#: 0.05 elsewhere (our reading of "clearly", fixed before the first run).
CLEAR_MARGIN = {"EEG": 0.10, "sensor": 0.05, "image": 0.05}
#: What a row of the table is: (method label, pretext whose run is evaluated, init).
ROWS = (("PART", "part", "pretrained"), ("PART-grid", "part-grid", "pretrained"), ("random init", "part", "random"))


@dataclass
class DataSet:
    """A benchmark data set: the recipe it is pretrained with and where its file is."""

    name: str
    title: str
    kind: str
    config: Path
    file: str
    overrides: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return DATA_ROOT / self.file


DATASETS = {
    "scp1": DataSet("scp1", "SelfRegulationSCP1", "EEG", REPO / "configs" / "scp1_part.yaml", "eeg/scp1.npz"),
    "blink": DataSet("blink", "Blink", "EEG", REPO / "configs" / "blink_part.yaml", "eeg/blink.npz"),
    "basicmotions": DataSet(
        "basicmotions", "BasicMotions", "sensor", REPO / "configs" / "basicmotions_part.yaml", "sensor/basicmotions.npz"
    ),
    "mnist": DataSet("mnist", "MNIST", "image", BENCH / "configs" / "mnist_part.yaml", "images/mnist.npz"),
}


# -- configuration -------------------------------------------------------------------------------
def run_config(ds: DataSet, method: str, out: Path, steps: int, args: argparse.Namespace, extra: list[str] = ()):
    overrides = [
        f"data={ds.path}",
        f"out={out}",
        f"train.steps={steps}",
        f"train.seed={args.seed}",
        f"train.device={args.device}",
        "train.progress=false",
        "train.tensorboard=false",
        *ds.overrides,
        *dataset_overrides(args.set, ds.name),
        *extra,
    ]
    return relpos.resolve_config(ds.config, pretext=method, overrides=overrides)


def dataset_overrides(sets: list[str], name: str) -> list[str]:
    """The ``--set`` overrides for data set ``name``: ``KEY=VALUE`` applies to all, ``NAME:KEY=VALUE`` to one."""
    chosen = []
    for value in sets:
        head, sep, rest = value.partition(":")
        if sep and "=" not in head:
            if head not in DATASETS:
                sys.exit(f"bench_eval: --set {value!r} names the data set {head!r}; known: {', '.join(DATASETS)}.")
            if head == name:
                chosen.append(rest)
        else:
            chosen.append(value)
    return chosen


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


# -- 1. calibration ------------------------------------------------------------------------------
def calibrate(ds: DataSet, method: str, out: Path, args: argparse.Namespace) -> dict[str, float]:
    """Seconds per pretraining step (median of the steps after the first two) and fixed overhead."""
    run_dir = out / "calibration" / f"{ds.name}-{method}"
    shutil.rmtree(run_dir, ignore_errors=True)
    config = run_config(ds, method, run_dir, args.calibration_steps, args,
                        ["train.log_every=1", f"train.ckpt_every={args.calibration_steps}"])
    t0 = time.perf_counter()
    relpos.train(config)
    wall = time.perf_counter() - t0
    rows = read_metrics(run_dir)
    step_s = float(np.median([config.train.batch_size / r["samples_per_s"] for r in rows[2:]]))
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"step_s": step_s, "overhead_s": max(0.0, wall - step_s * len(rows)), "wall_s": wall}


def allocate_steps(calibration: dict, names: list[str], budget_s: float, max_steps: int, min_steps: int) -> dict:
    """Split ``budget_s`` evenly over the data sets; both methods of a data set get the same steps.

    A data set that reaches ``max_steps`` gives its unused time back to the others.
    """
    cost = {n: sum(calibration[n][m]["step_s"] for m in METHODS) for n in names}
    overhead = {n: sum(calibration[n][m]["overhead_s"] for m in METHODS) for n in names}
    steps: dict[str, int] = {}
    left, open_names = budget_s, list(names)
    while open_names:
        share = left / len(open_names)
        capped = [n for n in open_names if (share - overhead[n]) / cost[n] >= max_steps]
        if not capped:
            for n in open_names:
                steps[n] = max(min_steps, int((share - overhead[n]) / cost[n]) // 10 * 10)
            break
        for n in capped:
            steps[n] = max_steps
            left -= max_steps * cost[n] + overhead[n]
            open_names.remove(n)
    return steps


def single_thread_blas():
    """One BLAS thread for scikit-learn while torch keeps its threads.

    On 2 shared cores, LogisticRegression's many small BLAS calls with 2 OpenBLAS threads (numpy's
    and SciPy's copies, next to torch's OpenMP pool) ran 25x slower than with one: 9.6 s instead of
    0.39 s for 2,000 x 192 features, 10 classes.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


# -- 3. validation split of the training data (never the test split) ----------------------------
def validation_splits(windows, seed: int, max_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified 4-fold split of the training windows that never puts one subject on both sides.

    Small data sets use every fold (the mean over folds steadies a score from 10 validation cases);
    large ones only the first ``max_folds``.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y = windows.labels.numpy()
    subjects = np.asarray(windows.subjects, dtype=str)
    folds = StratifiedGroupKFold(n_splits=4, shuffle=True, random_state=seed)
    return list(folds.split(np.zeros(len(y)), y, subjects))[: 4 if len(y) <= 2000 else max_folds]


def validation_scores(encoder, windows, seed: int) -> dict[str, Any]:
    """κ of a linear probe (best C of a small sweep) and of kNN (k = 20) on validation folds."""
    folds = validation_splits(windows, seed, max_folds=1)
    y = windows.labels.numpy()
    n_classes = int(y.max()) + 1
    both = encoder.embed(windows.x, features="both").numpy().astype(np.float64)
    dim = both.shape[1] // 2
    scores: dict[str, Any] = {}
    with single_thread_blas():
        for features, f in (("cls", both[:, :dim]), ("mean", both[:, dim:])):
            scores[features] = fold_scores(f, y, folds, n_classes)
    scores["n_train"], scores["n_val"] = int(len(folds[0][0])), int(len(folds[0][1]))
    scores["folds"] = len(folds)
    return scores


def fold_scores(f: np.ndarray, y: np.ndarray, folds, n_classes: int) -> dict[str, float]:
    """Mean validation κ over the folds: linear (the best C of the sweep) and kNN (k = 20)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import cohen_kappa_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from relpos.evaluation.probes import knn_predict  # cosine, exp(sim / 0.07)-weighted votes

    linear: dict[float, list[float]] = {c: [] for c in (1e-2, 1e-1, 1.0, 10.0)}
    knn = []
    for train_idx, val_idx in folds:
        for c in linear:
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
            clf.fit(f[train_idx], y[train_idx])
            linear[c].append(cohen_kappa_score(y[val_idx], clf.predict(f[val_idx])))
        pred = knn_predict(f[train_idx], y[train_idx], f[val_idx], k=20, n_classes=n_classes)
        knn.append(cohen_kappa_score(y[val_idx], pred))
    return {"linear": float(max(np.mean(v) for v in linear.values())), "knn": float(np.mean(knn))}


def random_encoder(run_dir: Path, seed: int):
    """The PART run's encoder architecture with fresh random weights (for validation scores)."""
    from relpos.encoders import rebuild_encoder

    encoder = relpos.load_encoder(run_dir)
    torch.manual_seed(seed)
    fresh = rebuild_encoder(encoder.encoder.init_args()).eval()
    encoder.encoder = fresh
    return encoder


# -- 4. test evaluation -------------------------------------------------------------------------
def evaluate(run_dir: Path, protocol: str, init: str, features: str, seed: int) -> dict[str, Any]:
    with single_thread_blas():
        result = relpos.evaluate(run_dir, protocol=protocol, features=features, init=init, seed=seed,
                                 progress=False)
    return _jsonable(result)


def _jsonable(obj: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(obj):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def test_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The mean metrics of an evaluation result (accuracy, balanced_accuracy, macro_f1, cohen_kappa)."""
    mean = result.get("mean") or {}
    return {k: float(mean[k]) for k in ("accuracy", "balanced_accuracy", "macro_f1", "cohen_kappa") if k in mean}


# -- 5. outputs ---------------------------------------------------------------------------------
def write_plot(results: dict, names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    colors = {"PART": "#1f77b4", "PART-grid": "#ff7f0e", "random init": "#7f7f7f"}
    width = 0.26
    for ax, protocol in zip(axes, PROTOCOLS):
        for j, (label, _, _) in enumerate(ROWS):
            values = [results[n]["test"].get(f"{label}|{protocol}", {}).get("cohen_kappa", np.nan) for n in names]
            xs = np.arange(len(names)) + (j - 1) * width
            bars = ax.bar(xs, values, width, label=label, color=colors[label])
            for bar, v in zip(bars, values):
                if np.isfinite(v):
                    ax.annotate(f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, max(v, 0)), ha="center",
                                va="bottom", fontsize=7)
        ax.set_xticks(np.arange(len(names)))
        ax.set_xticklabels([f"{DATASETS[n].title}\n({results[n]['features']} features)" for n in names], fontsize=8)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(f"{protocol} probe")
        ax.set_ylabel("Cohen's κ on the test split")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle("Frozen encoders after equal pretraining budgets (2 CPU cores)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_loss_plot(results: dict, names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
    for ax, n in zip(axes[0], names):
        for method in METHODS:
            curve = results[n]["pretrain"][method]["curve"]
            ax.plot([r[0] for r in curve], [r[1] for r in curve], label=method)
        ax.set_title(DATASETS[n].title, fontsize=9)
        ax.set_xlabel("step")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("pretraining MSE")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_report(results: dict, names: list[str], meta: dict) -> str:
    header = ["data set", "method", "protocol", "features", "accuracy", "κ", "balanced acc", "macro-F1",
              "val κ", "pretrain loss (first → last)", "steps"]
    rows = []
    for n in names:
        r = results[n]
        for label, method, init in ROWS:
            pre = r["pretrain"][method]
            loss = "–" if init == "random" else f"{fmt(pre['first_loss'])} → {fmt(pre['last_loss'])}"
            steps = 0 if init == "random" else pre["steps"]
            for protocol in PROTOCOLS:
                m = r["test"].get(f"{label}|{protocol}", {})
                val = r["validation"][label][r["features"]][protocol]
                cells = [f"{m[k]:.3f}" if k in m else "n/a" for k in ("accuracy", "cohen_kappa", "balanced_accuracy",
                                                                         "macro_f1")]
                rows.append([DATASETS[n].title, label, protocol, r["features"], *cells, f"{val:.3f}", loss, steps])
    lines = [
        "# Evaluation benchmark: PART vs PART-grid vs random init",
        "",
        f"{meta['date']}, {meta['cpu']} ({meta['cpu_count']} cores, torch {meta['torch']}, device {meta['device']}). "
        f"Budget {meta['budget_min']} min; wall time {meta['wall_s'] / 60:.1f} min "
        f"(calibration {meta['phase_s']['calibration'] / 60:.1f}, pretraining {meta['phase_s']['pretrain'] / 60:.1f}, "
        f"validation {meta['phase_s']['validation'] / 60:.1f}, test evaluation {meta['phase_s']['test'] / 60:.1f}).",
        "",
        "Test metrics on each data set's own test split; 'val κ' is the score on a validation split of the "
        "training data (the only scores used for choices). Random init = the PART run's architecture, untrained.",
        "",
        markdown_table(header, rows),
        "",
        "Goals (κ, test split):",
        "",
    ]
    for n in names:
        for protocol in PROTOCOLS:
            t = results[n]["test"]
            k = {label: t.get(f"{label}|{protocol}", {}).get("cohen_kappa", float("nan")) for label, _, _ in ROWS}
            need = CLEAR_MARGIN[DATASETS[n].kind]
            beats = k["PART"] - k["random init"]
            lines.append(
                f"- {DATASETS[n].title}, {protocol}: PART − random = {beats:+.3f} "
                f"({'met' if beats >= need - 1e-9 else 'NOT met'}, needs ≥ {need:.2f}); "
                f"PART − PART-grid = {k['PART'] - k['PART-grid']:+.3f} ({'met' if k['PART'] >= k['PART-grid'] else 'NOT met'})"
            )
    lines += ["", meta["contention"]]
    return "\n".join(lines)


def write_outputs(results: dict, names: list[str], meta: dict, out: Path) -> None:
    tested = all(results[n]["test"] for n in names)
    if tested:
        report = markdown_report(results, names, meta)
        (out / "results.md").write_text(report + "\n")
        write_plot(results, names, out / "results.png")
        print(report)
    write_loss_plot(results, names, out / "pretrain_loss.png")
    print(f"\nwrote {out / 'results.json'}" + (f", {out / 'results.md'}, {out / 'results.png'}" if tested else "")
          + f" and {out / 'pretrain_loss.png'}; wall time {meta['wall_s'] / 60:.1f} min (budget {meta['budget_min']} min)")


# -- main ---------------------------------------------------------------------------------------
def parse_steps(values: list[str], names: list[str]) -> dict[str, int]:
    steps: dict[str, int] = {}
    for value in values:
        if "=" in value:
            name, _, n = value.partition("=")
            if name not in names:
                sys.exit(f"bench_eval: --steps {value!r} names {name!r}, which is not among --datasets ({', '.join(names)}).")
            steps[name] = int(n)
        else:
            steps.update({n: int(value) for n in names})
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-min", type=float, default=30.0, help="wall-clock budget of the whole script (minutes)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "eval")
    parser.add_argument("--steps", nargs="+", default=[], help="fixed steps: N for all, or NAME=N (skips the allocation)")
    parser.add_argument("--pretrain-share", type=float, default=0.65,
                        help="fraction of the budget left after calibration that goes to pretraining")
    parser.add_argument("--max-steps", type=int, default=2000, help="cap on the allocated steps of one data set")
    parser.add_argument("--min-steps", type=int, default=50)
    parser.add_argument("--calibration-steps", type=int, default=8)
    parser.add_argument("--features", default="auto", choices=("auto", *FEATURES),
                        help="features reported; auto: the better of cls/mean by PART's validation κ (linear)")
    parser.add_argument("--set", action="append", default=[], metavar="[NAME:]KEY=VALUE",
                        help="config override for every pretraining run (e.g. train.batch_size=64), or for one "
                             "data set's runs (e.g. mnist:train.batch_size=128)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder holding eeg/scp1.npz, eeg/blink.npz, sensor/basicmotions.npz and images/mnist.npz "
                             "(default: $RELPOS_SHARED_DATA or ../shared/data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="keep finished runs in --out instead of retraining")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite results.md and the plots from --out/results.json without running anything")
    args = parser.parse_args(argv)
    if args.report_only:
        saved = json.loads((args.out / "results.json").read_text())
        names = [n for n in saved["results"] if saved["results"][n]["test"]]
        write_outputs(saved["results"], names, saved["meta"], args.out)
        return 0

    global DATA_ROOT
    if args.data_root is not None:
        DATA_ROOT = args.data_root.resolve()
    if not DATA_ROOT.is_dir():
        sys.exit(f"bench_eval: the shared data folder {DATA_ROOT} does not exist; it must sit beside the repository "
                 f"(../shared/data, see its README.md).")
    names = list(dict.fromkeys(args.datasets))
    missing = [str(DATASETS[n].path) for n in names if not DATASETS[n].path.is_file()]
    if missing:
        sys.exit(f"bench_eval: data file(s) missing: {', '.join(missing)}.")
    if not hasattr(relpos, "evaluate"):
        print("bench_eval: relpos.evaluate is not available; pretraining and validation only.", file=sys.stderr)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    budget_s = args.budget_min * 60
    t_start = time.perf_counter()
    phase_s: dict[str, float] = {}
    contention = Contention().start()

    # 1. calibration and allocation
    fixed = parse_steps(args.steps, names)
    calibration: dict[str, dict] = {}
    t0 = time.perf_counter()
    for n in names:
        if n in fixed:
            continue
        calibration[n] = {m: calibrate(DATASETS[n], m, out, args) for m in METHODS}
        print(f"[calibration] {n}: " + ", ".join(f"{m} {c['step_s']:.3f} s/step (+{c['overhead_s']:.1f} s)"
                                                  for m, c in calibration[n].items()), flush=True)
    phase_s["calibration"] = time.perf_counter() - t0
    steps = dict(fixed)
    if calibration:
        pretrain_s = (budget_s - (time.perf_counter() - t_start)) * args.pretrain_share
        steps.update(allocate_steps(calibration, [n for n in names if n not in fixed], pretrain_s,
                                    args.max_steps, args.min_steps))
    print("[allocation] steps per data set (both methods): " + ", ".join(f"{n} {steps[n]}" for n in names), flush=True)

    # 2. pretraining
    results: dict[str, dict] = {n: {"pretrain": {}, "validation": {}, "test": {}} for n in names}
    t0 = time.perf_counter()
    for n in names:
        ds = DATASETS[n]
        for method in METHODS:
            run_dir = out / "runs" / f"{n}-{method}"
            finished = (run_dir / "checkpoints" / "last.pt").is_file() and args.reuse
            if finished:
                rows = read_metrics(run_dir)
                if not rows or int(rows[-1]["step"]) != steps[n]:
                    sys.exit(f"bench_eval: --reuse found {run_dir} with {int(rows[-1]['step']) if rows else 0} steps, "
                             f"not {steps[n]}; remove it or pass --steps {n}={int(rows[-1]['step']) if rows else 0}.")
                wall = float("nan")
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
                config = run_config(ds, method, run_dir, steps[n], args)
                t1 = time.perf_counter()
                relpos.train(config)
                wall = time.perf_counter() - t1
                rows = read_metrics(run_dir)
            tail = rows[-max(1, len(rows) // 10):]
            results[n]["pretrain"][method] = {
                "run_dir": str(run_dir), "steps": int(rows[-1]["step"]), "wall_s": wall,
                "first_loss": rows[0]["loss"], "last_loss": float(np.mean([r["loss"] for r in tail])),
                "first_center_l2": rows[0].get("center_l2"),
                "last_center_l2": float(np.mean([r.get("center_l2", np.nan) for r in tail])),
                "curve": [(int(r["step"]), r["loss"]) for r in rows],
            }
            p = results[n]["pretrain"][method]
            print(f"[pretrain] {n} {method}: {p['steps']} steps in {wall:.0f} s, loss {p['first_loss']:.3f} -> "
                  f"{p['last_loss']:.3f} (mean of the last 10 % of logged steps)", flush=True)
    phase_s["pretrain"] = time.perf_counter() - t0

    # 3. validation scores on the training data; they choose the reported features
    t0 = time.perf_counter()
    for n in names:
        part_dir = Path(results[n]["pretrain"]["part"]["run_dir"])
        windows = None
        for label, method, init in ROWS:
            run_dir = Path(results[n]["pretrain"][method]["run_dir"])
            encoder = relpos.load_encoder(run_dir) if init == "pretrained" else random_encoder(part_dir, args.seed)
            if windows is None:
                windows = encoder.open(DATASETS[n].path)
            results[n]["validation"][label] = validation_scores(encoder, windows, args.seed)
        v = results[n]["validation"]
        if args.features == "auto":
            results[n]["features"] = max(FEATURES, key=lambda f: (v["PART"][f]["linear"], f == "cls"))
        else:
            results[n]["features"] = args.features
        print(f"[validation] {n} (train {v['PART']['n_train']}, val {v['PART']['n_val']}): " + "; ".join(
            f"{label} " + ", ".join(f"{f} lin {v[label][f]['linear']:.3f} knn {v[label][f]['knn']:.3f}" for f in FEATURES)
            for label, _, _ in ROWS) + f" -> features {results[n]['features']}", flush=True)
    phase_s["validation"] = time.perf_counter() - t0

    # 4. test evaluation
    t0 = time.perf_counter()
    if hasattr(relpos, "evaluate"):
        for n in names:
            for label, method, init in ROWS:
                run_dir = Path(results[n]["pretrain"][method]["run_dir"])
                for protocol in PROTOCOLS:
                    t1 = time.perf_counter()
                    full = evaluate(run_dir, protocol, init, results[n]["features"], args.seed)
                    m = test_metrics(full)
                    results[n]["test"][f"{label}|{protocol}"] = {**m, "wall_s": time.perf_counter() - t1, "full": full}
                    print(f"[test] {n} {label} {protocol}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()),
                          flush=True)
    phase_s["test"] = time.perf_counter() - t0

    # 5. outputs
    contention.stop()
    meta = {**machine_info(), "device": str(resolve_device(args.device)),
            "budget_min": args.budget_min, "wall_s": time.perf_counter() - t_start, "phase_s": phase_s,
            "steps": steps, "calibration": calibration, "contention": contention.describe(),
            "contention_detail": contention.result, "argv": sys.argv[1:] if argv is None else argv}
    (out / "results.json").write_text(json.dumps(_jsonable({"meta": meta, "results": results}), indent=2) + "\n")
    write_outputs(results, names, meta, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

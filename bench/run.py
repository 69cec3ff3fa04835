"""Does pretraining with relpos pay off? Pretrained vs random init of the same architecture, every labelled data set.

For every labelled data set in ``../shared/data`` (SelfRegulationSCP1, Blink, BasicMotions, MNIST and
the one Sleep-EDF night), every pretext asked for (``--methods``, default PART), every normalisation
(``--normalize``) and every seed (``--seeds``), one **cell** is

1. pretrained with the data set's recipe (``configs/<prefix>_<method>.yaml``; MNIST:
   ``bench/configs/mnist_<method>.yaml``) and ``train.seed = s``; from its ``metrics.csv`` the loss
   and the pretext's trivial baseline (``loss_baseline``) are averaged over the first and the last
   tenth of the logged steps, and whether the run warned that its loss stayed at the baseline is
   recorded from its warnings;
2. evaluated with ``relpos.evaluate`` (evaluation seed ``s``) for ``init="pretrained"`` and
   ``init="random"`` (the same architecture with fresh weights) under three protocols: the linear
   probe and kNN with all training labels, and fine-tuning with a tenth of them (the few-label
   fine-tuning of "How PARTs assemble into wholes: Learning the relative composition of images"). The random-init
   scores depend on the data set, normalisation, seed and architecture only, so they are computed once
   per such key and shared by methods that use the same architecture.

The features are FIXED to ``mean`` (the mean patch token), and the protocol by which the question
"does pretraining pay off?" is answered is the **linear probe** with each recipe's own normalisation
(kNN and few-label fine-tuning are reported beside it). Both choices were made before any test score
was seen, so no test score chooses anything in this benchmark.

On the sleep night (one recording of one subject) the evaluation splits the night into
``time_blocks = 30`` contiguous blocks dealt into folds, seed ``s`` holding out fold ``s mod F``, so no
test fold is wake only; a label fraction keeps whole blocks of time.

Every finished cell is written atomically to ``OUT/cells/<ds>-<method>-<norm>-s<seed>.json``; a cell
whose file exists is skipped, so runs resume and can be split over processes or machines (run the
same command with ``--datasets``/``--seeds`` subsets and the same ``--out``, then ``--report-only``).
The report is ``OUT/results.md``, ``results.json``, ``results.png`` (κ per protocol, pretrained vs
random, mean ± std over seeds) and ``loss.png`` (loss / trivial baseline over the steps).

Run from the repository root::

    .venv/bin/python bench/bench_payoff.py                                # all five data sets, PART, 3 seeds
    .venv/bin/python bench/bench_payoff.py --datasets scp1 blink --normalize instance recording
    .venv/bin/python bench/bench_payoff.py --jobs 8 --device cuda --steps 2000 --data-root /data
    .venv/bin/python bench/bench_payoff.py --report-only                  # rebuild the report from the cells
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import hashlib
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Contention, machine_info, markdown_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
#: The shared data folder; ``--data-root`` or ``$RELPOS_SHARED_DATA`` point elsewhere.
DATA_ROOT = Path(os.environ.get("RELPOS_SHARED_DATA", REPO.parent / "shared" / "data"))
NORMALIZE = ("recipe", "instance", "recording", "file")
INITS = ("pretrained", "random")
#: (protocol, label fraction): linear and kNN on all training labels, fine-tuning on a tenth.
PROTOCOLS = (("linear", 1.0), ("knn", 1.0), ("finetune", 0.1))
#: Fixed before any test score was seen (see the module docstring).
FEATURES = "mean"
#: Δκ (pretrained − random, mean over seeds) at or above this is marked ✓ in the report.
CLEAR_GAIN = 0.10
STUCK_TEXT = "not clearly below the pretext's trivial baseline"
METRIC_KEYS = ("cohen_kappa", "accuracy", "balanced_accuracy", "macro_f1")


@dataclass
class DataSet:
    """A labelled data set: where its data is and how its recipes are named."""

    name: str
    title: str
    data: str  # relative to the data root: a file or a folder
    recipe_dir: Path
    prefix: str
    normalizable: bool  # whether the modality has a ``normalize`` setting
    eval_options: dict[str, Any]

    @property
    def path(self) -> Path:
        return DATA_ROOT / self.data

    def recipe(self, method: str) -> Path:
        return self.recipe_dir / f"{self.prefix}_{method.replace('-', '_')}.yaml"


DATASETS = {
    "scp1": DataSet("scp1", "SelfRegulationSCP1", "eeg/scp1.npz", REPO / "configs", "scp1", True, {}),
    "blink": DataSet("blink", "Blink", "eeg/blink.npz", REPO / "configs", "blink", True, {}),
    "basicmotions": DataSet("basicmotions", "BasicMotions", "sensor/basicmotions.npz", REPO / "configs",
                            "basicmotions", True, {}),
    "mnist": DataSet("mnist", "MNIST", "images/mnist.npz", BENCH / "configs", "mnist", False, {}),
    "sleep": DataSet("sleep", "Sleep-EDF (one night)", "eeg/sleep-edf", REPO / "configs", "eeg_sleep", True,
                     {"time_blocks": 30}),
}


def fail(message: str) -> None:
    sys.exit(f"bench_payoff: {message}")


# -- options ------------------------------------------------------------------------------------
def dataset_overrides(sets: list[str], name: str) -> list[str]:
    """The ``--set`` overrides for data set ``name``: ``KEY=VALUE`` applies to all, ``NAME:KEY=VALUE`` to one."""
    chosen = []
    for value in sets:
        head, sep, rest = value.partition(":")
        if sep and "=" not in head:
            if head not in DATASETS:
                fail(f"--set {value!r} names the data set {head!r}; known: {', '.join(DATASETS)}.")
            if head == name:
                chosen.append(rest)
        else:
            if "=" not in value:
                fail(f"--set expects [NAME:]KEY=VALUE, got {value!r}.")
            chosen.append(value)
    return chosen


def parse_steps(values: list[str], default: int) -> dict[str, int]:
    steps = {n: default for n in DATASETS}
    for value in values:
        name, sep, n = value.rpartition("=")
        if sep and name not in DATASETS:
            fail(f"--steps {value!r} names {name!r}; known data sets: {', '.join(DATASETS)}.")
        try:
            count = int(n)
        except ValueError:
            count = 0
        if count < 1:
            fail(f"--steps expects a positive integer N or NAME=N, got {value!r}.")
        if sep:
            steps[name] = count
        else:
            steps.update({k: count for k in DATASETS})
    return steps


def cell_name(ds: str, method: str, norm: str, seed: int) -> str:
    return f"{ds}-{method}-{norm}-s{seed}"


def plan(args: argparse.Namespace) -> tuple[list[tuple[str, str, str, int]], list[str]]:
    """The cells to run, in order, and notes on the (data set, method, normalisation) left out."""
    cells, notes = [], []
    for ds in args.datasets:
        for method in args.methods:
            recipe = DATASETS[ds].recipe(method)
            if not recipe.is_file():
                notes.append(f"{ds} / {method}: no recipe ({recipe.relative_to(REPO)} does not exist)")
                continue
            for norm in args.normalize:
                if norm != "recipe" and not DATASETS[ds].normalizable:
                    notes.append(f"{ds} / {method} / {norm}: skipped, the {ds} modality has no normalize setting "
                                 f"(only 'recipe' applies)")
                    continue
                cells.extend((ds, method, norm, s) for s in args.seeds)
    # Seed-major, slow data sets first: a run cut off by --time-limit still holds every data set for
    # its first seeds, and the workers' tail is short.
    slow = {"sleep": 0, "mnist": 1}
    cells.sort(key=lambda c: (args.seeds.index(c[3]), slow.get(c[0], 2)))
    return cells, notes


# -- one cell -----------------------------------------------------------------------------------
class _Tee:
    """Writes through to a stream and keeps the lines, so the run's warnings can be recorded."""

    def __init__(self, stream):
        self.stream, self.lines, self._part = stream, [], ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        self._part += text
        *done, self._part = self._part.split("\n")
        self.lines.extend(done)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def loss_summary(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Loss and baseline averaged over the first and the last tenth of the logged steps."""
    n = max(1, len(rows) // 10)

    def mean(part, key):
        values = [r[key] for r in part if key in r]
        return float(np.mean(values)) if values else None

    out = {"logged": len(rows), "tenth_rows": n,
           "loss_first": mean(rows[:n], "loss"), "loss_last": mean(rows[-n:], "loss"),
           "baseline_first": mean(rows[:n], "loss_baseline"), "baseline_last": mean(rows[-n:], "loss_baseline")}
    out["ratio_last"] = (out["loss_last"] / out["baseline_last"]
                         if out["baseline_last"] not in (None, 0) and out["loss_last"] is not None else None)
    out["curve"] = [[int(r["step"]), r["loss"], r.get("loss_baseline")] for r in rows]
    return out


def atomic_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=_plain) + "\n")
    os.replace(tmp, path)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return str(obj)


def evaluate_one(run_dir: Path, protocol: str, fraction: float, init: str, seed: int, ds: DataSet,
                 args: argparse.Namespace) -> dict[str, Any]:
    import relpos

    options = dict(ds.eval_options, progress=False, write=False, device=args.device)
    if protocol == "finetune":
        options["steps"] = args.finetune_steps
    blas = single_thread_blas() if protocol != "finetune" else contextlib.nullcontext()
    t0 = time.perf_counter()
    with blas:
        result = relpos.evaluate(run_dir, protocol=protocol, init=init, features=FEATURES, label_fraction=fraction,
                                 seed=seed, **options)
    return {
        **{k: float(result.mean[k]) for k in METRIC_KEYS if k in result.mean},
        "n_train": int(result.n_train[0]), "n_test": int(result.n_test), "split": result.split,
        "folds": list(result.folds), "chosen": result.chosen, "label_fraction": fraction,
        "seconds": time.perf_counter() - t0,
    }


def single_thread_blas():
    """One BLAS thread for scikit-learn's probes (many small BLAS calls thrash with several threads)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def random_key(run_dir: Path, ds: str, norm: str, seed: int, args: argparse.Namespace) -> str:
    """What the random-init scores depend on: data set, normalisation, seed, architecture, modality, eval."""
    import relpos

    encoder = relpos.load_encoder(run_dir, device="cpu")
    what = {"ds": ds, "norm": norm, "seed": seed, "encoder": encoder.encoder.init_args(),
            "modality": dataclasses.asdict(encoder.modality.config), "finetune_steps": args.finetune_steps,
            "features": FEATURES, "protocols": PROTOCOLS}
    digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{ds}-{norm}-s{seed}-{digest}"


def run_cell(ds_name: str, method: str, norm: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import relpos
    from relpos.distributed import resolve_device

    t_cell = time.perf_counter()
    ds = DATASETS[ds_name]
    name = cell_name(ds_name, method, norm, seed)
    run_dir = args.out / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run of an earlier, interrupted attempt
    steps = args.steps_by_ds[ds_name]
    overrides = [
        f"data={ds.path}", f"out={run_dir}", f"train.steps={steps}", f"train.seed={seed}",
        f"train.device={args.device}", "train.progress=false", "train.tensorboard=false",
        f"train.log_every={max(1, steps // 200)}", f"train.ckpt_every={steps}",
        *([f"modality.normalize={norm}"] if norm != "recipe" else []),
        *dataset_overrides(args.set, ds_name),
    ]
    config = relpos.resolve_config(ds.recipe(method), pretext=method, overrides=overrides)
    run_dir = Path(config.run_dir())
    print(f"[{name}] pretraining {steps} steps", flush=True)
    tee = _Tee(sys.stderr)
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(tee):
        relpos.train(config)
    pretrain_s = time.perf_counter() - t0
    warnings = [line for line in tee.lines if "relpos: warning:" in line]
    pretrain = {**loss_summary(read_metrics(run_dir)), "seconds": pretrain_s, "steps": steps,
                "warned_stuck": any(STUCK_TEXT in w for w in warnings), "warnings": warnings}
    ratio = pretrain["ratio_last"]
    print(f"[{name}] pretrained in {pretrain_s:.1f} s; loss/baseline at the end "
          f"{'n/a' if ratio is None else f'{ratio:.3f}'}", flush=True)

    evals: dict[str, dict] = {"pretrained": {}, "random": {}}
    for protocol, fraction in PROTOCOLS:
        evals["pretrained"][protocol] = evaluate_one(run_dir, protocol, fraction, "pretrained", seed, ds, args)
    key = random_key(run_dir, ds_name, norm, seed, args)
    cache = args.out / "random" / f"{key}.json"
    if cache.is_file():
        evals["random"] = json.loads(cache.read_text())["evals"]
        random_source = f"cache {cache.name}"
    else:
        for protocol, fraction in PROTOCOLS:
            evals["random"][protocol] = evaluate_one(run_dir, protocol, fraction, "random", seed, ds, args)
        atomic_json(cache, {"key": key, "computed_by": name, "evals": evals["random"]})
        random_source = "computed"
    for protocol, _ in PROTOCOLS:
        p, r = evals["pretrained"][protocol], evals["random"][protocol]
        print(f"[{name}] {protocol}: κ pretrained {p['cohen_kappa']:.3f}, random {r['cohen_kappa']:.3f} "
              f"(train {p['n_train']}, test {p['n_test']})", flush=True)
    if not args.keep_runs:
        for ckpt in run_dir.rglob("*.pt"):
            ckpt.unlink()
    cell = {
        "dataset": ds_name, "method": method, "normalize": norm, "seed": seed, "recipe": str(ds.recipe(method)),
        "overrides": overrides, "run_dir": str(run_dir), "features": FEATURES, "pretrain": pretrain,
        "eval": evals, "random_source": random_source, "random_key": key,
        "machine": {**machine_info(), "device": str(resolve_device(args.device))},
        "command": args.command, "seconds": time.perf_counter() - t_cell, "finetune_steps": args.finetune_steps,
    }
    atomic_json(args.out / "cells" / f"{name}.json", cell)
    return cell


# -- parallel workers ----------------------------------------------------------------------------
def worker_argv(cell: tuple[str, str, str, int], args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--cell", ":".join(map(str, cell)),
            "--out", str(args.out), "--data-root", str(DATA_ROOT), "--device", args.device,
            "--finetune-steps", str(args.finetune_steps),
            "--steps", *[f"{n}={s}" for n, s in args.steps_by_ds.items()]]
    for value in args.set:
        argv += ["--set", value]
    if args.keep_runs:
        argv.append("--keep-runs")
    return argv


def run_parallel(cells: list, args: argparse.Namespace) -> list[str]:
    """Run the cells in ``args.jobs`` worker processes; return the names of the cells that failed."""
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "RELPOS_PAYOFF_COMMAND": args.command}
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, failed = list(cells), {}, []
    print(f"[jobs] {len(cells)} cell(s) in {args.jobs} worker(s), {threads} thread(s) each; logs in {logs}",
          flush=True)
    started = time.perf_counter()
    while pending or running:
        if args.time_limit is not None and pending and time.perf_counter() - started > args.time_limit:
            print(f"[jobs] time limit ({args.time_limit:.0f} s): {len(pending)} cell(s) not started", flush=True)
            failed.extend(cell_name(*c) + " (not started: time limit)" for c in pending)
            pending = []
        while pending and len(running) < args.jobs:
            cell = pending.pop(0)
            name = cell_name(*cell)
            log = open(logs / f"{name}.log", "w")
            running[name] = (subprocess.Popen(worker_argv(cell, args), env=env, stdout=log,
                                              stderr=subprocess.STDOUT, cwd=REPO), log, time.perf_counter())
        time.sleep(0.5)
        for name, (proc, log, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see logs/{name}.log)"
            if proc.returncode != 0:
                failed.append(name)
            print(f"[jobs] {name} {status} in {time.perf_counter() - t0:.0f} s; {len(pending)} waiting, "
                  f"{len(running)} running", flush=True)
    return failed


# -- report -------------------------------------------------------------------------------------
def load_cells(out: Path) -> list[dict]:
    cells = []
    for path in sorted((out / "cells").glob("*.json")):
        cells.append(json.loads(path.read_text()))
    return cells


def _ms(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def _pm(values: list[float]) -> str:
    m, s = _ms(values)
    return f"{m:.3f} ± {s:.3f}"


def _num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}g}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def summarise(cells: list[dict]) -> list[dict]:
    """One row per (data set, method, normalisation, protocol), seeds pooled."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["dataset"], c["method"], c["normalize"]), []).append(c)
    order = {n: i for i, n in enumerate(DATASETS)}
    rows = []
    for (ds, method, norm), group in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1:])):
        group.sort(key=lambda c: c["seed"])
        ratios = [c["pretrain"]["ratio_last"] for c in group if c["pretrain"]["ratio_last"] is not None]
        for protocol, fraction in PROTOCOLS:
            pre = [c["eval"]["pretrained"][protocol]["cohen_kappa"] for c in group]
            rnd = [c["eval"]["random"][protocol]["cohen_kappa"] for c in group]
            rows.append({
                "dataset": ds, "method": method, "normalize": norm, "protocol": protocol, "label_fraction": fraction,
                "seeds": [c["seed"] for c in group], "pretrained_kappa": pre, "random_kappa": rnd,
                "delta": float(np.mean([p - r for p, r in zip(pre, rnd)])),
                "delta_std": _ms([p - r for p, r in zip(pre, rnd)])[1],
                "ratio_end": float(np.mean(ratios)) if ratios else None,
                **{f"{init}_{k}": _ms([c["eval"][init][protocol][k] for c in group])[0]
                   for init in INITS for k in METRIC_KEYS[1:]},
                "n_train": sorted({c["eval"]["pretrained"][protocol]["n_train"] for c in group}),
                "n_test": sorted({c["eval"]["pretrained"][protocol]["n_test"] for c in group}),
                "eval_seconds": float(np.mean([c["eval"]["pretrained"][protocol]["seconds"] for c in group])),
            })
    return rows


def pretrain_rows(cells: list[dict]) -> list[list[str]]:
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["dataset"], c["method"], c["normalize"]), []).append(c)
    order = {n: i for i, n in enumerate(DATASETS)}
    table = []
    for (ds, method, norm), group in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1:])):
        p = [c["pretrain"] for c in group]

        def mean(key):
            values = [x[key] for x in p if x.get(key) is not None]
            return float(np.mean(values)) if values else None

        warned = sum(bool(x["warned_stuck"]) for x in p)
        table.append([ds, method, norm, str(p[0]["steps"]), _num(mean("loss_first")), _num(mean("baseline_first")),
                      _num(mean("loss_last")), _num(mean("baseline_last")), _ratio(mean("ratio_last")),
                      f"{warned} of {len(p)}", f"{mean('seconds'):.1f}"])
    return table


def write_report(cells: list[dict], out: Path, meta: dict) -> None:
    rows = summarise(cells)
    header = ["data set", "method", "normalize", "protocol", "pretrained κ", "random κ", "Δ κ", "seeds",
              "loss/baseline at end"]
    table = []
    for r in rows:
        what = r["protocol"] + (f" ({r['label_fraction']:g} labels)" if r["label_fraction"] != 1.0 else "")
        mark = " ✓" if r["delta"] >= CLEAR_GAIN else ""
        table.append([r["dataset"], r["method"], r["normalize"], what, _pm(r["pretrained_kappa"]),
                      _pm(r["random_kappa"]), f"{r['delta']:+.3f}{mark}", ",".join(map(str, r["seeds"])),
                      _ratio(r["ratio_end"])])
    machines = sorted({_machine_line(c["machine"]) for c in cells})
    commands = sorted({c.get("command", "?") for c in cells})
    lines = [
        "# Does pretraining pay off? Pretrained vs random init of the same architecture",
        "",
        f"Machine: {'; '.join(machines) or 'no cells'}. {meta.get('contention', '')}",
        "",
        f"Command: `{meta['command']}`" + ("" if commands == [meta["command"]] else
                                           "; cells written by: " + "; ".join(f"`{c}`" for c in commands)),
        "",
        f"Features: `{FEATURES}` (fixed before any test score was seen). κ is Cohen's kappa on each data set's "
        f"test split, mean ± sample std over seeds; Δ is the mean over seeds of (pretrained − random), ✓ where "
        f"Δ ≥ {CLEAR_GAIN:+.2f}. Linear and kNN use all training labels, fine-tuning a tenth of them "
        f"({meta.get('finetune_steps', '?')} fine-tuning steps). loss/baseline: the pretraining loss over the "
        f"pretext's trivial baseline, last tenth of the logged steps.",
        "",
        markdown_table(header, table),
        "",
        "## Pretraining: loss against the trivial baseline",
        "",
        "Means over seeds of the first and last tenth of the logged steps; 'warned' counts the runs that warned "
        "the loss was not clearly below the baseline (below 0.9 × baseline) after a quarter of the run.",
        "",
        markdown_table(["data set", "method", "normalize", "steps", "loss first", "baseline first", "loss last",
                        "baseline last", "end ratio", "warned", "pretrain s"], pretrain_rows(cells)),
        "",
    ]
    details = []
    for r in rows:
        details.append([r["dataset"], r["method"], r["normalize"], r["protocol"],
                        f"{r['pretrained_accuracy']:.3f} / {r['random_accuracy']:.3f}",
                        f"{r['pretrained_balanced_accuracy']:.3f} / {r['random_balanced_accuracy']:.3f}",
                        f"{r['pretrained_macro_f1']:.3f} / {r['random_macro_f1']:.3f}",
                        "/".join(map(str, r["n_train"])), "/".join(map(str, r["n_test"])), f"{r['eval_seconds']:.1f}"])
    lines += ["## Other metrics (pretrained / random, means over seeds)", "",
              markdown_table(["data set", "method", "normalize", "protocol", "accuracy", "balanced acc", "macro-F1",
                              "n_train", "n_test", "eval s (pretrained)"], details), ""]
    if meta.get("notes"):
        lines += ["## Not run", "", *[f"- {n}" for n in meta["notes"]], ""]
    if meta.get("failed"):
        lines += ["## Failed cells", "", *[f"- {n} (see logs/{n}.log)" for n in meta["failed"]], ""]
    (out / "results.md").write_text("\n".join(lines))
    atomic_json(out / "results.json", {"meta": meta, "summary": rows,
                                       "cells": [{k: v for k, v in c.items()} for c in cells]})
    if cells:
        write_plot(rows, out / "results.png")
        write_loss_plot(cells, out / "loss.png")


def _machine_line(m: dict) -> str:
    text = f"{m.get('cpu', '?')} ({m.get('cpu_count', '?')} cores), Python {m.get('python')}, torch {m.get('torch')}"
    if m.get("gpu"):
        text += f", {m['gpu']}"
    return text + f", device {m.get('device')}"


def write_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in rows)]
    variants = sorted({(r["method"], r["normalize"]) for r in rows})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, len(PROTOCOLS), figsize=(4.5 * len(PROTOCOLS), 4), sharey=True, squeeze=False)
    bars = 2 * len(variants)
    width = 0.8 / bars
    for ax, (protocol, fraction) in zip(axes[0], PROTOCOLS):
        for v, (method, norm) in enumerate(variants):
            for i, init in enumerate(INITS):
                xs, ys, es = [], [], []
                for d, ds in enumerate(datasets):
                    match = [r for r in rows if (r["dataset"], r["method"], r["normalize"], r["protocol"])
                             == (ds, method, norm, protocol)]
                    if not match:
                        continue
                    m, s = _ms(match[0][f"{init}_kappa"])
                    xs.append(d - 0.4 + width * (2 * v + i + 0.5))
                    ys.append(m)
                    es.append(s)
                ax.bar(xs, ys, width, yerr=es, capsize=2, color=colours[v % len(colours)],
                       alpha=1.0 if init == "pretrained" else 0.45, hatch=None if init == "pretrained" else "//",
                       label=f"{method} / {norm} · {init}")
        ax.set_xticks(range(len(datasets)))
        ax.set_xticklabels([DATASETS[d].title for d in datasets], fontsize=7, rotation=15)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(protocol + (f" ({fraction:g} of the labels)" if fraction != 1.0 else ""), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(f"Cohen's κ (test, {FEATURES} features)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=min(len(labels), 6), frameon=False)
    fig.suptitle("Pretrained (solid) vs random init (hatched) of the same architecture; mean ± std over seeds",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * math.ceil(len(labels) / 6), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_loss_plot(cells: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in DATASETS if any(c["dataset"] == d for c in cells)]
    variants = sorted({(c["method"], c["normalize"]) for c in cells})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.4 * len(datasets), 3), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        labelled = set()
        for c in sorted((c for c in cells if c["dataset"] == ds), key=lambda c: (c["method"], c["normalize"], c["seed"])):
            curve = [p for p in c["pretrain"]["curve"] if p[2]]
            variant = (c["method"], c["normalize"])
            if curve:  # one colour per method / normalisation, one line per seed
                ax.plot([p[0] for p in curve], [p[1] / p[2] for p in curve], linewidth=0.8, alpha=0.8,
                        color=colours[variants.index(variant) % len(colours)],
                        label=None if variant in labelled else f"{variant[0]} / {variant[1]}")
                labelled.add(variant)
        ax.axhline(0.9, color="grey", linestyle="--", linewidth=0.6)
        ax.axhline(1.0, color="black", linewidth=0.6)
        ax.set_title(DATASETS[ds].title, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=5)
    axes[0][0].set_ylabel("loss / trivial baseline")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), metavar="NAME",
                        help=f"data sets ({', '.join(DATASETS)}; default all)")
    parser.add_argument("--methods", nargs="+", default=["part"], metavar="PRETEXT",
                        help="registered pretexts to pretrain with (default part)")
    parser.add_argument("--normalize", nargs="+", default=["recipe"], metavar="MODE",
                        help=f"normalisations of the EEG/time-series data sets ({', '.join(NORMALIZE)}; default recipe)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", nargs="+", default=[], metavar="N|NAME=N",
                        help="pretraining steps: N for all data sets or NAME=N for one (default 300 each)")
    parser.add_argument("--finetune-steps", type=int, default=200, help="fine-tuning steps of the finetune protocol")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("--set", action="append", default=[], metavar="[NAME:]KEY=VALUE",
                        help="config override for every pretraining run, or for one data set's runs")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder holding eeg/, sensor/ and images/ (default: $RELPOS_SHARED_DATA or ../shared/data)")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "payoff")
    parser.add_argument("--jobs", type=int, default=1, help="cells run in this many worker processes")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch/OpenMP threads of each worker (default: cores // jobs)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds after which no new cell is started (with --jobs > 1); the report says what finished")
    parser.add_argument("--keep-runs", action="store_true", help="keep the checkpoints of the runs")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from OUT/cells/*.json")
    parser.add_argument("--cell", default=None, help=argparse.SUPPRESS)  # DS:METHOD:NORM:SEED, for workers
    args = parser.parse_args(argv)
    args.command = os.environ.get("RELPOS_PAYOFF_COMMAND") or shlex.join(
        ["python", "bench/bench_payoff.py", *(sys.argv[1:] if argv is None else argv)])
    args.out = args.out.resolve()

    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown:
        parser.error(f"--datasets got {', '.join(map(repr, unknown))}; allowed: {', '.join(DATASETS)}.")
    bad = [n for n in args.normalize if n not in NORMALIZE]
    if bad:
        parser.error(f"--normalize got {', '.join(map(repr, bad))}; allowed: {', '.join(NORMALIZE)}.")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}.")
    if args.finetune_steps < 1:
        parser.error(f"--finetune-steps must be at least 1, got {args.finetune_steps}.")
    if any(s < 0 for s in args.seeds):
        parser.error(f"--seeds must be non-negative integers, got {args.seeds}.")
    args.datasets = list(dict.fromkeys(args.datasets))
    args.methods = list(dict.fromkeys(args.methods))
    args.normalize = list(dict.fromkeys(args.normalize))
    args.seeds = list(dict.fromkeys(args.seeds))
    args.steps_by_ds = parse_steps(args.steps, 300)
    return args


def main(argv: list[str] | None = None) -> int:
    global DATA_ROOT
    args = parse_args(argv)
    if args.report_only:
        cells = load_cells(args.out)
        if not cells:
            fail(f"--report-only found no cell files in {args.out / 'cells'}; run the benchmark first.")
        old = {}
        if (args.out / "results.json").is_file():
            old = json.loads((args.out / "results.json").read_text()).get("meta", {})
        steps = sorted({c.get("finetune_steps", args.finetune_steps) for c in cells})
        meta = {**old, "command": old.get("command", args.command),
                "finetune_steps": old.get("finetune_steps", "/".join(map(str, steps))),
                "contention": old.get("contention", "Contention not measured (report rebuilt from cell files).")}
        write_report(cells, args.out, meta)
        print(f"bench_payoff: report of {len(cells)} cell(s) in {args.out / 'results.md'}")
        return 0

    if args.data_root is not None:
        DATA_ROOT = args.data_root.resolve()
    if not DATA_ROOT.is_dir():
        fail(f"the data folder {DATA_ROOT} does not exist; pass --data-root or set $RELPOS_SHARED_DATA "
             f"(default ../shared/data beside the repository).")
    from relpos.plugins import list_pretexts

    known = list_pretexts()
    bad = [m for m in args.methods if m not in known]
    if bad:
        fail(f"--methods got {', '.join(map(repr, bad))}; registered pretexts: {', '.join(known)}.")

    if args.cell is not None:  # a worker: one cell
        try:
            ds, method, norm, seed = args.cell.split(":")
            cell = (ds, method, norm, int(seed))
        except ValueError:
            fail(f"--cell expects DS:METHOD:NORM:SEED, got {args.cell!r}.")
        run_cell(*cell, args)
        return 0

    cells, notes = plan(args)
    missing = sorted({str(DATASETS[c[0]].path) for c in cells if not DATASETS[c[0]].path.exists()})
    if missing:
        fail(f"data missing under {DATA_ROOT}: {', '.join(missing)}.")
    todo = [c for c in cells if not (args.out / "cells" / f"{cell_name(*c)}.json").is_file()]
    print(f"bench_payoff: {len(cells)} cell(s), {len(cells) - len(todo)} already done, {len(todo)} to run"
          + (f"; {len(notes)} note(s): " + "; ".join(notes) if notes else ""), flush=True)
    for note in notes:
        print(f"bench_payoff: {note}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    contention = Contention().start()
    t0 = time.perf_counter()
    failed: list[str] = []
    if args.jobs == 1:
        for cell in todo:
            run_cell(*cell, args)
    else:
        failed = run_parallel(todo, args)
    contention.stop()
    from relpos.distributed import resolve_device

    wanted = {cell_name(*c) for c in cells}
    done = [c for c in load_cells(args.out) if cell_name(c["dataset"], c["method"], c["normalize"], c["seed"]) in wanted]
    if args.jobs == 1:
        busy = f"During this invocation {contention.describe()}."
    elif "others_cores" in contention.result:
        busy = (f"During this invocation processes other than the parent, its {args.jobs} workers included, kept "
                f"{contention.result['others_cores']:.2f} cores busy on average.")
    else:
        busy = "Other processes' CPU use unknown."
    meta = {**machine_info(), "device": str(resolve_device(args.device)), "command": args.command,
            "contention": busy, "wall_s": time.perf_counter() - t0,
            "jobs": args.jobs, "steps": {d: args.steps_by_ds[d] for d in args.datasets},
            "finetune_steps": args.finetune_steps, "features": FEATURES, "notes": notes, "failed": failed}
    write_report(done, args.out, meta)
    print(f"bench_payoff: {len(done)} cell(s) reported in {args.out / 'results.md'}, results.json, results.png, "
          f"loss.png; wall {meta['wall_s']:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

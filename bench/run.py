"""The benchmark runner: data set × method × setting × seed, one resumable cell each, one report format.

A **recipe** (``bench/recipes/NAME.yaml``; ``bench/README.md`` describes every key) names the
data sets (from the table in ``bench/_common.py``), the methods (a registered pretext, the config it
starts from and overrides of its own), the settings (named lists of overrides, e.g. normalisations
or encoders), the seeds, the pretraining budget and the evaluation (initialisations, features,
protocols). For every (data set, method, setting, seed) one **cell** is

1. pretrained (``relpos.resolve_config`` + ``relpos.train``) with ``train.seed = s``; from its
   ``metrics.csv`` the loss and the pretext's trivial baseline (``loss_baseline``) are averaged over
   the first and the last tenth of the logged steps, and whether the run warned that its loss stayed
   at the baseline is recorded from its warnings;
2. evaluated with ``relpos.evaluate`` (evaluation seed ``s``) for each initialisation of the recipe
   (``pretrained``; ``random``: the same architecture with fresh weights, computed once per data
   set, setting, seed and architecture and shared by methods that use the same one) under each of the
   recipe's protocols. Features are either fixed by the recipe or chosen per run and initialisation
   by the linear probe's score on its validation split (never by a test score).

Every finished cell is written atomically to ``OUT/cells/<ds>-<method>-<setting>-s<seed>.json``; a
cell whose file exists is skipped, so runs resume and can be split over processes or machines (run
the same command with ``--datasets``/``--seeds`` subsets and the same ``--out``, then
``--report-only``). The report is ``OUT/results.md``, ``results.json``, ``results.png`` (κ per
protocol, pretrained vs random, mean ± std over seeds) and ``loss.png`` (loss / trivial baseline
over the steps). ``OUT`` defaults to ``bench/results/<recipe>``.

Run from the repository root::

    .venv/bin/python bench/run.py payoff                                  # all five data sets, PART, 3 seeds
    .venv/bin/python bench/run.py payoff --datasets scp1 blink --settings instance recording
    .venv/bin/python bench/run.py payoff --jobs 8 --device cuda --steps 2000 --data-root /data
    .venv/bin/python bench/run.py payoff --report-only                    # rebuild the report from the cells
    OMP_NUM_THREADS=1 .venv/bin/python bench/run.py payoff --datasets basicmotions --seeds 0 --steps 5 \\
        --finetune-steps 5 --out bench/results/smoke                              # a smoke run (about 20 s)
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import hashlib
import importlib
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, REPO, Contention, DataSet, machine_info, markdown_table  # noqa: E402

import _common  # noqa: E402

BENCH = REPO / "bench"
RECIPES = BENCH / "recipes"
INITS = ("pretrained", "random")
PROTOCOL_NAMES = ("linear", "knn", "finetune")
#: Δκ (pretrained − random, mean over seeds) at or above this is marked ✓ in the report.
CLEAR_GAIN = 0.10
STUCK_TEXT = "not clearly below the pretext's trivial baseline"
METRIC_KEYS = ("cohen_kappa", "accuracy", "balanced_accuracy", "macro_f1")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def fail(message: str) -> None:
    """One sentence on standard error and exit status 2 (bad input), before any data is read."""
    print(f"bench/run.py: {message}", file=sys.stderr)
    raise SystemExit(2)


# -- recipes ------------------------------------------------------------------------------------
@dataclass
class Method:
    """A pretext to pretrain with, the config it starts from and overrides of its own."""

    name: str
    pretext: str
    config: str = "dataset"  # "dataset", "dataset:PRETEXT", "modality" or a path relative to the repository
    overrides: list[str] = field(default_factory=list)

    def base_config(self, ds: DataSet) -> tuple[Path | None, list[str]]:
        """The config file the runs start from (None: the modality's defaults) and the data set's extra overrides."""
        if self.config == "modality":
            return None, list(ds.modality_overrides)
        if self.config == "dataset" and "+" in self.pretext:  # a composition: its pretexts' recipes, merged
            return composed_recipe(ds, self.pretext), []
        if self.config == "dataset" or self.config.startswith("dataset:"):
            return ds.recipe(self.config.partition(":")[2] or self.pretext), []
        return REPO / self.config, []


def composed_recipe(ds: DataSet, pretext: str) -> Path:
    """The config of a composed pretext (``part+sove``) on ``ds``, from the data set's recipe of each
    component (``configs/<prefix>_part.yaml``, ``..._sove.yaml``): each pretext section under its name;
    the modality, encoder and train sections merged, the first recipe's value where two differ, except
    ``encoder.pos_embed``, left to the composition (sin-cos when any component trains with it).
    Written to ``bench/results/compose_configs/`` (the runs and the random-init cache read it)."""
    import yaml

    merged: dict[str, Any] = {"modality": {}, "pretext": {"name": pretext}, "encoder": {}, "train": {}}
    for name in pretext.split("+"):
        path = ds.recipe(name)
        if not path.is_file():
            fail(f"the data set {ds.name} has no recipe for {name!r} ({path.relative_to(REPO)}), which the "
                 f"composition {pretext!r} is built from; write one first.")
        raw = yaml.safe_load(path.read_text()) or {}
        section = dict(raw.get("pretext") or {})
        section.pop("name", None)
        merged["pretext"][name] = section
        for key in ("modality", "encoder", "train"):
            for option, value in (raw.get(key) or {}).items():
                merged[key].setdefault(option, value)
    merged["encoder"].pop("pos_embed", None)
    out = BENCH / "results" / "compose_configs" / f"{ds.prefix}_{pretext.replace('-', '_')}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(merged, sort_keys=False)
    if not out.is_file() or out.read_text() != text:
        out.write_text(text)
    return out


@dataclass
class Setting:
    """A named list of overrides applied on top of a method's, optionally to some data sets only."""

    name: str
    overrides: list[str] = field(default_factory=list)
    datasets: list[str] | None = None


@dataclass
class Protocol:
    """One evaluation: a protocol of ``relpos.evaluate`` with its label fraction, features and options."""

    name: str
    protocol: str
    label_fraction: float = 1.0
    features: str | None = None  # None: the recipe's (fixed or chosen) features
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    name: str
    path: Path
    title: str
    datasets: dict[str, list[str]]  # name -> overrides of this recipe for that data set
    methods: list[Method]
    settings: list[Setting]
    seeds: list[int]
    steps: dict[str, int]
    overrides: list[str]
    inits: list[str]
    features: list[str]  # one: fixed; several: chosen per run by the linear probe's validation score
    options: dict[str, Any]
    protocols: list[Protocol]
    timed: list[str]
    defaults: dict[str, list[str]]  # "datasets", "methods", "settings": what runs when the command names none

    def method(self, name: str) -> Method:
        return next(m for m in self.methods if m.name == name)

    def setting(self, name: str) -> Setting:
        return next(s for s in self.settings if s.name == name)


def resolve_recipe_path(value: str) -> Path:
    """A recipe named by its stem under ``bench/recipes`` or by a path."""
    path = Path(value)
    if path.suffix not in (".yaml", ".yml"):
        path = RECIPES / f"{value}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
        fail(f"the recipe {value!r} is neither a YAML file nor a recipe in bench/recipes; known recipes: {known}.")
    return path.resolve()


def _check_keys(where: str, mapping: Any, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(mapping, dict):
        fail(f"{where} must be a mapping, got {type(mapping).__name__} {mapping!r}.")
    unknown = [k for k in mapping if k not in allowed]
    if unknown:
        fail(f"{where} has the unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}.")
    missing = [k for k in required if k not in mapping]
    if missing:
        fail(f"{where} lacks the key(s) {', '.join(missing)}.")
    return mapping


def _str_list(where: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        fail(f"{where} must be a list of strings (KEY=VALUE overrides or names), got {value!r}.")
    return list(value)


def _name(where: str, value: Any) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        fail(f"{where} must be a name of letters, digits and _ . + - (it names files), got {value!r}.")
    return value


def load_recipe(path: Path) -> Recipe:
    """Read and check a recipe; every mistake is one sentence naming the key, the value and what is allowed."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        fail(f"the recipe {path.name} is not valid YAML ({str(err).splitlines()[0]}).")
    where = f"the recipe {path.name}"
    _check_keys(where, raw, ("title", "datasets", "methods", "settings", "defaults", "seeds", "steps", "overrides",
                             "evaluate", "timed"), ("datasets", "methods", "seeds", "steps"))
    datasets = raw["datasets"]
    if isinstance(datasets, list):
        datasets = {d: [] for d in datasets}
    _check_keys(f"{where}: datasets", datasets, tuple(DATASETS))
    datasets = {d: _str_list(f"{where}: datasets.{d}", v) for d, v in datasets.items()}

    methods = []
    for i, entry in enumerate(raw["methods"] or []):
        if isinstance(entry, str):
            entry = {"pretext": entry}
        _check_keys(f"{where}: methods[{i}]", entry, ("name", "pretext", "config", "overrides"), ("pretext",))
        method = Method(_name(f"{where}: methods[{i}].name", entry.get("name", entry["pretext"])), entry["pretext"],
                        str(entry.get("config", "dataset")), _str_list(f"{where}: methods[{i}].overrides",
                                                                      entry.get("overrides")))
        if not (method.config in ("dataset", "modality") or method.config.startswith("dataset:")
                or (REPO / method.config).is_file()):
            fail(f"{where}: methods[{i}].config is {method.config!r}; allowed: dataset, dataset:PRETEXT, modality or "
                 f"a config file relative to the repository.")
        methods.append(method)
    if not methods:
        fail(f"{where}: methods is empty; name at least one pretext.")

    settings = []
    for name, value in (raw.get("settings") or {"recipe": []}).items():
        name = _name(f"{where}: settings key", name)
        if isinstance(value, dict):
            _check_keys(f"{where}: settings.{name}", value, ("overrides", "datasets"))
            only = _str_list(f"{where}: settings.{name}.datasets", value.get("datasets")) or None
            settings.append(Setting(name, _str_list(f"{where}: settings.{name}.overrides", value.get("overrides")),
                                    only))
        else:
            settings.append(Setting(name, _str_list(f"{where}: settings.{name}", value)))

    seeds = raw["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        fail(f"{where}: seeds must be a list of non-negative integers, got {seeds!r}.")
    steps_value = raw["steps"]
    if isinstance(steps_value, int):
        steps_value = {"default": steps_value}
    _check_keys(f"{where}: steps", steps_value, ("default", *DATASETS), ("default",))
    if not all(isinstance(v, int) and v >= 1 for v in steps_value.values()):
        fail(f"{where}: steps must be positive integers, got {steps_value!r}.")
    steps = {d: steps_value.get(d, steps_value["default"]) for d in DATASETS}

    ev = _check_keys(f"{where}: evaluate", raw.get("evaluate") or {}, ("inits", "features", "options", "protocols"))
    inits = _str_list(f"{where}: evaluate.inits", ev.get("inits", list(INITS)))
    if "pretrained" not in inits or any(i not in INITS for i in inits):
        fail(f"{where}: evaluate.inits is {inits!r}; allowed: pretrained, optionally with random.")
    features = ev.get("features", "mean")
    features = [features] if isinstance(features, str) else _str_list(f"{where}: evaluate.features", features)
    options = ev.get("options") or {}
    _check_keys(f"{where}: evaluate.options", options, tuple(options))
    protocols = []
    for i, entry in enumerate(ev.get("protocols") or [{"protocol": "linear"}]):
        entry = dict(entry) if isinstance(entry, dict) else {"protocol": entry}
        proto = entry.pop("protocol", None)
        if proto not in PROTOCOL_NAMES:
            fail(f"{where}: evaluate.protocols[{i}].protocol is {proto!r}; allowed: {', '.join(PROTOCOL_NAMES)}.")
        label = entry.pop("name", proto)
        fraction = entry.pop("label_fraction", 1.0)
        if not isinstance(fraction, (int, float)) or fraction <= 0:
            fail(f"{where}: evaluate.protocols[{i}].label_fraction must be a positive number, got {fraction!r}.")
        protocols.append(Protocol(str(label), proto, fraction, entry.pop("features", None), entry))
    labels = [p.name for p in protocols]
    if len(set(labels)) != len(labels):
        fail(f"{where}: evaluate.protocols have repeated names {labels!r}; give each a distinct name.")
    timed = _str_list(f"{where}: timed", raw.get("timed"))
    bad = [t for t in timed if ":" not in t]
    if bad:
        fail(f"{where}: timed expects MODULE:FUNCTION entries, got {bad!r}.")
    known = {"datasets": list(datasets), "methods": [m.name for m in methods], "settings": [s.name for s in settings]}
    defaults = _check_keys(f"{where}: defaults", raw.get("defaults") or {}, tuple(known))
    defaults = {k: _str_list(f"{where}: defaults.{k}", defaults.get(k, v)) for k, v in known.items()}
    for key, names in defaults.items():
        bad = [n for n in names if n not in known[key]]
        if bad or not names:
            fail(f"{where}: defaults.{key} is {names!r}; allowed: a non-empty list of {', '.join(known[key])}.")
    return Recipe(path.stem, path, str(raw.get("title") or path.stem), datasets, methods, settings,
                  list(dict.fromkeys(seeds)), steps, _str_list(f"{where}: overrides", raw.get("overrides")), inits,
                  features, options, protocols, timed, defaults)


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


def parse_steps(values: list[str], default: dict[str, int]) -> dict[str, int]:
    steps = dict(default)
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


def cell_name(ds: str, method: str, setting: str, seed: int) -> str:
    return f"{ds}-{method}-{setting}-s{seed}"


def plan(recipe: Recipe, args: argparse.Namespace) -> tuple[list[tuple[str, str, str, int]], list[str]]:
    """The cells to run, in order, and notes on the (data set, method, setting) left out."""
    cells, notes = [], []
    for ds in args.datasets:
        for method in args.methods:
            config, _ = recipe.method(method).base_config(DATASETS[ds])
            if config is not None and not config.is_file():
                notes.append(f"{ds} / {method}: no recipe ({config.relative_to(REPO)} does not exist)")
                continue
            for name in args.settings:
                setting = recipe.setting(name)
                if setting.datasets is not None and ds not in setting.datasets:
                    notes.append(f"{ds} / {method} / {name}: skipped, the setting applies to "
                                 f"{', '.join(setting.datasets)} only")
                    continue
                cells.extend((ds, method, name, s) for s in args.seeds)
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
    # A composed run (part+sove) has no baseline of its weighted total: each pretext's own ratio.
    names = [k[: -len("/loss_baseline")] for k in (rows[0] if rows else {}) if k.endswith("/loss_baseline")]
    out["components"] = {
        name: {"loss_last": mean(rows[-n:], f"{name}/loss"), "baseline_last": mean(rows[-n:], f"{name}/loss_baseline")}
        for name in names
    }
    for part in out["components"].values():
        part["ratio_last"] = (part["loss_last"] / part["baseline_last"]
                              if part["baseline_last"] not in (None, 0) and part["loss_last"] is not None else None)
    return out


def ratio_text(pretrain: dict[str, Any] | list[dict[str, Any]]) -> str:
    """Loss over baseline at the end: the run's, or for a composed run each pretext's (``part 0.83, sove 0.64``);
    over several seeds, the mean."""
    runs = pretrain if isinstance(pretrain, list) else [pretrain]

    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    if any(r.get("ratio_last") is not None for r in runs) or not runs[0].get("components"):
        return _ratio(mean(r.get("ratio_last") for r in runs))
    return ", ".join(f"{name} {_ratio(mean(r.get('components', {}).get(name, {}).get('ratio_last') for r in runs))}"
                     for name in runs[0]["components"])


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


def single_thread_blas():
    """One BLAS thread for scikit-learn's probes (many small BLAS calls thrash with several threads:
    9.6 s instead of 0.39 s for a 2,000 × 192 linear probe with 2 OpenBLAS threads on 2 shared cores)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def best_validation(result) -> float:
    """Mean over repeats of the best validation score the probe saw (what chooses the features)."""
    scores = [max(c["validation_scores"].values()) for c in result.chosen if c.get("validation_scores")]
    return statistics.mean(scores) if scores else float("-inf")


class Evaluator:
    """``relpos.evaluate`` on one run, each distinct call made once (the feature choice reuses the linear probes)."""

    def __init__(self, run_dir: Path, recipe: Recipe, ds: DataSet, seed: int, args: argparse.Namespace):
        self.run_dir, self.recipe, self.ds, self.seed, self.args = run_dir, recipe, ds, seed, args
        self.results: dict[str, Any] = {}

    def options(self, protocol: Protocol) -> dict[str, Any]:
        options = {**self.ds.eval_options, **self.recipe.options, **protocol.options}
        if protocol.protocol == "finetune" and self.args.finetune_steps is not None:
            options["steps"] = self.args.finetune_steps
        return options

    def call(self, protocol: Protocol, init: str, features: str):
        import relpos

        options = self.options(protocol)
        key = json.dumps([protocol.protocol, protocol.label_fraction, init, features, options], sort_keys=True)
        if key not in self.results:
            blas = single_thread_blas() if protocol.protocol != "finetune" else contextlib.nullcontext()
            t0 = time.perf_counter()
            with blas:
                result = relpos.evaluate(self.run_dir, protocol=protocol.protocol, init=init, features=features,
                                         label_fraction=protocol.label_fraction, seed=self.seed, progress=False,
                                         write=False, device=self.args.device, **options)
            self.results[key] = (result, time.perf_counter() - t0)
        return self.results[key]

    def features_for(self, init: str) -> tuple[str, dict[str, float]]:
        """The recipe's features, or the candidate whose linear probe scores best on its validation split."""
        if len(self.recipe.features) == 1:
            return self.recipe.features[0], {}
        probe = Protocol("linear", "linear")
        scores = {f: best_validation(self.call(probe, init, f)[0]) for f in self.recipe.features}
        return max(self.recipe.features, key=lambda f: scores[f]), scores

    def evaluate(self, init: str) -> dict[str, dict]:
        chosen, scores = self.features_for(init)
        out = {}
        for protocol in self.recipe.protocols:
            features = protocol.features or chosen
            result, seconds = self.call(protocol, init, features)
            out[protocol.name] = {
                **{k: float(result.mean[k]) for k in METRIC_KEYS if k in result.mean},
                "n_train": int(result.n_train[0]), "n_test": int(result.n_test), "split": result.split,
                "folds": list(result.folds), "chosen": result.chosen, "label_fraction": protocol.label_fraction,
                "features": features, "feature_validation": scores, "seconds": seconds,
            }
        return out


def random_key(run_dir: Path, recipe: Recipe, ds: str, setting: str, seed: int, args: argparse.Namespace) -> str:
    """What the random-init scores depend on: data set, setting, seed, architecture, modality, evaluation."""
    import relpos

    encoder = relpos.load_encoder(run_dir, device="cpu")
    what = {"ds": ds, "setting": setting, "seed": seed, "encoder": encoder.encoder.init_args(),
            "modality": dataclasses.asdict(encoder.modality.config), "finetune_steps": args.finetune_steps,
            "features": recipe.features, "options": recipe.options,
            "protocols": [dataclasses.asdict(p) for p in recipe.protocols]}
    digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{ds}-{setting}-s{seed}-{digest}"


@contextlib.contextmanager
def timed_functions(names: list[str]):
    """Wall seconds spent inside each ``MODULE:FUNCTION`` (patched in its module for the duration)."""
    spent = {name: 0.0 for name in names}
    patched = []
    try:
        for name in names:
            module_name, _, attr = name.partition(":")
            module = importlib.import_module(module_name)
            original = getattr(module, attr)

            def timed(*a, __original=original, __name=name, **kw):
                t0 = time.perf_counter()
                try:
                    return __original(*a, **kw)
                finally:
                    spent[__name] += time.perf_counter() - t0

            setattr(module, attr, timed)
            patched.append((module, attr, original))
        yield spent
    finally:
        for module, attr, original in patched:
            setattr(module, attr, original)


def run_overrides(recipe: Recipe, ds_name: str, method: Method, setting: Setting, seed: int, run_dir: Path,
                  args: argparse.Namespace) -> tuple[Path | None, list[str]]:
    ds = DATASETS[ds_name]
    config, extra = method.base_config(ds)
    steps = args.steps_by_ds[ds_name]
    overrides = [
        *extra, *recipe.overrides, *recipe.datasets.get(ds_name, []), *method.overrides, *setting.overrides,
        f"data={ds.path}", f"out={run_dir}", f"train.steps={steps}", f"train.seed={seed}",
        f"train.device={args.device}", "train.progress=false", "train.tensorboard=false",
        f"train.log_every={max(1, steps // 200)}", f"train.ckpt_every={steps}",
        *dataset_overrides(args.set, ds_name),
    ]
    return config, overrides


def run_cell(recipe: Recipe, ds_name: str, method_name: str, setting_name: str, seed: int,
             args: argparse.Namespace) -> dict[str, Any]:
    import relpos
    from relpos.distributed import resolve_device

    t_cell = time.perf_counter()
    ds, method, setting = DATASETS[ds_name], recipe.method(method_name), recipe.setting(setting_name)
    name = cell_name(ds_name, method_name, setting_name, seed)
    run_dir = args.out / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run of an earlier, interrupted attempt
    config_path, overrides = run_overrides(recipe, ds_name, method, setting, seed, run_dir, args)
    if config_path is None:
        config = relpos.resolve_config(modality=ds.modality, pretext=method.pretext, overrides=overrides)
    else:
        config = relpos.resolve_config(config_path, pretext=method.pretext, overrides=overrides)
    run_dir = Path(config.run_dir())
    steps = args.steps_by_ds[ds_name]
    print(f"[{name}] pretraining {steps} steps", flush=True)
    tee = _Tee(sys.stderr)
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(tee), timed_functions(recipe.timed) as spent:
        result = relpos.train(config)
    pretrain_s = time.perf_counter() - t0
    warnings = [line for line in tee.lines if "relpos: warning:" in line]
    windows_per_sample = int(getattr(getattr(result.pretext, "window_request", None), "size", 1))
    pretrain = {**loss_summary(read_metrics(run_dir)), "seconds": pretrain_s, "steps": steps,
                "warned_stuck": any(STUCK_TEXT in w for w in warnings), "warnings": warnings,
                # over the whole run's time (loading and checkpoints included): slightly under the steps' share
                "timed_share": {k: v / pretrain_s for k, v in spent.items()},
                # a sample of a pretext with a window_request is K windows of one recording (RP: a pair)
                "windows_per_sample": windows_per_sample,
                "windows_seen": steps * int(config.train.batch_size) * windows_per_sample}
    print(f"[{name}] pretrained in {pretrain_s:.1f} s; loss/baseline at the end {ratio_text(pretrain)}", flush=True)

    evaluator = Evaluator(run_dir, recipe, ds, seed, args)
    evals: dict[str, dict] = {"pretrained": evaluator.evaluate("pretrained")}
    key, random_source = None, "not asked for"
    if "random" in recipe.inits:
        key = random_key(run_dir, recipe, ds_name, setting_name, seed, args)
        cache = args.out / "random" / f"{key}.json"
        if cache.is_file():
            evals["random"] = json.loads(cache.read_text())["evals"]
            random_source = f"cache {cache.name}"
        else:
            evals["random"] = evaluator.evaluate("random")
            atomic_json(cache, {"key": key, "computed_by": name, "evals": evals["random"]})
            random_source = "computed"
    for protocol in recipe.protocols:
        p = evals["pretrained"][protocol.name]
        r = f", random {evals['random'][protocol.name]['cohen_kappa']:.3f}" if "random" in evals else ""
        print(f"[{name}] {protocol.name}: κ pretrained {p['cohen_kappa']:.3f}{r} "
              f"(train {p['n_train']}, test {p['n_test']}, {p['features']} features)", flush=True)
    if not args.keep_runs:
        for ckpt in run_dir.rglob("*.pt"):
            ckpt.unlink()
    cell = {
        "recipe": recipe.name, "dataset": ds_name, "method": method_name, "pretext": method.pretext,
        "setting": setting_name, "seed": seed, "config": str(config_path or f"modality {ds.modality}"),
        "normalize": getattr(config.modality_config, "normalize", None),
        "overrides": overrides, "run_dir": str(run_dir), "pretrain": pretrain, "eval": evals,
        "random_source": random_source, "random_key": key,
        "machine": {**machine_info(), "device": str(resolve_device(args.device))},
        "command": args.command, "seconds": time.perf_counter() - t_cell, "finetune_steps": args.finetune_steps,
    }
    atomic_json(args.out / "cells" / f"{name}.json", cell)
    return cell


# -- parallel workers ----------------------------------------------------------------------------
def worker_argv(cell: tuple[str, str, str, int], args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), str(args.recipe_path), "--cell", ":".join(map(str, cell)),
            "--out", str(args.out), "--data-root", str(_common.data_root()), "--device", args.device,
            "--steps", *[f"{n}={s}" for n, s in args.steps_by_ds.items()]]
    if args.finetune_steps is not None:
        argv += ["--finetune-steps", str(args.finetune_steps)]
    for value in args.set:
        argv += ["--set", value]
    if args.keep_runs:
        argv.append("--keep-runs")
    return argv


def run_parallel(cells: list, args: argparse.Namespace) -> list[str]:
    """Run the cells in ``args.jobs`` worker processes; return the names of the cells that failed."""
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "RELPOS_BENCH_COMMAND": args.command}
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


def _groups(cells: list[dict]) -> list[tuple[tuple[str, str, str], list[dict]]]:
    """Cells grouped by (data set, method, setting), in the table's order, each group sorted by seed."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["dataset"], c["method"], c["setting"]), []).append(c)
    order = {n: i for i, n in enumerate(DATASETS)}
    first = {key: min(cells.index(c) for c in group) for key, group in groups.items()}
    ordered = sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99), first[kv[0]]))
    return [(key, sorted(group, key=lambda c: c["seed"])) for key, group in ordered]


def summarise(cells: list[dict], recipe: Recipe) -> list[dict]:
    """One row per (data set, method, setting, protocol), seeds pooled."""
    rows = []
    for (ds, method, setting), group in _groups(cells):
        if not all(c.get("pretrain") and "pretrained" in c["eval"] for c in group):
            continue  # random init or hand-crafted features alone: only in the table of every row
        ratios = [c["pretrain"]["ratio_last"] for c in group if c["pretrain"]["ratio_last"] is not None]
        for protocol in recipe.protocols:
            if not all(protocol.name in c["eval"]["pretrained"] for c in group):
                continue
            inits = [i for i in INITS if all(i in c["eval"] for c in group)]
            kappa = {i: [c["eval"][i][protocol.name]["cohen_kappa"] for c in group] for i in inits}
            pre = [c["eval"]["pretrained"][protocol.name] for c in group]
            rows.append({
                "dataset": ds, "method": method, "setting": setting, "protocol": protocol.name,
                "label_fraction": protocol.label_fraction, "seeds": [c["seed"] for c in group],
                **{f"{i}_kappa": kappa[i] for i in inits},
                "delta": (float(np.mean([p - r for p, r in zip(kappa["pretrained"], kappa["random"])]))
                          if "random" in kappa else None),
                "ratio_end": float(np.mean(ratios)) if ratios else None,
                **{f"{i}_{k}": _ms([c["eval"][i][protocol.name][k] for c in group])[0]
                   for i in inits for k in METRIC_KEYS[1:]},
                "features": sorted({p["features"] for p in pre}),
                "n_train": sorted({p["n_train"] for p in pre}), "n_test": sorted({p["n_test"] for p in pre}),
                "eval_seconds": float(np.mean([p["seconds"] for p in pre])),
            })
    return rows


def pretrain_rows(cells: list[dict]) -> list[list[str]]:
    table = []
    for (ds, method, setting), group in _groups(cells):
        p = [c["pretrain"] for c in group if c.get("pretrain")]
        if not p:
            continue

        def mean(key):
            values = [x[key] for x in p if x.get(key) is not None]
            return float(np.mean(values)) if values else None

        shares = {}
        for x in p:
            for k, v in x.get("timed_share", {}).items():
                shares.setdefault(k.rpartition(":")[2], []).append(v)
        warned = sum(bool(x["warned_stuck"]) for x in p)
        table.append([ds, method, setting, str(p[0]["steps"]), _num(mean("loss_first")), _num(mean("baseline_first")),
                      _num(mean("loss_last")), _num(mean("baseline_last")), ratio_text(p),
                      f"{warned} of {len(p)}", f"{mean('seconds'):.1f}",
                      ", ".join(f"{k} {100 * np.mean(v):.1f} %" for k, v in shares.items()) or "–"])
    return table


#: How the table of every row names an initialisation (``fixed``: features that involve no training,
#: such as hand-crafted band powers, written by scripts beside the runner).
INIT_LABELS = {"pretrained": "trained", "random": "random init", "fixed": "hand-crafted"}


def cell_normalisation(cell: dict) -> str:
    """The normalisation of a cell's windows: recorded by the cell, else its last ``modality.normalize`` override."""
    if cell.get("normalize"):
        return str(cell["normalize"])
    found = [o.partition("=")[2] for o in cell.get("overrides", []) if o.startswith("modality.normalize=")]
    return found[-1] if found else "the config's"


def every_row(cells: list[dict], recipe: Recipe) -> list[list[str]]:
    """One row per (data set, method, setting, initialisation): κ and balanced accuracy per protocol,
    mean ± std over seeds, the normalisation and the training wall time per 1,000 windows seen."""
    table = []
    for (ds, method, setting), group in _groups(cells):
        norm = cell_normalisation(group[0])
        pretrain = [c["pretrain"] for c in group if c.get("pretrain")]
        per_1000 = [1000 * p["seconds"] / p["windows_seen"] for p in pretrain if p.get("windows_seen")]
        for init in INIT_LABELS:
            if not all(init in c["eval"] for c in group):
                continue
            row = [ds, method, setting, INIT_LABELS[init], norm]
            for protocol in recipe.protocols:
                scores = [c["eval"][init].get(protocol.name) for c in group]
                for key in ("cohen_kappa", "balanced_accuracy"):
                    row.append(_pm([s[key] for s in scores]) if all(scores) else "–")
            row.append(f"{np.mean(per_1000):.2f}" if init == "pretrained" and per_1000 else "–")
            row.append(",".join(str(c["seed"]) for c in group))
            table.append(row)
    return table


def write_report(cells: list[dict], out: Path, meta: dict, recipe: Recipe) -> None:
    rows = summarise(cells, recipe)
    header = ["data set", "method", "setting", "protocol", "features", "pretrained κ", "random κ", "Δ κ", "seeds",
              "loss/baseline at end"]
    table = []
    for r in rows:
        mark = " ✓" if r["delta"] is not None and r["delta"] >= CLEAR_GAIN else ""
        table.append([r["dataset"], r["method"], r["setting"], r["protocol"], "/".join(r["features"]),
                      _pm(r["pretrained_kappa"]), _pm(r["random_kappa"]) if "random_kappa" in r else "–",
                      "–" if r["delta"] is None else f"{r['delta']:+.3f}{mark}", ",".join(map(str, r["seeds"])),
                      _ratio(r["ratio_end"])])
    machines = sorted({_machine_line(c["machine"]) for c in cells})
    commands = sorted({c.get("command", "?") for c in cells})
    features = (f"`{recipe.features[0]}` (fixed by the recipe)" if len(recipe.features) == 1 else
                f"chosen per run and initialisation among {', '.join(recipe.features)} by the linear probe's "
                f"validation score")
    lines = [
        f"# {recipe.title}",
        "",
        f"Recipe: `bench/recipes/{recipe.path.name}`. Machine: {'; '.join(machines) or 'no cells'}. "
        f"{meta.get('contention', '')}",
        "",
        f"Command: `{meta['command']}`" + ("" if commands == [meta["command"]] else
                                           "; cells written by: " + "; ".join(f"`{c}`" for c in commands)),
        "",
        f"Features: {features}, unless a protocol names its own. κ is Cohen's kappa on each data set's test "
        f"split, mean ± sample std over seeds; Δ is the mean over seeds of (pretrained − random), ✓ where "
        f"Δ ≥ {CLEAR_GAIN:+.2f}. loss/baseline: the pretraining loss over the pretext's trivial baseline, last "
        f"tenth of the logged steps.",
        "",
        markdown_table(header, table),
        "",
        "## Every row: κ and balanced accuracy per initialisation",
        "",
        "Each method, setting and initialisation (trained; random init of the same architecture; hand-crafted "
        "features that involve no training), mean ± sample std over seeds, with the normalisation of its windows "
        "and its training wall time per 1,000 windows seen (a pair counts two).",
        "",
        markdown_table(["data set", "method", "setting", "init", "normalisation",
                        *[f"{p.name} {m}" for p in recipe.protocols for m in ("κ", "balanced acc")],
                        "train s / 1,000 windows", "seeds"], every_row(cells, recipe)),
        "",
        "## Pretraining: loss against the trivial baseline",
        "",
        "Means over seeds of the first and last tenth of the logged steps; 'warned' counts the runs that warned "
        "the loss was not clearly below the baseline (below 0.9 × baseline) after a quarter of the run; 'timed' is "
        "the share of the run's wall time spent in the functions the recipe times.",
        "",
        markdown_table(["data set", "method", "setting", "steps", "loss first", "baseline first", "loss last",
                        "baseline last", "end ratio", "warned", "pretrain s", "timed"], pretrain_rows(cells)),
        "",
    ]
    details = []
    for r in rows:
        def both(k):
            return f"{r[f'pretrained_{k}']:.3f}" + (f" / {r[f'random_{k}']:.3f}" if f"random_{k}" in r else "")

        details.append([r["dataset"], r["method"], r["setting"], r["protocol"], both("accuracy"),
                        both("balanced_accuracy"), both("macro_f1"), "/".join(map(str, r["n_train"])),
                        "/".join(map(str, r["n_test"])), f"{r['eval_seconds']:.1f}"])
    lines += ["## Other metrics (pretrained / random, means over seeds)", "",
              markdown_table(["data set", "method", "setting", "protocol", "accuracy", "balanced acc", "macro-F1",
                              "n_train", "n_test", "eval s (pretrained)"], details), ""]
    if meta.get("notes"):
        lines += ["## Not run", "", *[f"- {n}" for n in meta["notes"]], ""]
    if meta.get("failed"):
        lines += ["## Failed cells", "", *[f"- {n} (see logs/{n}.log)" for n in meta["failed"]], ""]
    (out / "results.md").write_text("\n".join(lines))
    atomic_json(out / "results.json", {"meta": meta, "summary": rows, "cells": cells})
    if rows:  # rows need a trained encoder; the loss plot, a pretraining
        write_plot(rows, recipe, out / "results.png")
    if any(c.get("pretrain") for c in cells):
        write_loss_plot(cells, out / "loss.png")


def _machine_line(m: dict) -> str:
    text = f"{m.get('cpu', '?')} ({m.get('cpu_count', '?')} cores), Python {m.get('python')}, torch {m.get('torch')}"
    if m.get("gpu"):
        text += f", {m['gpu']}"
    return text + f", device {m.get('device')}"


def write_plot(rows: list[dict], recipe: Recipe, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in rows)]
    variants = list(dict.fromkeys((r["method"], r["setting"]) for r in rows))
    inits = [i for i in INITS if any(f"{i}_kappa" in r for r in rows)]
    protocols = [p for p in recipe.protocols if any(r["protocol"] == p.name for r in rows)]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, len(protocols), figsize=(4.5 * len(protocols), 4), sharey=True, squeeze=False)
    width = 0.8 / (len(inits) * len(variants))
    for ax, protocol in zip(axes[0], protocols):
        for v, (method, setting) in enumerate(variants):
            for i, init in enumerate(inits):
                xs, ys, es = [], [], []
                for d, ds in enumerate(datasets):
                    match = [r for r in rows if (r["dataset"], r["method"], r["setting"], r["protocol"])
                             == (ds, method, setting, protocol.name) and f"{init}_kappa" in r]
                    if not match:
                        continue
                    m, s = _ms(match[0][f"{init}_kappa"])
                    xs.append(d - 0.4 + width * (len(inits) * v + i + 0.5))
                    ys.append(m)
                    es.append(s)
                ax.bar(xs, ys, width, yerr=es, capsize=2, color=colours[v % len(colours)],
                       alpha=1.0 if init == "pretrained" else 0.45, hatch=None if init == "pretrained" else "//",
                       label=f"{method} / {setting} · {init}")
        ax.set_xticks(range(len(datasets)))
        ax.set_xticklabels([DATASETS[d].title for d in datasets], fontsize=7, rotation=15)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(protocol.name, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("Cohen's κ (test)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=min(len(labels), 6), frameon=False)
    fig.suptitle(f"{recipe.title}: pretrained (solid) vs random init (hatched); mean ± std over seeds", fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * math.ceil(len(labels) / 6), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_loss_plot(cells: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in DATASETS if any(c["dataset"] == d for c in cells)]
    variants = list(dict.fromkeys((c["method"], c["setting"]) for c in cells))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.4 * len(datasets), 3), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        labelled = set()
        for c in sorted((c for c in cells if c["dataset"] == ds and c.get("pretrain")), key=lambda c: c["seed"]):
            curve = [p for p in c["pretrain"]["curve"] if p[2]]
            variant = (c["method"], c["setting"])
            if curve:  # one colour per method / setting, one line per seed
                ax.plot([p[0] for p in curve], [p[1] / p[2] for p in curve], linewidth=0.8, alpha=0.8,
                        color=colours[variants.index(variant) % len(colours)],
                        label=None if variant in labelled else f"{variant[0]} / {variant[1]}")
                labelled.add(variant)
        ax.axhline(0.9, color="grey", linestyle="--", linewidth=0.6)
        ax.axhline(1.0, color="black", linewidth=0.6)
        ax.set_title(DATASETS[ds].title, fontsize=9)
        ax.set_xlabel("step")
        if labelled:
            ax.legend(fontsize=5)
    axes[0][0].set_ylabel("loss / trivial baseline")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Recipe]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", help="a recipe under bench/recipes (e.g. payoff) or the path of a recipe file")
    parser.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                        help="the recipe's data sets to run (default: its defaults)")
    parser.add_argument("--methods", nargs="+", default=None, metavar="NAME",
                        help="the recipe's methods to run (default: its defaults)")
    parser.add_argument("--settings", nargs="+", default=None, metavar="NAME",
                        help="the recipe's settings to run (default: its defaults)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default: the recipe's)")
    parser.add_argument("--steps", nargs="+", default=[], metavar="N|NAME=N",
                        help="pretraining steps: N for all data sets or NAME=N for one (default: the recipe's)")
    parser.add_argument("--finetune-steps", type=int, default=None,
                        help="fine-tuning steps of every finetune protocol (default: the recipe's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("--set", action="append", default=[], metavar="[NAME:]KEY=VALUE",
                        help="config override for every pretraining run, or for one data set's runs")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder holding eeg/, sensor/ and images/ (default: $RELPOS_SHARED_DATA or ../shared/data)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: bench/results/RECIPE)")
    parser.add_argument("--jobs", type=int, default=1, help="cells run in this many worker processes")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch/OpenMP threads of each worker (default: cores // jobs)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds after which no new cell is started (with --jobs > 1); the report says what finished")
    parser.add_argument("--keep-runs", action="store_true", help="keep the checkpoints of the runs")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from OUT/cells/*.json")
    parser.add_argument("--cell", default=None, help=argparse.SUPPRESS)  # DS:METHOD:SETTING:SEED, for workers
    args = parser.parse_args(argv)
    args.recipe_path = resolve_recipe_path(args.recipe)
    recipe = load_recipe(args.recipe_path)
    args.command = os.environ.get("RELPOS_BENCH_COMMAND") or shlex.join(
        ["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    args.out = (args.out or BENCH / "results" / recipe.name).resolve()

    def subset(option: str, given: list | None, known: list) -> list:
        if given is None:
            return list(recipe.defaults[option])
        bad = [g for g in given if g not in known]
        if bad:
            fail(f"--{option} got {', '.join(map(repr, bad))}; the recipe {recipe.name} has: "
                 f"{', '.join(map(str, known))}.")
        return list(dict.fromkeys(given))

    args.datasets = subset("datasets", args.datasets, list(recipe.datasets))
    args.methods = subset("methods", args.methods, [m.name for m in recipe.methods])
    args.settings = subset("settings", args.settings, [s.name for s in recipe.settings])
    if args.seeds is not None and any(s < 0 for s in args.seeds):
        fail(f"--seeds must be non-negative integers, got {args.seeds}.")
    args.seeds = list(dict.fromkeys(args.seeds if args.seeds is not None else recipe.seeds))
    if args.jobs < 1:
        fail(f"--jobs must be at least 1, got {args.jobs}.")
    if args.finetune_steps is not None and args.finetune_steps < 1:
        fail(f"--finetune-steps must be at least 1, got {args.finetune_steps}.")
    args.steps_by_ds = parse_steps(args.steps, recipe.steps)
    for value in args.set:
        dataset_overrides([value], "")
    return args, recipe


def report_only(args: argparse.Namespace, recipe: Recipe) -> int:
    cells = load_cells(args.out)
    if not cells:
        fail(f"--report-only found no cell files in {args.out / 'cells'}; run the benchmark first.")
    old = {}
    if (args.out / "results.json").is_file():
        old = json.loads((args.out / "results.json").read_text()).get("meta", {})
    meta = {**old, "command": old.get("command", args.command),
            "contention": old.get("contention", "Contention not measured (report rebuilt from cell files).")}
    write_report(cells, args.out, meta, recipe)
    print(f"bench/run.py: report of {len(cells)} cell(s) in {args.out / 'results.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args, recipe = parse_args(argv)
    if args.report_only:
        return report_only(args, recipe)
    if args.data_root is not None:
        os.environ["RELPOS_SHARED_DATA"] = str(args.data_root.resolve())
    if not _common.data_root().is_dir():
        fail(f"the data folder {_common.data_root()} does not exist; pass --data-root or set $RELPOS_SHARED_DATA "
             f"(default ../shared/data beside the repository).")
    from relpos.plugins import list_pretexts

    known = list_pretexts()
    bad = sorted({name for m in args.methods for name in recipe.method(m).pretext.split("+")} - set(known))
    if bad:
        fail(f"the recipe {recipe.name} names the pretext(s) {', '.join(map(repr, bad))}; registered pretexts: "
             f"{', '.join(known)}.")

    for name in recipe.timed:
        module_name, _, attr = name.partition(":")
        try:
            found = callable(getattr(importlib.import_module(module_name), attr, None))
        except ImportError:
            found = False
        if not found:
            fail(f"the recipe {recipe.name} times {name!r}, which is not a function of an importable module; "
                 f"name one as MODULE:FUNCTION.")

    if args.cell is not None:  # a worker: one cell
        try:
            ds, method, setting, seed = args.cell.split(":")
            cell = (ds, method, setting, int(seed))
        except ValueError:
            fail(f"--cell expects DS:METHOD:SETTING:SEED, got {args.cell!r}.")
        run_cell(recipe, *cell, args)
        return 0

    cells, notes = plan(recipe, args)
    missing = sorted({str(DATASETS[c[0]].path) for c in cells if not DATASETS[c[0]].path.exists()})
    if missing:
        fail(f"data missing under {_common.data_root()}: {', '.join(missing)}.")
    todo = [c for c in cells if not (args.out / "cells" / f"{cell_name(*c)}.json").is_file()]
    print(f"bench/run.py {recipe.name}: {len(cells)} cell(s), {len(cells) - len(todo)} already done, {len(todo)} "
          f"to run", flush=True)
    for note in notes:
        print(f"bench/run.py: {note}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    contention = Contention().start()
    t0 = time.perf_counter()
    failed: list[str] = []
    if args.jobs == 1:
        for cell in todo:
            run_cell(recipe, *cell, args)
    else:
        failed = run_parallel(todo, args)
    contention.stop()
    from relpos.distributed import resolve_device

    wanted = {cell_name(*c) for c in cells}
    done = [c for c in load_cells(args.out)
            if cell_name(c["dataset"], c["method"], c["setting"], c["seed"]) in wanted]
    if args.jobs == 1:
        busy = f"During this invocation {contention.describe()}."
    elif "others_cores" in contention.result:
        busy = (f"During this invocation processes other than the parent, its {args.jobs} workers included, kept "
                f"{contention.result['others_cores']:.2f} cores busy on average.")
    else:
        busy = "Other processes' CPU use unknown."
    meta = {**machine_info(), "device": str(resolve_device(args.device)), "command": args.command,
            "contention": busy, "wall_s": time.perf_counter() - t0, "recipe": recipe.name,
            "jobs": args.jobs, "steps": {d: args.steps_by_ds[d] for d in args.datasets},
            "finetune_steps": args.finetune_steps, "notes": notes, "failed": failed}
    write_report(done, args.out, meta, recipe)
    print(f"bench/run.py: {len(done)} cell(s) reported in {args.out / 'results.md'}, results.json, results.png, "
          f"loss.png; wall {meta['wall_s']:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The evaluation card: one artefact that says, with uncertainty, what a run's encoder is worth.

``relpos eval RUN`` writes ``RUN/eval/<protocol>-<data>.json`` and ``.md`` (``<data>``: a short
stable slug, the data's name and the start of its hash; ``<protocol>-<features>-<data>`` for
features other than ``cls``): the protocol and its settings; the split with the windows and classes
on each side; for every label fraction, every seed's scores of the pretrained encoder and of the
same architecture with random weights (the same seeds: the same splits, label subsets and probes),
their means and 95 % intervals and the difference pretrained − random with its interval (paired by
seed and by test window, :mod:`relpos.evaluation.bootstrap`); the leakage check
(:mod:`relpos.evaluation.leakage`); the checkpoint's step and a hash of its encoder weights, a hash
of the data (its files and the modality settings) and the relpos version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, warn
from .bootstrap import N_BOOT, interval, paired_bootstrap
from .metrics import METRICS

#: The settings of each protocol the Markdown card shows (the JSON holds them all).
PROTOCOL_SETTINGS = {
    "linear": ("test_fraction", "val_fraction", "cs", "max_iter"),
    "knn": ("test_fraction", "val_fraction", "ks", "temperature"),
    "finetune": ("test_fraction", "steps", "batch_size", "lr", "weight_decay", "warmup_steps", "augment"),
}
#: Marks a card's JSON among the other files of RUN/eval.
CARD_KIND = "relpos evaluation card"
#: The metric of the card's tables and curve (all four are in the JSON).
HEADLINE = "cohen_kappa"
CI_METHOD = (f"95 % percentile bootstrap over test windows ({N_BOOT} resamples): each seed's test windows resampled "
             f"(one resample shared by seeds that test the same windows, the same for pretrained and random init, "
             f"so the difference is paired by window), each seed scored, the mean over seeds taken; the seeds "
             f"themselves are not resampled (their spread is the seed_std beside it)")


@dataclass
class Card:
    """What :func:`write_card` measured (and writes as JSON and Markdown)."""

    run: str
    protocol: str
    init: str
    features: str
    data: str  # the slug
    data_source: str
    data_hash: str
    step: int
    weights_hash: str
    relpos_version: str
    settings: dict[str, Any]
    split: dict[str, Any]
    seeds: list[int]
    curve: list[dict[str, Any]]
    leakage: dict[str, Any]
    ci_method: str = CI_METHOD
    kind: str = CARD_KIND
    created: str = ""
    path: Path | None = None
    tables: list[str] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("tables")
        out["path"] = str(self.path) if self.path else None
        return out


# -- inputs -----------------------------------------------------------------------------------------
def parse_label_fractions(text: str | float | int | Sequence) -> list[float | int]:
    """``"0.01,0.05,0.1,1.0"`` → ``[0.01, 0.05, 0.1, 1.0]``, each checked before any data is read.

    A float must lie in (0, 1] (a fraction of each class's training windows); an integer ≥ 1 is a
    number of subjects (or blocks of time, on one recording).
    """
    from .splits import _is_fraction, parse_label_fraction

    items = ([t for t in str(text).split(",")] if isinstance(text, str) else
             list(text) if isinstance(text, (list, tuple)) else [text])
    out: list[float | int] = []
    for item in items:
        if isinstance(item, str) and not item.strip():
            raise ConfigError(
                f"Invalid value for '--label-fraction': {text!r} has an empty entry; give fractions in (0, 1] "
                f"separated by commas, e.g. 0.01,0.1,1.0."
            )
        value = parse_label_fraction(item)
        if not _is_fraction(value, "subjects") and int(value) < 1:
            raise ConfigError(
                f"Invalid label fraction {value}: a fraction must be in (0, 1] (or give an integer number of subjects, "
                f"at least 1)."
            )
        if value not in out:
            out.append(value)
    return out


def data_slug(source: Any, digest: str) -> str:
    """A short, stable name of the data: its file or folder name, lower-case, and the first 6 hex digits of its hash."""
    name = Path(str(source)).name if isinstance(source, (str, Path)) else type(source).__name__
    stem = re.sub(r"\.(npz|npy|edf|bdf|fif|nc|zarr|gz|csv|set)$", "", name.lower())
    stem = re.sub(r"[^a-z0-9]+", "-", stem).strip("-")[:40] or "data"
    return f"{stem}-{digest[:6]}"


def data_fingerprint(source: Any, modality) -> str:
    """SHA-256 of the data's files (relative names, sizes, contents) and the modality's name and settings."""
    digest = hashlib.sha256()
    settings = json.dumps(dataclasses.asdict(modality.config), sort_keys=True, default=str)
    digest.update(f"{modality.name}\n{settings}\n".encode())
    if isinstance(source, (str, Path)) and Path(source).exists():
        root = Path(source)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            relative = path.relative_to(root).as_posix() if root.is_dir() else path.name
            digest.update(f"{relative}\n{path.stat().st_size}\n".encode())
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    elif isinstance(source, np.ndarray):
        digest.update(np.ascontiguousarray(source).tobytes())
    else:
        digest.update(str(source).encode())
    return digest.hexdigest()


def weights_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of an encoder's weights: every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}\n{tensor.dtype}\n{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def card_name(protocol: str, features: str, slug: str) -> str:
    return f"{protocol}-{slug}" if features == "cls" else f"{protocol}-{features}-{slug}"


# -- the card -------------------------------------------------------------------------------------
def _class_counts(windows, names: list[str]) -> dict[str, int]:
    labels = windows.labels.numpy()
    counts = np.bincount(labels[labels >= 0], minlength=len(names))
    return {(names[i] if i < len(names) else str(i)): int(c) for i, c in enumerate(counts)}


def _summary(per_seed: list[dict[str, float]], replicates: dict[str, np.ndarray]) -> dict[str, Any]:
    return {
        "mean": {m: float(np.mean([s[m] for s in per_seed])) for m in METRICS},
        "ci": {m: interval(replicates[m]) for m in METRICS},
    }


def write_card(
    run_dir: str | Path,
    protocol: str | None = None,
    data: Any = None,
    features: str = "cls",
    label_fractions: Sequence[float | int] | str = (1.0,),
    repeats: int = 3,
    seed: int = 0,
    init: str = "pretrained",
    modality_overrides: dict[str, Any] | None = None,
    n_boot: int = N_BOOT,
    **protocol_options: Any,
) -> Card:
    """Evaluate a run's encoder against random init of its architecture and write the card.

    Parameters
    ----------
    run_dir, protocol, data, features, modality_overrides, **protocol_options
        As in :func:`relpos.evaluate` (``write=False`` writes neither the card nor the per-init results).
    label_fractions : sequence or str
        One entry per point of the label-efficiency curve (``"0.01,0.1,1.0"`` or ``[0.01, 0.1, 1.0]``),
        each a fraction in (0, 1] or a number of subjects; checked before any data is read.
    repeats, seed : int
        Seeds ``seed .. seed + repeats - 1``, the same for both encoders.
    init : {"pretrained", "teacher"}
        Which of the run's weights the card is about.

    Returns
    -------
    Card
    """
    from .. import __version__
    from ..api import load_encoder
    from ..config import build_dataclass
    from ..distributed import resolve_device
    from ..paths import refuse_special_file
    from .evaluate import (
        EvalConfig, _check_arguments, _check_split, _open, _Repeats, _score_repeats, _source_of, _source_text,
        _trained_data_info, _with_overrides, check_results_writable, result_name, results_folder, write_result,
    )
    from .leakage import leakage_check, leakage_sentence

    started = time.perf_counter()
    cfg = build_dataclass(EvalConfig, protocol_options, "eval")
    if init not in ("pretrained", "teacher"):
        raise ConfigError(
            f"Invalid value for 'init' of an evaluation card: allowed 'pretrained' or 'teacher' (the card compares "
            f"the run's weights with random init itself), got {init!r}."
        )
    protocol = _check_arguments(protocol, init, features, repeats, seed)
    fractions = parse_label_fractions(label_fractions)
    refuse_special_file(data)
    device = resolve_device(cfg.device, "eval.device")
    run_dir = Path(run_dir)
    pretrained = load_encoder(run_dir, device=device, weights="teacher" if init == "teacher" else "student")
    if cfg.write:
        for fraction in fractions:
            for which in (init, "random"):
                check_results_writable(run_dir, result_name(protocol, which, features, fraction))
    pretrained.check_features(features)
    modality = _with_overrides(pretrained.modality, modality_overrides)
    source = _source_of(run_dir, pretrained, modality, data)
    data_hash = data_fingerprint(source, modality)
    slug = data_slug(source, data_hash)
    folder = results_folder(run_dir)
    name = card_name(protocol, features, slug)
    if cfg.write:
        from ..paths import check_output_file

        for suffix in (".json", ".md"):
            check_output_file(folder / f"{name}{suffix}", "the evaluation card",
                              "move it out of the way, or pass --set eval.write=false")
    opened = _open(modality, source, data is not None)
    trained_on = _trained_data_info(run_dir) if data is not None else {}
    caches: dict[str, dict] = {}
    curve: list[dict[str, Any]] = []
    first_repeats = None
    tables: list[str] = []
    for fraction in fractions:
        scored: dict[str, Any] = {}
        for which in (init, "random"):
            repeated = _Repeats(cfg, protocol, which, features, fraction, seed, device, opened, source)
            repeated.cached = caches.setdefault(which, {})  # frozen pretrained features: once per split
            train, test, _ = repeated.split_for(seed)
            if first_repeats is None:
                _check_split(protocol, pretrained, modality, source, train, test,
                             trained_on if data is not None else None)
            _score_repeats(repeated, pretrained, modality, train, test, seed, repeats)
            result = repeated.result(run_dir, _source_text(source), started)
            if cfg.write:
                write_result(result)
            if which == init:
                tables.append(result.format_table())
            scored[which] = (repeated, result)
            first_repeats = first_repeats or repeated
        mine, random_init = scored[init][0], scored["random"][0]
        boot = paired_bootstrap(mine.truths, mine.predictions, random_init.predictions, mine.n_classes, n_boot, seed)
        differences = [{m: a[m] - b[m] for m in METRICS} for a, b in zip(mine.metrics, random_init.metrics)]
        curve.append({
            "label_fraction": fraction,
            "n_train": mine.n_train,
            init: {"per_seed": mine.metrics, **_summary(mine.metrics, boot["first"])},
            "random": {"per_seed": random_init.metrics, **_summary(random_init.metrics, boot["second"])},
            "difference": {m: {
                "mean": float(np.mean([d[m] for d in differences])),
                "ci": interval(boot["difference"][m]),
                "seed_std": float(np.std([d[m] for d in differences], ddof=1)) if len(differences) > 1 else 0.0,
                "per_seed": [d[m] for d in differences],
            } for m in METRICS},
        })
    repeated = first_repeats
    names = repeated.class_names
    sides = [{"how": how, "train_windows": len(train), "test_windows": len(test),
              "train_classes": _class_counts(train, names), "test_classes": _class_counts(test, names)}
             for train, test, how in repeated.splits.values()]
    tests = [test for _, test, _ in repeated.splits.values()]
    split = {"kind": scored[init][1].split, "train_windows": sides[0]["train_windows"],
             "test_windows": sum(len(t) for t in tests), "classes": names, "parts": sides}
    leakage = leakage_check(tests, repeated.by_fold, opened, source, pretrained.modality, pretrained.config.data,
                            same_settings=not modality_overrides)
    leakage["summary"] = leakage_sentence(leakage)
    if leakage.get("overlapping"):
        warn(leakage["summary"] + ".")
    options = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("progress", "write")}
    card = Card(
        run=str(run_dir), protocol=protocol, init=init, features=features, data=slug, data_source=_source_text(source),
        data_hash=data_hash, step=pretrained.step, weights_hash=weights_fingerprint(repeated.pretrained_state),
        relpos_version=__version__, settings=options, split=split, seeds=list(range(seed, seed + repeats)),
        curve=curve, leakage=leakage, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    card.tables = tables  # the per-encoder tables relpos eval prints (not part of the card's files)
    if cfg.write:
        card.path = _write_card(card, folder / name)
    return card


def _write_card(card: Card, stem: Path) -> Path:
    from ..checkpoint import atomic_write_text
    from ..paths import write_failure

    path = stem.with_suffix(".json")
    card.path = path
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(format_card(card.to_dict()), stem.with_suffix(".md"))
        atomic_write_text(json.dumps(card.to_dict(), indent=2) + "\n", path)
    except OSError as exc:
        raise write_failure(exc, "the evaluation card", path, "pass --set eval.write=false to print it only") from None
    return path


# -- reading and printing -------------------------------------------------------------------------
def _pm(mean: float, ci: Sequence[float], signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{mean:{sign}.3f} [{ci[0]:{sign}.3f}, {ci[1]:{sign}.3f}]"


def _fraction_text(fraction: float | int) -> str:
    return f"{fraction:g}" if isinstance(fraction, float) else f"{fraction} subject(s)"


def score_rows(card: dict[str, Any], metric: str = HEADLINE) -> list[list[str]]:
    """Rows of the card's table: label fraction, pretrained, random, difference (mean [95 % interval])."""
    init = card["init"]
    return [[_fraction_text(point["label_fraction"]),
             _pm(point[init]["mean"][metric], point[init]["ci"][metric]),
             _pm(point["random"]["mean"][metric], point["random"]["ci"][metric]),
             _pm(point["difference"][metric]["mean"], point["difference"][metric]["ci"], signed=True),
             f"{point['difference'][metric]['seed_std']:.3f}"] for point in card["curve"]]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]


def format_card(card: dict[str, Any]) -> str:
    """The card as Markdown (what ``RUN/eval/<name>.md`` holds and ``relpos eval`` prints)."""
    what = {"linear": "linear probe", "knn": "kNN probe", "finetune": "fine-tuning"}[card["protocol"]]
    split = card["split"]
    several = len(split["parts"]) > 1
    parts = "; ".join(
        (f"{p['how'].split(': ', 1)[-1]}: " if several else "")
        + f"train {p['train_windows']} windows ({', '.join(f'{k} {v}' for k, v in p['train_classes'].items())}), "
        f"test {p['test_windows']} ({', '.join(f'{k} {v}' for k, v in p['test_classes'].items())})"
        for p in split["parts"][:3]) + (f"; and {len(split['parts']) - 3} more folds" if len(split["parts"]) > 3 else "")
    shown = PROTOCOL_SETTINGS[card["protocol"]] + ("grid", "grid_patch_fraction") * (card["features"] == "grid")
    settings = ", ".join(f"{k}={card['settings'][k]}" for k in shown if k in card["settings"])
    lines = [
        f"# Evaluation card: {what} of {card['run']}", "",
        f"- checkpoint: step {card['step']}, {card['init']} encoder weights sha256 {card['weights_hash'][:16]}",
        f"- data: {card['data_source']} (card name {card['data']}; sha256 of its files and the modality settings "
        f"{card['data_hash'][:16]})",
        f"- relpos {card['relpos_version']}; written {card['created']}",
        f"- protocol: {what} on {card['features']} features; {settings}",
        f"- split: {split['kind']}; {parts}",
        f"- seeds: {', '.join(map(str, card['seeds']))}, the same for the pretrained and the random encoder",
        f"- interval: {card['ci_method']}",
        f"- leakage: {card['leakage']['summary']}",
        "", f"## Cohen's κ (mean [95 % interval]; all four metrics and every seed are in the JSON)", "",
        *_table(["labels", card["init"], "random init", f"{card['init']} − random", "seed std of the difference"],
                score_rows(card)),
        "", "## Every seed", "",
        *_table(["labels", "seed", *[f"{card['init']} {m}" for m in METRICS], *[f"random {m}" for m in METRICS]],
                [[_fraction_text(p["label_fraction"]), str(s),
                  *[f"{p[card['init']]['per_seed'][i][m]:.3f}" for m in METRICS],
                  *[f"{p['random']['per_seed'][i][m]:.3f}" for m in METRICS]]
                 for p in card["curve"] for i, s in enumerate(card["seeds"])]),
    ]
    return "\n".join(lines) + "\n"


def read_cards(run: str | Path) -> list[dict[str, Any]]:
    """Every card in ``RUN/eval`` (files of other kinds skipped), sorted by name."""
    from .evaluate import results_folder

    folder = results_folder(run)
    cards = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            content = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(content, dict) and content.get("kind") == CARD_KIND:
            content["path"] = str(path)
            cards.append(content)
    return cards


def compare(run_a: str | Path, run_b: str | Path, protocol: str | None = None) -> str:
    """Two runs' cards on the same data, side by side (the text ``relpos eval --compare`` prints).

    Raises
    ------
    ConfigError
        When a run has no card, or the two have none on the same data (same hash) and protocol.
    """
    found = []
    for run in (run_a, run_b):
        cards = [c for c in read_cards(run) if protocol is None or c["protocol"] == protocol]
        if not cards:
            raise ConfigError(
                f"Run {str(run)!r} has no evaluation card{'' if protocol is None else f' of protocol {protocol!r}'} "
                f"to compare; write one with `relpos eval {run}`."
            )
        found.append(cards)
    pairs = [(a, b) for a in found[0] for b in found[1]
             if (a["data_hash"], a["protocol"], a["features"]) == (b["data_hash"], b["protocol"], b["features"])]
    if not pairs:
        def listed(cards):
            return ", ".join(sorted({f"{c['protocol']} on {c['data']}" for c in cards}))

        raise ConfigError(
            f"Runs {str(run_a)!r} and {str(run_b)!r} have no cards on the same data with the same protocol and "
            f"features (the first has {listed(found[0])}, the second {listed(found[1])}); evaluate both on one --data."
        )
    out = []
    for a, b in pairs:
        rows_a, rows_b = score_rows(a), score_rows(b)
        header = ["labels", f"A {a['init']}", "A − random", f"B {b['init']}", "B − random"]
        fractions_b = {r[0]: r for r in rows_b}
        rows = [[r[0], r[1], r[3], *(fractions_b[r[0]][1:2] + fractions_b[r[0]][3:4] if r[0] in fractions_b else ["-", "-"])]
                for r in rows_a]
        rows += [[r[0], "-", "-", r[1], r[3]] for r in rows_b if r[0] not in {x[0] for x in rows_a}]
        out += [
            f"{a['protocol']} on {a['features']} features, data {a['data']} ({a['data_source']}); Cohen's κ, mean [95 % interval]",
            f"  A: {a['run']} (step {a['step']}, weights {a['weights_hash'][:12]}, seeds {a['seeds']}); leakage: "
            f"{a['leakage']['summary']}",
            f"  B: {b['run']} (step {b['step']}, weights {b['weights_hash'][:12]}, seeds {b['seeds']}); leakage: "
            f"{b['leakage']['summary']}",
            *_table(header, rows), "",
        ]
    return "\n".join(out)

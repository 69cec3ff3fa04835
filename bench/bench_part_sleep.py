"""Does PART learn on a real sleep night, and which pairs does it learn? Loss against the trivial baseline.

For each variant of the sleep recipe (``configs/eeg_sleep_part.yaml``) this pretrains PART on the
Sleep-EDF night in ``../shared/data/eeg/sleep-edf`` and reports:

* the training loss against ``loss_baseline`` (the best constant predictor's loss on the same
  batch), averaged over the first and the last tenth of the run;
* on fresh batches drawn from the trained model (same sampler, no gradient), the mean squared error,
  its constant baseline and (position-masked variants) the error of a **positions-only** guess (a
  visible centre is known, a masked one guessed as the mean centre: what a model scores without
  localising any content), restricted to pairs whose patches **overlap** in time
  (|Δc| < one patch length), pairs that **do not**, and, for the position-masked variants, pairs
  that **involve a masked patch** versus pairs of two **visible** patches. The lead's hypothesis:
  on a roughly stationary signal only overlapping pairs can be localised from content.

Variants: ``default`` (position-free, the paper's loss on all pairs), ``masked`` (the paper's EEG
experiment: sin-cos positions, 20 % masked, loss on all pairs), ``masked-only`` (the same, loss on
the pairs involving a masked patch), and the diagnostic ``neighbours``: position-free, but every
pair is two patches adjacent in time (boxes sorted by centre, target = reference ± 1), so most
pairs overlap; it asks whether the network can align overlapping content at all when that is
most of the loss rather than under 1 % of it. It patches PART's samplers in this process only.
``near`` is the option that came of it: ``pretext.pair_max_offset=1.0`` (pairs at most one patch
length apart). The sweep variants ask whether budget, learning rate, batch size or normalisation
is the whole story: ``near-lr1e-3``, ``near-lr2e-4``, ``near-bs64``, ``near-recording`` (one robust
z-score per channel over the night, ``modality.normalize=recording``), ``default-lr1e-3-bs64`` and
``neighbours-lr1e-3``.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_part_sleep.py --steps 300
    .venv/bin/python bench/bench_part_sleep.py --steps 3000 --device cuda --jobs 8 --eval --plot \
        --variants near,near-lr1e-3,near-lr2e-4,near-bs64,near-recording,default,default-lr1e-3-bs64,neighbours-lr1e-3
    .venv/bin/python bench/bench_part_sleep.py --report-only --plot      # rebuild from what finished

``--jobs N`` runs the variants in N processes of this script (``OMP_NUM_THREADS`` = cores / N each).
Each variant's result is written, atomically, to
``OUT/bench_part_sleep_steps{S}_seed{s}[_extra]/variants/{variant}.json`` as soon as it is done
and a variant whose file exists is skipped, so a run cut off by a time limit keeps what finished;
the report (``report.md``, ``report.json``, ``part_sleep_loss.png`` with ``--plot``) sits in the
same folder, and ``--report-only`` rebuilds it for every such folder under ``--out``.
``--time-limit S`` stops the variants still running S seconds after the start and writes the report
from the finished ones (keep it below any outer limit).
``--eval`` adds the linear-probe Cohen's κ of the trained encoder (mean features, 3 folds of 30
time blocks) and of the same architecture with random weights (cached under
``OUT/random_init_kappa``: it depends only on the encoder and modality settings).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import relpos
from relpos.encoders.vit import position_mask
from relpos.extraction import extract_patches
from relpos.geometry import relative_transform
from relpos.sampling import sample_near_pairs, sample_pairs
from relpos.training import build_modality, open_data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, RESULTS_DIR, data_root, machine_info  # noqa: E402

SLEEP = DATASETS["sleep"]
RECIPE = SLEEP.recipe("part")
MASKED = ["encoder.pos_embed=sincos", "encoder.pos_mask_ratio=0.2"]
NEAR = ["pretext.pair_max_offset=1.0"]
VARIANTS = {
    "default": [],
    "masked": MASKED,
    "masked-only": [*MASKED, "pretext.pair_loss=masked"],
    "neighbours": [],
    "near": NEAR,
    # The sweep: is it budget, learning rate, batch size or normalisation?
    "near-lr1e-3": [*NEAR, "train.lr=1e-3"],
    "near-lr2e-4": [*NEAR, "train.lr=2e-4"],
    "near-bs64": [*NEAR, "train.batch_size=64"],
    "near-recording": [*NEAR, "modality.normalize=recording"],
    "default-lr1e-3-bs64": ["train.lr=1e-3", "train.batch_size=64"],
    "neighbours-lr1e-3": ["train.lr=1e-3"],
    # Around the best near variant (batch 64): head, depth, pairs per window, warm-up, normalisation.
    "near-bs64-pairwise": [*NEAR, "train.batch_size=64", "pretext.head=pairwise_mlp"],
    "near-bs64-depth2": [*NEAR, "train.batch_size=64", "encoder.depth=2"],
    "near-bs64-pairs128": [*NEAR, "train.batch_size=64", "pretext.n_pairs=128"],
    "near-bs64-warmup100": [*NEAR, "train.batch_size=64", "train.warmup_steps=100"],
    "near-bs64-recording": [*NEAR, "train.batch_size=64", "modality.normalize=recording"],
}
NEIGHBOUR_VARIANTS = {"neighbours", "neighbours-lr1e-3"}  # trained with neighbour_sampling()
DEFAULT_VARIANTS = "default,masked,masked-only"
EVAL_OPTIONS = {"protocol": "linear", "features": "mean", "repeats": 3, "seed": 0, "time_blocks": 30}


def neighbour_pairs(batch_size, n_patches, n_pairs, generator, device=None):
    """(reference, target) index pairs of patches adjacent in sorted order, in either direction."""
    ref = torch.randint(0, n_patches - 1, (batch_size, n_pairs), generator=generator)
    tgt = ref + 1
    swap = torch.rand((batch_size, n_pairs), generator=generator) < 0.5
    ref, tgt = torch.where(swap, tgt, ref), torch.where(swap, ref, tgt)
    return ref.to(device), tgt.to(device)


@contextlib.contextmanager
def neighbour_sampling(pretext=None):
    """Make PART sample boxes sorted by centre and pairs of neighbours (this process only)."""
    import relpos_plugins.part as part_module

    original_pairs, original_boxes = part_module.sample_pairs, part_module.PART.sample_boxes

    def sorted_boxes(self, batch_size, generator, device):
        boxes = original_boxes(self, batch_size, generator, device)
        order = boxes.center[..., 0].argsort(dim=1)
        return boxes.gather(order)

    part_module.sample_pairs, part_module.PART.sample_boxes = neighbour_pairs, sorted_boxes
    try:
        yield
    finally:
        part_module.sample_pairs, part_module.PART.sample_boxes = original_pairs, original_boxes


def subset_errors(pretext, windows, n_batches: int, batch_size: int, seed: int,
                  neighbours: bool = False) -> dict[str, float]:
    """MSE and constant baseline per kind of pair, on fresh batches from the trained model."""
    generator = torch.Generator().manual_seed(seed)  # CPU draws, moved to the model's device
    device = next(pretext.parameters()).device
    errors, targets, overlaps, masked_pairs, oracle_errors = [], [], [], [], []
    pretext.eval()
    with torch.no_grad():
        for _ in range(n_batches):
            index = torch.randint(0, len(windows), (batch_size,), generator=generator)
            x = windows.x[index].to(device)
            boxes = pretext.sample_boxes(batch_size, generator, x.device)
            patches = extract_patches(x, boxes, pretext.patch_shape)
            pos_masked = None
            if pretext.masks_positions:
                pos_masked = position_mask(batch_size, pretext.n_patches, pretext.encoder.config.pos_mask_ratio,
                                          generator, device)
            tokens = pretext.encoder(patches, boxes.center, generator, pos_masked=pos_masked)[:, 1:]
            if neighbours:
                ref, tgt = neighbour_pairs(batch_size, pretext.n_patches, pretext.config.n_pairs, generator, x.device)
            elif pretext.config.pair_max_offset > 0:
                ref, tgt = sample_near_pairs(boxes, pretext.config.n_pairs, pretext.config.pair_max_offset, generator)
            else:
                ref, tgt = sample_pairs(batch_size, pretext.n_patches, pretext.config.n_pairs, generator, x.device)
            theta = relative_transform(boxes.gather(ref), boxes.gather(tgt))
            pred = pretext.head(tokens, ref, tgt).float()
            errors.append(((pred - theta) ** 2).mean(-1).flatten())
            targets.append(theta[..., 0].flatten())
            overlaps.append((theta[..., 0].abs() < 1.0).flatten())  # |Δc| below one patch length
            if pos_masked is not None:
                masked_pairs.append((pos_masked.gather(1, ref) | pos_masked.gather(1, tgt)).flatten())
                # Positions only, no content: a visible centre is known, a masked one is guessed as
                # the mean centre. What a model scores on masked pairs without localising content.
                centre = boxes.center[..., 0]
                guess = torch.where(pos_masked, centre.mean(), centre)
                oracle = (guess.gather(1, tgt) - guess.gather(1, ref)) / boxes.size[..., 0].gather(1, ref)
                oracle_errors.append(((oracle - theta[..., 0]) ** 2).flatten())
    error, target, overlap = torch.cat(errors).cpu(), torch.cat(targets).cpu(), torch.cat(overlaps).cpu()
    kinds = {"all": torch.ones_like(overlap), "overlapping": overlap, "non-overlapping": ~overlap}
    if masked_pairs:
        masked = torch.cat(masked_pairs).cpu()
        kinds.update({"masked": masked, "visible": ~masked,
                      "masked non-overlapping": masked & ~overlap})
    out = {}
    oracle_error = torch.cat(oracle_errors).cpu() if oracle_errors else None
    for name, selected in kinds.items():
        t = target[selected]
        out[name] = {
            "share": float(selected.float().mean()),
            "mse": float(error[selected].mean()),
            "baseline": float(((t - t.mean()) ** 2).mean()),
        }
        if oracle_error is not None:
            out[name]["positions_only"] = float(oracle_error[selected].mean())
    return out


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` through a temporary file in the same folder (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=1)
    os.chmod(tmp, 0o644)  # mkstemp makes it private
    os.replace(tmp, path)


def kappa_summary(result) -> dict:
    """Cohen's κ (mean, std over repeats) and the other metrics' means of one evaluation."""
    return {
        "kappa_mean": float(result.mean["cohen_kappa"]),
        "kappa_std": float(result.std["cohen_kappa"]),
        "kappa_per_repeat": [float(m["cohen_kappa"]) for m in result.metrics],
        "accuracy_mean": float(result.mean["accuracy"]),
        "balanced_accuracy_mean": float(result.mean["balanced_accuracy"]),
        "seconds": round(float(result.elapsed_s), 1),
    }


def random_init_kappa(run_dir: Path, config, device: str, cache_dir: Path) -> dict:
    """κ of the run's architecture with random weights, computed once per encoder and modality setting.

    The key holds the encoder and modality sections (the input normalisation changes the features
    too) and the data path; a lock makes parallel variants with the same key wait for one
    computation instead of repeating it.
    """
    settings = config.to_dict()
    key_source = {"encoder": settings["encoder"], "modality": settings["modality"], "data": settings["data"],
                  "eval": EVAL_OPTIONS}
    key = hashlib.sha256(json.dumps(key_source, sort_keys=True).encode()).hexdigest()[:16]
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{key}.json"
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            return {**json.loads(path.read_text())["random"], "cached": True}
        result = relpos.evaluate(run_dir, init="random", progress=False, write=False, device=device, **EVAL_OPTIONS)
        summary = kappa_summary(result)
        write_json_atomic(path, {"key": key_source, "random": summary})
    return {**summary, "cached": False}


def curve(rows: np.ndarray, column: str) -> list[float]:
    return [float(f"{v:.5g}") for v in np.atleast_1d(rows[column])]


def run_variant(name: str, overrides: list[str], steps: int, seed: int, out_dir: Path, data: Path,
                device: str, evaluate: bool, random_cache: Path) -> dict:
    config = relpos.resolve_config(
        str(RECIPE), overrides=[*overrides, f"train.steps={steps}", f"train.seed={seed}", f"train.device={device}",
                                "train.progress=false", "train.log_every=1", "train.tensorboard=false"],
    )
    config.data = str(data)
    run_dir = out_dir / name
    if (run_dir / "metrics.csv").exists():  # left over from a run cut off before its result was written
        import shutil

        shutil.rmtree(run_dir)
    config.out = str(run_dir)
    neighbours = name in NEIGHBOUR_VARIANTS
    with neighbour_sampling() if neighbours else contextlib.nullcontext():
        start = time.perf_counter()
        result = relpos.train(config)
        seconds = time.perf_counter() - start
        trained_on = str(next(result.pretext.parameters()).device)
        windows = open_data(build_modality(config), config.data)
        pairs = subset_errors(result.pretext, windows, n_batches=8, batch_size=16, seed=10_000 + seed,
                              neighbours=neighbours)
    rows = np.genfromtxt(run_dir / "metrics.csv", delimiter=",", names=True)
    tenth = max(1, steps // 10)
    loss, baseline = np.atleast_1d(rows["loss"]), np.atleast_1d(rows["loss_baseline"])
    steady = float(np.median(np.atleast_1d(rows["samples_per_s"]))) / config.train.batch_size
    out = {
        "variant": name,
        "overrides": overrides,
        "steps": steps,
        "seed": seed,
        "device": trained_on,
        "batch_size": config.train.batch_size,
        "lr": config.train.lr,
        "seconds": round(seconds, 1),  # the whole train() call: data, model, steps, checkpoint
        "steps_per_s": round(steps / seconds, 3),
        "steps_per_s_median": round(steady, 3),  # median of the logged steps' own rates
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
        "loss_first_tenth": float(loss[:tenth].mean()),
        "baseline_first_tenth": float(baseline[:tenth].mean()),
        "loss_last_tenth": float(loss[-tenth:].mean()),
        "baseline_last_tenth": float(baseline[-tenth:].mean()),
        "center_l2_last_tenth": float(np.atleast_1d(rows["center_l2"])[-tenth:].mean()),
        "summary": result.baseline_summary,
        "pairs": pairs,
        "curve": {"step": [int(v) for v in np.atleast_1d(rows["step"])], "loss": curve(rows, "loss"),
                  "loss_baseline": curve(rows, "loss_baseline")},
    }
    if evaluate:
        pretrained = relpos.evaluate(run_dir, init="pretrained", progress=False, write=False, device=device,
                                     **EVAL_OPTIONS)
        out["eval"] = {"options": EVAL_OPTIONS, "pretrained": kappa_summary(pretrained),
                       "random": random_init_kappa(run_dir, config, device, random_cache)}
    return out


def ratio(loss: float, baseline: float) -> str:
    return f"{loss / baseline:.3f}" if baseline > 0 else "–"


def markdown(results: list[dict]) -> str:
    lines = [
        "| variant | device | steps | time (s) | steps/s | loss / baseline, first tenth | last tenth | ratio, first → last |",
        "| --- | --- | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['variant']} | {r.get('device', '–')} | {r['steps']} | {r['seconds']:.0f} | "
            f"{r.get('steps_per_s', math.nan):.2f} | {r['loss_first_tenth']:.3g} / {r['baseline_first_tenth']:.3g} | "
            f"{r['loss_last_tenth']:.3g} / {r['baseline_last_tenth']:.3g} | "
            f"{ratio(r['loss_first_tenth'], r['baseline_first_tenth'])} → {ratio(r['loss_last_tenth'], r['baseline_last_tenth'])} |"
        )
    lines += ["", "Settings: " + "; ".join(f"{r['variant']}: `{' '.join(r['overrides']) or 'the recipe'}`" for r in results)]
    lines += ["", "Held-out batches after training (MSE / constant baseline, share of pairs):", "",
              "| variant | pairs | share | MSE | constant baseline | positions only | MSE / baseline |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        for kind, v in r["pairs"].items():
            rel = v["mse"] / v["baseline"] if v["baseline"] > 0 else math.nan
            oracle = f"{v['positions_only']:.2f}" if "positions_only" in v else "–"
            lines.append(f"| {r['variant']} | {kind} | {v['share']:.2f} | {v['mse']:.2f} | {v['baseline']:.2f} | "
                         f"{oracle} | {rel:.2f} |")
    evaluated = [r for r in results if "eval" in r]
    if evaluated:
        o = evaluated[0]["eval"]["options"]
        lines += ["", f"Linear probe on the night (Cohen's κ, mean ± std over {o['repeats']} folds of "
                      f"{o['time_blocks']} time blocks, {o['features']} features):", "",
                  "| variant | PART κ | random κ | Δ |", "| --- | ---: | ---: | ---: |"]
        for r in evaluated:
            p, q = r["eval"]["pretrained"], r["eval"]["random"]
            lines.append(f"| {r['variant']} | {p['kappa_mean']:.3f} ± {p['kappa_std']:.3f} | "
                         f"{q['kappa_mean']:.3f} ± {q['kappa_std']:.3f} | {p['kappa_mean'] - q['kappa_mean']:+.3f} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path) -> None:
    """Loss / baseline against step, one line per variant (a moving average over 1/50 of the run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    top = 1.2
    for r in results:
        step = np.asarray(r["curve"]["step"], dtype=float)
        rel = np.asarray(r["curve"]["loss"]) / np.asarray(r["curve"]["loss_baseline"])
        width = max(1, len(rel) // 50)
        smooth = np.convolve(rel, np.ones(width) / width, mode="valid")
        ax.plot(step[width - 1:], smooth, label=f"{r['variant']} ({r.get('device', '?')})", linewidth=1.2)
        top = max(top, float(np.nanmax(smooth[len(smooth) // 10:])) * 1.05)
    ax.set_ylim(0, min(top, 3.0))  # the first steps' spikes would hide the region around 1    ax.axhline(1.0, color="black", linestyle=":", linewidth=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss / trivial baseline")
    ax.set_title("PART on the Sleep-EDF night")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def result_folder(out: Path, steps: int, seed: int, overrides: list[str]) -> Path:
    tags = [f"steps{steps}", f"seed{seed}", *(o.replace("=", "-").replace(".", "_") for o in overrides)]
    return out / "_".join(["bench_part_sleep", *tags])


def write_report(folder: Path, want_plot: bool) -> list[dict]:
    """Rebuild report.md / report.json (and the plot) from the variant files in ``folder``."""
    files = sorted((folder / "variants").glob("*.json"))
    order = list(VARIANTS)
    results = [json.loads(f.read_text()) for f in files]
    results.sort(key=lambda r: (order.index(r["variant"]) if r["variant"] in order else len(order), r["variant"]))
    if not results:
        print(f"bench_part_sleep: no finished variants in {folder}.", flush=True)
        return results
    text = markdown(results)
    (folder / "report.md").write_text(text)
    summary = [{k: v for k, v in r.items() if k != "curve"} for r in results]
    write_json_atomic(folder / "report.json", {"machine": machine_info(), "results": summary})
    if want_plot:
        try:
            plot(results, folder / "part_sleep_loss.png")
        except ImportError as error:  # the report stands without it; --report-only --plot redraws it
            print(f"bench_part_sleep: no plot, matplotlib is missing ({error})", flush=True)
    print(f"# {folder}\n\n{text}", flush=True)
    return results


def warm_data_cache(names: list[str], extra: list[str], data: Path) -> None:
    """Load the night once per distinct modality setting, so parallel jobs find the window cache built."""
    seen = set()
    for name in names:
        config = relpos.resolve_config(str(RECIPE), overrides=[*VARIANTS[name], *extra])
        key = json.dumps(dataclasses.asdict(config.modality_config), sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            start = time.perf_counter()
            open_data(build_modality(config), str(data))
            print(f"bench_part_sleep: data for {name} ready in {time.perf_counter() - start:.1f} s", flush=True)


def run_parallel(names: list[str], args: argparse.Namespace, folder: Path) -> int:
    """Run each variant in its own process of this script, at most ``args.jobs`` at a time."""
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, failed = list(names), {}, []
    deadline = args.started + args.time_limit if args.time_limit else math.inf
    while pending or running:
        if time.perf_counter() > deadline:
            for name, (process, log, _) in running.items():
                process.terminate()
                process.wait()
                log.close()
                print(f"bench_part_sleep: {name} stopped at the time limit ({args.time_limit:.0f} s)", flush=True)
            print(f"bench_part_sleep: not started (time limit): {', '.join(pending) or 'none'}", flush=True)
            return len(running) + len(pending)
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            command = [sys.executable, str(Path(__file__).resolve()), "--variants", name, "--jobs", "1",
                       "--steps", str(args.steps), "--seed", str(args.seed), "--out", str(args.out),
                       "--data-root", str(args.data_root), "--device", args.device, "--no-report"]
            command += ["--eval"] if args.eval else []
            command += ["--keep", args.keep] if args.keep else []
            for o in args.overrides:
                command += ["--set", o]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            log = open(logs / f"{name}.log", "w")
            running[name] = (subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log,
                             time.perf_counter())
            print(f"bench_part_sleep: started {name} ({threads} threads), log {logs / f'{name}.log'}", flush=True)
        time.sleep(0.5)
        for name, (process, log, started) in list(running.items()):
            if process.poll() is not None:
                log.close()
                del running[name]
                state = "done" if process.returncode == 0 else f"FAILED (exit {process.returncode})"
                print(f"bench_part_sleep: {name} {state} after {time.perf_counter() - started:.0f} s", flush=True)
                if process.returncode != 0:
                    failed.append(name)
                    print((logs / f"{name}.log").read_text()[-3000:], flush=True)
    return len(failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--keep", help="keep the run directories under this folder (for relpos eval)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra KEY=VALUE for every variant")
    parser.add_argument("--device", default="auto", help="train.device of every run and of the measurements: auto, cpu, cuda, cuda:N")
    parser.add_argument("--jobs", type=int, default=1, help="variants run in this many processes at once")
    parser.add_argument("--threads", type=int, default=None, help="OpenMP threads of each process (default: cores // jobs)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder of the result files (default bench/results)")
    parser.add_argument("--data-root", type=Path, default=data_root(),
                        help="shared data root holding eeg/sleep-edf (default $RELPOS_SHARED_DATA or ../shared/data)")
    parser.add_argument("--eval", action="store_true", help="linear-probe κ of each trained encoder and of random weights")
    parser.add_argument("--plot", action="store_true", help="write part_sleep_loss.png next to the report")
    parser.add_argument("--report-only", action="store_true", help="rebuild the reports from the variant files under --out")
    parser.add_argument("--time-limit", type=float, help="seconds after which unfinished variants are stopped "
                        "and the report is written from the finished ones (runs every variant in a subprocess)")
    parser.add_argument("--no-report", action="store_true", help=argparse.SUPPRESS)  # a --jobs worker
    args = parser.parse_args()
    args.started = time.perf_counter()  # --time-limit counts from here
    if args.jobs < 1:
        sys.exit(f"bench_part_sleep: --jobs must be at least 1, got {args.jobs}.")
    if args.steps < 1:
        sys.exit(f"bench_part_sleep: --steps must be at least 1, got {args.steps}.")
    if args.report_only:
        folders = sorted(p.parent for p in args.out.glob("bench_part_sleep_*/variants"))
        if not folders:
            sys.exit(f"bench_part_sleep: no result folders (bench_part_sleep_*/variants) under {args.out}.")
        for folder in folders:
            write_report(folder, args.plot)
        return
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"bench_part_sleep: unknown variant(s) {', '.join(unknown)}; allowed: {', '.join(VARIANTS)}.")
    data = args.data_root / SLEEP.file
    if not data.is_dir():
        sys.exit(f"bench_part_sleep: the sleep night is not in {data}; pass --data-root or set RELPOS_SHARED_DATA.")
    folder = result_folder(args.out, args.steps, args.seed, args.overrides)
    todo = [n for n in names if not (folder / "variants" / f"{n}.json").is_file()]
    for name in sorted(set(names) - set(todo), key=names.index):
        path = folder / "variants" / f"{name}.json"
        print(f"bench_part_sleep: {name} already done ({path}), skipped", flush=True)
        if args.eval and "eval" not in json.loads(path.read_text()):
            print(f"bench_part_sleep: {name} was run without --eval; delete {path} to run it again with it", flush=True)
    failures = 0
    if args.time_limit is not None and args.time_limit <= 0:
        sys.exit(f"bench_part_sleep: --time-limit must be positive seconds, got {args.time_limit}.")
    if todo and (args.time_limit or (args.jobs > 1 and len(todo) > 1)):
        warm_data_cache(todo, args.overrides, data)
        failures = run_parallel(todo, args, folder)
    else:
        for name in todo:
            overrides = [*VARIANTS[name], *args.overrides]
            with tempfile.TemporaryDirectory() as tmp:
                runs = Path(args.keep) if args.keep else Path(tmp)
                result = run_variant(name, overrides, args.steps, args.seed, runs, data, args.device, args.eval,
                                     args.out / "random_init_kappa")
            write_json_atomic(folder / "variants" / f"{name}.json", result)
            short = {k: v for k, v in result.items() if k not in ("curve", "pairs")}
            print(json.dumps(short), flush=True)
    if not args.no_report:
        write_report(folder, args.plot)
    if failures:
        sys.exit(f"bench_part_sleep: {failures} variant(s) failed or were stopped; see {folder / 'logs'}.")


if __name__ == "__main__":
    main()

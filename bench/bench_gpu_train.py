"""Issue 27's GPU goal measured on the training loop itself (``relpos train``), one prepared script.

PART with a ViT-B/16 (dim 768, depth 12, heads 12) at 224 px, 196 off-grid 16-px patches, n_pairs
2048, batch 64, run by ``relpos train`` on one CUDA device, three runs of ``--steps`` (300) steps:

1. ``bf16``: ``train.amp=true`` (bf16 autocast, float32 master weights), ``train.compile=true``,
   seed 0: steps/s and MFU are read from it;
2. ``fp32``: ``train.amp=false``, eager, seed 0: the reference loss curve;
3. ``fp32, seed 1``: the same with another seed: how far two float32 curves lie apart, the noise
   that "the same loss curve within noise" is judged against.

Steps/s are the ``samples_per_s`` of ``metrics.csv`` (logged every 10 steps, the loop's own clock)
over the steps after ``--skip`` (compilation and warm-up), divided by the batch. MFU = FLOPs of one
forward + backward (counted once with ``torch.utils.flop_counter.FlopCounterMode`` on the same
pretext, bf16) × steps/s ÷ ``--peak-tflops`` (dense bf16 peak: 989 for H100 SXM, 756 for H100
PCIe, 989 for H200). Monitors, TensorBoard and intermediate checkpoints are off in these runs, so
the rate is that of the step.

The loss curves are smoothed with a 20-step moving average over the logged rows; the verdict is
"within noise" when the largest gap between bf16 and fp32 (seed 0) after ``--skip`` is at most the
largest gap between the two fp32 seeds.

Last, ``sync-check``: 6 steps of the same run in this process with
``torch.cuda.set_sync_debug_mode("warn")`` on from the start of step 2 to the end of step 5, off
during the loop's flushes (where the loop reads its buffered values on purpose): the number of
host-device synchronisations CUDA reports inside those steps (the goal is none), with the first
messages.

The images are made by the script (smooth random colour fields with a finer octave, deterministic,
``--images`` of them), so it needs no download and the device machine needs nothing but the
working tree. Run from the repository root::

    .venv/bin/python bench/bench_gpu_train.py                       # on a CUDA machine, ~6 min on an H100
    .venv/bin/python bench/bench_gpu_train.py --tiny --allow-cpu    # a smoke test of the script on a CPU
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--skip", type=int, default=50, help="steps left out of the rate and the curve gap")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--runs", default="bf16,fp32,fp32-seed1,sync-check", help="which runs, comma-separated")
    p.add_argument("--tiny", action="store_true", help="a 32-px, dim-64 model for a smoke test of the script")
    p.add_argument("--allow-cpu", action="store_true", help="run without CUDA (smoke test only)")
    p.add_argument("--work", default=None, help="folder for the images and runs (default: a temporary one)")
    p.add_argument("--out", default=None, help="results folder (default bench/results)")
    return p.parse_args(argv)


def model_settings(args) -> list[str]:
    if args.tiny:
        size, patch, dim, depth, heads, pairs = 32, 4, 64, 2, 2, 64
    else:
        size, patch, dim, depth, heads, pairs = 224, 16, 768, 12, 12, 2048
    return [f"modality.image_size={size}", f"modality.patch_size={patch}", f"encoder.dim={dim}",
            f"encoder.depth={depth}", f"encoder.heads={heads}", f"pretext.n_pairs={pairs}",
            "pretext.head=cross_attention"]


def make_images(path: Path, n: int, size: int) -> None:
    """Smooth random colour fields plus a finer octave, uint8, (n, size, size, 3)."""
    g = torch.Generator().manual_seed(0)
    chunks = []
    for lo in range(0, n, 128):
        m = min(128, n - lo)
        coarse = F.interpolate(torch.rand(m, 3, 7, 7, generator=g), size=(size, size), mode="bicubic", align_corners=False)
        fine = F.interpolate(torch.rand(m, 3, 28, 28, generator=g), size=(size, size), mode="bilinear", align_corners=False)
        x = (0.7 * coarse + 0.3 * fine).clamp(0, 1)
        chunks.append((x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    np.savez(path, x=np.concatenate(chunks))


def run_train(name: str, data: Path, folder: Path, args, settings: list[str]) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    amp, compile_, seed = {"bf16": ("true", "true", 0), "fp32": ("false", "false", 0),
                           "fp32-seed1": ("false", "false", 1)}[name]
    out = folder / name
    shutil.rmtree(out, ignore_errors=True)  # the script's own folder: a rerun starts afresh
    cmd = [sys.executable, "-m", "relpos", "train", "--modality", "image", "--pretext", "part",
           "--data", str(data), "--out", str(out), "--no-progress"]
    for s in settings + [f"train.batch_size={args.batch}", f"train.steps={args.steps}", "train.log_every=10",
                         f"train.ckpt_every={args.steps}", "train.monitor_every=0", "train.tensorboard=false",
                         f"train.device={device}", f"train.amp={amp}", f"train.compile={compile_}",
                         f"train.seed={seed}"]:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"run {name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    with open(out / "metrics.csv") as f:
        rows = [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]
    timed = [r for r in rows if r["step"] > args.skip]
    rate = float(np.median([r["samples_per_s"] for r in timed])) / args.batch if timed else float("nan")
    warnings = [line for line in done.stderr.splitlines() if "warning" in line.lower()]
    return {"name": name, "wall_s": wall, "steps_per_s": rate, "rows": rows, "warnings": warnings}


def sync_check(data: Path, folder: Path, args, settings: list[str]) -> dict:
    """Steps 2-5 of a 6-step run under CUDA's sync debug mode (flushes excluded): what synchronises."""
    import warnings

    import relpos
    from relpos import training

    cuda = torch.cuda.is_available()  # on a CPU (--allow-cpu) the mechanics run and nothing is watched
    set_mode = torch.cuda.set_sync_debug_mode if cuda else (lambda mode: None)
    get_mode = torch.cuda.get_sync_debug_mode if cuda else (lambda: 0)
    config = relpos.resolve_config(modality="image", pretext="part", overrides=settings + [
        f"train.batch_size={args.batch}", "train.steps=6", "train.log_every=100", "train.ckpt_every=100",
        "train.monitor_every=0", "train.tensorboard=false", "train.progress=false",
        f"train.device={'cuda' if cuda else 'cpu'}"])
    shutil.rmtree(folder / "sync-check", ignore_errors=True)
    config.out, config.data = str(folder / "sync-check"), str(data)
    next_batch, flush = training._Run.next_batch, training._Run.flush
    watched = []

    def watched_next_batch(run):
        set_mode("warn" if run.start + 1 < run.step < run.cfg.steps else 0)
        watched.extend([run.step] if run.start + 1 < run.step < run.cfg.steps else [])
        return next_batch(run)

    def unwatched_flush(run, *a, **k):
        mode = get_mode()
        set_mode(0)
        try:
            return flush(run, *a, **k)
        finally:
            set_mode(mode)

    training._Run.next_batch, training._Run.flush = watched_next_batch, unwatched_flush
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            relpos.train(config)
            wall = time.perf_counter() - t0
    finally:
        set_mode(0)
        training._Run.next_batch, training._Run.flush = next_batch, flush
    syncs = [" ".join(str(w.message).split())[:300] for w in caught if "synchroniz" in str(w.message).lower()]
    return {"name": "sync-check", "wall_s": wall, "watched_steps": watched, "syncs": len(syncs), "first": syncs[:5],
            "device": "cuda" if cuda else "cpu (nothing watched)"}


def smoothed(rows: list[dict], width: int = 20) -> tuple[np.ndarray, np.ndarray]:
    steps = np.array([r["step"] for r in rows])
    loss = np.array([r["loss"] for r in rows])
    k = max(1, min(len(loss), width // 10))  # rows are 10 steps apart
    kernel = np.ones(k) / k
    return steps[k - 1:], np.convolve(loss, kernel, mode="valid")


def flops_per_step(args, settings: list[str]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from relpos.config import resolve_config
    from relpos.modality import Windows
    from relpos.training import build_modality, build_pretext

    overrides = settings + [f"train.batch_size={args.batch}"]
    config = resolve_config(modality="image", pretext="part", overrides=overrides)
    modality = build_modality(config)
    size = config.modality_config.image_size
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pretext = build_pretext(config, modality, Windows(x=torch.zeros(1, 3, size, size))).to(device)
    x = torch.rand(args.batch, 3, size, size, device=device) * 2 - 1
    generator = torch.Generator().manual_seed(0)
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss, _ = pretext({"x": x}, generator)
        loss.backward()
    counted = counter.get_total_flops()
    by_op = counter.get_flop_counts().get("Global", {})
    if not any("attention" in str(k) for k in by_op):  # the CPU attention kernel is not counted
        enc = config.encoder
        n = pretext.n_patches
        counted += 3 * 4 * args.batch * enc.dim * (enc.depth * (n + 1) ** 2 + config.pretext_config.n_pairs * n)
    return float(counted)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("no CUDA device; skipping (pass --allow-cpu --tiny for a smoke test)")
        return 0
    sys.path.insert(0, str(HERE))
    from _common import fmt, machine_info, markdown_table, write_results

    settings = model_settings(args)
    size = int(settings[0].split("=")[1])
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="relpos-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"images_{size}.npz"
    if not data.exists():
        make_images(data, args.images, size)
    flops = flops_per_step(args, settings)
    results, checked = {}, None
    for name in args.runs.split(","):
        if name == "sync-check":
            try:  # the timed runs' results are kept whatever happens here
                checked = sync_check(data, work, args, settings)
            except Exception as exc:  # noqa: BLE001 - reported in the results
                checked = {"name": "sync-check", "error": f"{type(exc).__name__}: {exc}"[:500], "syncs": None, "first": []}
            print(f"sync-check: {checked}", file=sys.stderr)
            continue
        results[name] = run_train(name, data, work, args, settings)
        r = results[name]
        print(f"{name}: {r['steps_per_s']:.2f} steps/s, {r['wall_s']:.0f} s in all", file=sys.stderr)

    rows, payload = [], {"machine": machine_info(), "args": vars(args), "flops_per_step": flops,
                         "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                         "torch": torch.__version__, "runs": {}}
    for name, r in results.items():
        tflops = flops * r["steps_per_s"] / 1e12
        payload["runs"][name] = {k: v for k, v in r.items() if k != "rows"} | {
            "tflops": tflops, "mfu": tflops / args.peak_tflops, "loss": [(x["step"], x["loss"]) for x in r["rows"]]}
        rows.append([name, f"{r['steps_per_s']:.2f}", f"{r['steps_per_s'] * args.batch:.0f}", fmt(tflops),
                     f"{fmt(100 * tflops / args.peak_tflops)} %", f"{r['rows'][-1]['loss']:.4f}", f"{r['wall_s']:.0f}"])
    verdict = ""
    if {"bf16", "fp32", "fp32-seed1"} <= set(results):
        curves = {name: smoothed(results[name]["rows"]) for name in ("bf16", "fp32", "fp32-seed1")}
        keep = curves["fp32"][0] > args.skip
        gap_bf16 = float(np.max(np.abs(curves["bf16"][1] - curves["fp32"][1])[keep]))
        gap_seed = float(np.max(np.abs(curves["fp32-seed1"][1] - curves["fp32"][1])[keep]))
        payload.update(gap_bf16_vs_fp32=gap_bf16, gap_fp32_seeds=gap_seed)
        verdict = (f"\n\nLoss curves (20-step means, steps > {args.skip}): largest gap bf16 vs fp32 {gap_bf16:.4f}, "
                   f"fp32 seed 0 vs seed 1 {gap_seed:.4f}: "
                   f"{'within noise' if gap_bf16 <= gap_seed else 'NOT within noise'}.")
    if checked is not None:
        payload["sync_check"] = checked
        verdict += ("\n\nSync check (CUDA sync debug mode, steps 2-5, flushes excluded): " + (
            f"failed ({checked['error']})" if "error" in checked else
            f"{checked['syncs']} synchronisation(s) on {checked['device']}, steps {checked['watched_steps']}"
            + (": " + " | ".join(checked["first"]) if checked["first"] else "")) + ".")
    table = markdown_table(["run", "steps/s", "images/s", "TFLOP/s", "MFU", "final loss", "wall s"], rows)
    model = ", ".join(s.split("=")[0].split(".")[1] + " " + s.split("=")[1] for s in settings[2:5])
    markdown = (f"PART ViT ({model}) at {size} px, batch {args.batch}, {args.steps} steps of `relpos train` "
                f"each, on {payload['device']} (torch {torch.__version__}); {fmt(flops / 1e9)} GFLOP per step, "
                f"peak {args.peak_tflops:g} TFLOP/s\n\n{table}{verdict}\n")
    print(markdown)
    md, js = write_results("gpu_train" if torch.cuda.is_available() else "gpu_train_cpu_smoke", markdown, payload, args.out)
    print(f"Wrote {md} and {js}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Share of one PART training step (CPU) spent in sampling + extraction + targets.

One step of ``relpos.training.train`` for PART is replayed phase by phase with the real objects
(``PART`` from the plugin, its encoder and cross-attention head, AdamW over the same parameter
groups, gradient clipping at 1.0), on synthetic data of the right shapes, and each phase is timed
with ``time.perf_counter``:

==============  ===================================================================================
batch           index the windows and ``modality.augment`` (random h-flip for images)
sampling        ``sample_offgrid`` (``PART.sample_boxes``)
extraction      ``extract_patches`` + the ``(B, N, C·∏P)`` layout copy the encoder would otherwise
                make in its first ``reshape`` (charged here, the conservative side)
targets         ``sample_pairs`` + ``relative_transform`` of the gathered boxes
encoder fwd     ``PART.encoder`` (patch embedding, CLS, blocks, norm)
head fwd        the cross-attention relative encoder
loss            MSE + the ``center_l2`` log value PART computes (``.item()``)
backward        ``zero_grad`` + ``loss.backward()``
optimiser       ``clip_grad_norm_`` + ``AdamW.step``
==============  ===================================================================================

The same number of full steps through ``PART.forward`` is then timed in one piece, to check that
the phase sum matches a real step.

Run from the repository root::

    .venv/bin/python bench/bench_step_share.py                 # both cases, the machine's threads
    .venv/bin/python bench/bench_step_share.py --cases image --steps 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from _common import Contention, cpu_pressure, fmt, machine_info, markdown_table, write_results
from relpos.encoders.vit import EncoderConfig
from relpos.extraction import extract_patches
from relpos.geometry import relative_transform
from relpos.modality import Windows
from relpos.sampling import sample_pairs
from relpos.training import _param_groups
from relpos_modalities.eeg import EEGConfig, EEGModality
from relpos_modalities.image import ImageConfig, ImageModality
from relpos_plugins.part import PART, PARTConfig

PHASES = ["batch", "sampling", "extraction", "targets", "encoder fwd", "head fwd", "loss", "backward", "optimiser"]
GOAL_PHASES = ("sampling", "extraction", "targets")
GOAL_SHARE = 5.0  # %


@dataclass(frozen=True)
class Case:
    name: str
    label: str
    batch: int
    n_pairs: int
    steps: int
    warmup: int
    pool: int  # windows to draw batches from


CASES = {
    "image": Case("image", "image 32 px, 4-px patches, N=64", 64, 2048, 10, 1, 256),
    "eeg": Case("eeg", "EEG 64 ch × 3000, 100-sample patches, N=40", 16, 2048, 20, 2, 64),
}


def build(case: Case, generator: torch.Generator):
    encoder = EncoderConfig(dim=192, depth=6, heads=3)
    if case.name == "image":
        modality = ImageModality(ImageConfig(image_size=32, patch_size=4))
        x = torch.randn(case.pool, 3, 32, 32, generator=generator).clamp_(-1, 1)
    else:
        modality = EEGModality(EEGConfig())  # 100 Hz, 30-s windows, 1-s patches, 40 per window
        x = torch.randn(case.pool, 64, 3000, generator=generator)
    windows = Windows(x=x)
    torch.manual_seed(0)
    pretext = PART(PARTConfig(n_pairs=case.n_pairs), modality, encoder, windows)
    pretext.train()
    optimizer = torch.optim.AdamW(_param_groups(pretext, 0.05), lr=5e-4, betas=(0.9, 0.95))
    return modality, windows, pretext, optimizer


def phased_step(modality, windows, pretext, optimizer, batch_size, generator) -> list[float]:
    """One training step, as ``train`` + ``PART.forward`` run it, with a clock between phases."""
    clock = time.perf_counter
    t = [clock()]
    index = torch.randint(0, len(windows), (batch_size,), generator=generator)
    x = modality.augment(windows.x[index], generator)
    t.append(clock())
    boxes = pretext.sample_boxes(batch_size, generator, x.device)
    t.append(clock())
    patches = extract_patches(x, boxes, pretext.patch_shape)
    patches = patches.reshape(batch_size, pretext.n_patches, -1)  # the copy encoder.forward makes
    t.append(clock())
    ref, tgt = sample_pairs(batch_size, pretext.n_patches, pretext.config.n_pairs, generator, x.device)
    theta = relative_transform(boxes.gather(ref), boxes.gather(tgt), pretext.config.predict_size)
    t.append(clock())
    # The encoder reshapes (B, N, C·∏P) back to (B, N, -1): a view now, the copy was charged above.
    tokens = pretext.encoder(patches.view(batch_size, pretext.n_patches, -1, *pretext.patch_shape),
                             boxes.center, generator)[:, 1:]
    t.append(clock())
    pred = pretext.head(tokens, ref, tgt).float()
    t.append(clock())
    loss = F.mse_loss(pred, theta)
    with torch.no_grad():
        d = pretext.n_axes
        _ = (pred[..., :d] - theta[..., :d]).norm(dim=-1).mean().item()
    _ = float(loss.detach())
    t.append(clock())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    t.append(clock())
    torch.nn.utils.clip_grad_norm_(pretext.parameters(), 1.0)
    optimizer.step()
    t.append(clock())
    return [b - a for a, b in zip(t, t[1:])]


def real_step(modality, windows, pretext, optimizer, batch_size, generator) -> float:
    """One step exactly as ``relpos.training.train`` runs it (no logging / checkpoints)."""
    t0 = time.perf_counter()
    index = torch.randint(0, len(windows), (batch_size,), generator=generator)
    x = modality.augment(windows.x[index], generator)
    loss, _ = pretext({"x": x}, generator)
    _ = float(loss.detach())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(pretext.parameters(), 1.0)
    optimizer.step()
    return time.perf_counter() - t0


def run_case(case: Case, steps: int, warmup: int, seed: int, budget_s: float) -> dict:
    """Warm-up, then up to ``steps`` timed phased steps (at least 3; fewer than ``steps`` when the
    time budget runs out), then a third as many steps through ``PART.forward`` as a check."""
    generator = torch.Generator().manual_seed(seed)
    modality, windows, pretext, optimizer = build(case, generator)
    args = (modality, windows, pretext, optimizer, case.batch, generator)
    t_start = time.perf_counter()
    for _ in range(warmup):
        phased_step(*args)
    per_step = []
    while len(per_step) < steps:
        per_step.append(phased_step(*args))
        elapsed = time.perf_counter() - t_start
        mean_step = elapsed / (warmup + len(per_step))
        # Stop early when the remaining timed steps plus the check steps would overrun the budget.
        n_check = max(2, len(per_step) // 3)
        if len(per_step) >= 3 and elapsed + mean_step * (1 + n_check) > budget_s:
            break
    steps = len(per_step)
    real = [real_step(*args) for _ in range(max(2, steps // 3))]
    totals = [sum(s) for s in per_step]
    mean_ms = {p: 1e3 * sum(s[i] for s in per_step) / steps for i, p in enumerate(PHASES)}
    median_ms = {p: 1e3 * statistics.median(s[i] for s in per_step) for i, p in enumerate(PHASES)}
    # Shares from per-phase medians: robust to the odd step slowed by another process on the machine.
    step_ms = sum(median_ms.values())
    share = {p: 100 * v / step_ms for p, v in median_ms.items()}
    goal_ms = sum(median_ms[p] for p in GOAL_PHASES)
    goal_share = 100 * goal_ms / step_ms
    mean_step_ms = sum(mean_ms.values())
    goal_share_mean = 100 * sum(mean_ms[p] for p in GOAL_PHASES) / mean_step_ms
    return {
        "case": case.__dict__,
        "steps": steps,
        "warmup": warmup,
        "n_patches": pretext.n_patches,
        "patch_shape": list(pretext.patch_shape),
        "parameters": sum(p.numel() for p in pretext.parameters()),
        "mean_ms": mean_ms,
        "median_ms": median_ms,
        "share_pct": share,
        "step_ms_sum_of_phase_medians": step_ms,
        "step_ms_mean": mean_step_ms,
        "step_ms_median": 1e3 * statistics.median(totals),
        "real_step_ms_mean": 1e3 * sum(real) / len(real),
        "real_step_ms_median": 1e3 * statistics.median(real),
        "real_steps": len(real),
        "sampling_extraction_targets_ms": goal_ms,
        "sampling_extraction_targets_pct": goal_share,
        "sampling_extraction_targets_pct_from_means": goal_share_mean,
        "goal_pct": GOAL_SHARE,
        "met": goal_share <= GOAL_SHARE,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["image", "eeg"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch intra-op threads (default: every core of the machine)")
    parser.add_argument("--steps", type=int, default=0, help="timed steps per case at most (0 = the case's default)")
    parser.add_argument("--budget-s", type=float, default=150.0,
                        help="seconds for all cases together; a case stops timing early (after at least 3 "
                             "steps) rather than overrun its share")
    parser.add_argument("--warmup", type=int, default=0, help="untimed steps first (0 = the case's default)")
    parser.add_argument("--n-pairs", type=int, default=0, help="pairs per sample (0 = 2048, the brief's figure)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    payload = {"machine": machine_info(), "args": vars(args), "pressure_before": cpu_pressure(), "cases": {}}
    contention = Contention().start()
    for key in args.cases:
        case = CASES[key]
        if args.n_pairs:
            case = Case(**{**case.__dict__, "n_pairs": args.n_pairs})
        steps, warmup = args.steps or case.steps, args.warmup or case.warmup
        print(f"{case.label}: batch {case.batch}, n_pairs {case.n_pairs}, {warmup} warm-up + {steps} timed steps, "
              f"{args.threads} threads", file=sys.stderr)
        res = run_case(case, steps, warmup, args.seed, args.budget_s / len(args.cases))
        payload["cases"][key] = res
        print(f"  step {res['step_ms_median']:.1f} ms (phased, median), {res['real_step_ms_median']:.1f} ms (PART.forward, median); "
              f"sampling+extraction+targets {res['sampling_extraction_targets_pct']:.2f} %", file=sys.stderr)
    payload["pressure_after"] = cpu_pressure()
    payload["contention"] = contention.stop()

    keys = list(payload["cases"])
    header = ["phase"] + [f"{payload['cases'][k]['case']['label']}: ms" for k in keys] + \
             [f"{CASES[k].name}: share" for k in keys]
    rows = []
    for phase in PHASES:
        row = [phase + (" *" if phase in GOAL_PHASES else "")]
        row += [fmt(payload["cases"][k]["median_ms"][phase]) for k in keys]
        row += [f"{payload['cases'][k]['share_pct'][phase]:.2f} %" for k in keys]
        rows.append(row)
    rows.append(["**sampling + extraction + targets (*)**"]
                + [f"**{fmt(payload['cases'][k]['sampling_extraction_targets_ms'])}**" for k in keys]
                + [f"**{payload['cases'][k]['sampling_extraction_targets_pct']:.2f} %**" for k in keys])
    rows.append(["step (sum of phase medians)"] + [fmt(payload["cases"][k]["step_ms_sum_of_phase_medians"]) for k in keys] + ["100 %"] * len(keys))
    rows.append(["phased step, median of totals"] + [fmt(payload["cases"][k]["step_ms_median"]) for k in keys] + [""] * len(keys))
    rows.append(["step through PART.forward, median (check)"] + [fmt(payload["cases"][k]["real_step_ms_median"]) for k in keys] + [""] * len(keys))
    table = markdown_table(header, rows)
    goal_rows = [[payload["cases"][k]["case"]["label"], f"{payload['cases'][k]['sampling_extraction_targets_pct']:.2f} %",
                  f"{payload['cases'][k]['sampling_extraction_targets_pct_from_means']:.2f} %",
                  f"≤{GOAL_SHARE:g} %", "yes" if payload["cases"][k]["met"] else "**no**"] for k in keys]
    goal_table = markdown_table(["case", "sampling + extraction + targets (medians)", "(from means)", "goal", "met?"], goal_rows)
    details = "; ".join(
        f"{payload['cases'][k]['case']['label']}: batch {payload['cases'][k]['case']['batch']}, "
        f"n_pairs {payload['cases'][k]['case']['n_pairs']}, {payload['cases'][k]['warmup']} warm-up + "
        f"{payload['cases'][k]['steps']} timed steps ({payload['cases'][k]['real_steps']} check steps), "
        f"{payload['cases'][k]['parameters']:,} parameters"
        for k in keys
    )
    m = payload["machine"]
    pb, pa = payload["pressure_before"], payload["pressure_after"]
    markdown = (
        f"PART training step on CPU, {args.threads} threads, median ms per phase over the timed steps; encoder dim 192, depth 6, 3 heads, "
        f"cross-attention head; {m['cpu']} ({m['cpu_count']} cores), torch {m['torch']}, {m['date']}\n\n"
        f"{table}\n\n{goal_table}\n\n{details}.\n\n"
        f"CPU pressure (other processes): load average {pb.get('loadavg_1m', float('nan')):.2f} before, "
        f"{pa.get('loadavg_1m', float('nan')):.2f} after; {contention.describe()}.\n"
    )
    print(markdown)
    stem = "step_share" + (f"_npairs{args.n_pairs}" if args.n_pairs else "") + (f"_threads{args.threads}" if args.threads != (os.cpu_count() or 1) else "")
    md, js = write_results(stem, markdown, payload, args.out)
    print(f"Wrote {md} and {js}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Off-grid patch extraction throughput per CPU thread: batched vs per-patch loops.

Boxes come from :func:`relpos.sampling.sample_offgrid` (continuous positions, so every patch needs
sub-pixel resampling). Three implementations cut the same patches from the same images:

* ``batched``: :func:`relpos.extraction.extract_patches`, one ``grid_sample`` call per batch;
* ``loop (grid_sample)``: the simple baseline a user would write: for each image, for each box,
  build the box's affine grid with ``F.affine_grid`` and resample that one patch with
  ``F.grid_sample``;
* ``extract_patches_loop``: :func:`relpos.extraction.extract_patches_loop`, the library's reference
  that calls ``extract_patches`` once per patch.

The speed-up is batched over the *faster* of the two loops (the conservative figure).

Run from the repository root::

    .venv/bin/python bench/bench_extraction.py                # 1 thread, both cases
    .venv/bin/python bench/bench_extraction.py --threads 2
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from _common import Contention, cpu_pressure, fmt, machine_info, markdown_table, summarise, time_call, write_results
from relpos.extraction import extract_patches, extract_patches_loop
from relpos.geometry import Boxes
from relpos.sampling import sample_offgrid


@dataclass(frozen=True)
class Case:
    name: str
    image: int  # side in pixels
    patch: int  # patch side in pixels (and patch resolution)
    n_patches: int
    batch: int
    goal: float  # required speed-up of batched over the per-patch loop
    channels: int = 3


CASES = {
    "32": Case("32 px, 64 × 4-px patches", 32, 4, 64, 64, 20.0),
    "224": Case("224 px, 196 × 16-px patches", 224, 16, 196, 16, 2.0),
}


def loop_grid_sample(x: torch.Tensor, boxes: Boxes, out_size: int) -> torch.Tensor:
    """The straightforward baseline: one ``affine_grid`` + ``grid_sample`` per patch.

    The affine map takes the output lattice (cell centres, ``align_corners=False``) onto the box,
    which is exactly the sampling rule of ``extract_patches``.
    """
    batch, channels, height, width = x.shape
    n_patches = boxes.center.shape[1]
    centers, sizes = boxes.center.tolist(), boxes.size.tolist()
    out = x.new_empty(batch, n_patches, channels, out_size, out_size)
    for b in range(batch):
        image = x[b : b + 1]
        for n in range(n_patches):
            (cy, cx), (h, w) = centers[b][n], sizes[b][n]
            theta = torch.tensor([[[w / width, 0.0, 2 * cx / width - 1], [0.0, h / height, 2 * cy / height - 1]]])
            grid = F.affine_grid(theta, [1, channels, out_size, out_size], align_corners=False)
            out[b, n] = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    return out


def _grid_for(boxes: Boxes, case: Case) -> torch.Tensor:
    """The sampling grid ``extract_patches`` builds (to time ``grid_sample`` on its own)."""
    P, S = case.patch, case.image
    frac = (torch.arange(P, dtype=torch.float32) + 0.5) / P - 0.5
    ys = (boxes.center[..., 0, None] + frac * boxes.size[..., 0, None]) * (2.0 / S) - 1.0
    xs = (boxes.center[..., 1, None] + frac * boxes.size[..., 1, None]) * (2.0 / S) - 1.0
    B, N = ys.shape[:2]
    grid = torch.stack([xs[:, :, None, :].expand(B, N, P, P), ys[:, :, :, None].expand(B, N, P, P)], dim=-1)
    return grid.reshape(B, N * P, P, 2)


def run_case(case: Case, args: argparse.Namespace, generator: torch.Generator) -> dict:
    x = torch.randn(case.batch, case.channels, case.image, case.image, generator=generator)
    # A few box sets, cycled, so repeated calls do not reuse one layout.
    box_sets = [
        sample_offgrid(case.batch, (case.image, case.image), case.patch, case.n_patches, generator)
        for _ in range(4)
    ]
    state = {"i": 0}

    def next_boxes() -> Boxes:
        state["i"] = (state["i"] + 1) % len(box_sets)
        return box_sets[state["i"]]

    # Same patches from every implementation.
    reference = extract_patches(x, box_sets[0], case.patch)
    err_loop = (loop_grid_sample(x[:2], Boxes(box_sets[0].center[:2], box_sets[0].size[:2]), case.patch) - reference[:2]).abs().max().item()
    err_ref = (extract_patches_loop(x[:2], Boxes(box_sets[0].center[:2], box_sets[0].size[:2]), case.patch) - reference[:2]).abs().max().item()

    impls = {
        "batched": (lambda: extract_patches(x, next_boxes(), case.patch), args.repeats, args.warmup),
        "loop_grid_sample": (lambda: loop_grid_sample(x, next_boxes(), case.patch), args.loop_repeats, 1),
        "extract_patches_loop": (lambda: extract_patches_loop(x, next_boxes(), case.patch), args.loop_repeats, 1),
    }
    results = {}
    for key, (fn, repeats, warmup) in impls.items():
        cpu: list[float] = []
        stats = summarise(time_call(fn, repeats, warmup, cpu))
        stats["cpu"] = summarise(cpu)
        stats["images_per_s"] = case.batch / stats["median_s"]
        stats["images_per_cpu_s"] = case.batch / stats["cpu"]["median_s"]
        stats["patches_per_s"] = case.batch * case.n_patches / stats["median_s"]
        results[key] = stats
        print(f"  {key:22s} {stats['median_s'] * 1e3:10.2f} ms/batch  {stats['images_per_s']:12,.1f} images/s", file=sys.stderr)

    # Where the batched time goes (context for optimisation).
    boxes = box_sets[0]
    grid = _grid_for(boxes, case)
    out = extract_patches(x, boxes, case.patch)
    P = case.patch
    parts = {
        "grid_sample only (bilinear)": lambda: F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False),
        "grid_sample only (nearest)": lambda: F.grid_sample(x, grid, mode="nearest", padding_mode="border", align_corners=False),
        "(B,N,C,P,P) layout copy the encoder makes": lambda: out.reshape(case.batch, case.n_patches, -1),
        "grid patches by unfold, no resampling": lambda: x.unfold(2, P, P).unfold(3, P, P).permute(0, 2, 3, 1, 4, 5).reshape(case.batch, -1, case.channels * P * P),
    }
    breakdown = {}
    for key, fn in parts.items():
        breakdown[key] = summarise(time_call(fn, args.repeats, args.warmup))
    faster_loop = max(results["loop_grid_sample"]["images_per_s"], results["extract_patches_loop"]["images_per_s"])
    speedup = results["batched"]["images_per_s"] / faster_loop
    faster_loop_cpu = max(results["loop_grid_sample"]["images_per_cpu_s"], results["extract_patches_loop"]["images_per_cpu_s"])
    return {
        "case": case.__dict__,
        "max_abs_diff_vs_batched": {"loop_grid_sample": err_loop, "extract_patches_loop": err_ref},
        "results": results,
        "batched_breakdown": breakdown,
        "speedup_vs_faster_loop": speedup,
        "speedup_vs_loop_grid_sample": results["batched"]["images_per_s"] / results["loop_grid_sample"]["images_per_s"],
        "speedup_vs_extract_patches_loop": results["batched"]["images_per_s"] / results["extract_patches_loop"]["images_per_s"],
        "speedup_vs_faster_loop_cpu_time": results["batched"]["images_per_cpu_s"] / faster_loop_cpu,
        "goal_speedup": case.goal,
        "met": speedup >= case.goal,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: per-thread figures)")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["32", "224"])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls of the batched version")
    parser.add_argument("--loop-repeats", type=int, default=3, help="timed calls of each loop version")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    payload = {"machine": machine_info(), "args": vars(args), "cases": {}, "pressure_before": cpu_pressure()}
    rows, detail_rows, cpu_rows = [], [], []
    contention = Contention().start()
    for key in args.cases:
        case = CASES[key]
        print(f"{case.name}, batch {case.batch}, {args.threads} thread(s)", file=sys.stderr)
        res = run_case(case, args, generator)
        payload["cases"][key] = res
        r = res["results"]
        rows.append([
            case.name,
            case.batch,
            fmt(r["batched"]["images_per_s"]),
            fmt(r["loop_grid_sample"]["images_per_s"]),
            fmt(r["extract_patches_loop"]["images_per_s"]),
            f"{fmt(res['speedup_vs_faster_loop'])}×",
            f"≥{res['goal_speedup']:g}×",
            "yes" if res["met"] else "**no**",
        ])
        cpu_rows.append([
            case.name,
            fmt(r["batched"]["images_per_cpu_s"]),
            fmt(r["loop_grid_sample"]["images_per_cpu_s"]),
            fmt(r["extract_patches_loop"]["images_per_cpu_s"]),
            f"{fmt(res['speedup_vs_faster_loop_cpu_time'])}×",
        ])
        total = r["batched"]["median_s"]
        detail_rows.append([case.name, "extract_patches (whole call)", f"{total * 1e3:.3f}", "100 %"])
        for part, stats in res["batched_breakdown"].items():
            detail_rows.append([case.name, part, f"{stats['median_s'] * 1e3:.3f}", f"{100 * stats['median_s'] / total:.0f} %"])

    payload["pressure_after"] = cpu_pressure()
    payload["contention"] = contention.stop()
    header = ["case", "batch", "batched images/s", "loop (grid_sample) images/s",
              "extract_patches_loop images/s", "speed-up (vs faster loop)", "goal", "met?"]
    table = markdown_table(header, rows)
    details = markdown_table(["case", "batched: what", "ms / batch (median)", "of extract_patches"], detail_rows)
    title = (f"Off-grid patch extraction, {args.threads} thread(s), median of {args.repeats} (batched) / "
             f"{args.loop_repeats} (loops) timed calls; {payload['machine']['cpu']}, "
             f"torch {payload['machine']['torch']}, {payload['machine']['date']}")
    errors = "; ".join(
        f"{CASES[k].name}: loop {v['max_abs_diff_vs_batched']['loop_grid_sample']:.1e}, "
        f"extract_patches_loop {v['max_abs_diff_vs_batched']['extract_patches_loop']:.1e}"
        for k, v in payload["cases"].items()
    )
    cpu_table = markdown_table(["case", "batched", "loop (grid_sample)", "extract_patches_loop", "speed-up"], cpu_rows)
    pressure = (f"CPU pressure (other processes on the machine): load average {payload['pressure_before'].get('loadavg_1m', float('nan')):.2f} "
                f"before, {payload['pressure_after'].get('loadavg_1m', float('nan')):.2f} after; PSI cpu some avg10 "
                f"{payload['pressure_before'].get('psi_cpu_some_avg10', float('nan'))} → {payload['pressure_after'].get('psi_cpu_some_avg10', float('nan'))} %; "
                f"{contention.describe()}.")
    markdown = (f"{title}\n\n{table}\n\nThe same, as images per CPU-second of this process (median; insensitive "
                f"to other processes taking the cores when 1 thread runs):\n\n{cpu_table}\n\n{pressure}\n\nMax |loop − batched| on the same boxes: {errors}.\n\n"
                f"Where the batched time goes (each line timed on its own):\n\n{details}\n")
    print(markdown)
    md, js = write_results("extraction" if args.threads == 1 else f"extraction_threads{args.threads}", markdown, payload, args.out)
    print(f"Wrote {md} and {js}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

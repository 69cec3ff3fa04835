"""Candidate speed-ups for patch extraction and targets, against what the library does now.

Not a goal check: evidence for proposed library changes (see bench/README.md). Per CPU thread by
default; every alternative is checked against the library's output on the same inputs.

* ``1-D (EEG)``: ``extract_patches`` runs 1-D data through a 2-D ``grid_sample`` on an image of
  height 1 (4 bilinear taps, 2 of them wasted). The alternative gathers the two neighbouring samples
  of every output point along time and ``lerp``s them.
* ``grid boxes (PART-grid)``: boxes with integer corners whose size equals the patch resolution are
  plain slices; ``unfold`` cuts them without resampling.
* ``targets``: ``Boxes.gather`` (``gather`` with an index expanded over the last axis) +
  ``relative_transform`` versus one ``index_select`` per tensor on flattened (B·N, D) boxes.

Run from the repository root::

    .venv/bin/python bench/bench_extraction_alternatives.py [--threads N]
"""

from __future__ import annotations

import argparse
import sys

import torch

from _common import cpu_pressure, fmt, machine_info, markdown_table, summarise, time_call, write_results
from relpos.extraction import extract_patches
from relpos.geometry import Boxes, relative_transform
from relpos.sampling import grid_boxes, sample_offgrid, sample_pairs


def extract_1d_lerp(x: torch.Tensor, boxes: Boxes, out_size: int) -> torch.Tensor:
    """1-D patches by linear interpolation with two gathers (same sampling rule and border clamp)."""
    batch, channels, length = x.shape
    n = boxes.center.shape[1]
    frac = (torch.arange(out_size, dtype=torch.float32) + 0.5) / out_size - 0.5
    pos = boxes.center[..., 0, None] + frac * boxes.size[..., 0, None] - 0.5  # (B, N, P), index units
    pos = pos.clamp(0, length - 1)  # padding_mode="border"
    i0 = pos.floor()
    w = (pos - i0).reshape(batch, 1, -1)
    i0 = i0.long()
    i1 = (i0 + 1).clamp(max=length - 1)
    idx0 = i0.reshape(batch, 1, -1).expand(batch, channels, -1)
    idx1 = i1.reshape(batch, 1, -1).expand(batch, channels, -1)
    out = torch.lerp(x.gather(2, idx0), x.gather(2, idx1), w)  # (B, C, N·P)
    return out.reshape(batch, channels, n, out_size).transpose(1, 2)


def grid_unfold(x: torch.Tensor, patch: int) -> torch.Tensor:
    batch, channels = x.shape[:2]
    return x.unfold(2, patch, patch).unfold(3, patch, patch).permute(0, 2, 3, 1, 4, 5).reshape(batch, -1, channels, patch, patch)


def targets_library(boxes: Boxes, ref, tgt):
    return relative_transform(boxes.gather(ref), boxes.gather(tgt))


def targets_index_select(boxes: Boxes, ref, tgt):
    batch, n, d = boxes.center.shape
    offset = (torch.arange(batch) * n)[:, None]
    center, size = boxes.center.reshape(-1, d), boxes.size.reshape(-1, d)
    r, t = (ref + offset).reshape(-1), (tgt + offset).reshape(-1)
    return ((center.index_select(0, t) - center.index_select(0, r)) / size.index_select(0, r)).reshape(batch, -1, d)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)

    comparisons = []  # (name, library fn, alternative fn, check fn)
    # 1-D, the EEG default: 16 windows of 64 channels × 3000 samples, 40 patches of 100 samples.
    x1 = torch.randn(16, 64, 3000, generator=g)
    b1 = sample_offgrid(16, (3000,), 100, 40, g)
    comparisons.append(("1-D EEG: 16 × 64 ch × 3000, 40 × 100-sample patches",
                        lambda: extract_patches(x1, b1, 100).reshape(16, 40, -1),
                        lambda: extract_1d_lerp(x1, b1, 100).reshape(16, 40, -1)))
    # Grid boxes (PART-grid) at 32 and 224 px.
    for side, patch, batch in ((32, 4, 64), (224, 16, 16)):
        x2 = torch.randn(batch, 3, side, side, generator=g)
        gb = grid_boxes((side, side), patch)
        gb = Boxes(gb.center.expand(batch, -1, -1), gb.size.expand(batch, -1, -1))
        comparisons.append((f"grid boxes: {batch} × {side} px, {(side // patch) ** 2} × {patch}-px patches",
                            (lambda x2=x2, gb=gb, patch=patch, batch=batch: extract_patches(x2, gb, patch).reshape(batch, -1, 3 * patch * patch)),
                            (lambda x2=x2, patch=patch, batch=batch: grid_unfold(x2, patch).reshape(batch, -1, 3 * patch * patch))))
    # Targets, image case: 64 images, 64 boxes, 2048 pairs.
    b3 = sample_offgrid(64, (32, 32), 4, 64, g)
    ref, tgt = sample_pairs(64, 64, 2048, g)
    comparisons.append(("targets: 64 × 2048 pairs of 64 boxes",
                        lambda: targets_library(b3, ref, tgt), lambda: targets_index_select(b3, ref, tgt)))

    payload = {"machine": machine_info(), "args": vars(args), "pressure_before": cpu_pressure(), "results": []}
    rows = []
    for name, lib, alt in comparisons:
        diff = (lib() - alt()).abs().max().item()
        stats = {}
        for key, fn in (("library", lib), ("alternative", alt)):
            cpu: list[float] = []
            stats[key] = summarise(time_call(fn, args.repeats, args.warmup, cpu))
            stats[key]["cpu"] = summarise(cpu)
        speed = stats["library"]["median_s"] / stats["alternative"]["median_s"]
        speed_cpu = stats["library"]["cpu"]["median_s"] / stats["alternative"]["cpu"]["median_s"]
        payload["results"].append({"name": name, "max_abs_diff": diff, **stats, "speedup": speed, "speedup_cpu": speed_cpu})
        rows.append([name, f"{stats['library']['median_s'] * 1e3:.2f}", f"{stats['alternative']['median_s'] * 1e3:.2f}",
                     f"{fmt(speed)}×", f"{fmt(speed_cpu)}×", f"{diff:.1e}"])
        print(f"  {name}: {speed:.2f}× (CPU time {speed_cpu:.2f}×)", file=sys.stderr)
    payload["pressure_after"] = cpu_pressure()
    table = markdown_table(["what", "library ms", "alternative ms", "speed-up (wall)", "speed-up (CPU time)",
                            "max |difference|"], rows)
    m = payload["machine"]
    markdown = (f"Extraction / target alternatives, {args.threads} thread(s), median of {args.repeats}; {m['cpu']}, "
                f"torch {m['torch']}, {m['date']}; load average {payload['pressure_before'].get('loadavg_1m', float('nan')):.2f}"
                f" → {payload['pressure_after'].get('loadavg_1m', float('nan')):.2f}\n\n{table}\n")
    print(markdown)
    write_results("extraction_alternatives", markdown, payload, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

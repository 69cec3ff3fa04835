"""Candidate speed-ups for patch extraction and targets, against what the library does now.

Not a goal check: evidence for proposed library changes (see docs/history.md). Per CPU thread by
default; every alternative is checked against the library's output on the same inputs.

* ``off-grid, fixed size`` (scale 1, the default of PART on every modality): every point of a
  patch has the same fractional offset, so a patch is ``lerp`` of two integer-shifted slices. The
  alternative copies each (P + 1)-wide window out of an ``unfold`` view with one advanced index and
  ``lerp``s (once in 1-D, twice in 2-D). ``extract_patches`` instead runs ``grid_sample`` (for 1-D
  data on an image of height 1).
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

from _common import Contention, cpu_pressure, fmt, machine_info, markdown_table, summarise, time_call, write_results
from relpos.extraction import extract_patches
from relpos.geometry import Boxes, relative_transform
from relpos.sampling import grid_boxes, sample_offgrid, sample_pairs


def extract_1d_fixed(x: torch.Tensor, boxes: Boxes, out_size: int) -> torch.Tensor:
    """1-D patches when every box is ``out_size`` samples long (the EEG default, scale 1).

    All points of such a patch share one fractional offset ``w``, so the patch is
    ``lerp(x[i0 : i0 + P], x[i0 + 1 : i0 + P + 1], w)``: one indexed copy of a (P + 1)-sample window
    from an ``unfold`` view, then one ``lerp``; it comes out in the encoder's (B, N, C, P) layout.
    """
    batch, channels, length = x.shape
    start = boxes.center[..., 0] - boxes.size[..., 0] / 2  # first point at start + 0.5 → index start
    # Boxes inside the sample (start in [0, T − P]); clamping i0 to T − P − 1 makes w = 1 at the far
    # edge, which still returns x[T − P : T].
    i0 = start.floor().clamp(0, length - out_size - 1)
    w = (start - i0).to(x.dtype)[..., None, None]
    i0 = i0.long()
    windows = x.unfold(-1, out_size + 1, 1)  # (B, C, T − P, P + 1), a view
    sel = windows[torch.arange(batch)[:, None], :, i0]  # (B, N, C, P + 1)
    return torch.lerp(sel[..., :out_size], sel[..., 1:], w)


def extract_2d_fixed(x: torch.Tensor, boxes: Boxes, out_size: int) -> torch.Tensor:
    """The same idea in 2-D (square boxes of ``out_size`` pixels): a (P + 1)² window, two lerps."""
    batch, _, height, width = x.shape
    P = out_size
    start = boxes.center - boxes.size / 2
    limit = torch.tensor([height - P - 1, width - P - 1], dtype=start.dtype)
    i0 = torch.minimum(start.floor().clamp(min=0), limit)
    w = (start - i0).to(x.dtype)
    i0 = i0.long()
    iy, ix = i0[..., 0], i0[..., 1]
    windows = x.unfold(2, P + 1, 1).unfold(3, P + 1, 1)  # (B, C, H − P, W − P, P + 1, P + 1)
    sel = windows[torch.arange(batch)[:, None], :, iy, ix]  # (B, N, C, P + 1, P + 1)
    rows = torch.lerp(sel[..., :P, :], sel[..., 1:, :], w[..., 0, None, None, None])
    return torch.lerp(rows[..., :P], rows[..., 1:], w[..., 1, None, None, None])


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

    comparisons = []  # (name, library fn, alternative fn, float64 reference or None)
    # 1-D, the EEG default: 16 windows of 64 channels × 3000 samples, 40 patches of 100 samples.
    x1 = torch.randn(16, 64, 3000, generator=g)
    b1 = sample_offgrid(16, (3000,), 100, 40, g)
    comparisons.append(("off-grid 1-D EEG: 16 × 64 ch × 3000, 40 × 100-sample patches; alternative: unfold + index + lerp",
                        lambda: extract_patches(x1, b1, 100).reshape(16, 40, -1),
                        lambda: extract_1d_fixed(x1, b1, 100).reshape(16, 40, -1),
                        lambda: extract_patches(x1.double(), b1, 100).reshape(16, 40, -1)))
    # The 2-D analogue, off-grid at 32 and 224 px.
    for side, patch, batch, n in ((32, 4, 64, 64), (224, 16, 16, 196)):
        x0 = torch.randn(batch, 3, side, side, generator=g)
        b0 = sample_offgrid(batch, (side, side), patch, n, g)
        comparisons.append((f"off-grid 2-D: {batch} × {side} px, {n} × {patch}-px patches; alternative: unfold + index + 2 lerps",
                            (lambda x0=x0, b0=b0, patch=patch, batch=batch: extract_patches(x0, b0, patch).reshape(batch, -1, 3 * patch * patch)),
                            (lambda x0=x0, b0=b0, patch=patch, batch=batch: extract_2d_fixed(x0, b0, patch).reshape(batch, -1, 3 * patch * patch)),
                            (lambda x0=x0, b0=b0, patch=patch, batch=batch: extract_patches(x0.double(), b0, patch).reshape(batch, -1, 3 * patch * patch))))
    # Grid boxes (PART-grid) at 32 and 224 px.
    for side, patch, batch in ((32, 4, 64), (224, 16, 16)):
        x2 = torch.randn(batch, 3, side, side, generator=g)
        gb = grid_boxes((side, side), patch)
        gb = Boxes(gb.center.expand(batch, -1, -1), gb.size.expand(batch, -1, -1))
        comparisons.append((f"grid boxes (PART-grid): {batch} × {side} px, {(side // patch) ** 2} × {patch}-px patches; alternative: unfold (exact slices)",
                            (lambda x2=x2, gb=gb, patch=patch, batch=batch: extract_patches(x2, gb, patch).reshape(batch, -1, 3 * patch * patch)),
                            (lambda x2=x2, patch=patch, batch=batch: grid_unfold(x2, patch).reshape(batch, -1, 3 * patch * patch)),
                            None))
    # Targets, image case: 64 images, 64 boxes, 2048 pairs.
    b3 = sample_offgrid(64, (32, 32), 4, 64, g)
    ref, tgt = sample_pairs(64, 64, 2048, g)
    comparisons.append(("targets: 64 × 2048 pairs of 64 boxes; alternative: index_select on flat boxes",
                        lambda: targets_library(b3, ref, tgt), lambda: targets_index_select(b3, ref, tgt), None))

    payload = {"machine": machine_info(), "args": vars(args), "pressure_before": cpu_pressure(), "results": []}
    rows = []
    contention = Contention().start()
    for name, lib, alt, exact in comparisons:
        diff = (lib() - alt()).abs().max().item()
        if exact is not None:
            ref64 = exact()
            err_lib = (lib().double() - ref64).abs().max().item()
            err_alt = (alt().double() - ref64).abs().max().item()
        else:  # the alternative is the exact result (slices) or the same arithmetic
            err_lib, err_alt = diff, 0.0
        # Interleaved (library, alternative, library, ...) so both see the same allocator state:
        # a fresh process pays page faults on every large new buffer until glibc raises its mmap
        # threshold, which would otherwise penalise whichever runs first.
        walls: dict = {"library": [], "alternative": []}
        cpus: dict = {"library": [], "alternative": []}
        for _ in range(args.warmup):
            lib(), alt()
        for _ in range(args.repeats):
            for key, fn in (("library", lib), ("alternative", alt)):
                walls[key] += time_call(fn, 1, 0, cpus[key])
        stats = {}
        for key in walls:
            stats[key] = summarise(walls[key])
            stats[key]["cpu"] = summarise(cpus[key])
        speed = stats["library"]["median_s"] / stats["alternative"]["median_s"]
        speed_cpu = stats["library"]["cpu"]["median_s"] / stats["alternative"]["cpu"]["median_s"]
        payload["results"].append({"name": name, "max_abs_diff": diff, "max_abs_err_library": err_lib,
                                   "max_abs_err_alternative": err_alt, **stats, "speedup": speed, "speedup_cpu": speed_cpu})
        rows.append([name, f"{stats['library']['median_s'] * 1e3:.2f}", f"{stats['alternative']['median_s'] * 1e3:.2f}",
                     f"{fmt(speed)}×", f"{fmt(speed_cpu)}×", f"{err_lib:.1e}", f"{err_alt:.1e}"])
        print(f"  {name}: {speed:.2f}× (CPU time {speed_cpu:.2f}×)", file=sys.stderr)
    payload["pressure_after"] = cpu_pressure()
    payload["contention"] = contention.stop()
    table = markdown_table(["what", "library ms", "alternative ms", "speed-up (wall)", "speed-up (CPU time)",
                            "library max error", "alternative max error"], rows)
    table += ("\n\nErrors: max |result − exact| on unit-variance input; exact = the float64 evaluation of the "
              "same sampling rule (off-grid rows), the plain slices (grid rows), the same formula (targets).")
    m = payload["machine"]
    markdown = (f"Extraction / target alternatives, {args.threads} thread(s), median of {args.repeats} interleaved calls; {m['cpu']}, "
                f"torch {m['torch']}, {m['date']}; load average {payload['pressure_before'].get('loadavg_1m', float('nan')):.2f}"
                f" → {payload['pressure_after'].get('loadavg_1m', float('nan')):.2f}; {contention.describe()}\n\n{table}\n")
    print(markdown)
    write_results("extraction_alternatives" if args.threads == 1 else f"extraction_alternatives_threads{args.threads}",
                  markdown, payload, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

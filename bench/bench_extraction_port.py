"""Side by side with the PART port's sampler: sampling + extraction throughput, before and after the fast paths.

Three implementations cut one patch set per image at the PART sizes (32 px: 64 patches of 4 px,
224 px: 196 patches of 16 px), each timed as the median of several repeats:

* ``PART port``: ``BaselineSampler`` from dgcnz/REPR ``tests/test_benchmark_sample.py`` (integer
  crops, no resampling, one image per call), imported from a checkout *outside* this repository
  (``--repr PATH`` or the ``RELPOS_REPR`` environment variable). Where the file is absent the column
  is skipped with a message; it is never copied into relpos. The file imports three modules its
  sampler never calls (``jaxtyping`` for annotations, ``pytest_benchmark`` for a fixture type,
  ``skimage`` for the resize it skips with ``resize=None``); where they are not installed, inert
  placeholders stand in for them, and the script says so.
* ``relpos before``: ``sample_offgrid`` + ``extract_patches(..., method="grid_sample")``.
* ``relpos after``: ``sample_offgrid`` + ``extract_patches`` (automatic fast paths); sub-pixel
  positions kept.
  Every relpos figure includes the copy into the encoder's ``(B, N, C·P·P)`` layout.
* ``relpos grid``: PART-grid boxes (integer positions), ``extract_patches`` (the copy path).

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_extraction_port.py --repr /path/to/REPR
    .venv/bin/python bench/bench_extraction_port.py --threads 2 --repr /path/to/REPR
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import types
from pathlib import Path

import torch

from _common import Contention, cpu_pressure, fmt, machine_info, markdown_table, summarise, time_call, write_results
from relpos.extraction import extract_patches
from relpos.geometry import Boxes
from relpos.sampling import sample_offgrid

CASES = [  # (image side, patch side, patches per image, batch for relpos)
    (32, 4, 64, 64),
    (224, 16, 196, 16),
]
PORT_FILE = Path("tests") / "test_benchmark_sample.py"


def _placeholder_modules() -> list[str]:
    """Inert stand-ins for the REPR file's imports that its ``BaselineSampler`` never calls."""
    added = []

    class _Annotation:  # jaxtyping's Float[Tensor, "B C"] in signatures only
        def __class_getitem__(cls, item):
            return cls

    stand_ins = {
        "jaxtyping": {"Float": _Annotation, "Int": _Annotation},
        "pytest_benchmark": {},
        "pytest_benchmark.fixture": {"BenchmarkFixture": object},
        "skimage": {},
        "skimage.transform": {},
    }
    for name, attributes in stand_ins.items():
        try:
            importlib.import_module(name)
        except ImportError:
            module = types.ModuleType(name)
            module.__dict__.update(attributes)
            sys.modules[name] = module
            added.append(name)
    if "skimage.transform" in added:
        sys.modules["skimage"].transform = sys.modules["skimage.transform"]
    return added


def load_port(repr_dir: str | None) -> tuple[object | None, str]:
    """The REPR ``BaselineSampler`` class, or ``None`` and the reason it is skipped."""
    if not repr_dir:
        return None, "PART port column skipped: pass --repr PATH (a dgcnz/REPR checkout) or set RELPOS_REPR."
    path = Path(repr_dir) / PORT_FILE
    if not path.is_file():
        return None, f"PART port column skipped: {path} does not exist."
    placeholders = _placeholder_modules()
    spec = importlib.util.spec_from_file_location("repr_test_benchmark_sample", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as error:
        return None, f"PART port column skipped: importing {path} failed ({error})."
    note = f"PART port: {path}"
    if placeholders:
        note += f" (placeholders for {', '.join(placeholders)}, which BaselineSampler never calls)"
    return module.BaselineSampler, note


def timed(fn, repeats: int, warmup: int, clock: str) -> list[float]:
    """Seconds per call of ``fn``: wall clock, or this thread's CPU time (``--clock cpu``), which other
    processes competing for the cores do not inflate (one thread: CPU time is the work done)."""
    if clock == "wall":
        return time_call(fn, repeats=repeats, warmup=warmup)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return times


def port_call(sampler_class, side: int, patch: int):
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    pixels = (torch.rand(side, side, 3, generator=rng) * 255).to(torch.uint8).numpy()
    return sampler_class(Image.fromarray(pixels), patch)


def relpos_call(side: int, patch: int, n_patches: int, batch: int, method: str, grid: bool):
    x = torch.rand(batch, 3, side, side)
    generator = torch.Generator().manual_seed(0)
    cells = side // patch
    rows, cols = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
    grid_center = (torch.stack([rows, cols], -1).reshape(1, -1, 2).float() * patch + patch / 2).expand(batch, -1, -1)
    grid_boxes = Boxes(grid_center, torch.full_like(grid_center, float(patch)))

    def step():
        boxes = grid_boxes if grid else sample_offgrid(batch, (side, side), float(patch), n_patches, generator)
        # the (B, N, C·P·P) layout the encoder reads, charged to extraction as in bench_extraction.py
        return extract_patches(x, boxes, patch, method=method).reshape(batch, boxes.center.shape[1], -1)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per implementation and round")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds that time every implementation in turn (load that drifts hits all alike)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="cpu: this thread's CPU time (default with one thread); wall: elapsed time")
    parser.add_argument("--repr", default=os.environ.get("RELPOS_REPR"), help="a dgcnz/REPR checkout")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.clock == "cpu" and args.threads != 1:
        parser.error(f"--clock cpu counts one thread's time; with --threads {args.threads} use --clock wall.")
    sampler_class, note = load_port(args.repr)
    print(note)
    rows, payload = [], {"machine": machine_info(), "threads": args.threads, "port": note, "cases": []}
    contention = Contention().start()
    for side, patch, n_patches, batch in CASES:
        entry = {"image": side, "patch": patch, "n_patches": n_patches, "batch": batch, "clock": args.clock}
        calls = {key: (relpos_call(side, patch, n_patches, batch, method, grid), batch, args.repeats)
                 for key, method, grid in (("before", "grid_sample", False), ("after", "auto", False), ("grid", "auto", True))}
        if sampler_class is not None:  # one image per call
            calls["port"] = (port_call(sampler_class, side, patch), 1, max(5, args.repeats // 3))
        times = {key: [] for key in calls}
        for _ in range(args.rounds):
            for key, (fn, _, repeats) in calls.items():
                times[key] += timed(fn, repeats, warmup=3, clock=args.clock)
        for key, (_, images, _) in calls.items():
            entry[key] = summarise(times[key])
            entry[key + "_images_per_s"] = images / entry[key]["median_s"]
        port = fmt(entry["port_images_per_s"]) if sampler_class is not None else "skipped"
        ratio = lambda key: fmt(entry[key + "_images_per_s"] / entry["port_images_per_s"]) + "×" if sampler_class else "–"
        rows.append([
            f"{side} px, {n_patches} × {patch} px", port,
            fmt(entry["before_images_per_s"]), fmt(entry["after_images_per_s"]), fmt(entry["grid_images_per_s"]),
            ratio("before"), ratio("after"), fmt(entry["after_images_per_s"] / entry["before_images_per_s"]) + "×",
        ])
        payload["cases"].append(entry)
    payload["contention"] = contention.stop()
    payload["pressure"] = cpu_pressure()
    table = markdown_table(
        ["case", "PART port images/s", "relpos before images/s", "relpos after images/s", "relpos grid (copy) images/s",
         "before / port", "after / port", "after / before"],
        rows,
    )
    clock = "this thread's CPU time" if args.clock == "cpu" else "wall-clock time"
    markdown = (f"{note}\n\n{table}\n\nMedians of {args.rounds} rounds of {clock}; {args.threads} thread(s); "
                f"{contention.describe()}; load {payload['pressure']}")
    print(markdown)
    write_results(f"bench_extraction_port_t{args.threads}", markdown, payload)


if __name__ == "__main__":
    main()

"""The composed encoder probed without its position embeddings (a diagnostic of bench/recipes/compose.yaml).

A PART+SOVE run's shared encoder has sin-cos positions (SOVE trains with them; PART's forward drops
them). ``relpos eval`` reads it with its positions, as any run. This script probes the same weights
without them: each ``compose`` cell's checkpoint is copied with ``encoder.pos_embed: none`` in its
configuration and encoder arguments (sin-cos positions have no weights, so nothing else changes) and evaluated exactly as
the runner evaluates (linear probe, mean features, the data set's evaluation options, the cell's seed).

Run from the repository root, after ``bench/run.py compose --keep-runs`` (the runner deletes the
checkpoints otherwise)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/run.py compose --methods part+sove --datasets basicmotions blink \
        --seeds 0 --keep-runs --out bench/results/compose-keep
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_compose_positions.py --out bench/results/compose-keep \
        --datasets basicmotions blink --seeds 0
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, REPO, markdown_table, write_results  # noqa: E402
from run import single_thread_blas  # noqa: E402

import relpos  # noqa: E402
from relpos.checkpoint import atomic_torch_save, load_checkpoint  # noqa: E402


def probe_without_positions(run_dir: Path, ds_name: str, seed: int) -> float:
    state = load_checkpoint(run_dir)
    state["config"]["encoder"]["pos_embed"] = "none"
    state["encoder"]["config"]["pos_embed"] = "none"  # what relpos.load_encoder builds from
    with tempfile.TemporaryDirectory() as tmp:
        atomic_torch_save(state, Path(tmp) / "checkpoints" / "last.pt")
        with single_thread_blas():
            result = relpos.evaluate(tmp, protocol="linear", features="mean", seed=seed, progress=False, write=False,
                                     **DATASETS[ds_name].eval_options)
    return float(result.mean["cohen_kappa"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "compose")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = parser.parse_args(argv)
    rows, payload = [], {}
    for ds_name in args.datasets:
        for seed in args.seeds:
            cell = args.out / "cells" / f"{ds_name}-part+sove-recipe-s{seed}.json"
            if not cell.is_file():
                continue
            with_positions = json.loads(cell.read_text())["eval"]["pretrained"]["linear"]["cohen_kappa"]
            without = probe_without_positions(args.out / "runs" / cell.stem, ds_name, seed)
            payload[f"{ds_name}-s{seed}"] = {"with_positions": with_positions, "without_positions": without}
            rows.append([ds_name, seed, f"{with_positions:.3f}", f"{without:.3f}"])
            print(rows[-1], flush=True)
    markdown = ("# PART+SOVE's encoder probed with and without its sin-cos positions (linear κ, mean features)\n\n"
                + markdown_table(["data set", "seed", "with positions", "without positions"], rows))
    write_results("bench_compose_positions", markdown, payload)
    print(markdown)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())

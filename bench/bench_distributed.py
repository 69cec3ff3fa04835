"""Training steps per second on 1 and 2 processes (torchrun, gloo on CPU), PART on the bundled EEG.

Each case is a real ``relpos train`` run (``torchrun --nproc_per_node 2 -m relpos train`` for two
processes), the configs/eeg_part.yaml recipe with a smaller encoder so a case takes seconds. The
rate is read from the run's own metrics.csv (``samples_per_s`` of every logged interval after the
first, which holds start-up), so it is the training loop's figure, DDP's gradient all-reduce
included. Three cases:

* 1 process, global batch B;
* 2 processes, the same global batch B (B/2 each: the same training, split);
* 2 processes, B each (global batch 2B: what a user adding processes to go through more data gets).

Usage::

    .venv/bin/python bench/bench_distributed.py            # --steps 40 --batch 16 --log-every 5
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Contention, fmt, machine_info, markdown_table, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_case(processes: int, batch: int, steps: int, log_every: int, threads: int, work: Path) -> dict:
    out = work / f"run-{processes}-{batch}"
    shutil.rmtree(out, ignore_errors=True)
    args = ["-m", "relpos", "train", "--config", str(ROOT / "configs" / "eeg_part.yaml"),
            "--set", "encoder.dim=64", "--set", "encoder.heads=2", "--set", "encoder.depth=2",
            "--set", "pretext.n_pairs=128",
            "--set", f"train.batch_size={batch}", "--set", f"train.log_every={log_every}",
            "--set", "train.tensorboard=false", "--set", f"train.ckpt_every={steps}",
            "--steps", str(steps), "--device", "cpu", "--no-progress", "--out", str(out)]
    python = sys.executable
    if processes == 1:
        command = [python, *args]
    else:
        command = [str(Path(python).with_name("torchrun")), "--nproc_per_node", str(processes),
                   "--standalone", *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with Contention() as contention:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    run_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    others_cores = None
    if "others_cpu_s" in contention.result:  # Contention counts the run's own processes as "others"
        others_cores = max(0.0, contention.result["others_cpu_s"] - run_cpu) / wall
    if proc.returncode != 0:
        raise SystemExit(f"case {processes} x {batch} failed:\n{proc.stderr[-3000:]}")
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rates = [float(r["samples_per_s"]) for r in rows[1:]]  # the first interval holds start-up
    global_batch = batch
    steps_per_s = [r / global_batch for r in rates]
    return {
        "processes": processes,
        "global_batch": global_batch,
        "per_process_batch": batch // processes,
        "steps_per_s_median": statistics.median(steps_per_s),
        "steps_per_s": steps_per_s,
        "windows_per_s_median": statistics.median(rates),
        "wall_s": wall,
        "final_loss": float(rows[-1]["loss"]),
        "run_cpu_s": run_cpu,
        "others_cores": others_cores,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16, help="global batch of the first two cases")
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="OMP threads per process")
    args = parser.parse_args()
    cases = [(1, args.batch), (2, args.batch), (2, 2 * args.batch)]
    results = []
    with tempfile.TemporaryDirectory(prefix="relpos-bench-dist-") as tmp:
        for processes, batch in cases:
            results.append(run_case(processes, batch, args.steps, args.log_every, args.threads, Path(tmp)))
    base = results[0]["windows_per_s_median"]
    rows = [
        [r["processes"], r["global_batch"], r["per_process_batch"], fmt(r["steps_per_s_median"]),
         fmt(r["windows_per_s_median"]), f"{r['windows_per_s_median'] / base:.2f}x", fmt(r["wall_s"]),
         "?" if r["others_cores"] is None else f"{r['others_cores']:.2f}"]
        for r in results
    ]
    table = markdown_table(
        ["processes", "global batch", "per process", "steps/s", "windows/s", "windows/s vs 1 process", "wall s",
         "cores used by others"],
        rows,
    )
    print(table)
    write_results("bench_distributed", table, {"machine": machine_info(), "args": vars(args), "cases": results})


if __name__ == "__main__":
    main()

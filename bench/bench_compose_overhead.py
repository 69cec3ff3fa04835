"""Step time of a composed pretext against the sum of its parts' (issue 24's goal: overhead <= 10 %).

For each case (a labelled data set with a PART and a SOVE recipe) three pretexts are built with the
runner's configs (``configs/<prefix>_part.yaml``, ``..._sove.yaml`` and their merge,
``bench/run.py composed_recipe``) on the data set's real windows, and full training steps are timed
as the loop runs them: ``set_progress``, the weight decay, a batch (indices + ``modality.augment``),
``forward``, ``backward``, gradient clipping, ``AdamW.step``, ``after_step``. The methods take turns,
``--rounds`` rounds of ``--steps`` timed steps each after ``--warmup`` untimed ones, so drifting load
hits them alike; each method's step time is the median over its rounds of the mean per-step
process CPU time (one thread, so other processes' load barely moves it; wall time is reported
beside). The overhead is ``composed / (part + sove) - 1``.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_compose_overhead.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_compose_overhead.py --cases basicmotions --steps 5 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, Contention, fmt, machine_info, markdown_table, write_results  # noqa: E402
from run import composed_recipe  # noqa: E402

import relpos  # noqa: E402
from relpos.modality import open_data  # noqa: E402
from relpos.optim import param_groups  # noqa: E402
from relpos.training import build_modality, build_pretext  # noqa: E402

CASES = ("basicmotions", "blink", "sleep")
METHODS = ("part", "sove", "part+sove")
GOAL_OVERHEAD = 10.0  # %


def build(ds_name: str, method: str, seed: int = 0):
    ds = DATASETS[ds_name]
    path = composed_recipe(ds, method) if "+" in method else ds.recipe(method)
    config = relpos.resolve_config(path, overrides=[f"data={ds.path}", "train.device=cpu", "train.progress=false"])
    modality = build_modality(config)
    windows = open_data(modality, config.data)
    pretext = build_pretext(config, modality, windows)
    optimizer = torch.optim.AdamW(param_groups(pretext, config.train.weight_decay), lr=config.train.lr,
                                  betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(seed)
    return config, modality, windows, pretext, optimizer, generator


class Stepper:
    """One method's training steps, as :func:`relpos.training._train_steps` takes them."""

    def __init__(self, ds_name: str, method: str):
        self.config, self.modality, self.windows, self.pretext, self.optimizer, self.generator = build(ds_name, method)
        self.cfg = self.config.train
        self.step_index = 0
        self.pretext.train()

    def step(self) -> None:
        cfg, pretext, optimizer = self.cfg, self.pretext, self.optimizer
        total = 10 * cfg.steps  # schedules mid-run, whatever the number of timed steps
        pretext.set_progress(self.step_index, total)
        decay = pretext.weight_decay_at(self.step_index, total)
        if decay is not None:
            optimizer.param_groups[0]["weight_decay"] = float(decay)
        index = torch.randint(0, len(self.windows), (cfg.batch_size,), generator=self.generator)
        batch = {"x": self.modality.augment(self.windows.x[index], self.generator)}
        loss, _ = pretext(batch, self.generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(pretext.parameters(), cfg.grad_clip)
        optimizer.step()
        self.step_index += 1
        pretext.after_step(self.step_index)


def measure(case: str, steps: int, warmup: int, rounds: int) -> dict:
    steppers = {m: Stepper(case, m) for m in METHODS}
    for stepper in steppers.values():
        for _ in range(warmup):
            stepper.step()
    cpu = {m: [] for m in METHODS}
    wall = {m: [] for m in METHODS}
    for _ in range(rounds):
        for method, stepper in steppers.items():
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(steps):
                stepper.step()
            cpu[method].append((time.process_time() - c0) / steps)
            wall[method].append((time.perf_counter() - t0) / steps)
    result = {m: {"cpu_s": statistics.median(cpu[m]), "wall_s": statistics.median(wall[m]),
                  "cpu_rounds_s": cpu[m], "wall_rounds_s": wall[m]} for m in METHODS}
    cfg = steppers["part"].cfg
    parts = result["part"]["cpu_s"] + result["sove"]["cpu_s"]
    result["overhead_pct"] = 100 * (result["part+sove"]["cpu_s"] / parts - 1)
    result["overhead_wall_pct"] = 100 * (result["part+sove"]["wall_s"] / (result["part"]["wall_s"] + result["sove"]["wall_s"]) - 1)
    result["batch_size"] = {m: s.cfg.batch_size for m, s in steppers.items()}
    result["encoder"] = {m: f"dim {s.config.encoder.dim}, depth {s.config.encoder.depth}, pos {s.config.encoder.pos_embed}"
                         for m, s in steppers.items()}
    del cfg
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and method")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    results = {}
    with Contention() as contention:
        for case in args.cases:
            results[case] = measure(case, args.steps, args.warmup, args.rounds)
            r = results[case]
            print(f"{case}: part {r['part']['cpu_s']:.3f} s, sove {r['sove']['cpu_s']:.3f} s, part+sove "
                  f"{r['part+sove']['cpu_s']:.3f} s per step (CPU); overhead {r['overhead_pct']:+.1f} %", flush=True)
    rows = [[case, fmt(r["part"]["cpu_s"]), fmt(r["sove"]["cpu_s"]), fmt(r["part"]["cpu_s"] + r["sove"]["cpu_s"]),
             fmt(r["part+sove"]["cpu_s"]), f"{r['overhead_pct']:+.1f} %", f"{r['overhead_wall_pct']:+.1f} %"]
            for case, r in results.items()]
    markdown = (
        f"# Composition overhead: PART+SOVE step vs PART's + SOVE's\n\n"
        f"{args.rounds} rounds x {args.steps} steps (after {args.warmup}), median of per-round means, process CPU "
        f"seconds per step; goal overhead <= {GOAL_OVERHEAD:.0f} %. {contention.describe()}.\n\n"
        + markdown_table(["case", "PART s", "SOVE s", "sum s", "PART+SOVE s", "overhead (CPU)", "overhead (wall)"], rows)
    )
    md, js = write_results("bench_compose_overhead", markdown, {"machine": machine_info(), "args": vars(args),
                                                                "contention": contention.result, "results": results})
    print(markdown)
    print(f"written {md} and {js}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""SOVE vs DINO vs random init, on the DINO / PW-Self benchmark's data and budget; judge-selection share.

Same data, encoder, batch, views, step budget and evaluation as ``bench_ssl_eval.py`` (MNIST's first
2,000 digits and EEG-Blink; ViT dim 64 depth 2, batch 32, 2 global + 2 local views; kNN k = 10 and
20 and the linear probe, features chosen per method on the linear probe's validation split; κ on the
test split). SOVE's heads are as wide as DINO's MLP (256 → 128-d embedding) and have no prototype
layer; its memories are left at their defaults (capped at what the data fills). DINO keeps batch
norm in its head (without it, it collapses at this scale: bench/README.md); SOVE runs without (the
paper needs no regulariser), and with it when ``--sove-head-bn`` is given.

It also times, over the SOVE run, the share of each training step spent selecting judges
(:func:`relpos_plugins.sove.select_judges`: anchor draw, top-k, soft labels), against the goal of
at most 10 %.

Run from the repository root (one thread)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sove.py --datasets mnist blink --steps 200 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, markdown_table  # noqa: E402
from bench_ssl_eval import (  # noqa: E402
    COMMON, DATA_ROOT, DATASETS, FEATURES, HEAD_BN, PROTOCOLS, REPO, best_validation,
)

import relpos  # noqa: E402

METHODS = (("SOVE", "sove", "pretrained"), ("DINO", "dino", "pretrained"), ("random init", "dino", "random"))
#: DINO's prototype layer has no counterpart in SOVE.
DINO_ONLY = ("pretext.out_dim=",)


class JudgeTimer:
    """Wall time inside ``select_judges`` (patched in the plugin module) and in whole training steps."""

    def __init__(self):
        import relpos_plugins.sove as sove

        self.module, self.original = sove, sove.select_judges
        self.judge_s = 0.0
        self.forward_s = 0.0

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.judge_s += time.perf_counter() - t0

        sove.select_judges = timed

    def close(self):
        self.module.select_judges = self.original


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sove")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sove-head-bn", action="store_true", help="batch norm in SOVE's head MLP as well")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    records, shares = [], {}
    started = time.perf_counter()
    for name in args.datasets:
        modality, file, overrides = DATASETS[name]
        data = DATA_ROOT / file
        if not data.exists():
            print(f"skipping {name}: {data} is absent")
            continue
        for seed in args.seeds:
            runs = {}
            for pretext in ("sove", "dino"):
                out = args.out / f"{name}-{pretext}-s{seed}"
                shutil.rmtree(out, ignore_errors=True)
                common = [o for o in COMMON if pretext == "dino" or not o.startswith(DINO_ONLY)]
                head_bn = [HEAD_BN] if pretext == "dino" or args.sove_head_bn else []
                config = relpos.resolve_config(
                    modality=modality, pretext=pretext,
                    overrides=[*overrides, *common, *head_bn, f"train.steps={args.steps}", f"train.seed={seed}",
                               f"out={out}", f"data={data}"],
                )
                timer = JudgeTimer() if pretext == "sove" else None
                t0 = time.perf_counter()
                try:
                    result = relpos.train(config)
                finally:
                    if timer:
                        timer.close()
                elapsed = time.perf_counter() - t0
                runs[pretext] = out
                if timer:
                    # over the whole run's time (loading and checkpoints included), so it slightly
                    # understates the share of the steps alone
                    shares[f"{name}-s{seed}"] = timer.judge_s / elapsed
                judges = f", judge selection {100 * timer.judge_s / elapsed:.1f} %" if timer else ""
                print(f"{name} seed {seed} {pretext}: {args.steps} steps in {elapsed:.0f} s, final loss "
                      f"{result.loss:.3f}{judges}", flush=True)
            for label, pretext, init in METHODS:
                linear = {}
                for features in FEATURES:
                    linear[features] = relpos.evaluate(runs[pretext], protocol="linear", init=init, features=features,
                                                       seed=seed, progress=False, write=False)
                features = max(FEATURES, key=lambda f: best_validation(linear[f]))
                for proto_label, protocol, options in PROTOCOLS:
                    res = linear[features] if protocol == "linear" else relpos.evaluate(
                        runs[pretext], protocol=protocol, init=init, features=features, seed=seed, progress=False,
                        write=False, **options)
                    records.append({"dataset": name, "seed": seed, "method": label, "protocol": proto_label,
                                    "features": features, "kappa": res.mean["cohen_kappa"],
                                    "accuracy": res.mean["accuracy"]})
                    print(f"  {label:12s} {proto_label:9s} {features:4s} kappa {res.mean['cohen_kappa']:.3f}",
                          flush=True)

    rows = []
    for name in args.datasets:
        for label, _, _ in METHODS:
            row = [name, label]
            for proto_label, _, _ in PROTOCOLS:
                kappas = [r["kappa"] for r in records if r["dataset"] == name and r["method"] == label
                          and r["protocol"] == proto_label]
                spread = f" ± {statistics.stdev(kappas):.3f}" if len(kappas) > 1 else ""
                row.append(f"{statistics.mean(kappas):.3f}{spread}" if kappas else "")
            rows.append(row)
    header = ["data", "method", *(p[0] for p in PROTOCOLS)]
    markdown = (
        f"κ on the test split, seeds {args.seeds}; {args.steps} pretraining steps per method, ViT dim 64 depth 2, "
        f"batch 32, 2 global + 2 local views; DINO's head with batch norm, SOVE's "
        f"{'with' if args.sove_head_bn else 'without'}\n\n" + markdown_table(header, rows)
        + "\n\nShare of SOVE's training time spent selecting judges: "
        + ", ".join(f"{k} {100 * v:.1f} %" for k, v in shares.items())
    )
    print(markdown)
    (args.out / "results.md").write_text(markdown + "\n")
    (args.out / "results.json").write_text(json.dumps(
        {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()}, "records": records,
         "judge_share": shares, "elapsed_s": time.perf_counter() - started}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

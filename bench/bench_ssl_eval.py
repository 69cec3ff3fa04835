"""DINO vs PW-Self vs random init on MNIST and an EEG set, equal step budgets, kNN (k = 10, 20) and linear.

For each data set and seed, the script pretrains ``dino`` and ``pw-self`` for the same number of
steps (``relpos.resolve_config`` + ``relpos.train``, same encoder, batch, views and schedules), then
scores each run's student encoder and the random-init encoder of the DINO run (``init="random"``)
on the data set's own test split with ``relpos.evaluate``: weighted kNN with k = 10 and k = 20 (the
PW-Self paper's columns) and the linear probe (C chosen on a validation split carved from the
training data). The features (CLS or mean patch token) are chosen per method by the linear probe's
score on that validation split only, and used for every protocol. κ (Cohen's kappa) is
reported per seed and as mean ± std over the seeds.

Run from the repository root (one thread; about 10 minutes with the defaults on a free core)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_ssl_eval.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_ssl_eval.py --datasets mnist --steps 300 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, markdown_table  # noqa: E402

import relpos  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("RELPOS_SHARED_DATA", REPO.parent / "shared" / "data"))
#: name → (modality, file under the data root, modality and pretext overrides)
DATASETS = {
    "mnist": ("image", "images/mnist.npz", [
        "modality.image_size=28", "modality.patch_size=7", "modality.color=grey", "modality.hflip=false",
        "modality.max_images=2000",
    ]),
    "blink": ("eeg", "eeg/blink.npz", [
        "modality.split=train", "modality.npz_unit=uV", "modality.l_freq=0.0", "modality.h_freq=30.0",
        "modality.sfreq=100.0", "modality.window_s=2.0", "modality.stride_s=2.0", "modality.patch_s=0.2",
    ]),
}
COMMON = [
    "encoder.dim=64", "encoder.depth=2", "encoder.heads=2", "encoder.pos_embed=sincos",
    "pretext.n_local=2", "pretext.out_dim=1024", "pretext.head_hidden_dim=256", "pretext.head_bottleneck_dim=128",
    "train.batch_size=32", "train.lr=5e-4", "train.warmup_steps=10", "train.grad_clip=3.0",
    "train.progress=false", "train.tensorboard=false", "train.log_every=10",
]
#: Batch norm in the head's hidden layers (DINO's use_bn_in_head): without it, DINO's CLS objective
#: collapses to the uniform distribution at this scale (see bench/README.md); --no-head-bn shows it.
HEAD_BN = "pretext.head_bn=true"
METHODS = (("DINO", "dino", "pretrained"), ("PW-Self", "pw-self", "pretrained"), ("random init", "dino", "random"))
PROTOCOLS = (("kNN k=10", "knn", {"ks": [10]}), ("kNN k=20", "knn", {"ks": [20]}), ("linear", "linear", {}))
FEATURES = ("cls", "mean")


def best_validation(result) -> float:
    """Mean over repeats of the best validation score the probe saw (what chooses the features)."""
    scores = [max(c["validation_scores"].values()) for c in result.chosen if c.get("validation_scores")]
    return statistics.mean(scores) if scores else float("-inf")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ssl_eval")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-head-bn", action="store_true", help="DINO's ViT head without batch norm")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    started = time.perf_counter()
    for name in args.datasets:
        modality, file, overrides = DATASETS[name]
        data = DATA_ROOT / file
        if not data.exists():
            print(f"skipping {name}: {data} is absent")
            continue
        for seed in args.seeds:
            runs = {}
            for pretext in ("dino", "pw-self"):
                out = args.out / f"{name}-{pretext}-s{seed}"
                shutil.rmtree(out, ignore_errors=True)
                config = relpos.resolve_config(
                    modality=modality, pretext=pretext,
                    overrides=[*overrides, *COMMON, *([] if args.no_head_bn else [HEAD_BN]),
                               f"train.steps={args.steps}", f"train.seed={seed}",
                               f"out={out}", f"data={data}"],
                )
                t0 = time.perf_counter()
                result = relpos.train(config)
                runs[pretext] = out
                print(f"{name} seed {seed} {pretext}: {args.steps} steps in {time.perf_counter() - t0:.0f} s, "
                      f"final loss {result.loss:.3f}", flush=True)
            for label, pretext, init in METHODS:
                # The features are chosen once per method, by the linear probe's validation score (its C
                # is chosen on the same split); kNN with one fixed k has no validation of its own.
                linear = {}
                for features in FEATURES:
                    linear[features] = relpos.evaluate(runs[pretext], protocol="linear", init=init, features=features,
                                                       seed=seed, progress=False, write=False)
                features = max(FEATURES, key=lambda f: best_validation(linear[f]))
                for proto_label, protocol, options in PROTOCOLS:
                    if protocol == "linear":
                        res = linear[features]
                    else:
                        res = relpos.evaluate(runs[pretext], protocol=protocol, init=init, features=features,
                                              seed=seed, progress=False, write=False, **options)
                    records.append({
                        "dataset": name, "seed": seed, "method": label, "protocol": proto_label,
                        "features": features, "kappa": res.mean["cohen_kappa"], "accuracy": res.mean["accuracy"],
                        "linear_validation": {f: best_validation(r) for f, r in linear.items()},
                    })
                    print(f"  {label:12s} {proto_label:9s} {features:4s} kappa {res.mean['cohen_kappa']:.3f}", flush=True)

    rows = []
    for name in args.datasets:
        for label, _, _ in METHODS:
            row = [name, label]
            for proto_label, _, _ in PROTOCOLS:
                kappas = [r["kappa"] for r in records if r["dataset"] == name and r["method"] == label
                          and r["protocol"] == proto_label]
                if not kappas:
                    row.append("")
                    continue
                spread = f" ± {statistics.stdev(kappas):.3f}" if len(kappas) > 1 else ""
                row.append(f"{statistics.mean(kappas):.3f}{spread} ({', '.join(f'{k:.3f}' for k in kappas)})")
            rows.append(row)
    header = ["data", "method", *(p[0] for p in PROTOCOLS)]
    markdown = (
        f"κ on the test split, mean ± std over seeds {args.seeds} (per-seed values in brackets); {args.steps} "
        f"pretraining steps per method, ViT dim 64 depth 2, batch 32, 2 global + 2 local views, head "
        f"{'without' if args.no_head_bn else 'with'} batch norm\n\n"
        + markdown_table(header, rows)
    )
    print(markdown)
    (args.out / "results.md").write_text(markdown + "\n")
    (args.out / "results.json").write_text(json.dumps(
        {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()}, "records": records,
         "elapsed_s": time.perf_counter() - started}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

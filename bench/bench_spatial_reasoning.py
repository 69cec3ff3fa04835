"""Spatial Reasoning vs Relational Reasoning vs random init on MNIST, with ResNet-32 and with the ViT.

For each encoder and seed, the script pretrains ``spatial-reasoning`` (plain patches), the same with
``patch_use=additive`` (§4.4) and with ``n_patches=0`` (no patch term: Relational Reasoning) for the
same number of steps, batch, K and augmentations (``relpos.resolve_config`` + ``relpos.train``), then
scores each run's encoder, and the random-init encoder of the plain run (``init="random"``), with the
linear probe of ``relpos.evaluate`` (C chosen on a validation split of the training images) on
MNIST's own test split, on the paper's concatenated features (``grid``: whole image + 3 × 3 patches
of the training size) and on the whole image's features (``cls``: the CNN's vector, the ViT's CLS).
The paper's ordering (its Table 1) is Spatial Reasoning > Relational Reasoning > random init, plain
≥ additive on the concatenated features.

Run from the repository root (one thread)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_spatial_reasoning.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_spatial_reasoning.py --encoders resnet32 --steps 200 --seeds 0 1 2
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
MNIST = ["modality.image_size=28", "modality.patch_size=7", "modality.color=grey", "modality.hflip=false"]
ENCODERS = {
    "resnet32": ["encoder.arch=resnet32"],
    "vit": ["encoder.arch=vit", "encoder.dim=64", "encoder.depth=2", "encoder.heads=2", "encoder.pos_embed=sincos"],
}
#: label → pretext overrides (trained runs), and the random-init row read from the plain run
METHODS = {
    "Spatial Reasoning (plain)": ["pretext.patch_use=plain"],
    "Spatial Reasoning (additive)": ["pretext.patch_use=additive"],
    "Relational Reasoning": ["pretext.n_patches=0"],
}
RANDOM = "random init"
FEATURES = ("grid", "cls")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-images", type=int, default=1000, help="training and test images each")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "spatial_reasoning")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = DATA_ROOT / "images" / "mnist.npz"
    if not data.exists():
        print(f"skipping: {data} is absent")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    started = time.perf_counter()
    common = [*MNIST, f"modality.max_images={args.max_images}", "pretext.n_augmentations=4", "pretext.n_patches=2",
              f"train.batch_size={args.batch_size}", "train.lr=1e-3", "train.weight_decay=0.0",
              "train.warmup_steps=5", "train.progress=false", "train.tensorboard=false", "train.log_every=10"]
    for encoder in args.encoders:
        for seed in args.seeds:
            runs = {}
            for label, overrides in METHODS.items():
                out = args.out / f"{encoder}-{label.split()[0].lower()}-{overrides[0].split('=')[1]}-s{seed}"
                shutil.rmtree(out, ignore_errors=True)
                config = relpos.resolve_config(
                    modality="image", pretext="spatial-reasoning",
                    overrides=[*common, *ENCODERS[encoder], *overrides, f"train.steps={args.steps}",
                               f"train.seed={seed}", f"out={out}", f"data={data}"],
                )
                t0 = time.perf_counter()
                result = relpos.train(config)
                runs[label] = out
                print(f"{encoder} seed {seed} {label}: {args.steps} steps in {time.perf_counter() - t0:.0f} s, "
                      f"final loss {result.loss:.3f}", flush=True)
            rows = [(label, runs[label], "pretrained") for label in METHODS]
            rows.append((RANDOM, runs["Spatial Reasoning (plain)"], "random"))
            for label, run, init in rows:
                for features in FEATURES:
                    res = relpos.evaluate(run, protocol="linear", init=init, features=features, seed=seed,
                                          progress=False, write=False)
                    records.append({"encoder": encoder, "seed": seed, "method": label, "features": features,
                                    "accuracy": res.mean["accuracy"], "kappa": res.mean["cohen_kappa"]})
                    print(f"  {label:30s} {features:4s} accuracy {res.mean['accuracy']:.3f}", flush=True)

    table = []
    for encoder in args.encoders:
        for label in [*METHODS, RANDOM]:
            row = [encoder, label]
            for features in FEATURES:
                values = [r["accuracy"] for r in records
                          if r["encoder"] == encoder and r["method"] == label and r["features"] == features]
                if not values:
                    row.append("")
                    continue
                spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
                row.append(f"{statistics.mean(values):.3f}{spread} ({', '.join(f'{v:.3f}' for v in values)})")
            table.append(row)
    markdown = (
        f"MNIST linear-probe test accuracy, mean ± std over seeds {args.seeds} (per seed in brackets); "
        f"{args.steps} pretraining steps of {args.batch_size} images (K = 4, N = 2), {args.max_images} training "
        f"and test images; grid = whole image + 3 × 3 patches of 0.375 of the side, cls = whole image\n\n"
        + markdown_table(["encoder", "method", "grid features", "whole-image features"], table)
    )
    print(markdown)
    (args.out / "results.md").write_text(markdown + "\n")
    (args.out / "results.json").write_text(json.dumps(
        {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()}, "records": records,
         "elapsed_s": time.perf_counter() - started}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

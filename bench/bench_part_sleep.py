"""Does PART learn on a real sleep night, and which pairs does it learn? Loss against the trivial baseline.

For each variant of the sleep recipe (``configs/eeg_sleep_part.yaml``) this pretrains PART on the
Sleep-EDF night in ``../shared/data/eeg/sleep-edf`` and reports:

* the training loss against ``loss_baseline`` (the best constant predictor's loss on the same
  batch), averaged over the first and the last tenth of the run;
* on fresh batches drawn from the trained model (same sampler, no gradient), the mean squared error,
  its constant baseline and (position-masked variants) the error of a **positions-only** guess (a
  visible centre is known, a masked one guessed as the mean centre: what a model scores without
  localising any content), restricted to pairs whose patches **overlap** in time
  (|Δc| < one patch length), pairs that **do not**, and, for the position-masked variants, pairs
  that **involve a masked patch** versus pairs of two **visible** patches. The lead's hypothesis:
  on a roughly stationary signal only overlapping pairs can be localised from content.

Variants: ``default`` (position-free, the paper's loss on all pairs), ``masked`` (the paper's EEG
experiment: sin-cos positions, 20 % masked, loss on all pairs), ``masked-only`` (the same, loss on
the pairs involving a masked patch), and the diagnostic ``neighbours``: position-free, but every
pair is two patches adjacent in time (boxes sorted by centre, target = reference ± 1), so most
pairs overlap; it asks whether the network can align overlapping content at all when that is
most of the loss rather than under 1 % of it. It patches PART's samplers in this process only.
``near`` is the option that came of it: ``pretext.pair_max_offset=1.0`` (pairs at most one patch
length apart).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_part_sleep.py --steps 300

Results go to ``bench/results/bench_part_sleep.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import relpos
from relpos.encoder import position_mask
from relpos.extraction import extract_patches
from relpos.geometry import relative_transform
from relpos.sampling import sample_near_pairs, sample_pairs
from relpos.training import build_modality, open_data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "eeg" / "sleep-edf"
RECIPE = ROOT / "configs" / "eeg_sleep_part.yaml"
MASKED = ["encoder.pos_embed=sincos", "encoder.pos_mask_ratio=0.2"]
VARIANTS = {
    "default": [],
    "masked": MASKED,
    "masked-only": [*MASKED, "pretext.pair_loss=masked"],
    "neighbours": [],
    "near": ["pretext.pair_max_offset=1.0"],
}


def neighbour_pairs(batch_size, n_patches, n_pairs, generator, device=None):
    """(reference, target) index pairs of patches adjacent in sorted order, in either direction."""
    ref = torch.randint(0, n_patches - 1, (batch_size, n_pairs), generator=generator)
    tgt = ref + 1
    swap = torch.rand((batch_size, n_pairs), generator=generator) < 0.5
    ref, tgt = torch.where(swap, tgt, ref), torch.where(swap, ref, tgt)
    return ref.to(device), tgt.to(device)


@contextlib.contextmanager
def neighbour_sampling(pretext=None):
    """Make PART sample boxes sorted by centre and pairs of neighbours (this process only)."""
    import relpos_plugins.part as part_module

    original_pairs, original_boxes = part_module.sample_pairs, part_module.PART.sample_boxes

    def sorted_boxes(self, batch_size, generator, device):
        boxes = original_boxes(self, batch_size, generator, device)
        order = boxes.center[..., 0].argsort(dim=1)
        return boxes.gather(order)

    part_module.sample_pairs, part_module.PART.sample_boxes = neighbour_pairs, sorted_boxes
    try:
        yield
    finally:
        part_module.sample_pairs, part_module.PART.sample_boxes = original_pairs, original_boxes


def subset_errors(pretext, windows, n_batches: int, batch_size: int, seed: int,
                  neighbours: bool = False) -> dict[str, float]:
    """MSE and constant baseline per kind of pair, on fresh batches from the trained model."""
    generator = torch.Generator().manual_seed(seed)
    errors, targets, overlaps, masked_pairs, oracle_errors = [], [], [], [], []
    pretext.eval()
    with torch.no_grad():
        for _ in range(n_batches):
            index = torch.randint(0, len(windows), (batch_size,), generator=generator)
            x = windows.x[index]
            boxes = pretext.sample_boxes(batch_size, generator, x.device)
            patches = extract_patches(x, boxes, pretext.patch_shape)
            pos_masked = None
            if pretext.masks_positions:
                pos_masked = position_mask(batch_size, pretext.n_patches, pretext.encoder.config.pos_mask_ratio, generator)
            tokens = pretext.encoder(patches, boxes.center, generator, pos_masked=pos_masked)[:, 1:]
            if neighbours:
                ref, tgt = neighbour_pairs(batch_size, pretext.n_patches, pretext.config.n_pairs, generator, x.device)
            elif pretext.config.pair_max_offset > 0:
                ref, tgt = sample_near_pairs(boxes, pretext.config.n_pairs, pretext.config.pair_max_offset, generator)
            else:
                ref, tgt = sample_pairs(batch_size, pretext.n_patches, pretext.config.n_pairs, generator, x.device)
            theta = relative_transform(boxes.gather(ref), boxes.gather(tgt))
            pred = pretext.head(tokens, ref, tgt).float()
            errors.append(((pred - theta) ** 2).mean(-1).flatten())
            targets.append(theta[..., 0].flatten())
            overlaps.append((theta[..., 0].abs() < 1.0).flatten())  # |Δc| below one patch length
            if pos_masked is not None:
                masked_pairs.append((pos_masked.gather(1, ref) | pos_masked.gather(1, tgt)).flatten())
                # Positions only, no content: a visible centre is known, a masked one is guessed as
                # the mean centre. What a model scores on masked pairs without localising content.
                centre = boxes.center[..., 0]
                guess = torch.where(pos_masked, centre.mean(), centre)
                oracle = (guess.gather(1, tgt) - guess.gather(1, ref)) / boxes.size[..., 0].gather(1, ref)
                oracle_errors.append(((oracle - theta[..., 0]) ** 2).flatten())
    error, target, overlap = torch.cat(errors), torch.cat(targets), torch.cat(overlaps)
    kinds = {"all": torch.ones_like(overlap), "overlapping": overlap, "non-overlapping": ~overlap}
    if masked_pairs:
        masked = torch.cat(masked_pairs)
        kinds.update({"masked": masked, "visible": ~masked,
                      "masked non-overlapping": masked & ~overlap})
    out = {}
    oracle_error = torch.cat(oracle_errors) if oracle_errors else None
    for name, selected in kinds.items():
        t = target[selected]
        out[name] = {
            "share": float(selected.float().mean()),
            "mse": float(error[selected].mean()),
            "baseline": float(((t - t.mean()) ** 2).mean()),
        }
        if oracle_error is not None:
            out[name]["positions_only"] = float(oracle_error[selected].mean())
    return out


def run_variant(name: str, overrides: list[str], steps: int, seed: int, out_dir: Path) -> dict:
    config = relpos.resolve_config(
        str(RECIPE), overrides=[*overrides, f"train.steps={steps}", f"train.seed={seed}",
                                "train.progress=false", "train.log_every=1", "train.tensorboard=false"],
    )
    config.data = str(DATA)
    config.out = str(out_dir / name)
    start = time.perf_counter()
    neighbours = name == "neighbours"
    with neighbour_sampling() if neighbours else contextlib.nullcontext():
        result = relpos.train(config)
        seconds = time.perf_counter() - start
        windows = open_data(build_modality(config), config.data)
        pairs = subset_errors(result.pretext, windows, n_batches=8, batch_size=16, seed=10_000 + seed,
                              neighbours=neighbours)
    rows = np.genfromtxt(out_dir / name / "metrics.csv", delimiter=",", names=True)
    tenth = max(1, steps // 10)
    return {
        "variant": name,
        "overrides": overrides,
        "steps": steps,
        "seed": seed,
        "seconds": round(seconds, 1),
        "loss_first_tenth": float(rows["loss"][:tenth].mean()),
        "baseline_first_tenth": float(rows["loss_baseline"][:tenth].mean()),
        "loss_last_tenth": float(rows["loss"][-tenth:].mean()),
        "baseline_last_tenth": float(rows["loss_baseline"][-tenth:].mean()),
        "center_l2_last_tenth": float(rows["center_l2"][-tenth:].mean()),
        "summary": result.baseline_summary,
        "pairs": pairs,
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| variant | steps | time (s) | loss / baseline, first tenth | loss / baseline, last tenth |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['variant']} | {r['steps']} | {r['seconds']:.0f} | {r['loss_first_tenth']:.1f} / "
            f"{r['baseline_first_tenth']:.1f} | {r['loss_last_tenth']:.1f} / {r['baseline_last_tenth']:.1f} |"
        )
    lines += ["", "Held-out batches after training (MSE / constant baseline, share of pairs):", "",
              "| variant | pairs | share | MSE | constant baseline | positions only | MSE / baseline |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        for kind, v in r["pairs"].items():
            ratio = v["mse"] / v["baseline"] if v["baseline"] > 0 else math.nan
            oracle = f"{v['positions_only']:.2f}" if "positions_only" in v else "–"
            lines.append(f"| {r['variant']} | {kind} | {v['share']:.2f} | {v['mse']:.2f} | {v['baseline']:.2f} | "
                         f"{oracle} | {ratio:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="default,masked,masked-only", help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--keep", help="keep the run directories under this folder (for relpos eval)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra KEY=VALUE for every variant")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"bench_part_sleep: the sleep night is not in {DATA}; nothing to measure.")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants.split(","):
            out_dir = Path(args.keep) if args.keep else Path(tmp)
            result = run_variant(name, [*VARIANTS[name], *args.overrides], args.steps, args.seed, out_dir)
            result["overrides"] = [*VARIANTS[name], *args.overrides]
            print(json.dumps(result), flush=True)
            results.append(result)
    RESULTS_DIR.mkdir(exist_ok=True)
    # One file per set of variants and extra settings, so runs of different variants sit side by side.
    tags = [] if args.variants == "default,masked,masked-only" else args.variants.split(",")
    tags += [o.replace("=", "-").replace(".", "_") for o in args.overrides]
    stem = "_".join(["bench_part_sleep", *tags])
    (RESULTS_DIR / f"{stem}.json").write_text(json.dumps({"machine": machine_info(), "results": results}, indent=1))
    (RESULTS_DIR / f"{stem}.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()

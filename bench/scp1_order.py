"""Where SelfRegulationSCP1's class information lives: in the order of the patches, not in the bag.

Evidence for bench/README.md ("Where SCP1's information lives"; the finding in docs/history.md). The windows are those the PART
recipe trains on (``configs/scp1_part.yaml``: 0–30 Hz, 100 Hz, instance-normalised 3.5-s trials),
cut into the 14 grid patches of 0.25 s that the encoders see at evaluation. relpos's linear probe
(``relpos.evaluation.probes.linear_probe``, the one ``relpos eval`` uses: standardised features, C chosen on a validation split of the training trials, scored on the data
set's own test split) is fitted on hand-made features of those patches:

- the patch means *in time order* (14 numbers; what a position-aware model can use);
- the same 14 means *sorted* (an unordered bag: all that a position-free encoder's CLS / mean
  features can depend on, besides each patch's own shape);
- the mean patch waveform (25 numbers: the average over the 14 patches);
- the whole window (350 samples).

``--runs DIR ...`` adds the linear probe of each run's frozen encoder (``relpos.evaluate``) and of
the same architecture untrained, for comparison.

    .venv/bin/python bench/scp1_order.py
    .venv/bin/python bench/scp1_order.py --runs bench/results/eval/runs/scp1-part
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS  # noqa: E402

SCP1 = DATASETS["scp1"]


def probe_kappa(train_f: np.ndarray, train_y: np.ndarray, test_f: np.ndarray, test_y: np.ndarray, seed: int):
    """κ on the test split of relpos's linear probe (standardised features, C chosen on validation)."""
    from relpos.evaluation.probes import linear_probe

    result = linear_probe(train_f, train_y, test_f, test_y, seed=seed)
    return float(result.metrics["cohen_kappa"]), result.chosen["C"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SCP1.path)
    parser.add_argument("--runs", nargs="*", type=Path, default=[], help="run directories of scp1 pretraining")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.data.is_file():
        sys.exit(f"scp1_order: {args.data} does not exist (../shared/data/eeg/scp1.npz, see its README.md).")

    from threadpoolctl import threadpool_limits

    import relpos
    from relpos.plugins import get_modality

    config = relpos.resolve_config(SCP1.recipe("part"), overrides=[f"data={args.data}"])
    modality = get_modality("eeg")(config.modality_config)
    train = modality.load(args.data)
    test = modality.load_with(args.data, split="test")
    patch = int(round(modality.patch_size()[0]))
    n_patches = train.x.shape[-1] // patch

    def patches(w) -> np.ndarray:
        x = w.x.numpy()[:, 0, : n_patches * patch]
        return x.reshape(len(x), n_patches, patch)

    p_tr, p_te = patches(train), patches(test)
    y_tr, y_te = train.labels.numpy(), test.labels.numpy()
    rows = []
    features = {
        f"patch means in time order ({n_patches})": lambda p: p.mean(2),
        f"patch means sorted: an unordered bag ({n_patches})": lambda p: np.sort(p.mean(2), 1),
        f"mean patch waveform ({patch})": lambda p: p.mean(1),
        f"whole window ({n_patches * patch})": lambda p: p.reshape(len(p), -1),
    }
    with threadpool_limits(1, "blas"):
        for name, f in features.items():
            kappa, c = probe_kappa(f(p_tr), y_tr, f(p_te), y_te, args.seed)
            rows.append((name, kappa, c))
        for run in args.runs:
            for init in ("pretrained", "random"):
                for feats in ("cls", "mean", "tokens"):
                    result = relpos.evaluate(run, protocol="linear", init=init, features=feats, seed=args.seed,
                                             progress=False, write=False)
                    rows.append((f"{run.name} {init} encoder, {feats} features (relpos eval)",
                                 float(result.mean["cohen_kappa"]), result.chosen[0].get("C")))

    print(f"SelfRegulationSCP1: {len(y_tr)} training and {len(y_te)} test trials, {n_patches} patches of "
          f"{patch} samples; linear probe κ on the test split\n")
    print("| features | κ (test) | C (chosen on validation) |\n|---|---|---|")
    for name, kappa, c in rows:
        print(f"| {name} | {kappa:.3f} | {c} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

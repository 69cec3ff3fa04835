"""EEG in space and time (issue 25): PART with electrodes as an axis, pretrained on three montages, probed on the night.

Two parts, both on the CPU with ``OMP_NUM_THREADS=1``:

1. **Probe** (``--part probe``): sleep stages of the Sleep-EDF night, evaluated as ``relpos.evaluate``
   evaluates any encoder on it (``eval.time_blocks = 30`` dealt into 5 folds, seed s holding out fold s,
   linear probe and kNN on the mean token), for

   * ``part-space-3``: PART with ``modality.space=montage`` pretrained on the three recordings of
     ``../shared/data/eeg`` together (the 64-channel EEGMMIDB run, the six-electrode nap and the night's
     two derivations, each channel a token at its electrode), ``configs/eeg_sleep_part.yaml`` with near pairs
     (``pretext.pair_max_offset=1.0``, within a patch length in time and a head radius in space) and
     ``normalize: recording``;
   * its architecture at random init;
   * ``part-space-night``: the same spatial PART on the night alone (which of the two, the montages or the
     channel tokens, changes the result), and its random init;
   * ``part-none-night``: PART with ``space=none`` (today's layout: a token is a patch of both channels) on the
     night alone, the same recipe (the ``part-near`` row of ``bench/run.py sleep_rp``), and its random init;
   * the night's twelve log band powers (``_common.log_band_powers``).

2. **Cost** (``--part cost``): the time of one training step (batch of windows → patches → encoder → PART
   head → backward → AdamW) per window, at the same number of tokens per window (40), for today's layout on
   the night, the spatial layout on the night, and mixed-montage batches of the three recordings (batches
   padded from :class:`relpos.space.PaddedChannels`). Rounds alternate the three, and the median of the
   rounds is reported.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_eeg_space.py --part cost
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_eeg_space.py --part probe --seeds 0 1 2 --steps 300

Results: ``bench/results/eeg_space_{cost,probe}.{json,md}``; runs under ``bench/results/eeg_space_runs/``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Contention, data_root, machine_info, markdown_table, write_results  # noqa: E402

SLEEP_CONFIG = REPO / "configs" / "eeg_sleep_part.yaml"
OUT = REPO / "bench" / "results"
PROTOCOLS = ("linear", "knn")
#: The pretraining settings every PART row shares: the sleep recipe with near pairs, recording normalisation.
COMMON = ["pretext.pair_max_offset=1.0", "modality.normalize=recording", "train.device=cpu", "train.progress=false",
          "train.tensorboard=false", "train.monitor_every=0"]
#: The spatial run reads every EEG channel of every recording (no channel list) and stages only the night.
SPACE = ["modality.space=montage", "modality.channels=", "modality.labels=auto", "modality.stride_s=5"]


def config_for(name: str, data: Path, steps: int, seed: int, out: Path):
    import relpos

    extra = SPACE if name.startswith("part-space") else []
    return relpos.resolve_config(SLEEP_CONFIG, overrides=[
        f"data={data}", f"out={out}", f"train.steps={steps}", f"train.seed={seed}", *COMMON, *extra])


# -- cost -----------------------------------------------------------------------------------------------------
def cost(args) -> None:
    from relpos.training import build_modality, build_pretext, open_data

    night, everything = data_root() / "eeg" / "sleep-edf", data_root() / "eeg"
    layouts = {
        "today's layout, night (40 tokens of 2 channels x 1 s)": ("part-none", night),
        "spatial layout, night (40 tokens of 1 channel x 1 s)": ("part-space", night),
        "spatial layout, mixed montages (64 + 6 + 2 channels; 40 tokens)": ("part-space", everything),
    }
    setups = {}
    for label, (name, data) in layouts.items():
        config = config_for(name, data, 1, 0, OUT / "eeg_space_runs" / "cost")
        modality = build_modality(config)
        windows = open_data(modality, config.data)
        torch.manual_seed(0)
        pretext = build_pretext(config, modality, windows)
        optimizer = torch.optim.AdamW(pretext.parameters(), lr=1e-4)
        setups[label] = (windows, pretext, optimizer)
        print(f"[cost] {label}: {len(windows)} windows, x {tuple(windows.x.shape)}", flush=True)
    batch = args.batch_size

    def step(windows, pretext, optimizer, generator):
        index = torch.randint(0, len(windows), (batch,), generator=generator)
        sample = {"x": windows.x[index]}
        if windows.positions is not None:
            sample["positions"] = windows.positions[index]
        loss, _ = pretext(sample, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    times = {label: [] for label in setups}
    with Contention() as contention:
        for label, setup in setups.items():  # warm-up
            generator = torch.Generator().manual_seed(0)
            for _ in range(3):
                step(*setup, generator)
        for _ in range(args.rounds):
            for label, setup in setups.items():
                generator = torch.Generator().manual_seed(1)
                t0 = time.perf_counter()
                for _ in range(args.steps_per_round):
                    step(*setup, generator)
                times[label].append((time.perf_counter() - t0) / (args.steps_per_round * batch) * 1e3)
    base = statistics.median(times[next(iter(times))])
    rows, payload = [], {"machine": machine_info(), "batch_size": batch, "rounds": args.rounds,
                         "steps_per_round": args.steps_per_round, "contention": contention.result,
                         "ms_per_window": times}
    for label, values in times.items():
        median = statistics.median(values)
        rows.append([label, f"{median:.2f}", f"{min(values):.2f}-{max(values):.2f}", f"{median / base:.2f}x"])
    markdown = markdown_table(["layout", "ms / window (median)", "range over rounds", "vs today's"], rows)
    markdown += f"\n\n{contention.describe()}\n"
    print(markdown)
    write_results("eeg_space_cost", markdown, payload)


# -- probe ----------------------------------------------------------------------------------------------------
def evaluate_run(run_dir: Path, night: Path, init: str, seed: int, time_blocks: int) -> dict:
    import relpos

    out = {}
    for protocol in PROTOCOLS:
        result = relpos.evaluate(run_dir, protocol=protocol, data=str(night), init=init, features="mean", seed=seed,
                                 time_blocks=time_blocks, write=False, progress=False, device="cpu")
        out[protocol] = {k: float(v) for k, v in result.mean.items()}
    return out


def band_powers(night_windows, seeds, time_blocks: int) -> dict:
    import mne
    from bench_braindecode_rp import NIGHT, probe
    from _common import log_band_powers

    raw = mne.io.read_raw_edf(data_root() / NIGHT[0], include=["EEG Fpz-Cz", "EEG Pz-Oz"], preload=True,
                              verbose="error")
    sfreq = float(raw.info["sfreq"])
    signal = raw.get_data(units="uV")
    n = int(round(30.0 * sfreq))
    starts = np.round(night_windows.onsets * sfreq).astype(int)
    feats = log_band_powers(np.stack([signal[:, a:a + n] for a in starts]), sfreq)
    labels = night_windows.labels.numpy().astype(np.int64)
    recording = str(night_windows.groups[0])
    return {seed: {p: {k: float(v) for k, v in probe(feats, labels, recording, seed, time_blocks, "bands")[p].items()
                       if isinstance(v, (int, float))} for p in PROTOCOLS} for seed in seeds}


def probe_all(args) -> None:
    import relpos
    from relpos.training import build_modality

    night, everything = data_root() / "eeg" / "sleep-edf", data_root() / "eeg"
    cells: dict[str, dict[int, dict]] = {}
    pretrain: dict[str, dict[int, dict]] = {}
    runs = {"part-space-3": everything, "part-space-night": night, "part-none-night": night}
    for name in args.runs:
        data = runs[name]
        for seed in args.seeds:
            run_dir = OUT / "eeg_space_runs" / f"{name}-s{seed}-{args.steps}"
            config = config_for(name, data, args.steps, seed, run_dir)
            if not (run_dir / "metrics.csv").is_file():
                t0 = time.perf_counter()
                relpos.train(config)
                print(f"[{name} s{seed}] trained in {time.perf_counter() - t0:.0f} s", flush=True)
            rows = (run_dir / "metrics.csv").read_text().splitlines()
            last = dict(zip(rows[0].split(","), rows[-1].split(",")))
            pretrain.setdefault(name, {})[seed] = {"loss": float(last["loss"]), "baseline": float(last["loss_baseline"])}
            for init in ("pretrained", "random"):
                t0 = time.perf_counter()
                kept = run_dir / f"bench-eval-{init}-{args.time_blocks}.json"  # a rerun reuses the scores
                if kept.is_file():
                    scores = json.loads(kept.read_text())
                else:
                    scores = evaluate_run(run_dir, night, init, seed, args.time_blocks)
                    kept.write_text(json.dumps(scores))
                cells.setdefault(f"{name} ({init})", {})[seed] = scores
                print(f"[{name} {init} s{seed}] κ linear {scores['linear']['cohen_kappa']:.3f}, kNN "
                      f"{scores['knn']['cohen_kappa']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    night_config = config_for("part-none-night", night, 1, 0, OUT / "eeg_space_runs" / "unused")
    night_windows = build_modality(night_config).load(night_config.data)
    cells["twelve log band powers"] = band_powers(night_windows, args.seeds, args.time_blocks)

    def stat(values):
        return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"

    rows = []
    for row, per_seed in cells.items():
        seeds = sorted(per_seed)
        rows.append([row] + [stat([per_seed[s][p][m] for s in seeds]) for p in PROTOCOLS
                             for m in ("cohen_kappa", "balanced_accuracy")])
    markdown = markdown_table(["row", "linear κ", "linear bal. acc", "kNN κ", "kNN bal. acc"], rows)
    ratios = {name: [v["loss"] / v["baseline"] for v in per.values()] for name, per in pretrain.items()}
    markdown += "\n\nfinal loss / baseline: " + "; ".join(f"{k} {np.mean(v):.3f}" for k, v in ratios.items()) + "\n"
    print(markdown)
    write_results("eeg_space_probe", markdown, {"machine": machine_info(), "seeds": args.seeds, "steps": args.steps,
                                                "cells": cells, "pretrain": pretrain})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("cost", "probe"), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--runs", nargs="+", default=["part-space-3", "part-space-night", "part-none-night"],
                        choices=["part-space-3", "part-space-night", "part-none-night"])
    parser.add_argument("--time-blocks", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-round", type=int, default=5)
    args = parser.parse_args(argv)
    if not (data_root() / "eeg" / "sleep-edf").is_dir():
        print(f"bench_eeg_space: {data_root()} has no eeg/sleep-edf (see ../shared/data/README.md).", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    cost(args) if args.part == "cost" else probe_all(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

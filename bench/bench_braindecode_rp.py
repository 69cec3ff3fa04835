"""braindecode's Relative Positioning on the night, beside the strongest simple baselines, through relpos's probes.

Three kinds of row, each evaluated exactly as ``relpos.evaluate`` evaluates an encoder on the
Sleep-EDF night: the night's 2,650 windows of 30 s with relpos's onsets and AASM labels (the eeg
modality with ``configs/eeg_sleep_part.yaml``: every 30-s epoch from the first scored one, no wake
trimmed), cut into ``eval.time_blocks = 30`` contiguous blocks dealt into 5 folds, seed ``s``
holding out fold ``s``; relpos's linear probe and kNN on frozen features (``relpos.evaluation``):

1. **braindecode's RP** as its example "Self-supervised learning on EEG with relative positioning"
   runs it (braindecode 1.8.1): ``SleepPhysionet``'s reader on the local files, µV, low-pass 30 Hz,
   30-s windows from the hypnogram's events, per-window per-channel ``sklearn.preprocessing.scale``,
   ``RelativePositioningSampler`` (τ_pos 1 min, τ_neg 15 min, negatives from the same recording,
   250 pairs per recording and epoch), ``SleepStagerChambon2018`` (16 conv channels, batch norm,
   100-d embedding) inside the example's ContrastiveNet (dropout 0.5, linear layer on |z1 − z2|),
   ``EEGClassifier`` with BCE, Adam, lr 5e-3, batch 128, 25 epochs. The one night is all the data,
   so there is no validation recording: no early stopping, the last epoch's weights are probed
   (the example keeps the best validation epoch). Beside it, the same embedder untrained (the seed's
   initial weights).
2. **relpos's random-init encoders** (the position-free ViT of ``configs/eeg_sleep_part.yaml``, the
   only registered encoder that takes 1-D signals) with ``normalize: recording`` and ``instance``:
   a one-step run gives ``relpos.evaluate(..., init="random")`` its architecture.
3. **Twelve log band powers** per window (``_common.log_band_powers``: Welch, delta, theta, alpha,
   sigma, beta and total power × the two EEG channels, in µV² of the raw signal).

Every row is written as a cell of ``bench/run.py`` (``OUT/cells/*.json``, skipped when present, so a
run resumes) and the report is ``bench/run.py``'s, for the recipe ``sleep_rp``: relpos's own
pretexts on the night (``bench/run.py sleep_rp --methods ...``) land in the same folder and the same
table (``bench/run.py sleep_rp --report-only``).

braindecode is not a relpos dependency: it is read from ``bench/.env-braindecode`` (installed as
docs/history.md, "EEG data pipeline vs braindecode", says), and only for the braindecode rows.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_braindecode_rp.py            # 3 seeds, every row, ~6 min
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_braindecode_rp.py --rows band-powers --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, SLEEP_BANDS, Contention, data_root, log_band_powers, machine_info  # noqa: E402

BENCH = REPO / "bench"
#: Where braindecode is installed apart (``$RELPOS_BRAINDECODE_ENV`` points elsewhere).
ENV = Path(os.environ.get("RELPOS_BRAINDECODE_ENV") or BENCH / ".env-braindecode")
RECIPE = "sleep_rp"
NIGHT = ("eeg/sleep-edf/SC4001E0-PSG.edf", "eeg/sleep-edf/SC4001EC-Hypnogram.edf")
SLEEP_CONFIG = REPO / "configs" / "eeg_sleep_part.yaml"
ROWS = ("braindecode-rp", "vit", "band-powers")
VIT_NORMALISATIONS = ("recording", "instance")
PROTOCOLS = ("linear", "knn")
#: braindecode's example: AASM stages from the R&K hypnogram (stages 3 and 4 merged).
MAPPING = {"Sleep stage W": 0, "Sleep stage 1": 1, "Sleep stage 2": 2, "Sleep stage 3": 3, "Sleep stage 4": 3,
           "Sleep stage R": 4}


def fail(message: str) -> None:
    """One sentence on standard error and exit status 2, before any data is read."""
    print(f"bench/bench_braindecode_rp.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), metavar="ROW",
                        help=f"which rows to compute: {', '.join(ROWS)} (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (fold s is held out)")
    parser.add_argument("--epochs", type=int, default=25, help="braindecode: training epochs (the example's 25)")
    parser.add_argument("--pairs", type=int, default=250,
                        help="braindecode: pairs per recording and epoch (the example's 250)")
    parser.add_argument("--batch-size", type=int, default=128, help="braindecode: batch of pairs (the example's 128)")
    parser.add_argument("--lr", type=float, default=5e-3, help="braindecode: Adam's learning rate (the example's)")
    parser.add_argument("--time-blocks", type=int, default=30, help="eval.time_blocks of the split (the night's 30)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder holding eeg/sleep-edf (default: $RELPOS_SHARED_DATA or ../shared/data)")
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default: bench/results/{RECIPE})")
    args = parser.parse_args(argv)
    bad = [r for r in args.rows if r not in ROWS]
    if bad:
        fail(f"--rows got {', '.join(map(repr, bad))}; allowed: {', '.join(ROWS)}.")
    args.rows = list(dict.fromkeys(args.rows))
    if any(s < 0 for s in args.seeds):
        fail(f"--seeds must be non-negative integers, got {args.seeds}.")
    args.seeds = list(dict.fromkeys(args.seeds))
    for name in ("epochs", "pairs", "batch_size", "time_blocks"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}.")
    if not args.lr > 0:
        fail(f"--lr must be a positive number, got {args.lr}.")
    if args.data_root is not None:
        os.environ["RELPOS_SHARED_DATA"] = str(args.data_root.resolve())
    args.out = (args.out or BENCH / "results" / RECIPE).resolve()
    args.command = shlex.join(["python", "bench/bench_braindecode_rp.py", *(sys.argv[1:] if argv is None else argv)])
    if "braindecode-rp" in args.rows and not (ENV / "braindecode").is_dir():
        shown = ENV.relative_to(REPO) if ENV.is_relative_to(REPO) else ENV
        fail(f"braindecode is not installed in {shown} (it is not a relpos dependency); install it there with the "
             f"pip line of docs/history.md, section 'EEG data pipeline vs braindecode', or leave braindecode-rp out "
             f"of --rows.")
    missing = [f for f in NIGHT if not (data_root() / f).is_file()]
    if missing:
        fail(f"the night's files are missing under {data_root()}: {', '.join(missing)}; pass --data-root or set "
             f"$RELPOS_SHARED_DATA.")
    return args


# -- the night as relpos sees it -----------------------------------------------------------------
def relpos_night(normalize: str = "recording"):
    """The night's windows as the eeg modality opens them with the sleep recipe (labels, recording name)."""
    import relpos
    from relpos.training import build_modality

    config = relpos.resolve_config(SLEEP_CONFIG, overrides=[f"data={data_root() / 'eeg' / 'sleep-edf'}",
                                                            f"modality.normalize={normalize}"])
    windows = build_modality(config).load(config.data)
    return windows


def window_onsets(n_windows: int, window_s: float, labels: np.ndarray) -> np.ndarray:
    """Onsets (s) of relpos's windows: every ``window_s`` from the first scored epoch, checked against
    the hypnogram (the stage at each window's centre must be the label relpos gave it)."""
    import mne

    psg, hyp = (data_root() / f for f in NIGHT)
    annotations = mne.read_annotations(hyp)
    mapped = [(o, d, MAPPING[s]) for o, d, s in zip(annotations.onset, annotations.duration,
                                                    annotations.description) if s in MAPPING]
    first = min(o for o, _, _ in mapped)
    onsets = first + window_s * np.arange(n_windows)
    centres = onsets + window_s / 2
    stage = np.full(n_windows, -1)
    for o, d, s in mapped:
        stage[(centres >= o) & (centres < o + d)] = s
    if not np.array_equal(stage, labels):
        wrong = int(np.flatnonzero(stage != labels)[0])
        raise SystemExit(f"bench/bench_braindecode_rp.py: relpos's window {wrong} (label {labels[wrong]}) is not "
                         f"the hypnogram's epoch at {onsets[wrong]:g} s (stage {stage[wrong]}); the windows "
                         f"cannot be matched.")
    return onsets


def probe(features: np.ndarray, labels: np.ndarray, recording: str, seed: int, time_blocks: int,
          what: str) -> dict:
    """relpos's linear probe and kNN on frozen ``features`` of the night's windows, fold ``seed`` held out.

    The split, the validation groups and the probes' arguments are those ``relpos.evaluate`` uses on
    one recording (``_Repeats.score``): ``block_split`` with test fraction 0.2, the training windows'
    blocks named ``RECORDING/blockB`` as groups, the default ``C`` and ``k`` candidates.
    """
    import torch
    from relpos.evaluation import knn_probe, linear_probe
    from relpos.evaluation.evaluate import EvalConfig
    from relpos.evaluation.splits import block_split

    cfg = EvalConfig()
    train, test, blocks = block_split(len(labels), cfg.test_fraction, seed, time_blocks)
    groups = np.array([f"{recording}/block{b}" for b in blocks[train]])
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    common = dict(seed=seed, groups=groups, val_fraction=cfg.val_fraction, n_classes=int(labels.max()) + 1)
    out = {}
    for protocol in PROTOCOLS:
        t0 = time.perf_counter()
        if protocol == "linear":
            result = linear_probe(x[train], labels[train], x[test], labels[test], cs=cfg.cs, max_iter=cfg.max_iter,
                                  **common)
        else:
            result = knn_probe(x[train], labels[train], x[test], labels[test], ks=cfg.ks,
                               temperature=cfg.temperature, **common)
        out[protocol] = {**{k: float(v) for k, v in result.metrics.items()}, "n_train": int(len(train)),
                         "n_test": int(len(test)), "features": what, "chosen": result.chosen,
                         "seconds": time.perf_counter() - t0, "split": f"fold {seed % 5} of 5, {time_blocks} blocks"}
    return out


def write_cell(args, method: str, setting: str, seed: int, evals: dict, normalize: str, pretrain: dict | None,
               **extra) -> None:
    from run import atomic_json

    cell = {"recipe": RECIPE, "dataset": "sleep", "method": method, "pretext": extra.pop("pretext", method),
            "setting": setting, "seed": seed, "normalize": normalize, "pretrain": pretrain, "eval": evals,
            "machine": {**machine_info(), "device": "cpu"}, "command": args.command, **extra}
    atomic_json(args.out / "cells" / f"sleep-{method}-{setting}-s{seed}.json", cell)


def done(args, method: str, setting: str, seed: int) -> bool:
    return (args.out / "cells" / f"sleep-{method}-{setting}-s{seed}.json").is_file()


# -- (c) band powers ----------------------------------------------------------------------------
def band_power_rows(args, labels: np.ndarray, onsets: np.ndarray, recording: str) -> None:
    todo = [s for s in args.seeds if not done(args, "band-powers", "none", s)]
    if not todo:
        return
    import mne

    raw = mne.io.read_raw_edf(data_root() / NIGHT[0], include=["EEG Fpz-Cz", "EEG Pz-Oz"], preload=True,
                              verbose="error")
    sfreq = float(raw.info["sfreq"])
    signal = raw.get_data(units="uV")
    n = int(round(30.0 * sfreq))
    starts = np.round(onsets * sfreq).astype(int)
    t0 = time.perf_counter()
    feats = log_band_powers(np.stack([signal[:, a:a + n] for a in starts]), sfreq)
    seconds = time.perf_counter() - t0
    print(f"[band-powers] {feats.shape[1]} features of {len(feats)} windows in {seconds:.1f} s", flush=True)
    for seed in todo:
        evals = {"fixed": probe(feats, labels, recording, seed, args.time_blocks, "band powers")}
        write_cell(args, "band-powers", "none", seed, evals, "none (raw µV, log10 power; the probe standardises)",
                   None, pretext="none", features_seconds=seconds,
                   bands=[f"{name} {lo:g}-{hi:g} Hz" for name, lo, hi in SLEEP_BANDS])
        print(f"[band-powers s{seed}] κ linear {evals['fixed']['linear']['cohen_kappa']:.3f}, "
              f"kNN {evals['fixed']['knn']['cohen_kappa']:.3f}", flush=True)


# -- (b) relpos's random-init encoders ----------------------------------------------------------
def vit_rows(args) -> None:
    import relpos

    for normalize in VIT_NORMALISATIONS:
        todo = [s for s in args.seeds if not done(args, "random-vit", normalize, s)]
        if not todo:
            continue
        run_dir = args.out / "runs" / f"random-vit-{normalize}"
        config = relpos.resolve_config(SLEEP_CONFIG, overrides=[
            f"data={data_root() / 'eeg' / 'sleep-edf'}", f"out={run_dir}", f"modality.normalize={normalize}",
            "train.steps=1", "train.seed=0", "train.device=cpu", "train.progress=false", "train.tensorboard=false",
            "train.ckpt_every=1", "train.log_every=1"])
        relpos.train(config)  # one step: only the architecture matters to init="random"
        for seed in todo:
            evals = {"random": {}}
            for protocol in PROTOCOLS:
                t0 = time.perf_counter()
                result = relpos.evaluate(config.run_dir(), protocol=protocol, init="random", features="mean",
                                         seed=seed, time_blocks=args.time_blocks, write=False, progress=False,
                                         device="cpu")
                evals["random"][protocol] = {**{k: float(v) for k, v in result.mean.items()},
                                             "n_train": int(result.n_train[0]), "n_test": int(result.n_test),
                                             "features": "mean", "chosen": result.chosen, "folds": result.folds,
                                             "seconds": time.perf_counter() - t0}
            write_cell(args, "random-vit", normalize, seed, evals, normalize, None, pretext="none (random init)",
                       config=str(SLEEP_CONFIG.relative_to(REPO)))
            print(f"[random-vit {normalize} s{seed}] κ linear {evals['random']['linear']['cohen_kappa']:.3f}, "
                  f"kNN {evals['random']['knn']['cohen_kappa']:.3f}", flush=True)


# -- (a) braindecode's RP -----------------------------------------------------------------------
def braindecode_windows(labels: np.ndarray, onsets: np.ndarray):
    """The example's preprocessing and windows, on the local night; checked to be relpos's windows."""
    from numpy import multiply
    from sklearn.preprocessing import scale as standard_scale

    from braindecode.datasets import BaseConcatDataset, RawDataset
    from braindecode.datasets.sleep_physionet import SleepPhysionet
    from braindecode.preprocessing import Preprocessor, create_windows_from_events, preprocess

    psg, hyp = (str(data_root() / f) for f in NIGHT)
    # What SleepPhysionet(subject_ids=[0], recording_ids=[1]) builds once its fetcher has the files
    # (crop_wake_mins=0: relpos keeps every scored epoch, so both sides see the same windows).
    raw, description = SleepPhysionet._load_raw(psg, hyp, preload=True, load_eeg_only=True, crop_wake_mins=0)
    dataset = BaseConcatDataset([RawDataset(raw, description)])
    preprocess(dataset, [Preprocessor(lambda data: multiply(data, 1e6)),  # V -> µV
                         Preprocessor("filter", l_freq=None, h_freq=30, n_jobs=1)])
    sfreq = int(dataset.datasets[0].raw.info["sfreq"])
    windows = create_windows_from_events(dataset, trial_start_offset_samples=0, trial_stop_offset_samples=0,
                                         window_size_samples=30 * sfreq, window_stride_samples=30 * sfreq,
                                         preload=True, mapping=MAPPING)
    preprocess(windows, [Preprocessor(standard_scale, channel_wise=True)])
    meta = windows.get_metadata()
    starts = meta["i_start_in_trial"].to_numpy()
    same = (len(meta) == len(labels) and np.array_equal(starts, np.round(onsets * sfreq).astype(int))
            and np.array_equal(meta["target"].to_numpy(), labels))
    if not same:
        raise SystemExit(f"bench/bench_braindecode_rp.py: braindecode made {len(meta)} windows, relpos "
                         f"{len(labels)}; their onsets or labels differ, so the evaluation would not be the same.")
    return windows, sfreq


def embed(emb, windows, batch_size: int = 256) -> np.ndarray:
    import torch

    emb.eval()
    x = torch.stack([torch.as_tensor(windows[i][0]) for i in range(len(windows))]).float()
    with torch.no_grad():
        return torch.cat([emb(chunk) for chunk in x.split(batch_size)]).numpy()


def braindecode_setting(args) -> str:
    """``example`` with the example's budget and optimiser, else the values that differ from it."""
    changed = [f"{key}{getattr(args, name):g}" for key, name, default in
               (("e", "epochs", 25), ("p", "pairs", 250), ("b", "batch_size", 128), ("lr", "lr", 5e-3))
               if getattr(args, name) != default]
    return "-".join(changed) or "example"


def braindecode_rows(args, labels: np.ndarray, onsets: np.ndarray, recording: str) -> None:
    setting = braindecode_setting(args)
    todo = [s for s in args.seeds if not done(args, "braindecode-rp", setting, s)]
    if not todo:
        return
    import warnings

    sys.path.insert(0, str(ENV))  # only now, and only for braindecode
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*(lambda functions cannot be saved|apply_on_array|Applying preprocessors)")
    import copy

    import mne

    mne.set_log_level("ERROR")

    import torch
    from torch import nn

    from braindecode import EEGClassifier
    from braindecode.datasets import BaseConcatDataset
    from braindecode.models import SleepStagerChambon2018
    from braindecode.samplers import RelativePositioningSampler
    from braindecode.util import set_random_seeds

    t0 = time.perf_counter()
    windows, sfreq = braindecode_windows(labels, onsets)
    print(f"[braindecode] {len(windows)} windows, the example's preprocessing, in {time.perf_counter() - t0:.1f} s",
          flush=True)

    class RelativePositioningDataset(BaseConcatDataset):
        """The example's dataset: a pair of indices and a target in, a pair of windows and the target out."""

        def __getitem__(self, index):
            ind1, ind2, y = index
            return (super().__getitem__(ind1)[0], super().__getitem__(ind2)[0]), y

    class ContrastiveNet(nn.Module):
        """The example's contrastive module: a linear layer on |z1 − z2| of the siamese embedder."""

        def __init__(self, emb, emb_size, dropout=0.5):
            super().__init__()
            self.emb = emb
            self.clf = nn.Sequential(nn.Dropout(dropout), nn.Linear(emb_size, 1))

        def forward(self, x):
            x1, x2 = x
            z1, z2 = self.emb(x1), self.emb(x2)
            return self.clf(torch.abs(z1 - z2)).flatten()

    pairs_ds = RelativePositioningDataset(windows.datasets)
    n_channels, n_times = windows[0][0].shape
    for seed in todo:
        set_random_seeds(seed=seed, cuda=False)
        emb = SleepStagerChambon2018(n_channels, sfreq, n_outputs=100, n_conv_chs=16, n_times=n_times, drop_prob=0.0,
                                     apply_batch_norm=True)
        untrained = copy.deepcopy(emb)
        sampler = RelativePositioningSampler(pairs_ds.get_metadata(), tau_pos=int(sfreq * 60),
                                             tau_neg=int(sfreq * 15 * 60), n_examples=args.pairs * len(pairs_ds.datasets),
                                             same_rec_neg=True, random_state=seed)
        clf = EEGClassifier(ContrastiveNet(emb, 100), criterion=nn.BCEWithLogitsLoss, optimizer=torch.optim.Adam,
                            max_epochs=args.epochs, iterator_train__shuffle=False, iterator_train__sampler=sampler,
                            train_split=None, optimizer__lr=args.lr, batch_size=args.batch_size, callbacks=[],
                            device="cpu", classes=[0, 1], verbose=0)
        t0, c0 = time.perf_counter(), time.process_time()
        with Contention() as contention:
            clf.fit(pairs_ds, y=None)
        train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        others = contention.result.get("others_cores")
        losses = [float(h["train_loss"]) for h in clf.history]
        pairs_seen = args.epochs * len(sampler)
        baseline = float(np.log(2.0))  # BCE of the best constant guess: the sampler draws positives with p = 1/2
        n = max(1, len(losses) // 10)
        pretrain = {"loss_first": float(np.mean(losses[:n])), "loss_last": float(np.mean(losses[-n:])),
                    "baseline_first": baseline, "baseline_last": baseline,
                    "ratio_last": float(np.mean(losses[-n:])) / baseline, "warned_stuck": False, "seconds": train_s,
                    "steps": args.epochs, "step_unit": "epoch", "windows_seen": 2 * pairs_seen,
                    "pairs_seen": pairs_seen, "curve": [[i + 1, loss, baseline] for i, loss in enumerate(losses)],
                    "timed_share": {}, "warnings": [], "others_cores": others,
                    "cpu_seconds": train_cpu_s}
        print(f"[braindecode-rp s{seed}] {pairs_seen} pairs in {train_s:.1f} s "
              f"({1000 * train_s / (2 * pairs_seen):.2f} s per 1,000 windows, CPU "
              f"{1000 * train_cpu_s / (2 * pairs_seen):.2f} s); BCE {losses[0]:.3f} -> {losses[-1]:.3f} "
              f"(ln 2 = {baseline:.3f}); other processes kept "
              f"{'?' if others is None else f'{others:.2f}'} cores busy", flush=True)
        evals = {}
        for init, model in (("pretrained", emb), ("random", untrained)):
            t0 = time.perf_counter()
            feats = embed(model, windows)
            evals[init] = probe(feats, labels, recording, seed, args.time_blocks, "embedding")
            for p in evals[init].values():
                p["embed_seconds"] = time.perf_counter() - t0
        write_cell(args, "braindecode-rp", setting, seed, evals,
                   "instance (per window and channel, sklearn scale; µV, low-pass 30 Hz)", pretrain,
                   pretext="braindecode RelativePositioningSampler + ContrastiveNet",
                   settings={"tau_pos_s": 60, "tau_neg_s": 900, "pairs_per_epoch": len(sampler),
                             "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                             "optimizer": "Adam", "embedder": "SleepStagerChambon2018(n_conv_chs=16, "
                             "apply_batch_norm=True, drop_prob=0.0, n_outputs=100)", "braindecode": "1.8.1"})
        print(f"[braindecode-rp s{seed}] κ linear {evals['pretrained']['linear']['cohen_kappa']:.3f} "
              f"(untrained {evals['random']['linear']['cohen_kappa']:.3f}), kNN "
              f"{evals['pretrained']['knn']['cohen_kappa']:.3f} (untrained {evals['random']['knn']['cohen_kappa']:.3f})",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t_start = time.perf_counter()
    windows = relpos_night()
    labels = windows.labels.numpy().astype(np.int64)
    recording = str(np.asarray(windows.groups, dtype=str)[0])
    onsets = window_onsets(len(labels), 30.0, labels)
    recorded = getattr(windows, "onsets", None)  # relpos's own onsets, where the modality records them
    if recorded is not None and not np.allclose(recorded, onsets):
        raise SystemExit("bench/bench_braindecode_rp.py: the onsets relpos records for the night's windows are not "
                         "the hypnogram's epochs; the windows cannot be matched.")
    print(f"[night] {len(labels)} windows of 30 s, classes {windows.class_names}, counts "
          f"{np.bincount(labels).tolist()}", flush=True)
    if "band-powers" in args.rows:
        band_power_rows(args, labels, onsets, recording)
    if "vit" in args.rows:
        vit_rows(args)
    if "braindecode-rp" in args.rows:
        braindecode_rows(args, labels, onsets, recording)
    import run

    code = run.main([RECIPE, "--report-only", "--out", str(args.out)])
    print(f"bench/bench_braindecode_rp.py: done in {time.perf_counter() - t_start:.0f} s", flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

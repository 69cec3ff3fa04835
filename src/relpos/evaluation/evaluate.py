"""``relpos.evaluate``: does the pretrained encoder of a run know anything about the labels?

One call opens labelled data with the run's modality, holds out a test part (the data set's own
train/test split when the modality reports one, else by subject, else by recording), optionally keeps
a fraction of the training labels, and scores a protocol (linear probe, kNN, fine-tuning) on the
test part, ``repeats`` times with seeds ``seed, seed + 1, ...``. The result is written to
``RUN_DIR/eval/<protocol>-<init>-<features>.json`` and appended to ``RUN_DIR/eval/results.csv``.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..api import FEATURES, PretrainedEncoder, load_encoder
from ..checkpoint import atomic_write_text
from ..config import DEVICE_HELP, DEVICE_PATTERN, MAX_SEED, MAX_STEPS, build_dataclass, setting
from ..encoders import rebuild_encoder
from ..errors import ConfigError, DataError, unknown_name
from ..modality import Modality, Windows
from ..paths import refuse_special_file
from ..space import CONTRACT_KEY, check_common_channels
from .finetune import FinetuneOptions, finetune
from .metrics import METRICS
from .probes import DEFAULT_CS, DEFAULT_KS, DEFAULT_TEMPERATURE, ProbeResult, knn_probe, linear_probe
from .splits import (
    TIME_BLOCKS,
    block_split,
    fold_count,
    group_split,
    label_block_subset,
    label_fraction_subset,
    missing_classes,
)

PROTOCOLS = ("linear", "knn", "finetune")
#: Upper bound of ``repeats``. Each repeat runs the whole protocol again (a fine-tuning run each
#: time); papers report 3 to 10, and by 100 the standard error of the mean is a tenth of one
#: repeat's spread, so more is a typo (an extra zero) that would run for days, not a wish.
MAX_REPEATS = 100
INITS = ("pretrained", "teacher", "random", "supervised")
CSV_FIELDS = [
    "time", "run", "step", "protocol", "init", "features", "label_fraction", "repeats", "seed", "data",
    "split", "n_train", "n_test",
    *[name for metric in METRICS for name in (metric, f"{metric}_std")],
    "chosen",
]


@dataclass
class EvalConfig:
    """Settings of an evaluation (``--set eval.KEY=VALUE``; keyword arguments of :func:`evaluate`)."""

    # groups held out when the data has no test split of its own
    test_fraction: float = setting(0.2, gt=0, lt=1)
    # one recording of one subject: contiguous blocks of time it is cut into; repeat r holds out
    # fold (seed + r) mod round(1 / test_fraction) of them (splits.block_split)
    time_blocks: int = setting(TIME_BLOCKS, ge=2, le=10**7)
    val_fraction: float = setting(0.2, gt=0, lt=1)  # training groups held out to choose C or k
    cs: list[float] = setting(list(DEFAULT_CS), gt=0, min_items=1)  # linear probe: C candidates
    max_iter: int = setting(1000, ge=1, le=10**7)  # linear probe: L-BFGS iterations
    ks: list[int] = setting(list(DEFAULT_KS), ge=1, le=10**7, min_items=1)  # kNN: k candidates
    temperature: float = setting(DEFAULT_TEMPERATURE, gt=0)  # kNN: vote weights exp(cos / T)
    steps: int = setting(200, ge=1, le=MAX_STEPS)  # fine-tuning steps
    batch_size: int = setting(32, ge=1, le=2**20)  # fine-tuning batch size
    lr: float = setting(5e-4, gt=0)  # fine-tuning peak learning rate
    weight_decay: float = setting(0.05, ge=0)  # fine-tuning AdamW weight decay
    warmup_steps: int = setting(10, ge=0, le=MAX_STEPS)  # fine-tuning linear warm-up
    augment: bool = setting(True)  # fine-tuning: the modality's training augmentation
    embed_batch_size: int = setting(256, ge=1, le=2**20)  # windows per forward pass when extracting features
    # none: every encoder of the evaluation (pretrained and random init alike) runs without its position
    # embeddings (Encoder.without_positions), e.g. a composed run whose PART trained without them; auto: as built
    positions: str = setting("auto", choices=("auto", "none"))
    # features='grid': patches per axis (the Spatial Reasoning paper's 3 x 3) and their size as a
    # fraction of every axis (0: the run's training patch size, or 1/grid for a pretext without one)
    grid: int = setting(3, ge=1, le=32)
    grid_patch_fraction: float = setting(0.0, ge=0, le=1)
    device: str = setting("auto", pattern=DEVICE_PATTERN, pattern_help=DEVICE_HELP)
    progress: bool = setting(True)  # progress bars
    write: bool = setting(True)  # write the JSON and the CSV row into the run directory


@dataclass
class EvalResult:
    """What :func:`evaluate` returns (and writes as JSON).

    Attributes
    ----------
    metrics : list of dict
        Per repeat: ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``cohen_kappa``.
    mean, std : dict
        Over the repeats (``std`` is the sample standard deviation, 0 for one repeat).
    chosen : list of dict
        Per repeat: the hyper-parameters used (``C``, ``k``, fine-tuning settings) and how they
        were chosen.
    n_train : list of int
        Per repeat: the labelled training windows used (after ``label_fraction``).
    n_test : int
        Test windows (with folds over one recording: the distinct windows tested over all repeats).
    split : str
        How the test part was held out.
    folds : list of str
        Per repeat, with folds over one recording only (else empty): "fold i of F", its held-out
        blocks, its test windows and any class missing from one side.
    """

    run_dir: Path
    protocol: str
    init: str
    features: str
    label_fraction: float | int
    seed: int
    data: str
    split: str
    class_names: list[str]
    n_train: list[int]
    n_test: int
    metrics: list[dict[str, float]]
    mean: dict[str, float]
    std: dict[str, float]
    chosen: list[dict[str, Any]]
    folds: list[str] = field(default_factory=list)
    step: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    path: Path | None = None

    @property
    def repeats(self) -> int:
        return len(self.metrics)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["run_dir"] = str(self.run_dir)
        out["path"] = str(self.path) if self.path else None
        out["repeats"] = self.repeats
        return out

    def format_table(self) -> str:
        """A small table: one row per metric, mean ± std over the repeats."""
        fraction = self.label_fraction
        if isinstance(fraction, float):
            labels = "all training labels" if fraction == 1.0 else f"{fraction:g} of the training labels"
        else:
            labels = f"the training labels of {fraction} subject(s)"
        what = {"linear": "linear probe", "knn": "kNN probe", "finetune": "fine-tuning"}[self.protocol]
        model = {
            "pretrained": f"pretrained encoder (step {self.step})",
            "teacher": f"pretrained EMA teacher encoder (step {self.step})",
            "random": "randomly initialised encoder",
            "supervised": "supervised baseline (random init)",
        }[self.init]
        lines = [
            f"{what} · {model} · {self.features} features · {labels} · {self.repeats} repeat(s)",
            f"train {'/'.join(str(n) for n in sorted(set(self.n_train)))} windows · test {self.n_test} windows · "
            f"held out: {self.split}",
        ]
        lines += [f"  repeat {r}: {text}" for r, text in enumerate(self.folds)]
        width = max(len(m) for m in METRICS)
        lines.append(f"  {'metric':<{width}}  {'mean':>6}  {'std':>6}")
        for metric in METRICS:
            lines.append(f"  {metric:<{width}}  {self.mean[metric]:>6.3f}  ±{self.std[metric]:.3f}")
        return "\n".join(lines) + "\n"


# -- data ---------------------------------------------------------------------------------------
def _with_overrides(modality: Modality, overrides: dict[str, Any] | None) -> Modality:
    if not overrides:
        return modality
    values = {**dataclasses.asdict(modality.config), **overrides}
    changed = copy.copy(modality)  # keeps what restore() learned from the training data
    changed.config = build_dataclass(type(modality.config), values, "modality")
    return changed


def _subset(windows: Windows, index: np.ndarray) -> Windows:
    return windows.subset(index)  # onsets and durations go with their windows


def held_out_split(modality: Modality, data: Any, test_fraction: float, seed: int,
                   n_blocks: int = TIME_BLOCKS) -> tuple[Windows, Windows, str]:
    """Training and test windows of ``data``, and how they were split.

    The data set's own test split when the modality reports one
    (:meth:`relpos.Modality.eval_splits`), else a :func:`group_split` by subject, else by
    recording, else (one recording of one subject, e.g. a single night) a
    :func:`~relpos.evaluation.splits.block_split` by ``n_blocks`` contiguous blocks of time, of
    which fold ``seed mod round(1 / test_fraction)`` is held out. Windows of one subject,
    recording or block are never on both sides.
    """
    return _split(_read(modality, data), data, test_fraction, seed, n_blocks)


def _read(modality: Modality, data: Any) -> tuple[Windows, Windows] | Windows:
    splits = modality.eval_splits(data)
    return splits if splits is not None else modality.load(data)


def _is_one_recording(opened) -> bool:
    """Whether ``_split`` holds out blocks of time (one recording of one subject), so the split follows the seed."""
    if isinstance(opened, tuple):
        return False
    return all(len(np.unique(np.asarray(ids, dtype=str))) < 2 for ids in (opened.subjects, opened.groups))


def _split(opened, data: Any, test_fraction: float, seed: int,
           n_blocks: int = TIME_BLOCKS) -> tuple[Windows, Windows, str]:
    if isinstance(opened, tuple):
        return opened[0], opened[1], "the data set's own train/test split"
    windows = opened
    _require_labels(windows, data)
    for kind, ids in (("subject", windows.subjects), ("recording", windows.groups)):
        unique = np.unique(np.asarray(ids, dtype=str))
        if len(unique) >= 2:
            train_idx, test_idx = group_split(ids, test_fraction, seed)
            n_test = len(np.unique(np.asarray(ids, dtype=str)[test_idx]))
            return (_subset(windows, train_idx), _subset(windows, test_idx),
                    f"by {kind} ({n_test} of {len(unique)} {kind}s held out)")
    # One recording of one subject (a single night): hold out contiguous blocks of time, never
    # windows drawn at random, whose neighbours on the other side would share their state.
    train_idx, test_idx, blocks = block_split(len(windows), test_fraction, seed, n_blocks)
    n_folds = fold_count(test_fraction, n_blocks)
    held = np.unique(blocks[test_idx])
    recording = str(np.asarray(windows.groups, dtype=str)[0])
    train, test = _subset(windows, train_idx), _subset(windows, test_idx)
    # Each block becomes a group, so the probes' validation part is carved by block as well.
    train.groups = np.array([f"{recording}/block{b}" for b in blocks[train_idx]])
    test.groups = np.array([f"{recording}/block{b}" for b in blocks[test_idx]])
    # Folds are fixed, not redrawn until both sides hold every class (that would make the folds
    # overlap); a fold lacking a class says so instead.
    labels = windows.labels.numpy()
    labelled = labels >= 0
    lacking = missing_classes(np.where(labelled, labels, labels[labelled][0]),
                              train_idx[labelled[train_idx]], test_idx[labelled[test_idx]])
    names = list(windows.class_names or [])
    gaps = "; ".join(
        f"no {', '.join(names[c] if c < len(names) else str(c) for c in classes)} in the {side} part"
        for side, classes in lacking.items() if classes
    )
    return (train, test,
            f"by contiguous blocks of time within the one recording: fold {int(seed) % n_folds + 1} of "
            f"{n_folds} (blocks {', '.join(str(b) for b in held)} of 0-{n_blocks - 1} held out, "
            f"{len(test_idx)} test windows, the training windows right beside them left out)"
            + (f"; {gaps}" if gaps else ""))


def _source_text(data: Any) -> str:
    return str(data) if isinstance(data, (str, Path)) else type(data).__name__


def _require_labels(windows: Windows, data: Any) -> None:
    if windows.labels is None or not bool((windows.labels >= 0).any()):
        raise DataError(
            f"The data {_source_text(data)!r} has no labels, and evaluation needs labelled windows; pass "
            f"labelled data with --data, or the modality's label settings with --set modality.KEY=VALUE."
        )


def _trained_data_info(run_dir: str | Path) -> dict[str, Any]:
    """What the run's checkpoint recorded about its training data (``Windows.info``, extent, channels)."""
    from ..checkpoint import load_checkpoint
    from ..paths import path_kind

    if Path(run_dir).suffix == ".safetensors" and path_kind(run_dir) == "a file":  # an export: its metadata
        from ..api import read_metadata

        info = read_metadata(run_dir).get("data_info")
        return dict(info) if isinstance(info, dict) else {}
    state = load_checkpoint(run_dir, map_location="cpu", mmap=True)  # only the small entries are read
    info = state.get("data_info")
    return dict(info) if isinstance(info, dict) else {}


def _names_text(names: list[str]) -> str:
    shown = ", ".join(names[:8])
    return shown + (f" and {len(names) - 8} more" if len(names) > 8 else "") if names else "none"


def check_data_matches(trained_on: dict[str, Any], windows: Windows, modality: str, data: Any) -> None:
    """Refuse, in one sentence, data whose windows differ from the run's training windows.

    An encoder's patches, position embeddings and what its tokens mean are tied to what it was
    trained on: the extent of a window, and for signals its channels (by name, in order) and its
    sampling rate. Data that opens into other windows is data of another modality or set-up,
    even when the shapes happen to be compatible.

    Parameters
    ----------
    trained_on : dict
        The checkpoint's ``data_info`` (``extent``, ``channels``, and ``Windows.info``: ``ch_names``,
        ``sfreq``).
    windows : Windows
        The opened evaluation data.
    """
    where = _source_text(data)
    if (trained_on or {}).get(CONTRACT_KEY) is not None:  # a run of channel tokens takes other montages
        check_common_channels(trained_on, windows.info or {}, f"--data {where!r}")
        trained_on = {k: v for k, v in trained_on.items() if k != "ch_names"}
    extent = trained_on.get("extent")
    if isinstance(extent, list) and extent and [int(e) for e in extent] != list(windows.extent):
        raise DataError(
            f"--data {where!r} opens into {modality} windows of extent {list(windows.extent)}, but the run was "
            f"trained on windows of extent {[int(e) for e in extent]}; use data recorded like the run's "
            f"(the same modality settings), or evaluate a run trained on this data."
        )
    trained_names = [str(n) for n in trained_on.get("ch_names") or []]
    names = [str(n) for n in (windows.info or {}).get("ch_names") or []]
    if trained_names and names and trained_names != names:
        only_run = [n for n in trained_names if n not in names]
        only_data = [n for n in names if n not in trained_names]
        if not only_run and not only_data:
            detail = f"the same channels in another order ({_names_text(names)} instead of {_names_text(trained_names)})"
        else:
            detail = f"other channels (only in the run: {_names_text(only_run)}; only in the data: {_names_text(only_data)})"
        raise DataError(
            f"--data {where!r} has {detail}; the run's encoder was trained on channels "
            f"{_names_text(trained_names)}, in that order."
        )
    trained_rate, rate = trained_on.get("sfreq"), (windows.info or {}).get("sfreq")
    if isinstance(trained_rate, (int, float)) and isinstance(rate, (int, float)) and not np.isclose(trained_rate, rate):
        raise DataError(
            f"--data {where!r} opens at {rate:g} Hz, but the run was trained at {trained_rate:g} Hz; its "
            f"patches would span other lengths of time (resample the data, or evaluate a matching run)."
        )


def _labelled(windows: Windows) -> Windows:
    keep = np.flatnonzero(windows.labels.numpy() >= 0)
    return windows if len(keep) == len(windows) else _subset(windows, keep)


def _open(modality: Modality, data: Any, explicit: bool):
    """The data opened with the run's modality: its own (train, test) split, or all its windows."""
    try:
        opened = _read(modality, data)
    except DataError as exc:
        if not explicit:
            raise
        # The run fixes the modality, so data another modality reads fails here; the reader's own
        # sentence says why, so it comes first and no guess is added in front of it.
        raise DataError(
            f"--data {_source_text(data)!r} cannot be opened with the run's modality {modality.name!r}: "
            f"{str(exc).rstrip('.')}."
        ) from None
    return opened


def _labelled_split(opened, data: Any, test_fraction: float, seed: int, n_blocks: int):
    """:func:`_split`, keeping the labelled windows of each part."""
    train, test, how = _split(opened, data, test_fraction, seed, n_blocks)
    _require_labels(train, data)
    _require_labels(test, data)
    return _labelled(train), _labelled(test), how


# -- features -----------------------------------------------------------------------------------
def extract_features(encoder: PretrainedEncoder, x: torch.Tensor, features: str, batch_size: int,
                     progress: bool = False, desc: str = "features", grid: int = 3,
                     grid_patch_fraction: float = 0.0, positions: torch.Tensor | None = None) -> torch.Tensor:
    """Embed windows in batches (with a progress bar), as :meth:`PretrainedEncoder.embed` (``positions``:
    the windows' channel positions, for a run of channel tokens)."""
    if positions is not None:
        chunks = x.split(batch_size)
        places = positions.split(batch_size)
        return torch.cat([encoder.embed(chunk, features=features, batch_size=batch_size, positions=place)
                          for chunk, place in zip(chunks, places)])
    chunks = x.split(batch_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=desc, unit="batch", leave=False)
    return torch.cat([
        encoder.embed(chunk, features=features, batch_size=batch_size, grid=grid,
                      grid_patch_fraction=grid_patch_fraction or None)
        for chunk in chunks
    ])


# -- the API ------------------------------------------------------------------------------------
def evaluate(
    run_dir: str | Path,
    protocol: str | None = None,
    data: Any = None,
    features: str = "cls",
    label_fraction: float | int = 1.0,
    repeats: int = 1,
    init: str = "pretrained",
    seed: int = 0,
    modality_overrides: dict[str, Any] | None = None,
    **protocol_options: Any,
) -> EvalResult:
    """Evaluate the encoder of a finished run on labelled data.

    Parameters
    ----------
    run_dir : str or Path
        A run directory written by :func:`relpos.train`.
    protocol : {"linear", "knn", "finetune"}, optional
        Linear probe on frozen features, weighted kNN on frozen features, or fine-tuning end to
        end with a linear head. Default ``"linear"`` (``"finetune"`` for ``init="supervised"``).
    data : optional
        Labelled data for the run's modality (default: the data the run was trained on).
    features : {"cls", "mean", "both", "tokens", "grid"}
        The CLS token, the mean patch token, both concatenated, or the patch tokens concatenated in
        grid order (:func:`relpos.api.pool_tokens`).
    label_fraction : float or int
        A float in (0, 1]: the fraction of the training windows of each class that keep their
        labels. An int: all windows of that many training subjects. On one recording of one
        subject, whole blocks of time instead (:func:`~relpos.evaluation.splits.label_block_subset`):
        a float keeps ``round(fraction · B)`` of the ``B`` training blocks (more when needed to hold
        every class), an int that many blocks.
    repeats : int
        Repeats with seeds ``seed, seed + 1, ...`` (label subset, validation split, random
        weights, fine-tuning batches); the test part stays the same, except on one recording of one
        subject, where repeat ``r`` holds out fold ``(seed + r) mod F`` of the recording's
        ``eval.time_blocks`` blocks (``F = round(1 / eval.test_fraction)``), so ``F`` repeats test
        every block exactly once (:func:`~relpos.evaluation.splits.block_split`).
    init : {"pretrained", "teacher", "random", "supervised"}
        The run's pretrained weights (its student's, for a pretext with an EMA teacher); the EMA
        teacher's weights (``dino``, ``pw-self``: the DINO paper evaluates the teacher); the same
        architecture with random weights; or the
        supervised baseline (random weights trained on the labels, i.e. ``protocol="finetune"``).
    seed : int
        Seed of the held-out split and of the first repeat.
    modality_overrides : dict, optional
        Modality settings changed for evaluation (e.g. how labels are read).
    **protocol_options
        Fields of :class:`EvalConfig` (``steps=2``, ``cs=[0.1, 1]``, ``progress=False``, ...).

    Returns
    -------
    EvalResult
    """
    started = time.perf_counter()
    cfg = build_dataclass(EvalConfig, protocol_options, "eval")
    protocol = _check_arguments(protocol, init, features, repeats, seed)
    refuse_special_file(data)

    from ..distributed import resolve_device

    device = resolve_device(cfg.device, "eval.device")
    run_dir = Path(run_dir)
    pretrained = load_encoder(run_dir, device=device, weights="teacher" if init == "teacher" else "student")
    if cfg.write:  # found now, not after the whole evaluation has been computed
        check_results_writable(run_dir, result_name(protocol, init, features, label_fraction))
    pretrained.check_features(features)  # a CNN has no tokens to pool: say so before reading data
    modality = _with_overrides(pretrained.modality, modality_overrides)
    source = _source_of(run_dir, pretrained, modality, data)
    opened = _open(modality, source, data is not None)
    repeated = _Repeats(cfg, protocol, init, features, label_fraction, seed, device, opened, source)
    train, test, _ = repeated.split_for(seed)
    _check_split(protocol, pretrained, modality, source, train, test,
                 _trained_data_info(run_dir) if data is not None else None)
    _score_repeats(repeated, pretrained, modality, train, test, seed, repeats)
    result = repeated.result(run_dir, _source_text(source), started)
    if cfg.write:
        result.path = write_result(result)
    return result


def _check_arguments(protocol: str | None, init: str, features: str, repeats: int, seed: int) -> str:
    """The protocol :func:`evaluate` runs (its default for ``init`` when None), once the values of
    its arguments are checked."""
    if init not in INITS:
        raise ConfigError(unknown_name("init", init, INITS))
    if protocol is None:
        protocol = "finetune" if init == "supervised" else "linear"
    if protocol not in PROTOCOLS:
        raise ConfigError(unknown_name("protocol", protocol, PROTOCOLS))
    if init == "supervised" and protocol != "finetune":
        raise ConfigError(
            f"init 'supervised' trains the architecture from scratch on the labels, which is the finetune "
            f"protocol; got protocol {protocol!r} (use protocol 'finetune' or leave it out)."
        )
    if features not in FEATURES:
        raise ConfigError(f"Invalid value for 'features': allowed {', '.join(FEATURES)}, got {features!r}.")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= MAX_REPEATS:
        raise ConfigError(
            f"Invalid value for 'repeats': expected an integer from 1 to {MAX_REPEATS} (each repeat runs "
            f"the whole protocol again), got {repeats!r}."
        )
    # Repeat r uses seed + r, and NumPy's generators take seeds in [0, 2**32 - 1].
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED - (repeats - 1):
        raise ConfigError(
            f"Invalid value for 'seed': expected an integer from 0 to {MAX_SEED - (repeats - 1)} "
            f"(repeats use seed, seed + 1, ..., up to {MAX_SEED}), got {seed!r}."
        )
    return protocol


def _check_channels(channels: int, train: Windows, test: Windows, modality: Modality, source: Any) -> None:
    if train.positions is not None and test.positions is not None:
        return  # channel tokens (relpos.space): any number of channels, each placed by its position
    if train.channels != channels or test.channels != channels:
        raise DataError(
            f"The run's encoder takes {channels} channel(s) of {modality.name} data, but "
            f"{_source_text(source)!r} opens into {train.channels}; is it data of another modality or montage?"
        )


def _source_of(run_dir: Path, pretrained: PretrainedEncoder, modality: Modality, data: Any) -> Any:
    """The data an evaluation reads: ``data``, else the run's, else the modality's bundled sample."""
    source = data if data is not None else (pretrained.config.data or modality.default_data())
    if source is None:
        raise DataError(
            f"The run in {str(run_dir)!r} records no data and modality {modality.name!r} ships none; pass --data."
        )
    return source


def _check_split(protocol: str, pretrained: PretrainedEncoder, modality: Modality, source: Any, train: Windows,
                 test: Windows, trained_on: dict[str, Any] | None) -> None:
    """Refuse, before anything is scored, a split the run's encoder cannot be evaluated on; ``trained_on``
    (the run's ``data_info``, when the evaluation reads other data than the run's) is checked against it."""
    if protocol == "finetune" and train.positions is not None:
        raise ConfigError(
            "Fine-tuning reads a window's tokens in grid order, which windows of channel tokens (modality.space) "
            "do not have; evaluate them with the linear or knn protocol."
        )
    _check_channels(pretrained.encoder.in_channels, train, test, modality, source)
    if trained_on is not None:
        for windows in (train, test):
            check_data_matches(trained_on, windows, modality.name, source)


def _score_repeats(repeated: "_Repeats", pretrained: PretrainedEncoder, modality: Modality, train: Windows,
                   test: Windows, seed: int, repeats: int) -> None:
    """Score ``repeats`` repeats from ``seed`` on, leaving the run's weights as they were loaded."""
    repeated.use(PretrainedEncoder(pretrained.encoder, modality, pretrained.config, pretrained.step,
                                   pretrained.grid_patch_fraction), train, test)
    for repeat in range(repeats):
        repeated.score(seed + repeat)
    repeated.restore_pretrained()


class _Repeats:
    """The repeats of one evaluation, what they share and what they scored.

    Shared: the held-out splits (one recording: one fold of blocks per repeat, else one split for
    all), the pretrained weights (restored before each repeat, since fine-tuning changes them in
    place) and the frozen features of the pretrained encoder, computed once per split.
    """

    def __init__(self, cfg: EvalConfig, protocol: str, init: str, features: str, label_fraction: float | int,
                 seed: int, device: torch.device, opened: tuple[Windows, Windows] | Windows, source: Any):
        self.cfg, self.protocol, self.init, self.features = cfg, protocol, init, features
        self.label_fraction, self.seed, self.device = label_fraction, seed, device
        self.opened, self.source = opened, source
        self.from_run = init in ("pretrained", "teacher")
        # One recording is split by folds of blocks, repeat r holding out fold seed + r, so the repeats
        # cover the recording; every other split keeps its test part across repeats.
        self.by_fold = _is_one_recording(opened)
        self.splits: dict[int, tuple[Windows, Windows, str]] = {}
        self.cached: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.options = FinetuneOptions(
            steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
            warmup_steps=cfg.warmup_steps, augment=cfg.augment,
        )
        # What the repeats scored, in order; ``how`` and ``n_test`` are those of the last one.
        self.metrics: list[dict[str, float]] = []
        self.chosen: list[dict[str, Any]] = []
        self.n_train: list[int] = []
        self.folds: list[str] = []
        self.how, self.n_test = "", 0
        #: Per repeat: the test labels and the predictions (the card's bootstrap over test windows).
        self.truths: list[np.ndarray] = []
        self.predictions: list[np.ndarray] = []

    def split_for(self, repeat_seed: int) -> tuple[Windows, Windows, str]:
        cfg = self.cfg
        key = repeat_seed % fold_count(cfg.test_fraction, cfg.time_blocks) if self.by_fold else self.seed
        if key not in self.splits:
            self.splits[key] = _labelled_split(self.opened, self.source, cfg.test_fraction,
                                               key if self.by_fold else self.seed, cfg.time_blocks)
        return self.splits[key]

    def use(self, pretrained: PretrainedEncoder, train: Windows, test: Windows) -> None:
        """Evaluate ``pretrained``, over the classes of the first split's ``train`` and ``test``."""
        self.pretrained = pretrained
        self.encoder_args = pretrained.encoder.init_args()
        self.pretrained_state = {k: v.detach().clone() for k, v in pretrained.encoder.state_dict().items()}
        self.class_names = list(train.class_names or test.class_names)
        # Every fold of one recording is scored over the recording's classes, not only its own.
        all_labels = [self.opened.labels.numpy()] if self.by_fold else [train.labels.numpy(), test.labels.numpy()]
        self.n_classes = max(len(self.class_names), max(int(y.max()) for y in all_labels) + 1)

    def encoder_for(self, repeat_seed: int) -> PretrainedEncoder:
        pretrained = self.pretrained
        if self.from_run:
            pretrained.encoder.load_state_dict(self.pretrained_state)  # fine-tuning changes it in place
            pretrained.encoder.positions_dropped = self.cfg.positions == "none"
            return pretrained
        torch.manual_seed(repeat_seed)
        fresh = rebuild_encoder(self.encoder_args).to(self.device).eval()
        fresh.positions_dropped = self.cfg.positions == "none"
        return PretrainedEncoder(fresh, pretrained.modality, pretrained.config, 0, pretrained.grid_patch_fraction)

    def frozen_features(self, repeat_seed: int, train: Windows, test: Windows,
                        how: str) -> tuple[torch.Tensor, torch.Tensor]:
        if self.from_run and how in self.cached:
            return self.cached[how]
        encoder, cfg = self.encoder_for(repeat_seed), self.cfg
        feats = (
            extract_features(encoder, train.x, self.features, cfg.embed_batch_size, cfg.progress, "train features",
                             cfg.grid, cfg.grid_patch_fraction, positions=train.positions),
            extract_features(encoder, test.x, self.features, cfg.embed_batch_size, cfg.progress, "test features",
                             cfg.grid, cfg.grid_patch_fraction, positions=test.positions),
        )
        if self.from_run:
            self.cached[how] = feats
        return feats

    def labelled_subset(self, train: Windows, y_train: np.ndarray, repeat_seed: int) -> tuple[np.ndarray, str]:
        """The training windows that keep their labels, and (one recording) which blocks they are from."""
        label_fraction = self.label_fraction
        if isinstance(label_fraction, float) and label_fraction == 1.0:
            return np.arange(len(y_train)), ""
        if self.by_fold:
            # One recording: labels from a few whole blocks of time, as an expert would score them.
            keep = label_block_subset(y_train, train.groups, label_fraction, repeat_seed, self.class_names)
            labelled_blocks = sorted({int(g.rsplit("/block", 1)[1]) for g in np.asarray(train.groups)[keep]})
            return keep, f"; labels from blocks {', '.join(map(str, labelled_blocks))}"
        return label_fraction_subset(y_train, train.subjects, label_fraction, repeat_seed, self.class_names), ""

    def score(self, repeat_seed: int) -> None:
        """Run the protocol once, with the split, label subset and weights of ``repeat_seed``."""
        cfg = self.cfg
        train, test, how = self.split_for(repeat_seed)
        y_train, y_test = train.labels.numpy().astype(np.int64), test.labels.numpy().astype(np.int64)
        keep, blocks = self.labelled_subset(train, y_train, repeat_seed)
        if self.by_fold:
            self.folds.append(how.split(": ", 1)[1] + blocks)
        groups = np.asarray(train.subjects, dtype=str)[keep]
        if len(np.unique(groups)) < 2:
            groups = np.asarray(train.groups, dtype=str)[keep]
        result: ProbeResult
        if self.protocol == "finetune":
            encoder = self.encoder_for(repeat_seed).encoder
            result = finetune(
                encoder, self.pretrained.modality, train.x[torch.as_tensor(keep)], y_train[keep], test.x, y_test,
                repeat_seed, self.options, self.features, self.n_classes, self.device, cfg.progress, cfg.grid,
                cfg.grid_patch_fraction or self.pretrained.grid_patch_fraction,
            )
        else:
            train_feats, test_feats = self.frozen_features(repeat_seed, train, test, how)
            probe_args = dict(seed=repeat_seed, groups=groups, val_fraction=cfg.val_fraction, n_classes=self.n_classes)
            if self.protocol == "linear":
                result = linear_probe(train_feats[keep], y_train[keep], test_feats, y_test, cs=cfg.cs,
                                      max_iter=cfg.max_iter, **probe_args)
            else:
                result = knn_probe(train_feats[keep], y_train[keep], test_feats, y_test, ks=cfg.ks,
                                   temperature=cfg.temperature, **probe_args)
        self.metrics.append(result.metrics)
        self.truths.append(y_test)
        self.predictions.append(np.asarray(result.predictions, dtype=np.int64))
        self.chosen.append({**result.chosen, **({"validation_scores": result.validation} if result.validation else {})})
        self.n_train.append(int(len(keep)))
        self.how, self.n_test = how, len(y_test)

    def restore_pretrained(self) -> None:
        if self.from_run:
            self.pretrained.encoder.load_state_dict(self.pretrained_state)

    def result(self, run_dir: Path, data: str, started: float) -> EvalResult:
        """The repeats' scores with their means and spreads, and how they were obtained."""
        cfg = self.cfg
        table = np.array([[m[name] for name in METRICS] for m in self.metrics])
        std = table.std(axis=0, ddof=1) if len(self.metrics) > 1 else np.zeros(len(METRICS))
        return EvalResult(
            run_dir=run_dir, protocol=self.protocol, init=self.init, features=self.features,
            label_fraction=self.label_fraction, seed=self.seed, data=data, class_names=self.class_names,
            n_train=self.n_train,
            split=(f"by contiguous blocks of time within the one recording ({cfg.time_blocks} blocks dealt into "
                   f"{fold_count(cfg.test_fraction, cfg.time_blocks)} folds, the training windows beside held-out "
                   f"blocks left out)") if self.by_fold else self.how,
            n_test=sum(len(self.splits[key][1]) for key in self.splits) if self.by_fold else self.n_test,
            folds=self.folds, metrics=self.metrics,
            mean={name: float(v) for name, v in zip(METRICS, table.mean(axis=0))},
            std={name: float(v) for name, v in zip(METRICS, std)},
            chosen=self.chosen, step=self.pretrained.step if self.from_run else 0,
            options={k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("progress", "write")},
            elapsed_s=time.perf_counter() - started,
        )


def result_name(protocol: str, init: str, features: str, label_fraction: float | int) -> str:
    """``linear-pretrained-cls``, with ``-fraction0.1`` or ``-subjects5`` for a label subset."""
    name = f"{protocol}-{init}-{features}"
    if isinstance(label_fraction, float) and label_fraction != 1.0:
        name += f"-fraction{label_fraction:g}"
    elif not isinstance(label_fraction, float):
        name += f"-subjects{label_fraction}"
    return name


#: What a message about results that cannot be written suggests.
_WRITE_HINT = "move it out of the way or fix its permissions, or pass --set eval.write=false to print the results without writing them"


def results_folder(run: str | Path) -> Path:
    """Where :func:`evaluate` writes: ``RUN/eval`` for a run directory or its ``checkpoints/last.pt``,
    and ``NAME-eval`` beside any other file (an export ``encoder.safetensors`` gets ``encoder-eval``)."""
    from ..paths import path_kind

    run = Path(run)
    if path_kind(run) != "a file":
        return run / "eval"
    if run.parent.name == "checkpoints":
        return run.parent.parent / "eval"
    return run.with_name(f"{run.stem}-eval")


def check_results_writable(run: str | Path, name: str) -> None:
    """Raise :class:`~relpos.errors.OutputError` unless the results of ``run`` named ``name`` can be written."""
    from ..paths import check_output_file

    folder = results_folder(run)
    for path in (folder / f"{name}.json", folder / "results.csv"):
        check_output_file(path, "the evaluation results", _WRITE_HINT)


def write_result(result: EvalResult) -> Path:
    """Write ``eval/<name>.json`` and append a row to ``eval/results.csv``; return the JSON path."""
    from ..paths import write_failure

    folder = results_folder(result.run_dir)
    path = folder / f"{result_name(result.protocol, result.init, result.features, result.label_fraction)}.json"
    result.path = path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(result.to_dict(), indent=2) + "\n", path)
    except OSError as exc:
        raise write_failure(exc, "the evaluation results", path, _WRITE_HINT) from None
    row = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "run": str(result.run_dir), "step": result.step,
        "protocol": result.protocol, "init": result.init, "features": result.features,
        "label_fraction": result.label_fraction, "repeats": result.repeats, "seed": result.seed,
        "data": result.data, "split": result.split, "n_train": int(np.mean(result.n_train)),
        "n_test": result.n_test, "chosen": json.dumps(result.chosen),
    }
    for metric in METRICS:
        row[metric] = f"{result.mean[metric]:.6f}"
        row[f"{metric}_std"] = f"{result.std[metric]:.6f}"
    csv_path = folder / "results.csv"
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS)
    if not csv_path.exists():
        writer.writeheader()
    writer.writerow(row)
    try:
        with open(csv_path, "a", newline="") as fh:
            fh.write(text.getvalue())  # one write: a failure leaves no half row
    except OSError as exc:
        raise write_failure(exc, "the evaluation results", csv_path, _WRITE_HINT) from None
    return path

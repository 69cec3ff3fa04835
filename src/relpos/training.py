"""The training loop: one loop for every pretext.

AdamW with decoupled weight decay (not on biases, norms and tokens), linear warm-up then cosine
decay (precomputed per step), gradient clipping, a stop with a message on a non-finite loss, CSV +
TensorBoard logs, atomic checkpoints every ``train.ckpt_every`` steps and exact resume: the model,
optimiser, step and every random stream are restored, so a resumed CPU run reproduces the losses of
an uninterrupted one bit for bit.
"""

from __future__ import annotations

import csv
import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .checkpoint import (
    atomic_torch_save,
    atomic_write_text,
    checkpoint_path,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from .config import RunConfig, TrainConfig, config_from_dict
from .errors import ConfigError, DataError, RelposError
from .modality import Modality, Windows
from .plugins import get_modality, get_pretext
from .pretext import Pretext

METRIC_FIELDS = ["step", "loss", "lr", "samples_per_s"]


class TrainingError(RelposError):
    """Training had to stop (e.g. the loss became NaN or infinite)."""


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path
    step: int
    loss: float
    pretext: Pretext
    config: RunConfig


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"Invalid value for 'train.device': {name!r}; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"'train.device' is {name!r} but no CUDA GPU is available; use cpu or auto.")
    return device


def lr_schedule(cfg: TrainConfig) -> np.ndarray:
    """Learning rate for each step: linear warm-up from 0, then cosine decay to ``min_lr``."""
    steps = np.arange(cfg.steps, dtype=np.float64)
    warm = min(cfg.warmup_steps, cfg.steps)
    lrs = np.empty(cfg.steps)
    if warm:
        lrs[:warm] = cfg.lr * (steps[:warm] + 1) / warm
    rest = cfg.steps - warm
    if rest:
        progress = np.arange(rest) / max(rest, 1)
        lrs[warm:] = cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + np.cos(math.pi * progress))
    return lrs


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or name.endswith(".bias") or "token" in name or "pos_embed" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_modality(config: RunConfig) -> Modality:
    return get_modality(config.modality)(config.modality_config)


def open_data(modality: Modality, source: Any) -> Windows:
    """Open training data with the modality, or its bundled sample when ``source`` is None."""
    if source is None:
        source = modality.default_data()
        if source is None:
            raise DataError(
                f"Modality {modality.name!r} ships no default data; pass --data PATH."
            )
    windows = source if isinstance(source, Windows) else modality.load(source)
    if len(windows) == 0:
        raise DataError(f"No windows could be made from {str(source)!r}.")
    patch = modality.patch_size()
    if any(e < p for e, p in zip(windows.extent, patch)):
        raise DataError(
            f"Samples of extent {list(windows.extent)} are smaller than the patch size "
            f"{[round(p, 3) for p in patch]} ({', '.join(modality.axes)})."
        )
    return windows


def build_pretext(config: RunConfig, modality: Modality, windows: Windows) -> Pretext:
    torch.manual_seed(config.train.seed)
    return get_pretext(config.pretext)(config.pretext_config, modality, config.encoder, windows)


class _MetricsLog:
    """metrics.csv (append-only, flushed each row) plus optional TensorBoard."""

    def __init__(self, run_dir: Path, fields: list[str], start_step: int, tensorboard: bool):
        self.path = run_dir / "metrics.csv"
        self.fields = fields
        if start_step > 0 and self.path.exists():
            # Drop rows a killed run logged after its last checkpoint; they are replayed exactly.
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= start_step]
            with open(self.path, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
        elif not self.path.exists() or start_step == 0:
            with open(self.path, "w", newline="") as fh:
                csv.DictWriter(fh, fieldnames=fields).writeheader()
        self.fh = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=fields, extrasaction="ignore")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)
            except ImportError:
                print("relpos: tensorboard is not installed; logging to metrics.csv only.", file=sys.stderr)

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow(row)
        self.fh.flush()
        if self.tb is not None:
            for key, value in row.items():
                if key != "step":
                    self.tb.add_scalar(f"train/{key}", value, row["step"])

    def close(self) -> None:
        self.fh.close()
        if self.tb is not None:
            self.tb.close()


def train(
    config: RunConfig,
    resume: bool = False,
    data: Any = None,
) -> TrainResult:
    """Pretrain an encoder.

    Parameters
    ----------
    config : RunConfig
        The resolved configuration (see :func:`relpos.config.resolve_config`).
    resume : bool
        Continue the run in ``config.run_dir()`` from its last checkpoint. The checkpoint's own
        configuration is used, except ``train.steps``, ``train.device`` and ``train.progress``.
    data : optional
        In-memory data for the modality (instead of ``config.data``).

    Returns
    -------
    TrainResult
    """
    run_dir = config.run_dir()
    ckpt_file = checkpoint_path(run_dir)
    state = None
    if resume:
        if not ckpt_file.is_file():
            raise RelposError(
                f"Cannot resume: no checkpoint at {str(ckpt_file)!r}; start the run without --resume."
            )
        state = load_checkpoint(ckpt_file)
        saved = config_from_dict(state["config"])
        saved.train.steps = config.train.steps
        saved.train.device = config.train.device
        saved.train.progress = config.train.progress
        saved.out = str(run_dir)
        config = saved
        config.train.validate()
        if state["step"] >= config.train.steps:
            raise RelposError(
                f"The run in {str(run_dir)!r} already finished {state['step']} steps "
                f"(train.steps={config.train.steps}); raise --steps to train longer."
            )
    elif ckpt_file.exists():
        raise RelposError(
            f"Run directory {str(run_dir)!r} already holds a checkpoint; pass --resume to continue "
            f"it, or --out DIR for a new run."
        )

    cfg = config.train
    device = resolve_device(cfg.device)
    # Everything that can fail on bad input happens before the run directory is created.
    modality = build_modality(config)
    windows = open_data(modality, data if data is not None else config.data)
    pretext = build_pretext(config, modality, windows).to(device)
    optimizer = torch.optim.AdamW(_param_groups(pretext, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95))
    lrs = lr_schedule(cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    start = 0
    if state is not None:
        pretext.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], generator)
        start = int(state["step"])

    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RelposError(
            f"Cannot create the run directory {str(run_dir)!r}: {exc.strerror or exc}; choose another --out."
        ) from None
    atomic_write_text(config.to_yaml(), run_dir / "config.yaml")
    log = _MetricsLog(run_dir, METRIC_FIELDS + list(pretext.log_keys), start, cfg.tensorboard)
    use_amp = cfg.amp and device.type == "cuda"
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else (lambda: nullcontext())
    )

    def save(step: int) -> None:
        atomic_torch_save(
            {
                "step": step,
                "model": pretext.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": rng_state(generator),
                "config": config.to_dict(),
                "encoder": pretext.encoder.init_args(),
                "data_info": {"extent": list(windows.extent), "channels": windows.channels, **_jsonable(windows.info)},
                "relpos_version": __version__,
            },
            ckpt_file,
        )

    progress = None
    if cfg.progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=cfg.steps, initial=start, desc=f"{config.pretext} on {config.modality}", unit="step")

    pretext.train()
    n = len(windows)
    loss_value = float("nan")
    t_last, samples = time.perf_counter(), 0
    try:
        for step in range(start + 1, cfg.steps + 1):
            for group in optimizer.param_groups:
                group["lr"] = float(lrs[step - 1])
            # The pretext's schedules are functions of (steps taken, total), so resume stays exact.
            pretext.set_progress(step - 1, cfg.steps)
            decay = pretext.weight_decay_at(step - 1, cfg.steps)
            if decay is not None:
                optimizer.param_groups[0]["weight_decay"] = float(decay)  # _param_groups: decayed first
            index = torch.randint(0, n, (cfg.batch_size,), generator=generator)
            x = modality.augment(windows.x[index], generator)
            batch = {"x": x.to(device, non_blocking=True)}
            with autocast():
                loss, extra = pretext(batch, generator)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise TrainingError(
                    f"The loss became {loss_value} at step {step}; training stopped. The last good "
                    f"checkpoint is in {str(ckpt_file)!r}. Try a lower train.lr (now {cfg.lr}) or "
                    f"check the data for NaN values."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(pretext.parameters(), cfg.grad_clip)
            optimizer.step()
            pretext.after_step(step)
            samples += cfg.batch_size
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{loss_value:.4f}")
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                row = {"step": step, "loss": loss_value, "lr": float(lrs[step - 1]),
                       "samples_per_s": samples / max(now - t_last, 1e-9)}
                row.update({k: float(v) for k, v in extra.items()})
                log.write(row)
                t_last, samples = now, 0
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                save(step)
    finally:
        if progress is not None:
            progress.close()
        log.close()
    return TrainResult(run_dir=run_dir, step=cfg.steps, loss=loss_value, pretext=pretext, config=config)


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in info.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
            out[key] = list(value)
    return out

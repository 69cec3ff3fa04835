"""The optimiser's settings that the training loop and fine-tuning share: the learning-rate schedule
and which parameters are decayed."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .config import TrainConfig


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


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW's two groups: the decayed parameters first (matrices), then those never decayed
    (biases, norms, tokens and position embeddings) at weight decay 0."""
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

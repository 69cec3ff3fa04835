"""Fine-tuning: the encoder end to end with a linear head, and the supervised-from-scratch baseline.

The windows are tokenised on the regular patch grid, as :meth:`relpos.PretrainedEncoder.embed`
does. An encoder pretrained without position embeddings (PART) gets learnable ones, one per grid
patch, added to the patch tokens (the PART paper fine-tunes this way). The head reads the CLS token,
the mean patch token, or both. AdamW with the pretraining loop's warm-up + cosine schedule,
no weight decay on biases, norms, tokens and position embeddings, and gradient clipping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..api import DEFAULT_GRID, feature_width, grid_features, grid_patch_boxes, pool_tokens
from ..config import TrainConfig
from ..encoders.vit import PatchEncoder
from ..encoders import rebuild_encoder
from ..extraction import extract_patches
from ..geometry import Boxes
from ..modality import Modality
from ..sampling import grid_boxes
from ..errors import TrainingError
from ..optim import lr_schedule, param_groups
from .metrics import classification_metrics
from .probes import ProbeResult


@dataclass
class FinetuneOptions:
    """Hyper-parameters of fine-tuning (the ``eval.*`` settings of the same names)."""

    steps: int = 200
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 10
    grad_clip: float = 1.0
    augment: bool = True  # the modality's training augmentation (e.g. image flips)


class FinetuneModel(nn.Module):
    """Encoder on the patch grid + optional learnable position embeddings + linear head."""

    def __init__(
        self, encoder: PatchEncoder, modality: Modality, extent, n_classes: int, features: str = "cls",
        grid: int = DEFAULT_GRID, grid_patch_fraction: float | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.features = features
        self.grid = int(grid)
        self.grid_patch_fraction = float(grid_patch_fraction or 1.0 / grid)
        if features == "grid" or not getattr(encoder, "per_token_outputs", True):
            # Whole inputs in, one vector each (a CNN; or the Spatial Reasoning grid features):
            # no patch grid of the encoder's own and no position embeddings to add.
            self.whole_inputs = True
            self.pos_embed = None
            n_vectors = len(grid_patch_boxes(tuple(extent), self.grid, self.grid_patch_fraction).center) + 1
            self.head = nn.Linear(int(encoder.feature_dim) * (n_vectors if features == "grid" else 1), n_classes)
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
            return
        self.whole_inputs = False
        self.patch_size = modality.patch_size()
        self.features = features
        grid = grid_boxes(tuple(extent), self.patch_size)
        self.register_buffer("grid_center", grid.center, persistent=False)
        self.register_buffer("grid_size", grid.size, persistent=False)
        self.pos_embed = None
        if encoder.config.pos_embed == "none":
            self.pos_embed = nn.Parameter(torch.zeros(1, len(grid.center), encoder.dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        width = feature_width(encoder.dim, len(grid.center), features)
        self.head = nn.Linear(width, n_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.whole_inputs:
            if self.features == "grid":
                return self.head(grid_features(self.encoder, x, self.grid, self.grid_patch_fraction))
            return self.head(self.encoder.embed_inputs(x))
        batch = len(x)
        center = self.grid_center.expand(batch, -1, -1)
        size = self.grid_size.expand(batch, -1, -1)
        patches = extract_patches(x, Boxes(center, size), self.encoder.patch_shape)
        tokens = self.encoder(patches, center, extra_pos=self.pos_embed)
        return self.head(pool_tokens(tokens, self.features))


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int) -> np.ndarray:
    model.eval()
    out = [model(chunk.to(device)).argmax(1).cpu() for chunk in x.split(batch_size)]
    return torch.cat(out).numpy().astype(np.int64)


def finetune(
    encoder: PatchEncoder,
    modality: Modality,
    train_x: torch.Tensor,
    train_y,
    test_x: torch.Tensor,
    test_y,
    seed: int = 0,
    options: FinetuneOptions | None = None,
    features: str = "cls",
    n_classes: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    grid: int = DEFAULT_GRID,
    grid_patch_fraction: float | None = None,
) -> ProbeResult:
    """Fine-tune ``encoder`` (modified in place) with a linear head, then predict the test windows.

    Parameters
    ----------
    encoder : PatchEncoder
        Pretrained (or freshly initialised) encoder.
    modality : Modality
        Gives the patch size and the training augmentation.
    train_x, test_x : torch.Tensor
        ``(N, C, *extent)`` windows.
    train_y, test_y : array-like of int
        Class indices; ``test_y`` only scores the final predictions.
    seed : int
        Seed of the head, the position embeddings, the batches and the augmentation.
    options : FinetuneOptions
        Steps, batch size, learning rate, ...
    features : {"cls", "mean", "both", "tokens", "grid"}
        What the head reads (see :meth:`relpos.PretrainedEncoder.embed`).
    grid, grid_patch_fraction
        Patches per axis and their size (a fraction of every axis) for ``features="grid"``.

    Returns
    -------
    ProbeResult
        ``chosen`` holds the fine-tuning settings and ``pos_embed`` (``learned`` when position
        embeddings were added).
    """
    options = options or FinetuneOptions()
    device = torch.device(device)
    y_train = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    y_test = np.asarray(test_y, dtype=np.int64)
    n_classes = n_classes or int(max(int(y_train.max()), int(y_test.max()))) + 1
    torch.manual_seed(seed)
    model = FinetuneModel(
        encoder, modality, train_x.shape[2:], n_classes, features, grid, grid_patch_fraction
    ).to(device)
    schedule = lr_schedule(
        TrainConfig(steps=options.steps, lr=options.lr, warmup_steps=options.warmup_steps, min_lr=options.lr * 1e-3)
    )
    optimizer = torch.optim.AdamW(param_groups(model, options.weight_decay), lr=options.lr, betas=(0.9, 0.999))
    generator = torch.Generator().manual_seed(seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=options.steps, desc="fine-tuning", unit="step", leave=False)
    model.train()
    try:
        for step in range(options.steps):
            for group in optimizer.param_groups:
                group["lr"] = float(schedule[step])
            index = torch.randint(0, len(train_x), (min(options.batch_size, len(train_x)),), generator=generator)
            x = train_x[index]
            if options.augment:
                x = modality.augment(x, generator)
            loss = nn.functional.cross_entropy(model(x.to(device)), y_train[index].to(device))
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise TrainingError(
                    f"The fine-tuning loss became {loss_value} at step {step + 1}; try a lower eval.lr "
                    f"(now {options.lr})."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if options.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
            optimizer.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}")
    finally:
        if bar is not None:
            bar.close()
    predictions = _predict(model, test_x, device, max(options.batch_size, 256))
    chosen: dict[str, Any] = {
        "steps": options.steps, "batch_size": options.batch_size, "lr": options.lr,
        "weight_decay": options.weight_decay, "pos_embed": (
            "learned" if model.pos_embed is not None else "none" if model.whole_inputs else "sincos"
        ),
    }
    return ProbeResult(classification_metrics(y_test, predictions, n_classes), predictions, chosen)


def supervised(encoder_args: dict, modality: Modality, train_x, train_y, test_x, test_y, seed: int = 0,
               **kwargs) -> ProbeResult:
    """The supervised baseline: the same architecture from random weights, fine-tuned the same way.

    ``encoder_args`` is :meth:`PatchEncoder.init_args` of the pretrained encoder; other arguments
    are those of :func:`finetune`.
    """
    torch.manual_seed(seed)
    return finetune(rebuild_encoder(encoder_args), modality, train_x, train_y, test_x, test_y, seed, **kwargs)

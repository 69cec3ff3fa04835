"""DropPos: reconstruct dropped positions (Wang et al., "DropPos: Pre-training vision transformers by reconstructing dropped positions").

A baseline of the PART paper's tables (official code: Haochen-Wang409/DropPos), on grid boxes so it
trains on any number of axes:

1. **Patch masking** (MAE's): ``N − int(N · (1 − mask_ratio))`` of the N grid patches are removed
   per sample (0.75), the official code's count (:func:`relpos.masking.mae_masked_count`); the
   encoder sees only the V visible ones.
2. **Position dropping**: of the V visible patches, ``V − int(V · (1 − pos_drop_ratio))`` (0.75;
   the same rule, as the official code draws both masks with one function; at least one, and
   possibly all of them) get a learnable position mask token in place of their sin-cos position embedding (the encoder's
   ``pos_masked`` zeroes it and ``extra_pos`` adds the token); the others keep theirs.
3. A small decoder (:class:`relpos_plugins.mae.TokenDecoder`: its own sin-cos positions for the
   kept ones, its own position mask token for the dropped ones) runs over the visible tokens, and a
   linear layer classifies each position-dropped token among all N grid positions.
4. **Position smoothing** (``smoothing``): the target of a patch at grid cell i is the soft label
   ``w_ij ∝ exp(−d(i, j)² / σ²)`` over the N cells j, d the Euclidean distance in grid cells; σ
   decays linearly from ``sigma_start`` to ``sigma_end`` over the run (a pure function of the step,
   so resume is exact); σ = 0, or smoothing off, is the one-hot label of cell i.
5. **Attentive reconstruction** (``attentive``): each dropped token's cross-entropy is weighted by
   ``softmax_j(cos(CLS, x_j) / τ)`` (τ = ``attentive_temperature``, 0.1) of its patch j, computed
   without gradient by the same encoder on the whole, unmasked input with every position visible
   (no teacher). As in the official code (``forward_drop_pos_loss``), the weights are renormalised
   over each sample's *visible* patches, multiplied by the dropped-position mask, and the loss is
   ``Σ w · CE / Σ w`` over the whole batch: a sample whose dropped tokens carry more of its
   attention counts more. Off, the loss is the plain mean over the batch's dropped tokens.

Each auxiliary part is switchable (``mask_ratio: 0``, ``smoothing: false``, ``attentive: false``),
as in the paper's ablation. ``encoder.pos_mask_ratio`` must stay 0: this pretext drops positions
itself, and the encoder's own mask would also drop them in fine-tuning.

The trivial baseline (``loss_baseline``) is log N, the cross-entropy of a uniform guess over the N
positions (against any target distribution, smoothed or not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from relpos import hookimpl
from relpos.blocks import TEMPERATURE_RANGE
from relpos.config import check_fields, setting
from relpos.masking import mae_masked_count
from relpos.errors import ConfigError
from relpos.extraction import extract_patches
from relpos.trivial_baseline import BASELINE_KEY

from relpos_plugins.mae import (
    GridPretext,
    TokenDecoder,
    check_decoder_heads,
    random_masking,
    random_subset_mask,
    take_tokens,
)


@dataclass
class DropPosConfig:
    """Options of the DropPos pretext."""

    # fraction of the grid patches hidden from the encoder (0 turns patch masking off)
    mask_ratio: float = setting(0.75, ge=0, lt=1)
    # fraction of the visible patches whose position embedding is replaced by the mask token
    pos_drop_ratio: float = setting(0.75, ge=0, lt=1)
    smoothing: bool = setting(True)  # position smoothing with soft labels
    sigma_start: float = setting(1.0, ge=0, le=1e6)  # σ in grid cells at the first step
    sigma_end: float = setting(0.0, ge=0, le=1e6)  # σ at the last step
    attentive: bool = setting(True)  # attentive reconstruction
    attentive_temperature: float = setting(0.1, **TEMPERATURE_RANGE)  # in [0.001, 10]
    decoder_dim: int = setting(96, ge=1, le=65536)
    decoder_depth: int = setting(2, ge=1, le=1024)
    decoder_heads: int = setting(3, ge=1, le=65536)  # must divide decoder_dim

    def validate(self) -> None:
        check_fields(self, "pretext")
        check_decoder_heads(self)


def grid_coordinates(centers: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Integer grid cell of each grid box, ``(N, D)`` float, from centres and sizes ``(N, D)``."""
    return torch.round(centers / size - 0.5)


def position_soft_labels(coords: torch.Tensor, sigma: float) -> torch.Tensor:
    """DropPos's smoothed position targets: row i is ``w_ij ∝ exp(−‖c_i − c_j‖² / σ²)``.

    Parameters
    ----------
    coords : torch.Tensor
        ``(N, D)`` grid cell of each position (row-major order), in cells.
    sigma : float
        Smoothing width in grid cells; 0 gives the one-hot labels.

    Returns
    -------
    torch.Tensor
        ``(N, N)``, each row summing to 1.
    """
    if sigma < 0:
        raise ConfigError(f"The position smoothing width sigma must be at least 0, got {sigma:g}.")
    n = coords.shape[0]
    if sigma == 0:
        return torch.eye(n, device=coords.device)
    d2 = torch.cdist(coords.double(), coords.double()).pow(2)
    # A softmax is exp(−d²/σ²) normalised, computed stably: a tiny σ cannot underflow every entry.
    weights = torch.softmax(-d2 / sigma**2, dim=1)
    return weights.float()


def linear_sigma(step: int, total_steps: int, start: float, end: float) -> float:
    """σ after ``step`` of ``total_steps`` optimiser steps: linear from ``start`` (step 0) to ``end``."""
    fraction = min(max(step / max(total_steps - 1, 1), 0.0), 1.0)
    return start + (end - start) * fraction


def attentive_weights(tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax_j(cos(CLS, x_j) / τ)`` over the patch tokens of ``(B, 1 + N, d)`` encoder outputs."""
    cls, patches = tokens[:, :1], tokens[:, 1:]
    similarity = F.cosine_similarity(cls.float(), patches.float(), dim=-1)  # (B, N)
    return torch.softmax(similarity / temperature, dim=1)


def attentive_visible_weights(patch_weight: torch.Tensor, visible_idx: torch.Tensor) -> torch.Tensor:
    """The official code's ``attn``: the weights ``(B, N)`` of the visible patches ``(B, V)``,
    renormalised to sum to 1 over each sample's visible patches (``(B, V)``)."""
    visible = patch_weight.gather(1, visible_idx)
    return visible / visible.sum(dim=1, keepdim=True)


def dropped_position_loss(
    token_loss: torch.Tensor, dropped: torch.Tensor, attention: torch.Tensor | None = None
) -> torch.Tensor:
    """``Σ w · CE / Σ w`` over the whole batch, ``w`` = dropped (× attention): the official
    ``forward_drop_pos_loss``.

    Parameters
    ----------
    token_loss : torch.Tensor
        ``(B, V)`` cross-entropy of every visible token.
    dropped : torch.Tensor
        ``(B, V)`` bool, True where the token's position was dropped.
    attention : torch.Tensor, optional
        ``(B, V)`` attentive weights (:func:`attentive_visible_weights`); None for the plain mean
        over dropped tokens.
    """
    weight = dropped.to(token_loss.dtype)
    if attention is not None:
        weight = weight * attention
    return (token_loss * weight).sum() / weight.sum()


class DropPos(GridPretext):
    """DropPos: classify the grid position of visible patches whose position embedding was dropped."""

    name = "droppos"
    Config = DropPosConfig
    encoder_pos_embed = ("sincos",)
    encoder_defaults = {"pos_embed": "sincos"}
    log_keys = (BASELINE_KEY, "accuracy", "sigma")

    @classmethod
    def check_config(cls, config, modality, encoder_config):
        if encoder_config.pos_mask_ratio > 0:
            raise ConfigError(
                "DropPos drops positions itself ('pretext.pos_drop_ratio', replaced by a learnable token), "
                "so 'encoder.pos_mask_ratio' must be 0 (it would also zero positions in fine-tuning), got "
                f"{encoder_config.pos_mask_ratio:g}."
            )

    def __init__(self, config, modality, encoder_config, data):
        super().__init__(config, modality, encoder_config, data)
        n_hidden = mae_masked_count(config.mask_ratio, self.n_patches)
        if n_hidden == self.n_patches:
            raise ConfigError(
                f"'pretext.mask_ratio' {config.mask_ratio:g} of {self.n_patches} patches masks all "
                f"{self.n_patches}, which leaves no visible one; use at most "
                f"{(self.n_patches - 1) / self.n_patches:.3g}."
            )
        self.n_visible = self.n_patches - n_hidden
        # Every visible position may be dropped (the tokens are then placed from content alone), but
        # dropping none leaves nothing to classify.
        self.n_dropped = mae_masked_count(config.pos_drop_ratio, self.n_visible)
        if self.n_dropped == 0:
            raise ConfigError(
                f"'pretext.pos_drop_ratio' {config.pos_drop_ratio:g} of the {self.n_visible} visible patches "
                f"keeps int({self.n_visible * (1 - config.pos_drop_ratio):g}) = {self.n_visible} positions and "
                f"drops none, which leaves nothing to predict; use more than {1 / self.n_visible:.3g} "
                f"(one of {self.n_visible})."
            )
        dim = encoder_config.dim
        self.pos_mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.pos_mask_token, std=0.02)
        self.decoder = TokenDecoder(
            dim, config.decoder_dim, config.decoder_depth, config.decoder_heads, encoder_config.mlp_ratio,
            position_mask_token=True,
        )
        self.classify = nn.Linear(config.decoder_dim, self.n_patches)
        self.register_buffer(
            "grid_coords", grid_coordinates(self.grid_center, self.grid_size), persistent=False
        )

    def sigma(self) -> float:
        """The smoothing width at the current step (0 with smoothing off)."""
        if not self.config.smoothing:
            return 0.0
        return linear_sigma(self.progress_step, self.total_steps, self.config.sigma_start, self.config.sigma_end)

    def forward(self, batch, generator):
        x = batch["x"]
        batch_size = x.shape[0]
        boxes = self.grid(batch_size, x.device)
        patches = extract_patches(x, boxes, self.patch_shape)
        if self.config.attentive:
            with torch.no_grad():
                everything = self.encoder(
                    patches, boxes.center, generator,
                    pos_masked=torch.zeros(batch_size, self.n_patches, dtype=torch.bool, device=x.device),
                )
                patch_weight = attentive_weights(everything, self.config.attentive_temperature)
        _, visible_idx, _ = random_masking(batch_size, self.n_patches, self.config.mask_ratio, generator, x.device)
        dropped = random_subset_mask(batch_size, self.n_visible, self.n_dropped, generator, x.device)
        visible_centers = take_tokens(boxes.center, visible_idx)
        pos_token = dropped.unsqueeze(-1).to(patches.dtype) * self.pos_mask_token
        encoded = self.encoder(
            take_tokens(patches, visible_idx), visible_centers, generator, extra_pos=pos_token, pos_masked=dropped,
        )
        decoded = self.decoder(encoded, visible_centers, positions_dropped=dropped)
        logits = self.classify(decoded[:, 1:]).float()  # (B, V, N)
        sigma = self.sigma()
        labels = position_soft_labels(self.grid_coords, sigma).to(x.device)[visible_idx]  # (B, V, N)
        token_loss = -(labels * F.log_softmax(logits, dim=-1)).sum(dim=-1)  # (B, V)
        attention = attentive_visible_weights(patch_weight, visible_idx) if self.config.attentive else None
        loss = dropped_position_loss(token_loss, dropped, attention)
        with torch.no_grad():
            correct = (logits.argmax(dim=-1) == visible_idx) & dropped
            logs = {
                BASELINE_KEY: math.log(self.n_patches),
                "accuracy": correct.sum() / dropped.sum(),
                "sigma": sigma,
            }
        return loss, logs


@hookimpl
def register_pretexts(register):
    register(DropPos)

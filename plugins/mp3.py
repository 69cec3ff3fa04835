"""MP3: masked patch position prediction (Zhai et al., "Position prediction as an effective pretraining strategy").

A baseline of the PART paper's tables. No official code is public; this is what relpos implements,
from the paper's description:

* the sample is cut into its N grid patches (:func:`relpos.grid_boxes`, row-major); the encoder
  sees every patch *without* position embeddings (``encoder.pos_embed`` must be ``none``);
* a context subset is drawn per sample: exactly ``N − int(N · (1 − mask_ratio))`` patches (0.75
  by default, the paper's masking ratio; MAE's official count, which DropPos's code also uses) are
  removed from the attention keys and values of every block, uniformly at random (:func:`relpos_plugins.mae.random_masking`); every patch still
  queries, so every patch gets an output, and the CLS token stays a key;
* every patch token predicts its own grid index: a linear layer (encoder width → N) reads N
  logits from each output token, and the loss is the cross-entropy with the patch's index in
  grid order (0 … N − 1), averaged over all N patches of all samples.

Choices that are ours (the paper does not fix them for this setting): the head is a single linear
layer after the encoder's final LayerNorm; the loss covers every patch, inside and outside the
context; label smoothing is off by default (``pretext.label_smoothing``, passed to
``torch.nn.functional.cross_entropy``); the CLS token is always in the context.

The trivial baseline (``loss_baseline``) is log N, the cross-entropy of a uniform guess over the N
positions (with label smoothing, still log N: a uniform prediction scores log N against any target
distribution).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from relpos import hookimpl
from relpos.config import check_fields, setting
from relpos.extraction import extract_patches
from relpos.trivial_baseline import BASELINE_KEY

from relpos_plugins.mae import GridPretext, check_masking, random_masking


@dataclass
class MP3Config:
    """Options of the MP3 pretext."""

    # fraction of the grid patches removed from the attention keys and values, exactly
    # N − int(N · (1 − ratio)) per sample (MAE's count)
    mask_ratio: float = setting(0.75, ge=0, lt=1)
    label_smoothing: float = setting(0.0, ge=0, lt=1)

    def validate(self) -> None:
        check_fields(self, "pretext")


def grid_targets(batch_size: int, n_patches: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Every patch's position class: its index in row-major grid order, ``(B, N)`` long."""
    return torch.arange(n_patches, device=device).expand(batch_size, -1)


class MP3(GridPretext):
    """MP3: predict every patch's grid position from a masked context, without position embeddings."""

    name = "mp3"
    Config = MP3Config
    encoder_pos_embed = ("none",)
    log_keys = (BASELINE_KEY, "accuracy")

    def __init__(self, config, modality, encoder_config, data):
        super().__init__(config, modality, encoder_config, data)
        check_masking("pretext.mask_ratio", config.mask_ratio, self.n_patches)
        self.head = nn.Linear(encoder_config.dim, self.n_patches)

    def forward(self, batch, generator):
        x = batch["x"]
        batch_size = x.shape[0]
        boxes = self.grid(batch_size, x.device)
        patches = extract_patches(x, boxes, self.patch_shape)
        masked, _, _ = random_masking(batch_size, self.n_patches, self.config.mask_ratio, generator, x.device)
        tokens = self.encoder(patches, generator=generator, context=~masked)[:, 1:]
        logits = self.head(tokens).float()
        target = grid_targets(batch_size, self.n_patches, x.device)
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), label_smoothing=self.config.label_smoothing)
        with torch.no_grad():
            logs = {
                BASELINE_KEY: math.log(self.n_patches),
                "accuracy": (logits.argmax(dim=-1) == target).float().mean(),
            }
        return loss, logs


@hookimpl
def register_pretexts(register):
    register(MP3)

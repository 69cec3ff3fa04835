"""An example third-party relpos plugin: the ``jigsaw`` pretext.

The jigsaw puzzle of Noroozi & Favaro, "Unsupervised Learning of Visual Representations by Solving
Jigsaw Puzzles" (ECCV 2016), on any modality with 1 to 3 axes. Each sample is cut into the
modality's grid of patches (the cells), the cells are shuffled by one permutation drawn from a
fixed set of ``n_permutations``, and a classifier reads which permutation it was from the encoder's
patch tokens concatenated in their shuffled order. The encoder sees no positions (they would give
the answer away), so it can only solve the puzzle by learning where each patch belongs from its
content: on EEG, the order of the seconds of a recording; on images, the layout of their parts.

As in the paper, the permutation set is chosen once for maximal Hamming distance (greedy
farthest-point selection: each new permutation is the candidate whose smallest Hamming distance
to those already chosen is largest, so no two classes are near-duplicates), and tiles may be
shifted at random inside their cells (``jitter``) so that edges continuing across neighbouring
tiles are not a shortcut.

Written against relpos's public API only; see docs/plugins.md for the contract it follows::

    pip install -e examples/relpos-jigsaw
    relpos plugins                        # lists jigsaw, from relpos-jigsaw
    relpos train --pretext jigsaw         # on the bundled EEG recording
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import relpos
from relpos.config import MAX_SEED, setting
from relpos.errors import ConfigError
from relpos.trivial_baseline import BASELINE_KEY

#: Up to this many cells every permutation is enumerated (8! = 40,320); beyond, candidates are drawn.
ENUMERATE_UP_TO = 8
#: Random candidate permutations drawn per chosen one when they are not enumerated.
CANDIDATES_PER_CLASS = 64


@dataclass
class JigsawConfig:
    """Options of the jigsaw pretext; each declares its allowed range, which relpos checks when the
    configuration is resolved (``--set pretext.jitter=2`` is refused in one sentence)."""

    n_permutations: int = setting(64, ge=2)  # classes; at most (number of cells)! of them exist
    permutation_seed: int = setting(0, ge=0, le=MAX_SEED)  # the set is a function of this seed and the grid
    jitter: float = setting(0.0, ge=0, le=1)  # largest random shift of a tile in its cell, in patch sizes
    hidden: int = setting(0, ge=0)  # width of the classifier's hidden layer; 0 = the encoder's dim


def max_hamming_permutations(n_cells: int, n_permutations: int, seed: int) -> np.ndarray:
    """A set of permutations of ``range(n_cells)`` far apart in Hamming distance.

    Greedy farthest-point selection from a random first permutation: each next one is the
    candidate whose smallest Hamming distance to the permutations already chosen is largest.
    Candidates are every permutation when ``n_cells <= 8``, else random draws.

    Parameters
    ----------
    n_cells : int
        Number of cells N (at least 2).
    n_permutations : int
        Permutations wanted K; ``min(K, N!)`` are returned.
    seed : int
        Seed of the random first permutation and of the candidates.

    Returns
    -------
    numpy.ndarray
        ``(min(K, N!), N)`` int64, each row a permutation, no two rows equal.
    """
    rng = np.random.default_rng(seed)
    n_classes = min(n_permutations, math.factorial(n_cells))
    if n_cells <= ENUMERATE_UP_TO:
        candidates = np.array(list(itertools.permutations(range(n_cells))), dtype=np.int64)
    else:
        draws = max(CANDIDATES_PER_CLASS * n_classes, 1024)
        candidates = np.argsort(rng.random((draws, n_cells)), axis=1)
        candidates = np.unique(candidates, axis=0)  # sorted, so shuffle before picking the first
        rng.shuffle(candidates)
    chosen = [int(rng.integers(len(candidates)))]
    nearest = (candidates != candidates[chosen[0]]).sum(axis=1)  # distance to the closest chosen
    while len(chosen) < n_classes:
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, (candidates != candidates[pick]).sum(axis=1))
    return candidates[chosen]


class Jigsaw(relpos.Pretext):
    """Jigsaw puzzles: classify which permutation shuffled the grid patches (cross-entropy)."""

    name = "jigsaw"
    Config = JigsawConfig
    modalities = None  # any modality: cells are boxes, whatever the axes
    min_axes = 1
    # The trivial baseline is a uniform guess: cross-entropy log K, accuracy 1 / K.
    log_keys = (BASELINE_KEY, "accuracy")
    # The default, spelled out: the encoder must not see where a tile came from.
    encoder_pos_embed = ("none",)

    def __init__(self, config, modality, encoder_config, data):
        super().__init__(config, modality, encoder_config, data)  # sets self.encoder, self.extent
        self.patch_shape = modality.patch_shape()
        cells = relpos.grid_boxes(self.extent, modality.patch_size())
        self.n_cells = int(cells.center.shape[0])
        if self.n_cells < 2:
            raise ConfigError(
                f"The jigsaw pretext needs at least 2 grid cells per sample; extent {list(self.extent)} "
                f"with patch size {list(modality.patch_size())} gives {self.n_cells}."
            )
        # Buffers follow the module to the training device; the cells are read on the CPU, where
        # the run's generator draws, so they are not persistent (they follow from the grid).
        self.register_buffer("cell_center", cells.center, persistent=False)
        self.register_buffer("cell_size", cells.size, persistent=False)
        permutations = max_hamming_permutations(self.n_cells, config.n_permutations, config.permutation_seed)
        # Persistent: the classes a checkpoint's head was trained on travel with it.
        self.register_buffer("permutations", torch.as_tensor(permutations))
        self.n_classes = int(permutations.shape[0])
        dim = encoder_config.dim
        hidden = config.hidden or dim
        # The paper's head: the tiles' features concatenated in their shuffled order, then two
        # fully connected layers to one logit per permutation.
        self.head = nn.Sequential(
            nn.Flatten(start_dim=1),  # the encoder's tokens are already layer-normalised
            nn.Linear(self.n_cells * dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, self.n_classes),
        )

    def make_puzzles(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Shuffle the cells of each sample by a random permutation of the set.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, C, *extent)`` on the training device.
        generator : torch.Generator
            The run's random stream (a CPU generator: draws happen on the CPU and move to
            ``x.device``, so a seed gives the same puzzles on every device).

        Returns
        -------
        tiles : torch.Tensor
            ``(B, N, C, *patch_shape)``: slot ``j`` of sample ``b`` holds cell
            ``permutations[label[b], j]``.
        label : torch.Tensor
            ``(B,)`` index of the permutation of each sample, on ``x.device``.
        """
        batch = x.shape[0]
        label = torch.randint(0, self.n_classes, (batch,), generator=generator, device=generator.device)
        order = self.permutations.to(generator.device)[label]  # (B, N)
        center = self.cell_center.to(generator.device)[order]  # (B, N, D)
        size = self.cell_size.to(generator.device).expand_as(center)
        if self.config.jitter > 0:
            shift = torch.rand(center.shape, generator=generator, device=generator.device) * 2 - 1
            center = center + shift * self.config.jitter * size / 2
            extent = torch.tensor(self.extent, dtype=center.dtype, device=center.device)
            center = torch.minimum(torch.maximum(center, size / 2), extent - size / 2)  # stay inside
        boxes = relpos.Boxes(center.to(x.device), size.to(x.device))
        return relpos.extract_patches(x, boxes, self.patch_shape), label.to(x.device)

    def forward(self, batch, generator):
        tiles, label = self.make_puzzles(batch["x"], generator)
        tokens = self.encoder(tiles)[:, 1:]  # (B, N, dim) in slot order; index 0 is the CLS token
        logits = self.head(tokens).float()
        loss = F.cross_entropy(logits, label)
        with torch.no_grad():
            accuracy = (logits.argmax(dim=1) == label).float().mean()  # a tensor: no wait for the device
        return loss, {BASELINE_KEY: math.log(self.n_classes), "accuracy": accuracy}


@relpos.hookimpl
def register_pretexts(register):
    register(Jigsaw)

"""Spatial Reasoning: relational reasoning over augmentations plus the relative position of patches.

The method of "From patches to objects: exploiting spatial reasoning for better visual
representations" (Albert et al.), built on Relational Reasoning (Patacchiola & Storkey, 2020).
Every step, for the batch's M inputs:

* K augmented versions of each input (random resized crop, flip on the modality's flip axes, and
  the modality's photometric recipe), each resampled to the input's size: views of one token each
  (:mod:`relpos.views`), so one resampling cuts them all;
* N patches of each input at random positions, the first two never overlapping, each
  ``patch_fraction`` of every axis, each photometrically augmented on its own, and either resized
  to the input's size (``patch_use="plain"``, §3.1) or left at its own resolution on an input of
  zeros (``"additive"``, §4.4's additive-patch-use). In the additive variant the patch is pasted at
  a *new* random position of the zero canvas (uniform, whole units), while its target stays the
  position it was cut from, as the official code does (``datamanager.py``: ``new_pos``). Pasted at
  its own position, the target would equal the centroid of the non-zero values: a shortcut for any
  encoder with positions, and for a CNN with zero padding.

One encoder embeds all K·M + M·N inputs, one vector each (:meth:`relpos.encoders.Encoder.embed_inputs`:
the CNN's pooled features, or the ViT's CLS token). Pairs are concatenated, ``[f_a, f_b]``:

* augmentations (Relational Reasoning's roll scheme): for every two augmentations ``i < j`` the
  positive pairs ``(i, m) – (j, m)`` and the negative pairs ``(i, m) – (j, m − s)`` (``torch.roll``
  of the j-th block by ``s``), where the shift ``s`` starts at 1 and grows by one per (i, j) pair,
  back to 1 when it reaches M, so a negative is never the input itself: M(K² − K) pairs;
* patches: for every two patches ``a < b`` of the same input one positive pair (§3.2: no
  negatives): M(N² − N)/2 pairs.

The relation head ``Linear(2F, 256) → BatchNorm → LeakyReLU → Linear(256, 1 + D)`` gives one logit
(output 0) and D coordinates (outputs 1..D, in the modality's axis order: row then column for
images, time for a series). Targets:

* the logit: **0 for a pair of the same input, 1 for a pair of different inputs**. The paper's
  convention (§3.2: the pseudo-targets of a positive pair are 0, of a negative pair 1; its code uses
  the same value on all three units), the opposite of Relational Reasoning's, where 1 means "same";
* the coordinates of a patch pair: ``p_a − p_b``, the difference of the patches' centres as
  fractions of the input's extent (§3.2: (0.2, 0.6) and (0.4, 0.1) give (−0.2, 0.5));
* the coordinates of an augmentation pair: pseudo-targets, 0 for a positive pair and 1 for a
  negative one.

The loss is Eq. 3: ``L_BCE + Σ_d L_MSE,d``, each term a mean over every pair. Unlike the official
code (BCE on the last unit, one MSE averaged over both coordinates, extra rows of ones among the
patch targets), this follows the paper.

``n_patches = 0`` switches the patch term off: plain Relational Reasoning. On a time series the
positions are 1-D (one coordinate) and the encoder is the patch transformer: the paper has no 1-D
CNN. The augmentations there are the series' own photometric recipe (amplitude, noise, masking),
without cropping by default (stretching a crop back to the window would shift its frequencies).
Evaluation follows §3.3: ``relpos eval RUN --features grid`` concatenates the whole input's vector
with those of a 3 × 3 grid (3 along time) of patches of the training size (:meth:`grid_patch_fraction`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from relpos import hookimpl
from relpos.config import setting
from relpos.errors import ConfigError, DataError
from relpos.extraction import extract_patches
from relpos.geometry import Boxes, BoxLayout
from relpos.pretext import Pretext
from relpos.trivial_baseline import BASELINE_KEY
from relpos.views import check_scale_range, extract_view_tokens, flip_mask_for, sample_views
from relpos.transfer import to_device

#: Relational Reasoning's crops: torchvision's RandomResizedCrop defaults.
IMAGE_CROP_SCALE = (0.08, 1.0)
#: A series is not cropped unless asked (see the module docstring).
SERIES_CROP_SCALE = (1.0, 1.0)
#: The largest patch (fraction of every axis) that leaves room for two non-overlapping patches.
MAX_PATCH_FRACTION = 0.5
#: Hidden width of the relation head (Relational Reasoning's).
RELATION_HIDDEN = 256
#: The logit's targets (the paper's convention, see the module docstring).
SAME, DIFFERENT = 0.0, 1.0


@dataclass
class SpatialReasoningConfig:
    """Options of the Spatial Reasoning pretext (paper defaults unless noted)."""

    n_augmentations: int = setting(4, ge=2, le=64)  # K augmented versions of each input
    # N patches per input; 0 switches the patch term off (= Relational Reasoning)
    n_patches: int = setting(2, ge=2, le=64, also=(0,))
    # patch side as a fraction of every axis of the input (24 px of 64 is the paper's best)
    patch_fraction: float = setting(0.375, gt=0, lt=1)
    # 'plain': patches resized to the input's size; 'additive': pasted at their own resolution, at a
    # random position, on zeros
    patch_use: str = setting("plain", choices=("plain", "additive"))
    # area (2+ axes) or length (1 axis) fraction of the augmentations' crops; None: the modality's default
    crop_scale: tuple[float, float] | None = setting(None, gt=0, le=1, ordered=True)
    aspect_range: tuple[float, float] = setting((0.75, 1.3333333333333333), gt=0, ordered=True)
    flip: bool = setting(True)  # mirror augmentations on the modality's flip axes
    photometric: bool = setting(True)  # the modality's colour recipe, per augmentation and per patch


def roll_pairs(n_inputs: int, n_augmentations: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Relational Reasoning's aggregation: which rows of the stacked augmentations form each pair.

    The features of augmentation ``k`` of input ``m`` sit at row ``k · M + m``.

    Returns
    -------
    first, second : torch.Tensor
        ``(M (K² − K),)`` row indices: for each ``i < j``, M positive pairs then M negative pairs.
    different : torch.Tensor
        ``(M (K² − K),)`` bool, True for a negative pair.
    """
    m = torch.arange(n_inputs)
    first, second, different = [], [], []
    shift = 1
    for i in range(n_augmentations):
        for j in range(i + 1, n_augmentations):
            first += [i * n_inputs + m, i * n_inputs + m]
            # torch.roll(block_j, shift)[m] is block_j[m - shift]
            second += [j * n_inputs + m, j * n_inputs + (m - shift) % n_inputs]
            different += [torch.zeros(n_inputs, dtype=torch.bool), torch.ones(n_inputs, dtype=torch.bool)]
            shift += 1
            if shift >= n_inputs:
                shift = 1  # a shift of M would pair every input with itself
    return torch.cat(first), torch.cat(second), torch.cat(different)


def patch_pairs(n_inputs: int, n_patches: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the ``(M · N)`` stacked patches (patch ``n`` of input ``m`` at ``m · N + n``) paired
    for Eq. 2: every ``a < b`` of the same input, input by input."""
    a, b = torch.triu_indices(n_patches, n_patches, offset=1)
    base = (torch.arange(n_inputs) * n_patches).unsqueeze(1)
    return (base + a).reshape(-1), (base + b).reshape(-1)


def sample_patch_starts(
    batch: int, n_patches: int, extent: tuple[int, ...], size: tuple[int, ...], generator: torch.Generator
) -> torch.Tensor:
    """Start corners ``(B, N, D)`` of N patches of ``size`` per input, the first two never overlapping.

    Starts are whole native units. Patches 3..N are uniform. The first two are separated along one
    axis drawn uniformly among those with room for two (``extent ≥ 2 · size``): there, two values
    uniform on ``[0, extent − 2 · size]`` are sorted into ``a ≤ b`` and the patches start at ``a``
    and ``b + size`` (uniform over the pairs separated along that axis), in a random order; along
    the other axes they are uniform.
    """
    n_axes = len(extent)
    device = generator.device  # drawn where the run's stream lives, as relpos.views does
    room = torch.tensor([float(e - s) for e, s in zip(extent, size)], device=device)
    starts = torch.floor(torch.rand((batch, n_patches, n_axes), generator=generator, device=device) * (room + 1))
    if n_patches >= 2:
        fits = [d for d in range(n_axes) if extent[d] >= 2 * size[d]]
        axis = torch.tensor(fits, device=device)[torch.randint(len(fits), (batch,), generator=generator, device=device)]
        free = torch.tensor([float(extent[d] - 2 * size[d]) for d in range(n_axes)], device=device)[axis]
        draws = torch.floor(torch.rand((2, batch), generator=generator, device=device) * (free + 1))
        lo, hi = draws.sort(dim=0).values
        width = torch.tensor([float(s) for s in size], device=device)[axis]
        swap = torch.rand(batch, generator=generator, device=device) < 0.5
        first = torch.where(swap, hi + width, lo)
        second = torch.where(swap, lo, hi + width)
        rows = torch.arange(batch, device=device)
        starts[rows, 0, axis] = first
        starts[rows, 1, axis] = second
    return starts


def additive_inputs(
    x: torch.Tensor, starts: torch.Tensor, size: tuple[int, ...], paste_starts: torch.Tensor | None = None
) -> torch.Tensor:
    """§4.4's additive-patch-use: each patch at its own resolution on zeros.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, *extent)``.
    starts : torch.Tensor
        ``(B, N, D)`` whole-unit start corners of the patches cut from ``x``.
    size : tuple of int
        The patches' size per axis.
    paste_starts : torch.Tensor, optional
        ``(B, N, D)`` whole-unit corners where each patch is pasted; None pastes it where it was cut.

    Returns
    -------
    torch.Tensor
        ``(B, N, C, *extent)``: output ``[b, n]`` holds ``x[b]``'s patch at ``starts[b, n]`` placed
        at ``paste_starts[b, n]``, zeros elsewhere.
    """
    batch, n_patches, n_axes = starts.shape
    extent = x.shape[2:]
    starts = to_device(starts, x.device).long()
    paste = starts if paste_starts is None else to_device(paste_starts, x.device).long()
    out = x.unsqueeze(1).expand(batch, n_patches, *x.shape[1:])
    inside = torch.ones((batch, n_patches, *extent), dtype=torch.bool, device=x.device)
    for d in range(n_axes):
        shape = [batch, n_patches] + [1] * n_axes
        shape[2 + d] = extent[d]
        index = torch.arange(extent[d], device=x.device).reshape([1, 1] + shape[2:])
        paste_d = paste[..., d].reshape(batch, n_patches, *([1] * n_axes))
        inside = inside & (index >= paste_d) & (index < paste_d + size[d])
        if paste_starts is not None:
            # output position i along axis d reads input position i − paste + start (a translation)
            source = (index - paste_d + starts[..., d].reshape(paste_d.shape)).clamp(0, extent[d] - 1)
            source = source.unsqueeze(2).expand(*out.shape[:3 + d], extent[d], *out.shape[4 + d:])
            out = out.gather(3 + d, source)
    return out * inside.unsqueeze(2).to(x.dtype)


def sample_paste_starts(
    batch: int, n_patches: int, extent: tuple[int, ...], size: tuple[int, ...], generator: torch.Generator
) -> torch.Tensor:
    """``(B, N, D)`` whole-unit corners, uniform over ``[0, extent − size]`` per axis: where the
    additive variant pastes each patch (the official code's ``new_pos``)."""
    device = generator.device
    room = torch.tensor([float(e - s) for e, s in zip(extent, size)], device=device)
    return torch.floor(torch.rand((batch, n_patches, len(extent)), generator=generator, device=device) * (room + 1))


class SpatialReasoning(Pretext):
    """Spatial Reasoning: same-input relations over augmentations + relative positions of patches."""

    name = "spatial-reasoning"
    Config = SpatialReasoningConfig
    encoder_output = "vector"
    encoder_pos_embed = ("none", "sincos")
    # A ViT reading whole inputs: without positions its CLS would not know where anything is.
    encoder_defaults = {"pos_embed": "sincos"}
    log_keys = (BASELINE_KEY, "bce", "mse", "same_accuracy")

    @classmethod
    def check_config(cls, config, modality, encoder_config) -> None:
        if config.n_patches and config.patch_fraction > MAX_PATCH_FRACTION:
            raise ConfigError(
                f"'pretext.patch_fraction' ({config.patch_fraction:g} of every axis) leaves no room for two "
                f"non-overlapping patches; the largest that fits is {MAX_PATCH_FRACTION:g}."
            )
        if config.crop_scale is not None:
            check_scale_range(config.crop_scale, "pretext.crop_scale")

    @classmethod
    def grid_patch_fraction(cls, config) -> float | None:
        return float(config.patch_fraction)

    def __init__(self, config, modality, encoder_config, data):
        super().__init__(config, modality, encoder_config, data)
        self.n_axes = len(self.extent)
        self.patch_size = tuple(int(math.floor(config.patch_fraction * e)) for e in self.extent)
        if config.n_patches and min(self.patch_size) < 1:
            raise DataError(
                f"'pretext.patch_fraction' ({config.patch_fraction:g}) of inputs of extent {list(self.extent)} "
                f"is less than one sample along an axis; use at least {1 / min(self.extent):.3g}."
            )
        if len(data) < 2:
            raise DataError(
                f"Spatial Reasoning pairs each input with another of its batch, so it needs at least 2 "
                f"training windows, got {len(data)}."
            )
        resample = getattr(modality, "resample_views", False)
        default_scale = IMAGE_CROP_SCALE if resample else SERIES_CROP_SCALE
        self.crop_scale = tuple(config.crop_scale) if config.crop_scale is not None else default_scale
        self.flippable = flip_mask_for(modality.axes, modality.flip_axes if config.flip else ())
        feature_dim = int(self.encoder.feature_dim)
        self.head = nn.Sequential(
            nn.Linear(2 * feature_dim, RELATION_HIDDEN),
            nn.BatchNorm1d(RELATION_HIDDEN),
            nn.LeakyReLU(),
            nn.Linear(RELATION_HIDDEN, 1 + self.n_axes),
        )

    # -- inputs -------------------------------------------------------------------------------------
    def augmentations(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``(K · M, C, *extent)``: K augmented versions, augmentation-major (row ``k · M + m``)."""
        batch, extent = len(x), tuple(x.shape[2:])
        views = sample_views(
            batch, self.config.n_augmentations, extent, extent, self.crop_scale, extent, generator,
            aspect_range=self.config.aspect_range, flippable=self.flippable, device=x.device,
        )
        (versions,) = extract_view_tokens(x, [views])  # (M, K, 1, C, *extent)
        versions = versions[:, :, 0]
        if self.config.photometric:
            flat = versions.reshape(batch * self.config.n_augmentations, 1, *versions.shape[2:])
            versions = self.modality.photometric(flat, generator, "global-2").reshape(versions.shape)
        return versions.transpose(0, 1).reshape(-1, *versions.shape[2:])

    def patches(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(M · N, C, *extent)`` patch inputs (row ``m · N + n``) and ``(M, N, D)`` normalised centres."""
        batch, extent = len(x), tuple(x.shape[2:])
        n_patches = self.config.n_patches
        starts = to_device(sample_patch_starts(batch, n_patches, extent, self.patch_size, generator), x.device)
        size = torch.tensor([float(s) for s in self.patch_size], device=x.device)
        centers = starts + size / 2
        if self.config.patch_use == "plain":
            # whole starts, inside the input, every box of the patch size: extraction reads nothing back
            layout = BoxLayout(tuple(float(p) for p in self.patch_size), extent, integer=True)
            boxes = Boxes(centers, size.expand_as(centers).clone(), layout)
            inputs = extract_patches(x, boxes, extent)
            if self.config.photometric:
                flat = inputs.reshape(batch * n_patches, 1, *inputs.shape[2:])
                inputs = self.modality.photometric(flat, generator, "global-2").reshape(inputs.shape)
        else:
            source = x.unsqueeze(1).expand(batch, n_patches, *x.shape[1:])
            if self.config.photometric:
                # jitter the patch's pixels, then keep zeros around it (jittering the zeros would
                # lift the empty surround to the view's mean grey)
                flat = source.reshape(batch * n_patches, 1, *x.shape[1:])
                source = self.modality.photometric(flat, generator, "global-2").reshape(source.shape)
            # pasted at a random place, the target staying where the patch was cut (see the module docstring)
            paste = to_device(sample_paste_starts(batch, n_patches, extent, self.patch_size, generator), x.device)
            inputs = additive_inputs(
                source.reshape(batch * n_patches, *x.shape[1:]), starts.reshape(-1, 1, self.n_axes), self.patch_size,
                paste.reshape(-1, 1, self.n_axes),
            ).reshape(batch, n_patches, *x.shape[1:])
        extent_t = torch.tensor([float(e) for e in extent], device=x.device)
        return inputs.reshape(batch * n_patches, *x.shape[1:]), centers / extent_t

    # -- the objective -------------------------------------------------------------------------------
    def pairs_and_targets(
        self, features: torch.Tensor, batch: int, positions: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenated pairs ``(P, 2F)`` and their targets ``(P, 1 + D)`` (logit target first)."""
        k = self.config.n_augmentations
        n_versions = batch * k
        first, second, different = roll_pairs(batch, k)
        first, second, different = first.to(features.device), second.to(features.device), different.to(features.device)
        pairs = [torch.cat([features[first], features[second]], dim=1)]
        label = torch.where(different, DIFFERENT, SAME).to(features.dtype)
        targets = [label.unsqueeze(1).expand(-1, 1 + self.n_axes)]  # pseudo-targets = the label
        if positions is not None:
            a, b = (i.to(features.device) for i in patch_pairs(batch, self.config.n_patches))
            patch_features = features[n_versions:]
            flat_positions = positions.reshape(-1, self.n_axes).to(features.dtype)
            pairs.append(torch.cat([patch_features[a], patch_features[b]], dim=1))
            same = torch.full((len(a), 1), SAME, dtype=features.dtype, device=features.device)
            targets.append(torch.cat([same, flat_positions[a] - flat_positions[b]], dim=1))
        return torch.cat(pairs), torch.cat(targets)

    @staticmethod
    def loss_terms(prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 3's terms: the BCE of the logit and the sum over coordinates of their MSEs."""
        bce = nn.functional.binary_cross_entropy_with_logits(prediction[:, 0], target[:, 0])
        mse = ((prediction[:, 1:] - target[:, 1:]) ** 2).mean(dim=0).sum()
        return bce, mse

    @staticmethod
    def trivial_loss(target: torch.Tensor) -> torch.Tensor:
        """Eq. 3 for the best constant prediction on this batch: the entropy of the label frequency
        plus the variance of each coordinate's targets (a float64 0-d tensor on the targets' device,
        so that a step never waits for it)."""
        q = target[:, 0].mean().double()
        entropy = torch.special.entr(q) + torch.special.entr(1 - q)  # entr(p) = -p log p, 0 at p = 0
        return entropy + target[:, 1:].var(dim=0, unbiased=False).sum().double()

    def forward(self, batch, generator):
        x = batch["x"]
        n_inputs = len(x)
        if n_inputs < 2:
            raise DataError(
                f"Spatial Reasoning needs at least 2 inputs per batch (a negative pair is another input "
                f"of the batch), got {n_inputs}; raise train.batch_size."
            )
        inputs = [self.augmentations(x, generator)]
        positions = None
        if self.config.n_patches:
            patch_inputs, positions = self.patches(x, generator)
            inputs.append(patch_inputs)
        features = self.encoder.embed_inputs(torch.cat(inputs))
        pairs, target = self.pairs_and_targets(features, n_inputs, positions)
        prediction = self.head(pairs)
        bce, mse = self.loss_terms(prediction, target)
        with torch.no_grad():
            same_accuracy = ((prediction[:, 0] > 0).to(target.dtype) == target[:, 0]).float().mean()
        logs = {BASELINE_KEY: self.trivial_loss(target), "bce": bce.detach(), "mse": mse.detach(),
                "same_accuracy": same_accuracy}
        return bce + mse, logs

    def memory_hint(self, batch_size: int) -> str | None:
        k, n = self.config.n_augmentations, self.config.n_patches
        return (
            f"lower train.batch_size (now {batch_size}; the encoder reads {k + n} inputs per window), "
            f"pretext.n_augmentations (now {k}) or pretext.n_patches (now {n})"
        )


@hookimpl
def register_pretexts(register):
    register(SpatialReasoning)

"""PART: pairwise relative translations between off-grid patches.

The method of "How PARTs assemble into wholes: Learning the relative composition of images"
(Ayoughi et al.): N patches are sampled at continuous random positions, resized to the patch size
and encoded by a transformer *without* position embeddings. For ``n_pairs`` random (reference,
target) pairs a relative encoder predicts

    θ_ref,tgt = (c_tgt − c_ref) / s_ref            per axis (Δt, or Δy and Δx)
              [+ s_tgt / s_ref per axis]           with ``predict_size`` (the Δh, Δw extension)

and the loss is the mean squared error over pairs and components (the paper's L_MSE).

Its trivial baseline (logged as ``loss_baseline``, see :mod:`relpos.trivial_baseline`) is, without
positions, the loss of the best constant prediction on the batch: the targets' mean per component, so the loss is the mean
over components of the targets' variance. For translations that mean is close to 0 (predicting
Δ = 0); the size ratios of ``predict_size`` have a mean near 1, which a constant also gets for free.

Position masking (the PART paper's EEG experiment, "we randomly mask out 20 % of the position
embeddings"): with ``encoder.pos_embed: sincos`` and ``encoder.pos_mask_ratio`` r > 0, each sample's
encoder sees sin-cos embeddings of the box centres for all but exactly round(r·N) of its N patches.
A pair of two visible patches gives its offset away (it can be read off the two embeddings), so
only pairs involving a masked patch need content: the masked patch must be localised by matching
its content with its positioned neighbours. ``pair_loss: masked`` trains on those pairs alone; the
logs report both kinds of pairs either way. The trivial baseline of this variant is not a constant
but a **positions-only** guess (:func:`positions_only_baseline`): read every visible centre off its
embedding and put every masked patch at the batch's mean centre. It scores 0 on visible pairs and
about half the constant baseline on the others, so only a loss below it shows that content was
localised.

Relative encoders (``head``), the paper's ablation of Table 5:

* ``cross_attention`` (default): query = Linear(concat(x_ref, x_tgt)) (2d → d); keys and values
  are all patch embeddings; θ̂ = Linear(Attention(q, X', X')).
* ``pairwise_mlp``: a linear map of the concatenated pair alone (2d → |θ|, the paper's 2·d·2
  parameters), so it cannot see the other patches.
* ``mlp``: one fully connected layer from all N concatenated patch embeddings to θ̂ for all N²
  ordered pairs (N·d·N²·|θ| parameters), of which the sampled pairs are read.

``part-grid`` is the same objective on non-overlapping grid patches (the paper's Table 4 ablation).

``pair_max_offset`` d > 0 draws pairs only between patches at most d reference sizes apart on every
axis. On a roughly stationary signal (a 30-s sleep epoch of 1-s patches) the offset between two
patches that do not overlap cannot be told from their content, and such pairs are 93 % of uniform
pairs and nearly all of the loss; d = 1 keeps the pairs whose content can be aligned
(bench/README.md, the sleep-night section).

Channel tokens (EEG with ``modality.space: montage``, docs/eeg_space.md): when the windows' channels have
positions (``Windows.positions``), a token is one channel's patch (:mod:`relpos.space`) and its box is the
channel's position (size 1 per spatial axis) followed by its time patch, so θ is ``(Δx, Δy, Δz, Δt)``: position
differences in the positions' unit (head radii) and Δt in patch lengths, the same formula; the head is unchanged.

PART across windows (``pretext.scope: recording``; ``window``, the default, is everything above):
each sample is ``windows`` (K) windows of one recording within ``span_s`` seconds of an anchor
(:class:`relpos.WithinSpan`, drawn by the training loop). Off-grid patches are drawn in every window
with the sampler above, each window's patches are encoded on their own (the encoder sees one window,
as downstream), and the head reads the K windows' tokens concatenated. A share ``within_ratio`` of
the pairs is today's pairs inside one window; the others join patches of two different windows. Every
pair's target is its offset in the recording's time, ``Δ = (onset_tgt + c_tgt − onset_ref − c_ref) /
s_ref`` (in reference sizes, i.e. patch lengths), read through :func:`compressed_offset`,
``sign(Δ)·log1p(|Δ|)``: 10 min apart is 600 one-second patches, a raw Δ whose square (3.6·10⁵) would
swamp the within-window pairs (|Δ| < 30); compressed it is 6.4, while offsets under a patch stay
nearly linear (the slope of log1p is 1 at 0), and one function for every pair keeps a cross pair and
a within pair at the same time apart at the same target. The trivial baseline is the
constant-prediction MSE of these compressed targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from relpos import hookimpl
from relpos.config import check_fields, setting
from relpos.encoders.vit import masked_count, position_mask
from relpos.errors import ConfigError, DataError
from relpos.extraction import extract_patches
from relpos.geometry import Boxes, relative_transform, target_dim
from relpos.pretext import Pretext
from relpos.space import extract_channel_patches, sample_channel_tokens
from relpos.sampling import (
    check_size_ranges,
    grid_boxes,
    grid_count,
    sample_near_pairs,
    sample_offgrid,
    sample_pairs,
)
from relpos.trivial_baseline import BASELINE_KEY
from relpos.transfer import to_device

HEADS = ("cross_attention", "pairwise_mlp", "mlp")
#: Which pairs the loss is computed on (``pretext.pair_loss``).
PAIR_LOSSES = ("all", "masked")
#: What a sample is (``pretext.scope``): one window, or several windows of one recording.
SCOPES = ("window", "recording")
#: Most windows per sample (``pretext.windows``) and the widest span, in seconds (a week).
MAX_WINDOWS = 1024
MAX_SPAN_S = 7 * 24 * 3600.0
#: Most patches per sample and pairs per sample a config may ask for: the pair targets alone are
#: batch × n_pairs × 4 floats, and the mlp head's output grows with n_patches².
MAX_PATCHES = 65536
MAX_PAIRS = 2**20


@dataclass
class PARTConfig:
    """Options of the PART pretext."""

    # patches per sample; 0 = the modality's default (images: grid count, EEG: 40)
    n_patches: int = setting(0, also=(0,), ge=2, le=MAX_PATCHES)
    # (reference, target) pairs per sample; the paper's best on CIFAR-100
    n_pairs: int = setting(2048, ge=1, le=MAX_PAIRS)
    head: str = setting("cross_attention", choices=HEADS)
    # attention heads in the cross-attention head; 0 = the encoder's
    head_heads: int = setting(0, ge=0, le=65536)
    predict_size: bool = setting(False)  # also predict s_tgt / s_ref per axis (Δw, Δh)
    # range of every patch side in patch sizes, e.g. [0.5, 2.0] (the paper's half to twice)
    scale_range: tuple[float, float] = setting((1.0, 1.0), gt=0, ordered=True)
    # width / height ratio (2+ axes), within [low / high, high / low] of scale_range
    aspect_range: tuple[float, float] = setting((1.0, 1.0), gt=0, ordered=True)
    # with position masking (encoder.pos_mask_ratio): 'all' pairs, or only the pairs involving a
    # masked patch ('masked'; pairs of two visible patches give their offset away)
    pair_loss: str = setting("all", choices=PAIR_LOSSES)
    # pairs only between patches at most this many reference sizes apart on every axis (1.0:
    # overlapping or touching patches, whose offset content can tell; a patch without one is paired
    # with its nearest); 0 = any pair (the paper's)
    pair_max_offset: float = setting(0.0, ge=0, le=1e6)
    # 'window': a sample is one window (the paper's); 'recording': `windows` windows of one recording
    # within `span_s` seconds of an anchor, with pairs across windows (PART across windows)
    scope: str = setting("window", choices=SCOPES)
    # with scope 'recording': windows per sample, and how far (seconds, onset to onset) the others may
    # lie from the anchor; 4 within 10 min holds a sleep-stage change often enough to learn from
    windows: int = setting(4, ge=2, le=MAX_WINDOWS)
    span_s: float = setting(600.0, gt=0, le=MAX_SPAN_S)
    # with scope 'recording': the share of pairs inside one window (the rest join two windows)
    within_ratio: float = setting(0.25, ge=0, le=1)

    def validate(self) -> None:
        check_fields(self, "pretext")  # each value against its declared range (a config made in Python)
        varying = self.scale_range != (1.0, 1.0) or self.aspect_range != (1.0, 1.0)
        if self.predict_size and not varying:
            raise ConfigError(
                "'pretext.predict_size' needs patches of varying size: set 'pretext.scale_range' "
                "(e.g. [0.5, 2.0]) or 'pretext.aspect_range'."
            )


@dataclass
class PARTGridConfig(PARTConfig):
    """Options of the PART-grid pretext: PART's, with patches fixed to the grid cells."""

    def validate(self) -> None:
        if self.scale_range != (1.0, 1.0) or self.aspect_range != (1.0, 1.0):
            raise ConfigError(
                "PART-grid samples fixed grid patches: 'pretext.scale_range' and "
                f"'pretext.aspect_range' must stay [1.0, 1.0], got {list(self.scale_range)} and "
                f"{list(self.aspect_range)}."
            )
        super().validate()


class CrossAttentionHead(nn.Module):
    """The paper's relative encoder: a pair query attends to every patch embedding.

    ``query`` is the paper's linear projection of ``concat(x_ref, x_tgt)`` (2d → d); multi-head
    attention (query, key, value and output projections, as in "Attention is all you need") uses
    it as the query and all patch embeddings as keys and values; a LayerNorm and a linear layer
    read θ̂ out.

    Linear(concat(a, b)) = W_ref·a + W_tgt·b + bias, and the attention's query projection is linear
    too, so both are applied once per patch (N) and the results gathered per pair (n_pairs ≫ N):
    the same function as projecting every concatenated pair, at a fraction of the cost.
    """

    def __init__(self, dim: int, heads: int, out_dim: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(2 * dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.kv_proj = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, out_dim)

    def pair_queries(self, tokens: torch.Tensor, ref: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """``q_proj(query(concat(x_ref, x_tgt)))`` for every pair, computed per patch."""
        dim = tokens.shape[-1]
        w_ref, w_tgt = self.query.weight[:, :dim], self.query.weight[:, dim:]
        wq = self.q_proj.weight
        per_patch_ref = tokens @ (wq @ w_ref).T
        per_patch_tgt = tokens @ (wq @ w_tgt).T
        bias = wq @ self.query.bias + self.q_proj.bias
        return _take(per_patch_ref, ref) + _take(per_patch_tgt, tgt) + bias

    def forward(self, tokens: torch.Tensor, ref: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        batch, n_patches, dim = tokens.shape
        n_pairs = ref.shape[1]
        head_dim = dim // self.heads
        q = self.pair_queries(tokens, ref, tgt).reshape(batch, n_pairs, self.heads, head_dim).transpose(1, 2)
        k, v = self.kv_proj(tokens).reshape(batch, n_patches, 2, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)
        attended = attended.transpose(1, 2).reshape(batch, n_pairs, dim)
        return self.out(self.norm(self.proj(attended)))


class PairwiseHead(nn.Module):
    """Linear map of the concatenated (reference, target) embeddings (2d → |θ|).

    Applied as W_ref·x_ref + W_tgt·x_tgt + bias, per patch then gathered per pair (the same map).
    """

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.out = nn.Linear(2 * dim, out_dim)

    def forward(self, tokens: torch.Tensor, ref: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        dim = tokens.shape[-1]
        per_ref = tokens @ self.out.weight[:, :dim].T
        per_tgt = tokens @ self.out.weight[:, dim:].T
        return _take(per_ref, ref) + _take(per_tgt, tgt) + self.out.bias


class FullMLPHead(nn.Module):
    """All patch embeddings → θ̂ for every ordered pair; needs a fixed number of patches."""

    def __init__(self, dim: int, n_patches: int, out_dim: int):
        super().__init__()
        self.n_patches = n_patches
        self.out_dim = out_dim
        self.out = nn.Linear(n_patches * dim, n_patches * n_patches * out_dim)

    def forward(self, tokens: torch.Tensor, ref: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        batch = tokens.shape[0]
        all_pairs = self.out(tokens.reshape(batch, -1)).reshape(batch, self.n_patches**2, self.out_dim)
        return _take(all_pairs, ref * self.n_patches + tgt)


def constant_baseline(theta: torch.Tensor, selected: torch.Tensor | None = None) -> torch.Tensor:
    """The MSE of the best constant prediction of the targets ``theta`` (PART's trivial baseline).

    The constant that minimises the squared error is the targets' mean per component, so the loss
    it gets is the mean over components of their (population) variance.

    Parameters
    ----------
    theta : torch.Tensor
        ``(B, n_pairs, |θ|)`` targets.
    selected : torch.Tensor, optional
        ``(B, n_pairs)`` bool: only these pairs count (e.g. those involving a masked patch).

    Returns
    -------
    torch.Tensor
        Scalar; 0 when no pair is selected.
    """
    theta = theta.detach().float().reshape(-1, theta.shape[-1])
    if selected is not None:  # weighted, not indexed: a boolean index would wait for its count on a GPU
        weight = selected.reshape(-1, 1).to(theta.dtype)
        count = weight.sum().clamp(min=1)
        mean = (theta * weight).sum(dim=0) / count
        return ((theta - mean).pow(2) * weight).sum(dim=0).div(count).mean()
    if theta.shape[0] == 0:
        return theta.new_zeros(())
    return (theta - theta.mean(dim=0)).pow(2).mean()


def compressed_offset(delta: torch.Tensor) -> torch.Tensor:
    """``sign(Δ)·log1p(|Δ|)``: PART across windows' target for an offset of ``Δ`` patch lengths.

    Odd (swapping reference and target negates it, as it negates Δ), monotone, nearly linear under
    one patch and logarithmic beyond, so pairs minutes apart (|Δ| in the hundreds) weigh a few times
    a near pair in the MSE rather than ten thousand times. :func:`expanded_offset` inverts it.
    """
    return torch.sign(delta) * torch.log1p(delta.abs())


def expanded_offset(theta: torch.Tensor) -> torch.Tensor:
    """The offset in patch lengths whose :func:`compressed_offset` is ``theta``: ``sign·expm1(|θ|)``."""
    return torch.sign(theta) * torch.expm1(theta.abs())


def positions_only_baseline(
    boxes: Boxes, pos_masked: torch.Tensor, ref: torch.Tensor, tgt: torch.Tensor, theta: torch.Tensor,
    selected: torch.Tensor | None = None,
) -> torch.Tensor:
    """The MSE of guessing θ from the visible positions alone (position-masked PART's baseline).

    A visible patch's centre is read off its position embedding; a masked patch is put at the
    batch's mean centre. The centre offsets are then ``(ĉ_tgt − ĉ_ref) / s_ref``, and size ratios
    (``predict_size``, which positions do not reveal) their mean. What a model that localises no
    content at all can score; the reference sizes are taken as known, which only matters with
    ``scale_range``.

    Parameters
    ----------
    boxes : Boxes
        ``(B, N, D)`` the sampled boxes.
    pos_masked : torch.Tensor
        ``(B, N)`` bool, True where the position embedding is masked.
    ref, tgt : torch.Tensor
        ``(B, n_pairs)`` pair indices.
    theta : torch.Tensor
        ``(B, n_pairs, |θ|)`` the targets.
    selected : torch.Tensor, optional
        ``(B, n_pairs)`` bool: only these pairs count.

    Returns
    -------
    torch.Tensor
        Scalar; 0 when no pair is selected.
    """
    n_axes = boxes.center.shape[-1]
    centre = boxes.center.detach().float()
    guess = torch.where(pos_masked.unsqueeze(-1), centre.reshape(-1, n_axes).mean(dim=0), centre)
    guessed = Boxes(guess, boxes.size.detach().float())
    offset_guess = relative_transform(guessed.gather(ref), guessed.gather(tgt))
    theta = theta.detach().float()
    error = (offset_guess - theta[..., :n_axes]).pow(2)
    if theta.shape[-1] > n_axes:  # size ratios: the best constant, their mean over the counted pairs
        sizes = theta[..., n_axes:]
        if selected is None:
            mean_size = sizes.reshape(-1, sizes.shape[-1]).mean(dim=0) if sizes.numel() else 0.0
        else:  # weighted, not indexed (no wait for the count on a GPU); 0 when no pair is selected
            weight = selected.unsqueeze(-1).to(sizes.dtype)
            mean_size = (sizes * weight).sum(dim=(0, 1)) / weight.sum().clamp(min=1)
        error = torch.cat([error, (sizes - mean_size).pow(2)], dim=-1)
    per_pair = error.mean(dim=-1)
    if selected is None:
        return per_pair.mean()
    return _masked_mean(per_pair, selected)


def _masked_mean(values: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``selected``; 0 (with a zero gradient) when nothing is selected."""
    weights = selected.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1)


def _take(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tokens[b, index[b, m]]`` for ``(B, N, d)`` tokens and ``(B, M)`` indices."""
    return tokens.gather(1, index.unsqueeze(-1).expand(*index.shape, tokens.shape[-1]))


class PART(Pretext):
    """PART: predict relative translations between pairs of off-grid patches (MSE)."""

    name = "part"
    Config = PARTConfig
    modalities = None
    min_axes = 1
    sampling = "offgrid"
    # sincos only for the position-masked variant; check_config refuses every position visible.
    encoder_pos_embed = ("none", "sincos")
    # the PART paper's Figs. 4-6, drawn by relpos_plugins.part_figures (relpos show)
    figures = ("reconstruction", "uncertainty", "symmetry")
    # windows whose channels have positions (modality.space): one channel per token, targets in space and time
    channel_tokens = True

    @classmethod
    def requests_windows(cls, config) -> bool:
        return config.scope == "recording"  # across windows: samples of K windows of one recording

    @classmethod
    def check_config(cls, config, modality, encoder_config):
        # Rules that involve the other sections, checked before the modality's data is read.
        heads = config.head_heads or encoder_config.heads
        if config.head == "cross_attention" and encoder_config.dim % heads:
            raise ConfigError(f"'pretext.head_heads' ({heads}) must divide 'encoder.dim' ({encoder_config.dim}).")
        if len(modality.axes) < 2 and tuple(config.aspect_range) != (1.0, 1.0):
            raise ConfigError(
                f"'pretext.aspect_range' needs at least 2 axes, but modality {modality.name!r} has "
                f"{len(modality.axes)} ({', '.join(modality.axes)}); use 'pretext.scale_range', got "
                f"{list(config.aspect_range)}."
            )
        check_size_ranges(config.scale_range, config.aspect_range, "pretext.")
        ratio = encoder_config.pos_mask_ratio
        if encoder_config.pos_embed == "none":
            if ratio > 0:
                raise ConfigError(
                    f"'encoder.pos_mask_ratio' masks position embeddings, but 'encoder.pos_embed' is "
                    f"'none'; set 'encoder.pos_embed' to 'sincos' for position-masked PART or the ratio "
                    f"to 0, got pos_mask_ratio {ratio:g}."
                )
            if config.pair_loss == "masked":
                raise ConfigError(
                    "'pretext.pair_loss' 'masked' trains on the pairs involving a patch whose position "
                    "is masked, so it needs 'encoder.pos_embed' 'sincos' and 'encoder.pos_mask_ratio' "
                    "above 0, got pos_embed 'none'."
                )
        elif ratio == 0:
            raise ConfigError(
                "With 'encoder.pos_embed' 'sincos' and no masking PART's encoder sees every patch's "
                "position, which gives every offset away; set 'encoder.pos_mask_ratio' in (0, 1) (the "
                "paper's EEG experiment uses 0.2) or 'encoder.pos_embed' to 'none', got pos_mask_ratio 0."
            )
        if config.n_patches:
            cls.check_position_masking(encoder_config, config.n_patches)
        if config.scope == "recording":
            cls.check_recording_scope(config, modality, encoder_config)

    @staticmethod
    def check_recording_scope(config, modality, encoder_config) -> None:
        """Refuse what PART across windows cannot do: no time axis, or positions the encoder sees."""
        if len(modality.axes) != 1:
            raise ConfigError(
                f"'pretext.scope' 'recording' places patches in a recording's time, so it needs a "
                f"modality with one axis (time), but modality {modality.name!r} has {len(modality.axes)} "
                f"({', '.join(modality.axes)}); use 'pretext.scope' 'window'."
            )
        if encoder_config.pos_embed != "none":
            raise ConfigError(
                "'pretext.scope' 'recording' trains an encoder without positions (a window's place in "
                "its recording must come from content), so 'encoder.pos_embed' must be 'none', got "
                f"{encoder_config.pos_embed!r}."
            )

    @staticmethod
    def check_position_masking(encoder_config, n_patches: int) -> None:
        """Refuse a mask ratio that hides no position of ``n_patches`` (every offset visible)."""
        if encoder_config.pos_embed != "sincos":
            return
        ratio = encoder_config.pos_mask_ratio
        if masked_count(ratio, n_patches) == 0:
            raise ConfigError(
                f"'encoder.pos_mask_ratio' {ratio:g} of {n_patches} patches masks "
                f"round({ratio * n_patches:g}) = 0 positions, so every patch's position is visible and "
                f"gives every offset away; use at least {0.5 / n_patches:g} (one patch)."
            )

    def __init__(self, config, modality, encoder_config, data):
        super().__init__(config, modality, encoder_config, data)
        # resolve_config has run both; again here for a config built in Python.
        config.validate()
        self.check_config(config, type(modality), encoder_config)
        self.patch_size = modality.patch_size()
        self.patch_shape = modality.patch_shape()
        # channels with positions add their spatial axes in front of the tensor axes (relpos.space)
        self.space_axes = int(data.positions.shape[-1]) if getattr(data, "positions", None) is not None else 0
        if self.space_axes and config.scope == "recording":
            raise ConfigError(
                "'pretext.scope' 'recording' reads whole windows along time, not channel tokens placed in space; "
                "use 'pretext.scope' 'window' with modality.space, or modality.space=none."
            )
        n_axes = modality.n_axes + self.space_axes
        if self.sampling == "grid":
            self.n_patches = grid_count(self.extent, self.patch_size)
            if config.n_patches not in (0, self.n_patches):
                raise ConfigError(
                    f"PART-grid uses every grid patch ({self.n_patches} for extent "
                    f"{list(self.extent)}), so 'pretext.n_patches' must be 0 or {self.n_patches}, "
                    f"got {config.n_patches}."
                )
            grid = grid_boxes(self.extent, self.patch_size)
            self.register_buffer("grid_center", grid.center, persistent=False)
            self.grid_layout = grid.layout  # every box's size, inside the extent (geometry.BoxLayout)
        else:
            self.n_patches = config.n_patches or modality.default_num_patches(self.extent)
        if self.n_patches < 2:
            raise ConfigError(
                f"PART needs at least 2 patches per sample; extent {list(self.extent)} with patch size "
                f"{list(self.patch_size)} gives {self.n_patches}."
            )
        self.check_position_masking(encoder_config, self.n_patches)
        self.masks_positions = encoder_config.pos_embed == "sincos"
        out_dim = target_dim(n_axes, config.predict_size)
        dim = encoder_config.dim
        self.across_windows = config.scope == "recording"
        head_tokens = self.n_patches
        if self.across_windows:
            from relpos.neighbours import WithinSpan

            self.window_request = WithinSpan(k=config.windows, span_s=config.span_s)
            self.seconds_per_sample = self.time_scale(modality, data)
            head_tokens = config.windows * self.n_patches  # the head reads every window's tokens
            self.n_within_pairs = round(config.within_ratio * config.n_pairs)
        if config.head == "cross_attention":
            heads = config.head_heads or encoder_config.heads
            self.head = CrossAttentionHead(dim, heads, out_dim)
        elif config.head == "pairwise_mlp":
            self.head = PairwiseHead(dim, out_dim)
        else:
            self.head = FullMLPHead(dim, head_tokens, out_dim)
        self.n_axes = n_axes
        self.log_keys = (
            (BASELINE_KEY, "center_l2")
            + (("size_mse",) if config.predict_size else ())
            + (("mse_masked_pairs", "baseline_masked_pairs", "mse_visible_pairs") if self.masks_positions else ())
        )
        if self.space_axes:  # the spatial components alone: their share of the MSE is small beside Δt's
            self.log_keys += ("mse_space", "baseline_space")
        if self.across_windows:
            n_cross = config.n_pairs - self.n_within_pairs
            self.log_keys += (("mse_within_pairs", "baseline_within_pairs") if self.n_within_pairs else ()) + (
                ("mse_cross_pairs", "baseline_cross_pairs") if n_cross else ()
            )

    @staticmethod
    def time_scale(modality, data) -> float:
        """Seconds per native sample of the time axis: the modality's unit, else the windows' lengths."""
        axis = modality.axis_units()[0]
        if getattr(axis, "unit", "samples") == "s" and axis.scale > 0:
            return float(axis.scale)
        durations = getattr(data, "durations", None)
        if durations is not None and len(durations) and float(np.median(durations)) > 0:
            return float(np.median(durations)) / data.extent[0]
        raise ConfigError(
            f"'pretext.scope' 'recording' measures offsets in a recording's time, but modality "
            f"{modality.name!r} gives its time axis in {getattr(axis, 'unit', 'samples')!r}, not seconds, "
            f"and the windows carry no durations; use 'pretext.scope' 'window'."
        )

    def sample_boxes(self, batch_size: int, generator: torch.Generator, device: torch.device) -> Boxes:
        if self.sampling == "grid":
            center = self.grid_center.to(device).expand(batch_size, -1, -1)
            size = torch.tensor(self.patch_size, device=device).expand_as(center)
            return Boxes(center, size, self.grid_layout)
        return sample_offgrid(
            batch_size,
            self.extent,
            self.patch_size,
            self.n_patches,
            generator,
            self.config.scale_range,
            self.config.aspect_range,
            device=device,
        )

    def forward(self, batch, generator):
        if self.across_windows:
            return self.forward_across_windows(batch, generator)
        x = batch["x"]
        batch_size = x.shape[0]
        if self.space_axes:
            # one channel per token: boxes (x, y, z, t), the channel's position with size 1, so the targets
            # are (Δx, Δy, Δz) in the positions' unit and Δt in patch lengths
            channel, time_boxes, boxes = sample_channel_tokens(
                batch["positions"], self.extent, self.patch_size, self.n_patches, generator,
                self.config.scale_range, x.device,
            )
            patches = extract_channel_patches(x, channel, time_boxes, self.patch_shape)
        else:
            boxes = self.sample_boxes(batch_size, generator, x.device)
            patches = extract_patches(x, boxes, self.patch_shape)
        pos_masked = None
        if self.masks_positions:
            # Drawn here, not inside the encoder, because the loss and logs must know which pairs
            # involve a masked patch; also outside training, since visible positions give PART away.
            pos_masked = position_mask(
                batch_size, self.n_patches, self.encoder.config.pos_mask_ratio, generator, x.device
            )
        tokens = self.encoder(patches, boxes.center, generator, pos_masked=pos_masked)[:, 1:]
        if self.config.pair_max_offset > 0:
            ref, tgt = sample_near_pairs(boxes, self.config.n_pairs, self.config.pair_max_offset, generator)
        else:
            ref, tgt = sample_pairs(batch_size, self.n_patches, self.config.n_pairs, generator, x.device)
        theta = relative_transform(boxes.gather(ref), boxes.gather(tgt), self.config.predict_size)
        pred = self.head(tokens, ref, tgt).float()
        pair_error = (pred - theta).pow(2).mean(dim=-1)  # (B, n_pairs): MSE over components
        masked_pair = None
        if pos_masked is not None:
            masked_pair = pos_masked.gather(1, ref) | pos_masked.gather(1, tgt)
        if self.config.pair_loss == "masked":
            loss = _masked_mean(pair_error, masked_pair)
            baseline = positions_only_baseline(boxes, pos_masked, ref, tgt, theta, masked_pair)
        else:
            loss = pair_error.mean()
            if pos_masked is None:
                baseline = constant_baseline(theta)
            else:
                baseline = positions_only_baseline(boxes, pos_masked, ref, tgt, theta)
        with torch.no_grad():
            d = self.n_axes
            logs = {
                BASELINE_KEY: baseline,
                "center_l2": (pred[..., :d] - theta[..., :d]).norm(dim=-1).mean(),
            }
            if self.config.predict_size:
                logs["size_mse"] = F.mse_loss(pred[..., d:], theta[..., d:])
            if self.space_axes:
                space = self.space_axes
                logs["mse_space"] = F.mse_loss(pred[..., :space], theta[..., :space])
                logs["baseline_space"] = constant_baseline(theta[..., :space])
            if masked_pair is not None:
                logs["mse_masked_pairs"] = _masked_mean(pair_error, masked_pair)
                logs["baseline_masked_pairs"] = positions_only_baseline(
                    boxes, pos_masked, ref, tgt, theta, masked_pair
                )
                logs["mse_visible_pairs"] = _masked_mean(pair_error, ~masked_pair)
        return loss, logs

    def windows_of(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(B, K, C, T)`` and ``onsets`` ``(B, K)`` of a batch of K windows per sample, checked."""
        x, onsets, k = batch.get("x"), batch.get("onsets"), self.config.windows
        if not (
            isinstance(x, torch.Tensor) and isinstance(onsets, torch.Tensor) and x.dim() == 3 + self.n_axes
            and x.shape[1] == k and tuple(onsets.shape) == tuple(x.shape[:2])
        ):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else None
            onset_shape = tuple(onsets.shape) if isinstance(onsets, torch.Tensor) else None
            raise DataError(
                f"PART with 'pretext.scope' 'recording' needs batches of {k} windows of one recording "
                f"each ({{'x': (B, {k}, C, T), 'onsets': (B, {k})}}), got x of shape {got} and onsets "
                f"of shape {onset_shape}."
            )
        return x, onsets

    def pairs_across_windows(self, boxes: Boxes, batch_size: int, generator: torch.Generator):
        """``(B, n_pairs)`` reference and target indices into the K·N patches of each sample: first
        the within-window pairs (today's sampler, in a window drawn per pair), then pairs whose two
        patches lie in different windows (windows and patches uniform)."""
        k, n, n_pairs = self.config.windows, self.n_patches, self.config.n_pairs
        n_within = self.n_within_pairs
        device, gen_device = boxes.center.device, generator.device
        refs, tgts = [], []
        if n_within:
            if self.config.pair_max_offset > 0:
                ref, tgt = sample_near_pairs(boxes, n_within, self.config.pair_max_offset, generator)
            else:
                ref, tgt = sample_pairs(batch_size * k, n, n_within, generator, device)
            window = torch.randint(0, k, (batch_size, 1, n_within), generator=generator, device=gen_device)
            window = to_device(window, device)
            pick = lambda index: index.reshape(batch_size, k, n_within).gather(1, window).squeeze(1)  # noqa: E731
            refs.append(pick(ref) + window.squeeze(1) * n)
            tgts.append(pick(tgt) + window.squeeze(1) * n)
        n_cross = n_pairs - n_within
        if n_cross:
            shape = (batch_size, n_cross)
            ref_window = torch.randint(0, k, shape, generator=generator, device=gen_device)
            tgt_window = (ref_window + torch.randint(1, k, shape, generator=generator, device=gen_device)) % k
            ref_patch = torch.randint(0, n, shape, generator=generator, device=gen_device)
            tgt_patch = torch.randint(0, n, shape, generator=generator, device=gen_device)
            refs.append(to_device(ref_window * n + ref_patch, device))
            tgts.append(to_device(tgt_window * n + tgt_patch, device))
        return torch.cat(refs, dim=1), torch.cat(tgts, dim=1)

    def forward_across_windows(self, batch, generator):
        x, onsets = self.windows_of(batch)
        batch_size, k = x.shape[:2]
        boxes = self.sample_boxes(batch_size * k, generator, x.device)  # (B·K, N, 1), in each window
        patches = extract_patches(x.reshape(batch_size * k, *x.shape[2:]), boxes, self.patch_shape)
        tokens = self.encoder(patches, boxes.center, generator)[:, 1:]  # each window encoded on its own
        tokens = tokens.reshape(batch_size, k * self.n_patches, tokens.shape[-1])
        ref, tgt = self.pairs_across_windows(boxes, batch_size, generator)
        # the patches in the recording's time: centres shifted by their window's onset, in samples
        # (relative to the sample's first window, in float64, so hours of onsets lose no precision)
        onsets = onsets.to(device=x.device, dtype=torch.float64)
        shift = (onsets - onsets[:, :1]) / self.seconds_per_sample
        center = boxes.center.double().reshape(batch_size, k, self.n_patches, 1) + shift[..., None, None]
        in_recording = Boxes(center.reshape(batch_size, -1, 1), boxes.size.double().reshape(batch_size, -1, 1))
        theta = relative_transform(in_recording.gather(ref), in_recording.gather(tgt), self.config.predict_size)
        theta = torch.cat([compressed_offset(theta[..., :1]), theta[..., 1:]], dim=-1).float()
        pred = self.head(tokens, ref, tgt).float()
        pair_error = (pred - theta).pow(2).mean(dim=-1)
        loss = pair_error.mean()
        with torch.no_grad():
            logs = {
                BASELINE_KEY: constant_baseline(theta),
                "center_l2": (pred[..., :1] - theta[..., :1]).norm(dim=-1).mean(),
            }
            if self.config.predict_size:
                logs["size_mse"] = F.mse_loss(pred[..., 1:], theta[..., 1:])
            within = torch.zeros_like(pair_error, dtype=torch.bool)
            within[:, : self.n_within_pairs] = True
            for kind, selected in (("within", within), ("cross", ~within)):
                if f"mse_{kind}_pairs" in self.log_keys:
                    logs[f"mse_{kind}_pairs"] = _masked_mean(pair_error, selected)
                    # the pairs of a kind are columns: sliced, the same numbers as indexed, with no wait
                    columns = slice(None, self.n_within_pairs) if kind == "within" else slice(self.n_within_pairs, None)
                    logs[f"baseline_{kind}_pairs"] = constant_baseline(theta[:, columns])
        return loss, logs

    def decoded_offsets(self, predicted: torch.Tensor) -> torch.Tensor:
        """Head outputs as offsets in reference sizes (across windows: undo :func:`compressed_offset`)."""
        if not self.across_windows:
            return predicted
        return torch.cat([expanded_offset(predicted[..., :1]), predicted[..., 1:]], dim=-1)

    def memory_hint(self, batch_size: int) -> str | None:
        if not self.across_windows:
            return None
        return (
            f"lower train.batch_size (now {batch_size}; each sample reads {self.config.windows} windows) "
            f"or pretext.windows (now {self.config.windows})"
        )

    def draw_figure(self, name, x, generator):
        from relpos_plugins.part_figures import DRAWERS

        if name not in DRAWERS:
            return super().draw_figure(name, x, generator)
        return DRAWERS[name](self, x.to(next(self.parameters()).device), generator)


class PARTGrid(PART):
    """PART-grid: the PART objective on non-overlapping grid patches (the sampling ablation)."""

    name = "part-grid"
    Config = PARTGridConfig
    sampling = "grid"
    channel_tokens = False  # its grid is the tensor axes' grid


@hookimpl
def register_pretexts(register):
    register(PART)
    register(PARTGrid)

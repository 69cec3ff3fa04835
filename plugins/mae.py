"""MAE: masked autoencoding of grid patches (He et al., "Masked autoencoders are scalable vision learners").

The baseline of the PART paper's tables, written on boxes so it trains on any number of axes:

1. the sample is cut into its N grid patches (:func:`relpos.grid_boxes`, row-major);
2. ``N − int(N · (1 − mask_ratio))`` of them are masked per sample, uniformly at random
   (:func:`random_masking`; 0.75 in the paper): the official code's count, which truncates the
   *visible* count (:func:`relpos.masking.visible_token_count`; 196 patches at 0.75: 49 visible,
   147 masked; 10 at 0.33: 6 visible, 4 masked);
3. the encoder sees only the visible patches, with sin-cos embeddings of their box centres
   (``encoder.pos_mask_ratio`` r > 0 drops those of round(r · visible) of them on top, the PART
   paper's 20 % for its EEG comparison);
4. a small transformer decoder gets the encoded visible tokens (through a linear map to its own
   width), a learnable mask token in place of every masked patch, its own sin-cos positions of
   every box centre, and predicts every patch's values;
5. the loss is the mean squared error over the *masked* patches only. With ``norm_pix_loss`` (the
   default, as in the paper's best setting) the target of a patch is its values normalised by their
   own mean and standard deviation: ``(t − mean(t)) / sqrt(var(t) + 1e-6)``, with the unbiased
   variance, exactly as facebookresearch/mae's ``forward_loss`` (``Tensor.var`` defaults to it).

A target patch is every value of the patch: for EEG the patch's samples on every channel
(``C × P`` values), for images its pixels on every colour channel, flattened in the order
:func:`relpos.extract_patches` returns them.

Decoder defaults are scaled down from the paper's 512-wide, 8-block decoder (for a 1024-wide
ViT-L encoder): half the default encoder's width (96), 2 blocks and 3 heads, so a step costs about
a third more than the encoder's forward pass on two CPU cores. Set ``pretext.decoder_dim``,
``decoder_depth`` and ``decoder_heads`` for the paper's shape.

The trivial baseline (``loss_baseline``) is the loss of the best constant prediction of the
batch's masked targets: their mean per value, so the mean over values of their variance (close
to 1 with ``norm_pix_loss``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from relpos import hookimpl
from relpos.config import check_fields, setting
from relpos.encoders.vit import position_mask, sincos_embedding
from relpos.errors import ConfigError
from relpos.extraction import extract_patches
from relpos.geometry import Boxes
from relpos.masking import mae_masked_count, visible_token_count
from relpos.pretext import Pretext
from relpos.sampling import grid_boxes, grid_count
from relpos.trivial_baseline import BASELINE_KEY
from relpos.transfer import to_device

#: ``var + NORM_EPS`` under the square root of the normalised target (facebookresearch/mae's 1e-6).
NORM_EPS = 1e-6


@dataclass
class MAEConfig:
    """Options of the MAE pretext."""

    # fraction of the grid patches hidden from the encoder: N − int(N · (1 − ratio)) per sample (MAE's)
    mask_ratio: float = setting(0.75, ge=0, lt=1)
    # normalise each target patch by its own mean and standard deviation (the paper's default)
    norm_pix_loss: bool = setting(True)
    decoder_dim: int = setting(96, ge=1, le=65536)
    decoder_depth: int = setting(2, ge=1, le=1024)
    decoder_heads: int = setting(3, ge=1, le=65536)  # must divide decoder_dim

    def validate(self) -> None:
        check_fields(self, "pretext")
        check_decoder_heads(self)


def check_decoder_heads(config) -> None:
    """The decoder's attention heads must split its width evenly (MAE's and DropPos's decoders)."""
    if config.decoder_dim % config.decoder_heads:
        raise ConfigError(
            f"'pretext.decoder_dim' ({config.decoder_dim}) must be divisible by "
            f"'pretext.decoder_heads' ({config.decoder_heads})."
        )


def check_masking(setting_name: str, ratio: float, n_tokens: int, what: str = "patches") -> None:
    """Refuse a mask ratio that leaves no masked token, or no visible one, out of ``n_tokens``.

    The counts are MAE's (:func:`relpos.masking.mae_masked_count`).

    Parameters
    ----------
    setting_name : str
        The option's key, for the message (e.g. ``"pretext.mask_ratio"``).
    ratio : float
        The mask ratio in [0, 1).
    n_tokens : int
        How many tokens it is applied to.
    what : str
        What the tokens are, for the message.
    """
    n_masked = mae_masked_count(ratio, n_tokens)
    if n_masked == 0:
        raise ConfigError(
            f"'{setting_name}' {ratio:g} of {n_tokens} {what} keeps int({n_tokens * (1 - ratio):g}) = "
            f"{n_tokens} visible and masks none, which leaves nothing to predict; use more than "
            f"{1 / n_tokens:.3g} (one of {n_tokens})."
        )
    if n_masked == n_tokens:
        raise ConfigError(
            f"'{setting_name}' {ratio:g} of {n_tokens} {what} masks all {n_tokens}, which leaves no visible "
            f"one; use at most {(n_tokens - 1) / n_tokens:.3g}."
        )


def random_masking(
    batch: int, n_tokens: int, ratio: float, generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask ``n_tokens − int(n_tokens · (1 − ratio))`` tokens per sample, uniformly at random.

    The count is MAE's (:func:`relpos.masking.mae_masked_count`); a fixed count per sample, so every
    sample poses the same task, as MAE's ``random_masking`` does by sorting noise.

    Returns
    -------
    masked : torch.Tensor
        ``(batch, n_tokens)`` bool, True for the masked tokens.
    visible_idx : torch.Tensor
        ``(batch, n_visible)`` long, the visible tokens' indices in increasing (grid) order.
    masked_idx : torch.Tensor
        ``(batch, n_masked)`` long, the masked tokens' indices in increasing order.
    """
    n_visible = visible_token_count(ratio, n_tokens)
    masked = random_subset_mask(batch, n_tokens, n_tokens - n_visible, generator, device)
    # A stable sort of the 0/1 mask puts the visible tokens first, each part in grid order.
    order = torch.argsort(masked.to(torch.int8), dim=1, stable=True)
    return masked, order[:, :n_visible], order[:, n_visible:]


def random_subset_mask(
    batch: int, n_tokens: int, n_masked: int, generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(batch, n_tokens)`` bool, exactly ``n_masked`` True per row, a uniformly random subset.

    The draw is :func:`relpos.encoders.vit.position_mask`'s (the ``n_masked`` lowest of uniform scores),
    so where the counts agree the two give the same masks from the same stream.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    scores = torch.rand((batch, n_tokens), generator=generator, device=gen_device)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return to_device(ranks < n_masked, device if device is not None else gen_device)


def take_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tokens[b, index[b, m]]`` for ``(B, N, *rest)`` tokens and ``(B, M)`` indices."""
    expanded = index.reshape(*index.shape, *([1] * (tokens.dim() - 2))).expand(*index.shape, *tokens.shape[2:])
    return tokens.gather(1, expanded)


def patch_targets(patches: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Reconstruction targets: each patch's values flattened, optionally normalised per patch.

    Parameters
    ----------
    patches : torch.Tensor
        ``(B, N, C, *patch_shape)``.
    normalize : bool
        ``(t − mean(t)) / sqrt(var(t) + 1e-6)`` per patch, with the unbiased variance (MAE's
        ``norm_pix_loss``).

    Returns
    -------
    torch.Tensor
        ``(B, N, C·∏patch_shape)`` float32.
    """
    target = patches.reshape(*patches.shape[:2], -1).float()
    if normalize:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + NORM_EPS).sqrt()
    return target


def constant_baseline(targets: torch.Tensor) -> torch.Tensor:
    """The MSE of the best constant prediction of ``targets`` ``(M, K)``: the mean of their variances."""
    targets = targets.detach().float()
    if targets.shape[0] == 0:
        return targets.new_zeros(())
    return (targets - targets.mean(dim=0)).pow(2).mean()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MAE's loss: the squared error averaged over each patch's values, then over the masked patches.

    Returns the loss and the ``(B, N)`` per-patch errors.
    """
    per_patch = (pred - target).pow(2).mean(dim=-1)
    weight = masked.to(per_patch.dtype)
    return (per_patch * weight).sum() / weight.sum(), per_patch


class TokenDecoder(nn.Module):
    """A small transformer decoder over tokens at known boxes (MAE's and DropPos's decoder).

    A linear map from the encoder's width to its own, its own (fixed) sin-cos embeddings of the box
    centres, timm ``Block``s and a final LayerNorm; the CLS token passes through, as in MAE's
    decoder. A learnable mask token stands in for the content of masked patches (MAE) and,
    with ``position_mask_token``, another for the position of tokens whose position is dropped
    (DropPos).

    Parameters
    ----------
    encoder_dim, dim, depth, heads : int
        The encoder's width, then the decoder's width, blocks and attention heads.
    mlp_ratio : float
    position_mask_token : bool
        Whether to build the learnable token that replaces dropped positions.
    """

    def __init__(self, encoder_dim: int, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0,
                 position_mask_token: bool = False):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.dim = dim
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.pos_mask_token = None
        if position_mask_token:
            self.pos_mask_token = nn.Parameter(torch.zeros(1, 1, dim))
            nn.init.normal_(self.pos_mask_token, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio=mlp_ratio, qkv_bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, cls_and_tokens: torch.Tensor, centers: torch.Tensor,
                masked: torch.Tensor | None = None, positions_dropped: torch.Tensor | None = None) -> torch.Tensor:
        """Decode ``(B, 1 + M, encoder_dim)`` tokens at box centres ``(B, M, D)``.

        Parameters
        ----------
        masked : torch.Tensor, optional
            ``(B, M)`` bool: tokens whose content is replaced by the mask token (their encoder
            output, if any, is ignored).
        positions_dropped : torch.Tensor, optional
            ``(B, M)`` bool: tokens whose position embedding is replaced by the position mask token.

        Returns
        -------
        torch.Tensor
            ``(B, 1 + M, dim)``.
        """
        x = self.embed(cls_and_tokens)
        cls, tokens = x[:, :1], x[:, 1:]
        if masked is not None:
            tokens = torch.where(masked.unsqueeze(-1), self.mask_token.to(x.dtype), tokens)
        pos = sincos_embedding(centers, self.dim).to(x.dtype)
        if positions_dropped is not None:
            pos = torch.where(positions_dropped.unsqueeze(-1), self.pos_mask_token.to(x.dtype), pos)
        x = torch.cat([cls, tokens + pos], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class GridPretext(Pretext):
    """Shared set-up of the grid-based baselines: the N grid boxes of the sample, in row-major order."""

    min_axes = 1

    def __init__(self, config, modality, encoder_config, data):
        super().__init__(config, modality, encoder_config, data)
        config.validate()
        self.check_config(config, type(modality), encoder_config)
        self.patch_size = modality.patch_size()
        self.patch_shape = modality.patch_shape()
        self.n_patches = grid_count(self.extent, self.patch_size)
        if self.n_patches < 2:
            raise ConfigError(
                f"Pretext {self.name!r} needs at least 2 grid patches per sample; extent {list(self.extent)} "
                f"with patch size {list(self.patch_size)} gives {self.n_patches}."
            )
        grid = grid_boxes(self.extent, self.patch_size)
        self.register_buffer("grid_center", grid.center, persistent=False)
        self.register_buffer("grid_size", grid.size, persistent=False)
        self.grid_layout = grid.layout  # every box's size, inside the extent, at whole pixels

    def grid(self, batch_size: int, device: torch.device) -> Boxes:
        """The grid boxes, ``(B, N, D)``, the same for every sample."""
        center = self.grid_center.to(device).expand(batch_size, -1, -1)
        return Boxes(center, self.grid_size.to(device).expand_as(center), self.grid_layout)


class MAE(GridPretext):
    """MAE: reconstruct the masked grid patches from the visible ones (MSE on masked patches)."""

    name = "mae"
    Config = MAEConfig
    encoder_pos_embed = ("sincos",)
    encoder_defaults = {"pos_embed": "sincos"}
    log_keys = (BASELINE_KEY, "mse_visible")

    def __init__(self, config, modality, encoder_config, data):
        super().__init__(config, modality, encoder_config, data)
        check_masking("pretext.mask_ratio", config.mask_ratio, self.n_patches)
        self.decoder = TokenDecoder(
            encoder_config.dim, config.decoder_dim, config.decoder_depth, config.decoder_heads,
            encoder_config.mlp_ratio,
        )
        self.predict = nn.Linear(config.decoder_dim, self.encoder.token_dim)

    def forward(self, batch, generator):
        x = batch["x"]
        batch_size = x.shape[0]
        boxes = self.grid(batch_size, x.device)
        patches = extract_patches(x, boxes, self.patch_shape)
        masked, visible_idx, masked_idx = random_masking(
            batch_size, self.n_patches, self.config.mask_ratio, generator, x.device
        )
        encoded = self.encoder(take_tokens(patches, visible_idx), take_tokens(boxes.center, visible_idx), generator)
        # The visible tokens back at their grid positions; the masked slots' zeros are replaced
        # by the decoder's mask token.
        width = encoded.shape[-1]
        full = encoded.new_zeros(batch_size, self.n_patches, width)
        full = full.scatter(1, visible_idx.unsqueeze(-1).expand(-1, -1, width), encoded[:, 1:])
        decoded = self.decoder(torch.cat([encoded[:, :1], full], dim=1), boxes.center, masked=masked)
        pred = self.predict(decoded[:, 1:]).float()
        target = patch_targets(patches, self.config.norm_pix_loss)
        loss, per_patch = masked_mse(pred, target, masked)
        with torch.no_grad():
            # Gathered by index, not by boolean mask (whose count a GPU would have to report to the host);
            # the indices are in grid order, so the values and their order are a boolean mask's.
            masked_targets = target.gather(1, masked_idx.unsqueeze(-1).expand(-1, -1, target.shape[-1]))
            n_visible = visible_idx.shape[1]
            logs = {
                BASELINE_KEY: constant_baseline(masked_targets.reshape(-1, target.shape[-1])),
                "mse_visible": per_patch.gather(1, visible_idx).mean() if n_visible else per_patch.new_zeros(()),
            }
        return loss, logs


@hookimpl
def register_pretexts(register):
    register(MAE)

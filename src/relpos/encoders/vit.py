"""``vit``: relpos's patch transformer, its options and its position embeddings.

A transformer over tokens (:class:`PatchEncoder`): a linear patch embedding ``C·∏P → dim`` (one
linear layer per patch, as the PART paper tokenises EEG), a CLS token, timm ``Block``s and a final
LayerNorm. Positions are optional: PART and MP3 must not see them (``pos_embed="none"``); methods
and fine-tuning that use them get sin-cos embeddings computed from the boxes' continuous centres,
with an optional fraction of them masked (the PART paper masks 20 % in its EEG experiment).
:class:`ViTEncoder` registers it as encoder ``vit``; :class:`EncoderConfig` is its ``encoder``
options.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..extraction import extract_patches
from ..ranges import check_fields, setting
from ..sampling import grid_boxes
from .base import Encoder, EncoderOptions


#: The most weights :class:`EncoderConfig` may ask for: 1e10 float32 parameters are 40 GB before
#: gradients and optimiser state, beyond any single accelerator relpos trains on.
MAX_ENCODER_PARAMETERS = 10**10


@dataclass
class EncoderConfig(EncoderOptions):
    """Transformer encoder hyper-parameters: the ``encoder`` options of ``vit`` (its ``Config``).

    Defaults are a small ViT (``dim=192``, 6 blocks) that trains in minutes on two CPU cores;
    ViT-S is ``dim=384, depth=12, heads=6`` and ViT-B ``dim=768, depth=12, heads=12``.
    ``arch`` picks another registered encoder (:mod:`relpos.encoders`), which declares options of
    its own (:attr:`relpos.encoders.Encoder.Config`); these transformer options apply to ``vit``.
    """

    dim: int = setting(192, ge=1, le=65536)
    depth: int = setting(6, ge=1, le=1024)
    heads: int = setting(3, ge=1, le=65536)  # must divide dim
    mlp_ratio: float = setting(4.0, gt=0, le=64)
    drop_path: float = setting(0.0, ge=0, lt=1)
    pos_embed: str = setting("none", choices=("none", "sincos"))
    # fraction of position embeddings dropped per sample during training: exactly
    # masked_count(pos_mask_ratio, N) of the N tokens (see position_mask)
    pos_mask_ratio: float = setting(0.0, ge=0, lt=1)

    def validate(self) -> None:
        check_fields(self, "encoder")
        if self.dim % self.heads:
            raise ConfigError(
                f"'encoder.dim' ({self.dim}) must be divisible by 'encoder.heads' ({self.heads})."
            )
        # Each field may be in range while together they ask for more weights than any machine
        # holds (dim=65536 at depth 6 is 3e11); refuse that here rather than fail allocating them.
        n_params = self.approx_parameters()
        if n_params > MAX_ENCODER_PARAMETERS:
            raise ConfigError(
                f"An encoder with encoder.dim={self.dim}, encoder.depth={self.depth} and "
                f"encoder.mlp_ratio={self.mlp_ratio:g} has about {n_params:.2g} parameters; at most "
                f"{MAX_ENCODER_PARAMETERS:.0e} are allowed (ViT-B has 8.6e+07, ViT-G 1.8e+09)."
            )

    def approx_parameters(self) -> int:
        """Weights of the transformer blocks: per block 4·dim² (attention) + 2·mlp_ratio·dim² (MLP)."""
        return int(self.depth * (4 + 2 * self.mlp_ratio) * self.dim**2)


def sincos_embedding(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Sin-cos embedding of continuous positions.

    Parameters
    ----------
    positions : torch.Tensor
        ``(..., D)`` coordinates (e.g. box centres in native units).
    dim : int
        Output width; split evenly across the D axes, half sine and half cosine each (any
        remainder is zero-padded).

    Returns
    -------
    torch.Tensor
        ``(..., dim)``.
    """
    n_axes = positions.shape[-1]
    per_axis = (dim // n_axes) // 2 * 2
    half = per_axis // 2
    freq = torch.arange(half, device=positions.device, dtype=torch.float32) / max(half, 1)
    freq = 1.0 / temperature**freq
    angles = positions.float().unsqueeze(-1) * freq  # (..., D, half)
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (..., D * per_axis)
    pad = dim - emb.shape[-1]
    if pad:
        emb = torch.nn.functional.pad(emb, (0, pad))
    return emb


def masked_count(ratio: float, n_tokens: int) -> int:
    """How many of ``n_tokens`` positions a mask ratio hides: ``round(ratio · n_tokens)``, halves up.

    Half-up rather than Python's round-half-to-even, so 0.25 of 10 tokens masks 3, as a user reading
    "25 %" expects, whatever the parity.
    """
    return min(int(n_tokens), int(math.floor(ratio * n_tokens + 0.5)))


def position_mask(
    batch: int, n_tokens: int, ratio: float, generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Which tokens lose their position embedding: exactly :func:`masked_count` per sample.

    A fixed count per sample (the positions chosen uniformly at random) rather than an independent
    coin per token, so every sample of a batch poses the same task (with 40 patches and ratio 0.2,
    always 8 masked, never 3 or 14).

    Parameters
    ----------
    batch, n_tokens : int
    ratio : float
        Fraction in [0, 1).
    generator : torch.Generator, optional
        The random stream the positions are drawn from; its device is where they are drawn.
    device : torch.device or str, optional
        Where the returned mask lives (default: the generator's device).

    Returns
    -------
    torch.Tensor
        ``(batch, n_tokens)`` bool, True where the position is masked.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    n_masked = masked_count(ratio, n_tokens)
    scores = torch.rand((batch, n_tokens), generator=generator, device=gen_device)
    # A token's rank among its sample's random scores is uniform, so the n_masked lowest are a
    # uniformly random subset of exactly that size.
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return (ranks < n_masked).to(device if device is not None else gen_device)


class PatchEncoder(nn.Module):
    """Transformer over patch tokens.

    Parameters
    ----------
    config : EncoderConfig
    in_channels : int
        Channels C of each patch.
    patch_shape : sequence of int
        Patch resolution per axis (the output of :func:`relpos.extraction.extract_patches`).
    """

    def __init__(self, config: EncoderConfig, in_channels: int, patch_shape: Sequence[int]):
        super().__init__()
        from timm.models.vision_transformer import Block

        config.validate()
        self.config = config
        self.in_channels = int(in_channels)
        self.patch_shape = tuple(int(p) for p in patch_shape)
        self.token_dim = self.in_channels * math.prod(self.patch_shape)
        self.dim = config.dim
        self.patch_embed = nn.Linear(self.token_dim, config.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim))
        dpr = [x.item() for x in torch.linspace(0, config.drop_path, config.depth)]
        self.blocks = nn.ModuleList(
            Block(config.dim, config.heads, mlp_ratio=config.mlp_ratio, qkv_bias=True, drop_path=p)
            for p in dpr
        )
        self.norm = nn.LayerNorm(config.dim)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def init_args(self) -> dict:
        """Arguments that rebuild this encoder (stored in checkpoints)."""
        return {
            "config": asdict(self.config),
            "in_channels": self.in_channels,
            "patch_shape": list(self.patch_shape),
        }

    def forward(
        self,
        patches: torch.Tensor,
        centers: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        extra_pos: torch.Tensor | None = None,
        pos_masked: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode patches.

        Parameters
        ----------
        patches : torch.Tensor
            ``(B, N, C, *patch_shape)``.
        centers : torch.Tensor, optional
            ``(B, N, D)`` box centres; used only when ``pos_embed="sincos"``.
        generator : torch.Generator, optional
            Randomness for position masking during training.
        extra_pos : torch.Tensor, optional
            ``(1 or B, N, dim)`` embeddings added to the patch tokens, e.g. the learnable position
            embeddings that fine-tuning adds to an encoder pretrained without positions (PART).
        pos_masked : torch.Tensor, optional
            ``(B, N)`` bool, True for the tokens that get no position embedding, for a pretext that
            must know which ones they are (PART's position-masked variant draws them with
            :func:`position_mask`). Given, it replaces ``pos_mask_ratio``'s own draw, in training
            and evaluation alike; only with ``pos_embed="sincos"``.
        token_mask : torch.Tensor, optional
            ``(B, N)`` bool, True for the patches whose embedding ``mask_token`` replaces before
            position embeddings are added (masked image modelling: iBOT, SOVE).
        mask_token : torch.Tensor, optional
            ``(dim,)`` learnable embedding, owned by the pretext (so an exported encoder has none);
            required with ``token_mask``.
        context : torch.Tensor, optional
            ``(B, N)`` bool, True for the patch tokens every token may attend to (keys and
            values); the others still query, but no other output depends on them (MP3's context
            subset). The CLS token is always in the context, so no query is left without a key.

        Returns
        -------
        torch.Tensor
            ``(B, 1 + N, dim)``: the CLS token followed by one token per patch.
        """
        batch, n_patches = patches.shape[:2]
        tokens = self.patch_embed(patches.reshape(batch, n_patches, -1))
        if token_mask is not None:
            if mask_token is None:
                raise ValueError("'token_mask' needs the 'mask_token' that replaces the masked patches.")
            tokens = torch.where(token_mask.to(tokens.device).unsqueeze(-1), mask_token.to(tokens.dtype), tokens)
        if self.config.pos_embed == "sincos" and not getattr(self, "positions_dropped", False):
            if centers is None:
                raise ValueError("This encoder uses position embeddings: pass the box centres.")
            pos = sincos_embedding(centers, self.dim).to(tokens.dtype)
            if pos_masked is None and self.training and self.config.pos_mask_ratio > 0:
                pos_masked = position_mask(batch, n_patches, self.config.pos_mask_ratio, generator, tokens.device)
            if pos_masked is not None:
                pos = pos * (~pos_masked).to(tokens.device, tokens.dtype).unsqueeze(-1)
            tokens = tokens + pos
        elif pos_masked is not None:
            raise ValueError("'pos_masked' needs an encoder with position embeddings (pos_embed='sincos').")
        if extra_pos is not None:
            tokens = tokens + extra_pos.to(tokens.dtype)
        cls = self.cls_token.expand(batch, -1, -1).to(tokens.dtype)
        x = torch.cat([cls, tokens], dim=1)
        attn_mask = None
        if context is not None:
            keys = torch.cat([context.new_ones(batch, 1), context.to(torch.bool)], dim=1)
            # Additive rather than boolean, so timm's fused and unfused attention read it alike.
            attn_mask = torch.zeros(keys.shape, dtype=x.dtype, device=x.device)
            attn_mask = attn_mask.masked_fill(~keys.to(x.device), float("-inf"))[:, None, None, :]
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        return self.norm(x)


class ViTEncoder(PatchEncoder, Encoder):
    """Patch transformer over tokens of any number of axes (per-token outputs and a CLS vector)."""

    name = "vit"
    outputs = ("tokens", "vector")
    n_axes = (1, 2, 3)
    Config = EncoderConfig  # dim, depth, heads (dividing dim), mlp_ratio, drop_path, pos_embed, pos_mask_ratio

    def __init__(self, config: Any, in_channels: int, patch_shape: Sequence[int]):
        PatchEncoder.__init__(self, config, in_channels, patch_shape)

    @property
    def feature_dim(self) -> int:
        return self.dim

    def embed_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The CLS token of each input read on its regular grid of patches of :attr:`patch_shape`.

        The grid's box centres are the positions (used when ``pos_embed="sincos"``), so an input
        the size of the training samples is read exactly as :meth:`relpos.PretrainedEncoder.embed`
        reads it.
        """
        grid = grid_boxes(tuple(x.shape[2:]), [float(p) for p in self.patch_shape], device=x.device).expand(len(x))
        patches = extract_patches(x, grid, self.patch_shape)  # the grid's layout: nothing read back
        return self(patches, grid.center)[:, 0]

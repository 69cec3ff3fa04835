"""Block masking of token grids with any number of axes (BEiT / iBOT style; public API).

BEiT (Bao et al., 2021, §2.5 and its ``MaskingGenerator``) masks a 2-D grid of patches with
rectangles: draw a block area at least ``min_block_tokens`` and at most what is left to mask, an
aspect ratio log-uniform in ``[0.3, 1/0.3]``, place the block at random, keep it when it masks new
tokens without overshooting, and repeat until the requested number of tokens is masked. iBOT draws
the mask ratio per view (0.3 ± 0.2, uniform) and masks the student's global views with it.

:func:`block_mask` does the same on a grid of any number of axes: a block is a box of whole tokens
whose side along axis ``d`` is ``volume^(1/D) · r_d`` with ``log r_d`` uniform in
``[log 0.3, −log 0.3]`` and centred so the ratios multiply to 1 (the aspect ratio of 2-D grids);
on a 1-D grid (time series, EEG) a block is a run of consecutive time tokens. Unlike BEiT, when
no further block of at least ``min_block_tokens`` fits what is left, smaller blocks (down to one
token) finish the job, so a mask always hides exactly ``round(ratio · N)`` tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .errors import ConfigError
from .transfer import to_device

#: BEiT's aspect-ratio range of a block (``min_aspect = 0.3``, ``max_aspect = 1 / 0.3``).
BLOCK_ASPECT = 0.3


def check_mask_ratio(ratio_range: Sequence[float], name: str = "mask_ratio") -> tuple[float, float]:
    """``(low, high)`` with ``0 <= low <= high < 1``, or :class:`ConfigError` naming ``name``."""
    try:
        low, high = (float(v) for v in ratio_range)
    except (TypeError, ValueError):
        raise ConfigError(f"'{name}' must be two fractions [low, high], got {ratio_range!r}.") from None
    if not (0.0 <= low <= high < 1.0):
        raise ConfigError(
            f"'{name}' must be two fractions with 0 <= low <= high < 1 (a mask hides part of a view, "
            f"never all of it), got {[low, high]}."
        )
    return low, high


def masked_token_count(ratio: float, n_tokens: int) -> int:
    """How many of ``n_tokens`` a ratio masks: ``round(ratio · n_tokens)``, halves up."""
    return min(n_tokens, int(math.floor(ratio * n_tokens + 0.5)))


def visible_token_count(ratio: float, n_tokens: int) -> int:
    """How many of ``n_tokens`` stay visible under MAE's rule: ``int(n_tokens · (1 − ratio))``.

    facebookresearch/mae's ``random_masking`` keeps ``len_keep = int(L * (1 - mask_ratio))`` tokens
    and masks the rest, so the *visible* count is truncated (10 tokens at 0.33: 6 visible, 4
    masked, where rounding the masked count would give 3). DropPos's official code uses the same
    rule for its patch mask and for its position mask. One departure: a product that is a whole
    number in exact arithmetic but lands just below it in floating point (10 · (1 − 0.9) =
    0.99999…) keeps that whole number (1), where the official code would keep 0.
    """
    kept = int(math.floor(n_tokens * (1.0 - ratio) + 1e-9))
    return min(max(kept, 0), int(n_tokens))


def mae_masked_count(ratio: float, n_tokens: int) -> int:
    """How many of ``n_tokens`` MAE's rule masks: ``n_tokens − visible_token_count(ratio, n_tokens)``.

    196 tokens at 0.75 mask 147 (49 visible); 10 tokens at 0.33 mask 4 (6 visible).
    """
    return int(n_tokens) - visible_token_count(ratio, n_tokens)


def _one_block_mask(grid: tuple[int, ...], n_masked: int, min_block_tokens: int, rng: np.random.Generator,
                    max_attempts: int = 10) -> np.ndarray:
    mask = np.zeros(grid, dtype=bool)
    n_axes = len(grid)
    log_aspect = math.log(1.0 / BLOCK_ASPECT)
    while int(mask.sum()) < n_masked:
        left = n_masked - int(mask.sum())
        smallest = min(min_block_tokens, left)
        added = 0
        for _ in range(max_attempts):
            volume = rng.uniform(smallest, left)
            if n_axes == 1:
                sides = [volume]
            else:
                logs = rng.uniform(-log_aspect, log_aspect, size=n_axes)
                logs -= logs.mean()  # the sides' ratios multiply to 1: the block keeps `volume`
                sides = list(volume ** (1.0 / n_axes) * np.exp(logs))
            sides = [int(min(max(1, round(s)), g)) for s, g in zip(sides, grid)]
            start = [int(rng.integers(0, g - s + 1)) for s, g in zip(sides, grid)]
            block = tuple(slice(a, a + s) for a, s in zip(start, sides))
            new = int((~mask[block]).sum())
            if 0 < new <= left:
                mask[block] = True
                added = new
                break
        if not added:
            # No block of this size fits what is left: finish with single tokens (still blocks),
            # so the mask hides exactly n_masked tokens, never fewer.
            free = np.flatnonzero(~mask.reshape(-1))
            mask.reshape(-1)[rng.choice(free, size=1)] = True
    return mask


def block_mask(
    batch: int,
    grid_shape: Sequence[int],
    ratio_range: Sequence[float] = (0.1, 0.5),
    generator: torch.Generator | None = None,
    min_block_tokens: int = 4,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Block masks for ``batch`` token grids of shape ``grid_shape``, a ratio drawn per mask.

    Parameters
    ----------
    batch : int
        How many masks (one per view of every sample, say).
    grid_shape : sequence of int
        Tokens per axis (:attr:`relpos.views.Views.grid_shape`): ``(rows, cols)`` for images,
        ``(time,)`` for series.
    ratio_range : (float, float)
        Each mask hides ``round(r · N)`` of the ``N`` tokens with ``r`` uniform in this range,
        ``0 <= low <= high < 1``. iBOT's 0.3 ± 0.2 is the default.
    generator : torch.Generator, optional
        The only source of randomness (one draw seeds the masks), so a resumed run masks alike.
    min_block_tokens : int
        Smallest block BEiT draws (16 on its 14 × 14 grid; 4 suits the small grids of small data).
    device : optional
        Where the masks live.

    Returns
    -------
    torch.Tensor
        ``(batch, N)`` bool, True where a token is masked, in the row-major token order of
        :class:`relpos.views.Views`.
    """
    low, high = check_mask_ratio(ratio_range, "mask ratio")
    grid = tuple(int(g) for g in grid_shape)
    if not grid or any(g < 1 for g in grid):
        raise ConfigError(f"A block mask needs at least one token per axis, got grid shape {list(grid)}.")
    if min_block_tokens < 1:
        raise ConfigError(f"'min_block_tokens' must be at least 1, got {min_block_tokens}.")
    n_tokens = math.prod(grid)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    rng = np.random.default_rng(seed)
    ratios = rng.uniform(low, high, size=batch) if high > low else np.full(batch, low)
    masks = np.stack(
        [_one_block_mask(grid, masked_token_count(r, n_tokens), min_block_tokens, rng).reshape(-1) for r in ratios]
    ) if batch else np.zeros((0, n_tokens), dtype=bool)
    return to_device(torch.from_numpy(masks), device if device is not None else "cpu")

"""Space as an axis: tokens that are one channel over a box of the tensor axes, placed by the channel's position.

Windows whose channels have positions (:attr:`relpos.Windows.positions`, ``(N, C, S)``: each
channel's coordinates on ``S`` spatial axes, NaN for a channel a window does not have) are
tokenised per channel: a token is one channel's patch over a box of the tensor axes (1-D: a time
patch), and its box has ``S + D`` coordinates: the channel's position first, then the box along the
tensor axes. On the spatial axes every box has size 1, so the relative transform of
:func:`relpos.geometry.relative_transform` reads position differences in the positions' own unit
there (``Δx = x_tgt − x_ref``) and offsets in reference sizes on the tensor axes, as before.

Windows with different channel sets batch together: a window's absent channels are padded (zeros in
``x``, NaN in ``positions``), tokens are drawn only among its present channels, and an encoder
reading all of a window's channels (:func:`grid_channel_tokens`) leaves the padded ones out of
attention (``context``) and out of the pooled mean.

The channel contract (:func:`channel_contract`) is what a run records about its channels: names,
positions, their unit and the reference, per channel; a modality puts it in ``Windows.info`` and
the checkpoint keeps it in ``data_info``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .errors import ConfigError, DataError
from .extraction import extract_patches
from .geometry import Boxes
from .sampling import grid_boxes, sample_offgrid

#: The key of ``Windows.info`` (and of a checkpoint's ``data_info``) holding the channel contract.
CONTRACT_KEY = "channel_contract"


def present_channels(positions: torch.Tensor) -> torch.Tensor:
    """``(..., C)`` bool: the channels that have a position (a padded channel's are NaN)."""
    return torch.isfinite(positions).all(dim=-1)


def _channel_boxes(positions: torch.Tensor, channel: torch.Tensor, time: Boxes) -> Boxes:
    """Token boxes ``(B, N, S + D)``: the channel's position (size 1), then the tensor-axis box."""
    index = channel.unsqueeze(-1).expand(*channel.shape, positions.shape[-1])
    place = positions.to(time.center.device, time.center.dtype).gather(1, index.to(time.center.device))
    return Boxes(torch.cat([place, time.center], dim=-1), torch.cat([torch.ones_like(place), time.size], dim=-1))


def sample_channel_tokens(
    positions: torch.Tensor,
    extent: Sequence[int],
    patch_size: Sequence[float],
    n_tokens: int,
    generator: torch.Generator | None = None,
    scale_range: Sequence[float] = (1.0, 1.0),
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, Boxes, Boxes]:
    """Draw ``n_tokens`` tokens per window: a channel uniformly among those it has, and an off-grid box.

    Parameters
    ----------
    positions : torch.Tensor
        ``(B, C, S)`` channel positions, NaN for absent channels (every window has at least one).
    extent, patch_size : sequence
        The windows' extent and the patch size along the tensor axes, in native units.
    n_tokens : int
    generator : torch.Generator, optional
    scale_range : (low, high)
        As :func:`relpos.sampling.sample_offgrid` (along the tensor axes).

    Returns
    -------
    channel : torch.Tensor
        ``(B, N)`` long: each token's channel.
    tensor_boxes : Boxes
        ``(B, N, D)``: each token's box along the tensor axes (what :func:`extract_channel_patches` cuts).
    token_boxes : Boxes
        ``(B, N, S + D)``: the channel's position (size 1 per spatial axis), then ``tensor_boxes``.
    """
    batch = positions.shape[0]
    present = present_channels(positions)
    if not bool(present.any(dim=1).all()):
        raise DataError("A window has no channel with a position, so no token can be placed in it.")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    # Uniform among each window's present channels: rank random scores of the present ones only.
    weights = present.to(gen_device, torch.float32)
    channel = torch.multinomial(weights, n_tokens, replacement=True, generator=generator)
    tensor_boxes = sample_offgrid(batch, extent, patch_size, n_tokens, generator, scale_range, device=gen_device)
    channel = channel.to(device or gen_device)
    tensor_boxes = tensor_boxes.to(device or gen_device)
    return channel, tensor_boxes, _channel_boxes(positions, channel, tensor_boxes)


def extract_channel_patches(
    x: torch.Tensor, channel: torch.Tensor, boxes: Boxes, patch_shape: Sequence[int]
) -> torch.Tensor:
    """One channel's patch per token: ``(B, N, 1, *patch_shape)``.

    The windows ``(B, C, T)`` are read as one-channel images ``(B, 1, C, T)`` and each token as the box
    one row high at its channel, so :func:`relpos.extraction.extract_patches` cuts every token in one
    call (the channel offset is a whole row: no blending across channels).
    """
    if x.dim() != 3:
        raise ValueError(f"Channel tokens take windows of one tensor axis (B, C, T), got shape {tuple(x.shape)}.")
    row = channel.to(boxes.center.dtype).unsqueeze(-1) + 0.5
    image_boxes = Boxes(
        torch.cat([row, boxes.center], dim=-1), torch.cat([torch.ones_like(row), boxes.size], dim=-1)
    )
    patches = extract_patches(x.unsqueeze(1), image_boxes, (1, *[int(p) for p in patch_shape]))
    return patches.squeeze(3)  # (B, N, 1, 1, P) -> (B, N, 1, P)


def grid_channel_tokens(
    positions: torch.Tensor, extent: Sequence[int], patch_size: Sequence[float]
) -> tuple[torch.Tensor, Boxes, Boxes, torch.Tensor]:
    """Every channel of each window on the regular patch grid (how a whole window is read).

    Returns
    -------
    channel : torch.Tensor
        ``(B, C·G)`` long, channel-major (all grid patches of channel 0 first).
    tensor_boxes, token_boxes : Boxes
        ``(B, C·G, D)`` and ``(B, C·G, S + D)``; a padded channel's position is put at 0.
    present : torch.Tensor
        ``(B, C·G)`` bool: the tokens of channels the window has.
    """
    batch, n_channels = positions.shape[:2]
    device = positions.device
    grid = grid_boxes(tuple(extent), list(patch_size), device=device)  # (G, D)
    n_grid = grid.center.shape[0]
    channel = torch.arange(n_channels, device=device).repeat_interleave(n_grid).expand(batch, -1)
    center = grid.center.repeat(n_channels, 1).expand(batch, -1, -1)
    size = grid.size.repeat(n_channels, 1).expand(batch, -1, -1)
    tensor_boxes = Boxes(center, size)
    present = present_channels(positions)
    token_present = present.repeat_interleave(n_grid, dim=1)
    token_boxes = _channel_boxes(torch.nan_to_num(positions, nan=0.0), channel, tensor_boxes)
    return channel, tensor_boxes, token_boxes, token_present


def encode_channel_windows(encoder: Any, x: torch.Tensor, positions: torch.Tensor, patch_size: Sequence[float],
                           patch_shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode whole windows as channel tokens on the grid: ``(B, 1 + C·G, dim)`` and the ``(B, C·G)`` mask
    of real tokens (padded channels are no keys for any query, :meth:`relpos.PatchEncoder.forward`'s
    ``context``)."""
    channel, tensor_boxes, token_boxes, present = grid_channel_tokens(positions, tuple(x.shape[2:]), patch_size)
    patches = extract_channel_patches(x, channel, tensor_boxes, patch_shape)
    tokens = encoder(patches, token_boxes.center, context=present)
    return tokens, present


def masked_mean(tokens: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean of the ``(B, N, dim)`` tokens where ``present`` ``(B, N)`` is True."""
    weight = present.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)


def check_channel_token_pretext(pretext_cls: type, windows: Any) -> None:
    """Refuse, in one sentence, a pretext that does not read channel tokens for windows with positions
    (``windows`` may be ``True``: the modality's options say its windows will have them)."""
    has_positions = windows is True or getattr(windows, "positions", None) is not None
    if not has_positions or getattr(pretext_cls, "channel_tokens", False):
        return
    raise ConfigError(
        f"Pretext {getattr(pretext_cls, 'name', pretext_cls.__name__)!r} does not tokenise channels by their "
        f"positions, but the data's channels carry positions (modality.space); use a pretext that does "
        f"(part), or open the data without positions (modality.space=none)."
    )


def contract_positions(data_info: dict[str, Any]) -> torch.Tensor | None:
    """``(1, C, S)`` positions of the channels a run's contract lists (None without a contract)."""
    contract = (data_info or {}).get(CONTRACT_KEY)
    if not isinstance(contract, dict) or not contract.get("channels"):
        return None
    return torch.tensor([[list(map(float, c["position"])) for c in contract["channels"]]], dtype=torch.float32)


def contract_electrodes(info: dict[str, Any]) -> set[str]:
    """The electrodes (lower-case) a ``Windows.info`` or ``data_info`` speaks of: its contract's channels'
    ``electrodes`` (a derivation names two) or names, else its ``ch_names``."""
    contract = (info or {}).get(CONTRACT_KEY)
    if isinstance(contract, dict) and contract.get("channels"):
        return {str(e).lower() for c in contract["channels"] for e in (c.get("electrodes") or [c["name"]])}
    return {str(n).lower() for n in (info or {}).get("ch_names") or []}


def check_common_channels(run_info: dict[str, Any], data_info: dict[str, Any], where: str) -> None:
    """Refuse data that shares no electrode with the run's channel contract (one sentence)."""
    contract = (run_info or {}).get(CONTRACT_KEY)
    if not isinstance(contract, dict):
        return
    run, data = contract_electrodes(run_info), contract_electrodes(data_info)
    if not data or run & data:
        return

    def shown(names: set[str]) -> str:
        names = sorted(names)
        return ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")

    raise DataError(
        f"{where} has no electrode in common with the run's channel contract (the run: {shown(run)}; the data: "
        f"{shown(data)}); open data recorded with at least one of the run's electrodes."
    )


def format_contract(contract: dict[str, Any], limit: int = 8) -> list[str]:
    """Readable lines of a channel contract (``relpos data inspect`` and ``relpos show``)."""
    if not isinstance(contract, dict):
        return []
    channels = contract.get("channels") or []
    axes = ", ".join(contract.get("axes") or [])
    lines = [
        f"Channel contract: {len(channels)} channel(s) with positions ({axes}) in {contract.get('unit', '?')}; "
        f"reference: {contract.get('reference', '?')}; signal unit: {contract.get('signal_unit', '?')}"
    ]
    for c in channels[:limit]:
        place = ", ".join(f"{v:+.3f}" for v in c["position"])
        lines.append(f"  {c['name']}: ({place}) from {c.get('source', '?')}")
    if len(channels) > limit:
        lines.append(f"  ... and {len(channels) - limit} more")
    return lines


class PaddedChannels:
    """Windows of different channel sets, stored without padding and padded when indexed.

    ``Windows.x`` of recordings with different montages: a dense ``(N, C_max, T)`` tensor pads every
    window to the largest montage (a 64-channel run beside a night of 2 derivations would hold 32
    times the night's samples), so the rows are kept once and a batch is padded when it is read.

    Parameters
    ----------
    rows : torch.Tensor
        ``(R, *extent)`` float32: every present channel of every window, one row each.
    row_index : torch.Tensor
        ``(N, C_max)`` long: window n's channel c is ``rows[row_index[n, c]]``, or absent (zeros) at -1.
    """

    def __init__(self, rows: torch.Tensor, row_index: torch.Tensor):
        self.rows = rows
        self.row_index = row_index.long()
        self.shape = torch.Size((row_index.shape[0], row_index.shape[1], *rows.shape[1:]))
        self.dtype, self.device = rows.dtype, rows.device

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> torch.Tensor:
        """The windows at ``index`` (an int, a slice, integer positions or a boolean mask), padded: dense."""
        picked = self.row_index[index]
        single = picked.dim() == 1
        picked = picked.reshape(-1, self.shape[1])
        out = self.rows.new_zeros((picked.shape[0], *self.shape[1:]))
        present = picked >= 0
        out[present] = self.rows[picked[present]]
        return out[0] if single else out

    def subset(self, index: torch.Tensor) -> "PaddedChannels":
        """The windows at ``index``, still unpadded."""
        picked = self.row_index[index]
        used = torch.unique(picked[picked >= 0])
        renumber = torch.full((len(self.rows),), -1, dtype=torch.long)
        renumber[used] = torch.arange(len(used))
        return PaddedChannels(self.rows[used], torch.where(picked >= 0, renumber[picked.clamp_min(0)], -1))

    def split(self, size: int) -> list[torch.Tensor]:
        """Dense chunks of ``size`` windows (as ``torch.Tensor.split``)."""
        return [self[start:start + size] for start in range(0, len(self), size)]

    def numpy(self):
        return self[:].numpy()

    def to_dense(self) -> torch.Tensor:
        return self[:]


def stack_channel_sets(parts: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[Any, torch.Tensor]:
    """Windows of several channel sets as one ``x`` and ``positions``.

    Parameters
    ----------
    parts : sequence of (x, positions)
        ``x`` ``(N_i, C_i, *extent)`` and the ``(C_i, S)`` positions of its channels.

    Returns
    -------
    x : torch.Tensor or PaddedChannels
        Dense ``(N, C_max, *extent)`` when every part has ``C_max`` channels, else :class:`PaddedChannels`.
    positions : torch.Tensor
        ``(N, C_max, S)``, NaN for absent channels.
    """
    widest = max(int(x.shape[1]) for x, _ in parts)
    n_space = int(parts[0][1].shape[-1])
    positions = []
    for x, place in parts:
        padded = torch.full((widest, n_space), float("nan"))
        padded[: place.shape[0]] = torch.as_tensor(place, dtype=torch.float32)
        positions.append(padded.expand(x.shape[0], -1, -1))
    positions = torch.cat(positions)
    if all(int(x.shape[1]) == widest for x, _ in parts):
        return torch.cat([x for x, _ in parts]), positions
    rows, index, first = [], [], 0
    for x, _ in parts:
        n, c = x.shape[:2]
        rows.append(x.reshape(n * c, *x.shape[2:]))
        part_index = torch.full((n, widest), -1, dtype=torch.long)
        part_index[:, :c] = torch.arange(first, first + n * c).reshape(n, c)
        index.append(part_index)
        first += n * c
    return PaddedChannels(torch.cat(rows), torch.cat(index)), positions

"""Boxes → fixed-size patches by sub-pixel resampling.

One function for 1, 2 and 3 axes. A sample is ``(C, *extent)``; pixel (or sample) ``i`` covers the
interval ``[i, i + 1)`` and its value sits at ``i + 0.5``. A box is resampled on an ``out_size``
lattice whose points are the centres of ``out_size`` equal cells of the box, with bilinear (or
trilinear) interpolation. A box with integer corners whose size equals ``out_size`` therefore
returns the slice ``x[..., start:end]`` (up to float32 rounding of the normalised coordinates).

All patches of all samples come from one ``grid_sample`` call: the patches of a sample are stacked
along the first output axis, so no input is copied per patch and nothing loops in Python.

Two cases take a shorter road with the same values, on any device and for any number of axes:

* **Unscaled boxes** (size == ``out_size`` on every axis: PART's off-grid patches at scale 1, EEG
  patches). Every sample point of such a patch has the same fractional offset along an axis, so the
  patch is a separable blend of integer-shifted slices: one ``(P + 1)``-wide window per patch is
  copied out, then one ``lerp`` per axis with one weight per patch, the last one straight into
  the contiguous patches. On a CPU the windows and the intermediate blend live in a per-thread
  workspace reused between calls (:func:`release_workspace` frees it), which spares the page
  faults of fresh 10 MB tensors. 2x as fast as ``grid_sample`` (with the layout copy) at 224 px
  on a CPU thread, and more accurate: ``grid_sample``'s coordinates, normalised to [-1, 1], lose
  about 1e-4 of a pixel at 224 px and 1e-3 of a sample at 3,000.
* **Integer-aligned unscaled boxes** (grid patches, MAE, MP3, DropPos): the blend weights are all
  zero, so the patches are plain copies of the slices (no arithmetic at all).

On a CPU the 2-D and 3-D blend is used where rows are long enough to pay (``MIN_CPU_BLEND_RUN``:
patches of at least 15 samples along the last axis, e.g. 16-px ViT patches); the 1-D blend and the
copy path are used at every size. Boxes reaching past the border read the same values as ``grid_sample`` would: the input is padded
first (edge replication for ``padding_mode="border"``, zeros for ``"zeros"``); ``"reflection"``
with such boxes, ``mode="nearest"`` and rescaled boxes keep ``grid_sample``. Pass
``method="grid_sample"`` to force the general path (for benchmarks and equality tests).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .geometry import Boxes, BoxLayout


EXTRACTION_METHODS = ("auto", "grid_sample")
# On a CPU the blend copies each window as rows of (last-axis patch size + 1) samples; below this
# length the per-row cost makes it slower than grid_sample (measured on one thread: 4-px patches
# 1.4x slower, 16-px patches 1.6x faster), so shorter rows of 2-D and 3-D patches keep grid_sample.
MIN_CPU_BLEND_RUN = 16
# On a CPU, 2-D and 3-D windows with rows at least this long are copied a whole window at a time,
# shorter ones and 1-D windows a row at a time (one thread, issue 27: 1.2-1.3x faster for 17-sample
# rows, 2x slower for 5; for 1-D windows of 2 channels 1.4x slower, of 64 channels the same).
MIN_CPU_WINDOW_RUN = 16
# On a CPU the blend runs over at most this many window elements at a time (2 MB of float32, about
# one core's L2 cache here: three 224-px samples of 196 16-px patches), at least one sample per pass.
CPU_BLEND_CHUNK = 1 << 19
# grid_sample's padding modes that F.pad reproduces (reflection reflects coordinates, not samples).
_PADDING = {"border": "replicate", "zeros": "constant"}


def extract_patches(
    x: torch.Tensor,
    boxes: Boxes,
    out_size: int | Sequence[int],
    mode: str = "bilinear",
    padding_mode: str = "border",
    method: str = "auto",
) -> torch.Tensor:
    """Cut and resample patches.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, *extent)`` with 1, 2 or 3 trailing axes.
    boxes : Boxes
        ``(B, N, D)`` boxes in the native units of ``x`` (D = number of axes), on ``x``'s device.
    out_size : int or sequence of int
        Patch resolution per axis.
    mode : {"bilinear", "nearest"}
        Interpolation (``bilinear`` is trilinear for 3 axes).
    padding_mode : str
        What a box reaching past the border reads (``grid_sample``'s padding mode).
    method : {"auto", "grid_sample"}
        ``"auto"`` takes the shifted-slice or copy path where it applies (same values, faster);
        ``"grid_sample"`` always resamples with ``grid_sample`` (the reference, for benchmarks).

    Returns
    -------
    torch.Tensor
        ``(B, N, C, *out_size)``.
    """
    n_axes = x.dim() - 2
    if n_axes not in (1, 2, 3):
        raise ValueError(f"extract_patches takes 1 to 3 axes, got input of shape {tuple(x.shape)}.")
    if boxes.n_axes != n_axes:
        raise ValueError(f"Boxes have {boxes.n_axes} axes but the input has {n_axes}.")
    if isinstance(out_size, int):
        out_size = (out_size,) * n_axes
    out_size = tuple(int(s) for s in out_size)
    batch, channels = x.shape[:2]
    extent = x.shape[2:]
    n_patches = boxes.center.shape[-2]
    dtype = x.dtype if x.is_floating_point() else torch.float32
    if method not in EXTRACTION_METHODS:
        raise ValueError(
            f"Invalid value for the 'method' parameter: got {method!r}; allowed values are "
            f"{', '.join(repr(m) for m in EXTRACTION_METHODS)}."
        )
    if method == "auto" and mode == "bilinear":
        fast = _shifted_slices(x.to(dtype), boxes, out_size, padding_mode)
        if fast is not None:
            return fast

    # Per axis, the sampling positions of every patch, normalised to [-1, 1] (align_corners=False).
    coords = []
    for d in range(n_axes):
        frac = (torch.arange(out_size[d], device=x.device, dtype=dtype) + 0.5) / out_size[d] - 0.5
        pos = boxes.center[..., d, None].to(dtype) + frac * boxes.size[..., d, None].to(dtype)
        coords.append(pos * (2.0 / extent[d]) - 1.0)  # (B, N, P_d)

    if n_axes == 1:  # a time series is an image of height 1
        x = x.unsqueeze(2)
        coords = [torch.zeros_like(coords[0][..., :1])] + coords
        out_size = (1,) + out_size
    spatial = len(coords)
    # Broadcast the per-axis positions into a (B, N, *P, spatial) lattice.
    lattice = []
    for d, c in enumerate(coords):
        view = [batch, n_patches] + [1] * spatial
        view[2 + d] = c.shape[-1]
        lattice.append(c.reshape(view).expand(batch, n_patches, *out_size))
    # grid_sample wants the last axis as (x, y[, z]), i.e. reversed tensor-axis order.
    grid = torch.stack(lattice[::-1], dim=-1)
    grid = grid.reshape(batch, n_patches * out_size[0], *out_size[1:], spatial)
    sample_mode = "bilinear" if mode in ("bilinear", "trilinear") else mode
    out = F.grid_sample(
        x.to(dtype), grid, mode=sample_mode, padding_mode=padding_mode, align_corners=False
    )
    out = out.reshape(batch, channels, n_patches, *out_size)
    out = out.movedim(2, 1)
    if n_axes == 1:
        out = out.squeeze(3)
    return out


def _shifted_slices(
    x: torch.Tensor, boxes: Boxes, out_size: tuple[int, ...], padding_mode: str
) -> torch.Tensor | None:
    """Unscaled boxes as blends of integer-shifted slices, or ``None`` where that does not apply.

    Along axis ``d`` sample ``k`` of a box starting at ``s`` (continuous) sits at index
    ``u = s + k`` (sample ``i`` is at ``i + 0.5``), between samples ``floor(s) + k`` and
    ``floor(s) + k + 1`` with the weight ``s - floor(s)``, the same for every ``k``. Bilinear
    interpolation being separable, the patch is its ``(P + 1)``-wide window blended by one ``lerp``
    per axis; with all weights zero it is the ``P``-wide slice itself.
    """
    if boxes.center.numel() == 0:
        return None
    device = boxes.center.device
    extent_size = tuple(int(e) for e in x.shape[2:])
    # Positions in at least float32: a bf16 box start would lose whole pixels.
    position_dtype = torch.promote_types(x.dtype, torch.float32)
    # What the sampler said of every box (geometry.BoxLayout) for this input's extent: the road is
    # chosen without reading the boxes back from an accelerator. Otherwise the values are read.
    layout = boxes.layout
    if layout is not None and tuple(layout.extent) == extent_size:
        unscaled = layout.size is not None and tuple(layout.size) == tuple(float(p) for p in out_size)
        integer, low, high = layout.integer, [0] * len(out_size), [0] * len(out_size)  # inside: no padding
    else:
        unscaled, integer, low, high = _read_road(boxes, extent_size, out_size, position_dtype, x.device.type)
    if not unscaled:
        return None  # rescaled boxes resample with grid_sample
    # 1-D keeps the blend at every length, as before this rule (one lerp, exact in float32).
    if not integer and _short_cpu_rows(x.device.type, out_size):
        return None  # short rows: grid_sample is faster on a CPU (bench/README.md, issue 16)
    n_axes = len(out_size)
    start, first, span = _window_starts(boxes.center, extent_size, out_size, position_dtype, integer)
    weight = None if integer else (start - first.to(position_dtype)).to(x.dtype)  # in [0, 1]
    if any(low) or any(high):
        if padding_mode not in _PADDING or max(low + high) > max(x.shape[2:]):
            return None  # reflection, or boxes far outside: grid_sample's own rule
        pad = [v for d in reversed(range(n_axes)) for v in (low[d], high[d])]  # F.pad: last axis first
        x = F.pad(x, pad, mode=_PADDING[padding_mode])
        first = first + torch.tensor(low, device=device)
    if integer:
        return _gather_windows(x, first, span)  # (B, N, C, *P): the patches themselves
    batch, n_boxes, channels = x.shape[0], first.shape[1], x.shape[1]
    out = torch.empty((batch, n_boxes, channels, *out_size), dtype=x.dtype, device=x.device)
    x = x.contiguous()
    slices, offset = _window_slices(x, first, span)
    # On a CPU the batch is blended a few samples at a time in scratch reused between passes and
    # calls: a pass's windows are gathered, blended and written out while they are in the core's
    # cache, instead of streaming three batch-sized tensors through memory (1.3x at 224 px; a fresh
    # 10 MB tensor would also cost more in first-touch page faults than the arithmetic on it). An
    # accelerator blends the batch in one pass (its caching allocator reuses memory already).
    per_sample = n_boxes * channels * math.prod(span)
    reuse = x.device.type == "cpu"
    chunk = max(1, CPU_BLEND_CHUNK // per_sample) if reuse else batch
    slices_per_sample = offset.numel() // batch
    for lo in range(0, batch, chunk):
        hi = min(batch, lo + chunk)
        numel = (hi - lo) * per_sample
        scratch = [_WORKSPACE.take(slot, numel, x) if reuse else x.new_empty(numel) for slot in (0, 1)]
        windows = scratch[0].view(hi - lo, n_boxes, channels, *span)
        torch.index_select(slices, 0, offset[lo * slices_per_sample : hi * slices_per_sample],
                           out=windows.view(-1, *slices.shape[1:]))
        _blend(windows, weight[lo:hi], out_size, scratch[1], out[lo:hi])
    return out


def _blend(windows: torch.Tensor, weight: torch.Tensor, out_size: tuple[int, ...], spare: torch.Tensor,
           out: torch.Tensor) -> None:
    """Blend ``(B, N, C, *span)`` windows by ``weight`` (``(B, N, D)``, one per box and axis) into
    ``out`` (``(B, N, C, *out_size)``), with ``spare``, a flat tensor of the windows' size, as scratch."""
    batch, n_boxes, channels = windows.shape[:3]
    span, n_axes = windows.shape[3:], len(out_size)
    # Blend along each axis but the last over the flat window: the sample one step further along
    # axis d is ``prod(span[d + 1:])`` elements on, so one lerp over long contiguous runs serves
    # every row at once (the trailing elements it mixes across rows fall outside the patch).
    source = windows.reshape(batch, n_boxes, -1)
    spare = spare.view(batch, n_boxes, -1)
    length = source.shape[-1]
    for d in range(n_axes - 1):
        step = math.prod(span[d + 1 :])
        torch.lerp(source[..., : length - step], source[..., step:], weight[..., d, None], out=spare[..., : length - step])
        source, spare = spare, source
    # The last axis straight into the patches, which come out contiguous (the encoder's layout is
    # then a free reshape): the same lerp on the same operands as a flat pass, so the same bits.
    rows = source.view(batch, n_boxes, channels, *span)[(slice(None),) * 3 + tuple(slice(0, p) for p in out_size[:-1])]
    last = weight[..., -1].reshape(batch, n_boxes, *([1] * (n_axes + 1)))
    torch.lerp(rows[..., : out_size[-1]], rows[..., 1:], last, out=out)


def _short_cpu_rows(device_type: str, out_size: tuple[int, ...]) -> bool:
    """Rows of 2-D and 3-D patches too short for the blend to beat grid_sample on a CPU."""
    return device_type == "cpu" and len(out_size) > 1 and out_size[-1] + 1 < MIN_CPU_BLEND_RUN


def _window_starts(center: torch.Tensor, extent: tuple[int, ...], out_size: tuple[int, ...],
                   position_dtype: torch.dtype, integer: bool) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """``(start, first, span)``: the boxes' continuous starts, the first sample of each box's window
    (long) and the window's size per axis (the patch, plus one sample to blend with unless integer)."""
    patch = torch.tensor(out_size, device=center.device, dtype=position_dtype)
    start = center.to(position_dtype) - patch / 2  # (B, N, D)
    first = start.floor()
    if integer:
        return start, first.long(), out_size
    # A box flush with the end blends from one sample earlier with weight 1 (the same values), so
    # that its (P + 1)-wide window stays inside the input.
    end = torch.tensor(extent, device=center.device, dtype=position_dtype) - patch
    return start, first.long() - (start == end).long(), tuple(p + 1 for p in out_size)


def _read_road(boxes: Boxes, extent: tuple[int, ...], out_size: tuple[int, ...], position_dtype: torch.dtype,
               device_type: str) -> tuple[bool, bool, list[int], list[int]]:
    """``(unscaled, integer, low, high)`` read from the boxes' values: all of the patch size, all at
    whole starts, and how far the windows reach past the start and the end of each axis (host reads)."""
    patch = torch.tensor(out_size, device=boxes.center.device)
    start, floor, _ = _window_starts(boxes.center, extent, out_size, position_dtype, integer=True)
    unscaled, integer = torch.stack([(boxes.size == patch).all(), (start == floor).all()]).tolist()
    n_axes = len(out_size)
    if not unscaled or (not integer and _short_cpu_rows(device_type, out_size)):
        return unscaled, integer, [0] * n_axes, [0] * n_axes  # no window is cut: the reach does not matter
    _, first, span = _window_starts(boxes.center, extent, out_size, position_dtype, integer)
    limit = torch.tensor(extent, device=first.device) - torch.tensor(span, device=first.device)
    reach = torch.cat([-first.amin(dim=(0, 1)), first.amax(dim=(0, 1)) - limit]).tolist()
    return unscaled, integer, [max(0, v) for v in reach[:n_axes]], [max(0, v) for v in reach[n_axes:]]


def layout_of(boxes: Boxes, extent: Sequence[int], out_size: int | Sequence[int],
              dtype: torch.dtype = torch.float32) -> BoxLayout | None:
    """The :class:`relpos.geometry.BoxLayout` of ``boxes`` for :func:`extract_patches` from inputs of
    ``extent`` and ``dtype`` at ``out_size``, read from their values.

    For boxes made on the host and about to move to an accelerator (``Boxes(..., layout=layout_of(...))``
    then ``.to(device)``): extraction then reads nothing back from the device, and takes the road it
    would have taken by reading them there. None where some box reaches past the input (extraction
    then reads the boxes itself, for its padding).
    """
    extent = tuple(int(e) for e in extent)
    out_size = (int(out_size),) * len(extent) if isinstance(out_size, int) else tuple(int(p) for p in out_size)
    if boxes.center.numel() == 0:
        return None
    position_dtype = torch.promote_types(dtype, torch.float32)
    unscaled, integer, low, high = _read_road(boxes, extent, out_size, position_dtype, boxes.center.device.type)
    if not unscaled:
        return BoxLayout(None, extent)  # boxes of other sizes: resampled, wherever they lie
    if any(low) or any(high):
        return None
    return BoxLayout(tuple(float(p) for p in out_size), extent, integer)


class _Workspace(threading.local):
    """Per-thread scratch tensors for the shifted-slice blend, grown to the largest call and reused.

    Two flat buffers per dtype (windows and the blend's second operand), each the size of the
    largest call's ``(B, N, C, *(P + 1))`` windows; :func:`release_workspace` frees them.
    """

    def __init__(self) -> None:
        self.buffers: dict[tuple[int, torch.dtype], torch.Tensor] = {}

    def take(self, slot: int, numel: int, like: torch.Tensor) -> torch.Tensor:
        buffer = self.buffers.get((slot, like.dtype))
        if buffer is None or buffer.numel() < numel:
            with torch.inference_mode(False):  # usable in and out of inference mode
                buffer = torch.empty(numel, dtype=like.dtype)
            self.buffers[(slot, like.dtype)] = buffer
        return buffer[:numel]


_WORKSPACE = _Workspace()


def release_workspace() -> None:
    """Free the calling thread's extraction scratch buffers (they are re-created on the next call)."""
    _WORKSPACE.buffers.clear()


def _gather_windows(
    x: torch.Tensor, first: torch.Tensor, span: tuple[int, ...], out: torch.Tensor | None = None
) -> torch.Tensor:
    """Copy the windows ``x[b, :, f_0 : f_0 + span_0, ...]`` for every box: ``(B, N, C, *span)``.

    ``out``, a flat tensor of the windows' size, receives them instead of a new tensor.
    """
    x = x.contiguous()
    slices, offset = _window_slices(x, first, span)
    shape = (x.shape[0], first.shape[1], x.shape[1], *span)
    if out is None:
        return slices.index_select(0, offset).view(shape)
    torch.index_select(slices, 0, offset, out=out.view(-1, *slices.shape[1:]))
    return out.view(shape)


def _window_slices(x: torch.Tensor, first: torch.Tensor, span: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows of a contiguous ``x`` as ``(slices, offset)``: ``slices.index_select(0, offset)``
    is every box's ``(C, *span)`` window, box after box (a box's slices are consecutive in ``offset``).

    ``slices`` is an ``as_strided`` view of ``x`` (no copy) with a slice starting at every element.
    On a CPU with 2-D or 3-D rows of at least ``MIN_CPU_WINDOW_RUN`` samples a slice is a box's whole window
    (one offset per box: 1.2-1.3x faster at 224 px than one per row); otherwise it is one contiguous
    run along the last axis (one offset per row; 2x faster than whole windows for 4-px patches, and
    3x faster than advanced indexing into an ``unfold`` view, whose every element needs its own offset).
    """
    batch, channels = x.shape[:2]
    n_boxes = first.shape[1]
    device = first.device
    element_strides = torch.tensor(x.stride()[2:], device=device)
    per_box = torch.arange(batch, device=device)[:, None] * x.stride(0) + (first * element_strides).sum(-1)
    if x.device.type == "cpu" and len(span) > 1 and span[-1] >= MIN_CPU_WINDOW_RUN:
        # Flat offset of (b, 0, f_0, ..., f_{D-1}), the first element of each box's window.
        block, strides = (channels, *span), (x.stride(1), *x.stride()[2:])
        reach = sum((n - 1) * s for n, s in zip(block, strides))  # a window's last element
        return x.reshape(-1).as_strided((x.numel() - reach, *block), (1, *strides)), per_box.reshape(-1)
    # Flat offset of (b, c, f_0 + i_0, ..., f_{D-2} + i_{D-2}, f_{D-1}): a per-box part plus a part
    # shared by every box (channel and offsets within the window).
    shared = torch.arange(channels, device=device) * x.stride(1)
    for d in range(len(span) - 1):
        shared = shared[..., None] + torch.arange(span[d], device=device) * x.stride(2 + d)
    offset = (per_box.reshape(batch, n_boxes, *([1] * shared.dim())) + shared).reshape(-1)
    return x.reshape(-1).as_strided((x.numel() - span[-1] + 1, span[-1]), (1, 1)), offset


def extract_patches_loop(
    x: torch.Tensor, boxes: Boxes, out_size: int | Sequence[int], mode: str = "bilinear"
) -> torch.Tensor:
    """Reference implementation: one ``extract_patches`` call per patch (for tests and benchmarks)."""
    batch, n_patches = boxes.center.shape[:2]
    rows = []
    for b in range(batch):
        patches = []
        for n in range(n_patches):
            one = Boxes(boxes.center[b : b + 1, n : n + 1], boxes.size[b : b + 1, n : n + 1])
            patches.append(extract_patches(x[b : b + 1], one, out_size, mode=mode)[0, 0])
        rows.append(torch.stack(patches))
    return torch.stack(rows)

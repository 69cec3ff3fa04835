"""The shifted-slice blend with its reused workspace gives the same bits as before issue 27.

``shifted_slices_before`` below is ``relpos.extraction._shifted_slices`` as it was before the
workspace (fresh tensors every call, a flat lerp per axis, a strided view returned), frozen here
as the reference, with the CPU's short-row rule removed so that every size takes the blend.
"""

from __future__ import annotations

import math
import threading

import pytest
import torch
import torch.nn.functional as F

from relpos import extraction
from relpos.extraction import extract_patches, release_workspace
from relpos.geometry import Boxes

_PADDING = {"border": "replicate", "zeros": "constant"}


def shifted_slices_before(
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
    patch = torch.tensor(out_size, device=device)
    extent = torch.tensor(x.shape[2:], device=device)
    # Positions in at least float32: a bf16 box start would lose whole pixels.
    position_dtype = torch.promote_types(x.dtype, torch.float32)
    start = boxes.center.to(position_dtype) - patch.to(position_dtype) / 2  # (B, N, D)
    first = start.floor()
    unscaled, integer = torch.stack([(boxes.size == patch).all(), (start == first).all()]).tolist()
    if not unscaled:
        return None  # rescaled boxes resample with grid_sample
    # 1-D keeps the blend at every length, as before this rule (one lerp, exact in float32).
    if not integer and x.device.type == "cpu" and len(out_size) > 1 and out_size[-1] + 1 < 0:
        return None  # short rows: grid_sample is faster on a CPU (bench/README.md, issue 16)
    # How far the windows read past each end of each axis (one more host sync).
    n_axes = len(out_size)
    if integer:
        first, span = first.long(), out_size
    else:
        # A box flush with the end blends from one sample earlier with weight 1 (the same
        # values), so that its (P + 1)-wide window stays inside the input.
        first = first.long() - (start == (extent - patch).to(position_dtype)).long()
        span = tuple(p + 1 for p in out_size)
    span_t = torch.tensor(span, device=device)
    reach = torch.cat([-first.amin(dim=(0, 1)), first.amax(dim=(0, 1)) + span_t - extent]).tolist()
    low, high = reach[:n_axes], reach[n_axes:]
    low = [max(0, v) for v in low]
    high = [max(0, v) for v in high]
    weight = None if integer else (start - first.to(position_dtype)).to(x.dtype)  # in [0, 1]
    if any(low) or any(high):
        if padding_mode not in _PADDING or max(low + high) > max(x.shape[2:]):
            return None  # reflection, or boxes far outside: grid_sample's own rule
        pad = [v for d in reversed(range(n_axes)) for v in (low[d], high[d])]  # F.pad: last axis first
        x = F.pad(x, pad, mode=_PADDING[padding_mode])
        first = first + torch.tensor(low, device=device)
    windows = gather_windows_before(x, first, span)  # (B, N, C, *span), contiguous
    if integer:
        return windows
    # Blend along each axis over the flat window: the sample one step further along axis d is
    # ``prod(span[d + 1:])`` elements on, so one lerp over long contiguous runs serves every row at once
    # (the trailing elements it mixes across rows fall outside the patch and are dropped). Two
    # buffers take turns: a fresh 10 MB tensor per axis costs more in page faults than the lerp.
    batch, n_boxes, channels = windows.shape[:3]
    source = windows.reshape(batch, n_boxes, -1)
    spare = torch.empty_like(source)
    length = source.shape[-1]
    for d in range(n_axes):
        step = math.prod(span[d + 1 :])
        torch.lerp(source[..., : length - step], source[..., step:], weight[..., d, None], out=spare[..., : length - step])
        source, spare = spare, source
    flat = source
    index = (slice(None),) * 3 + tuple(slice(0, p) for p in out_size)
    return flat.view(batch, n_boxes, channels, *span)[index]


def gather_windows_before(x: torch.Tensor, first: torch.Tensor, span: tuple[int, ...]) -> torch.Tensor:
    """Copy the windows ``x[b, :, f_0 : f_0 + span_0, ...]`` for every box: ``(B, N, C, *span)``.

    Each window is a stack of contiguous runs along the last axis. Seen as overlapping rows of
    ``span[-1]`` samples starting at every element (an ``as_strided`` view, no copy), those runs
    are rows picked by one ``index_select``, which copies whole rows: 3x faster on a CPU thread than
    advanced indexing into an ``unfold`` view, whose every element needs its own offset.
    """
    x = x.contiguous()
    batch, channels = x.shape[:2]
    extent = x.shape[2:]
    n_boxes = first.shape[1]
    device = first.device
    # Flat offset of (b, c, f_0 + i_0, ..., f_{D-2} + i_{D-2}, f_{D-1}): a per-box part plus a
    # part shared by every box (channel and offsets within the window).
    element_strides = torch.tensor(x.stride()[2:], device=device)
    per_box = torch.arange(batch, device=device)[:, None] * x.stride(0) + (first * element_strides).sum(-1)
    shared = torch.arange(channels, device=device) * x.stride(1)
    for d in range(len(extent) - 1):
        shared = shared[..., None] + torch.arange(span[d], device=device) * x.stride(2 + d)
    offset = per_box.reshape(batch, n_boxes, *([1] * shared.dim())) + shared
    runs = x.reshape(-1).as_strided((x.numel() - span[-1] + 1, span[-1]), (1, 1))
    return runs.index_select(0, offset.reshape(-1)).view(batch, n_boxes, channels, *span)


@pytest.fixture(autouse=True)
def blend_every_size(monkeypatch):
    """The blend at every row length (on a CPU, 2-D and 3-D rows shorter than 16 keep grid_sample)."""
    monkeypatch.setattr(extraction, "MIN_CPU_BLEND_RUN", 0)


def _random_unscaled(shape, out, n_boxes, gen, dtype, reach=1.5):
    """Unscaled boxes at continuous positions, some reaching up to ``reach`` samples past a border."""
    extent = torch.tensor(shape[2:], dtype=torch.float64)
    size = torch.tensor(out, dtype=torch.float64)
    start = -reach + torch.rand(shape[0], n_boxes, len(out), generator=gen, dtype=torch.float64) * (extent - size + 2 * reach)
    return Boxes((start + size / 2).to(dtype), size.expand_as(start).to(dtype).clone())


CASES = [  # (input shape, patch): 1-D EEG-like, 2-D small and ViT-sized, 3-D
    ((3, 2, 300), (25,)),
    ((4, 5, 3000), (100,)),
    ((6, 3, 32, 32), (4, 4)),
    ((2, 3, 37, 29), (5, 7)),
    ((3, 3, 224, 224), (16, 16)),
    ((2, 2, 9, 8, 10), (3, 2, 4)),
]


@pytest.mark.parametrize("shape, out", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("padding_mode", ["border", "zeros"])
def test_same_bits_as_before_on_random_inputs(shape, out, dtype, padding_mode):
    gen = torch.Generator().manual_seed(sum(shape))
    for _ in range(3):  # the workspace is reused (and grown) between calls
        x = torch.randn(shape, generator=gen, dtype=dtype)
        boxes = _random_unscaled(shape, out, 40, gen, dtype)
        before = shifted_slices_before(x, boxes, out, padding_mode)
        now = extract_patches(x, boxes, out, padding_mode=padding_mode)
        assert before is not None
        assert now.shape == before.shape == (shape[0], 40, shape[1], *out)
        assert torch.equal(now, before)
        assert now.is_contiguous()  # the encoder's (B, N, C·P...) layout is a free reshape


def test_a_later_call_does_not_overwrite_earlier_patches():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 48, 48, generator=gen)
    first_boxes = _random_unscaled(x.shape, (16, 16), 9, gen, torch.float32)
    first = extract_patches(x, first_boxes, 16)
    kept = first.clone()
    for n_boxes in (9, 30, 2):  # same size, larger (the workspace grows), smaller
        extract_patches(torch.randn_like(x), _random_unscaled(x.shape, (16, 16), n_boxes, gen, torch.float32), 16)
        assert torch.equal(first, kept)


def test_workspace_is_reused_held_per_thread_and_released():
    release_workspace()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 40, 40, generator=gen)
    boxes = _random_unscaled(x.shape, (16, 16), 5, gen, torch.float32)
    extract_patches(x, boxes, 16)
    held = {key: buffer.data_ptr() for key, buffer in extraction._WORKSPACE.buffers.items()}
    # windows and the row blend: 2 images x 5 boxes x 3 channels x 17 x 17 samples each
    assert sorted(buffer.numel() for buffer in extraction._WORKSPACE.buffers.values()) == [2 * 5 * 3 * 17 * 17] * 2
    extract_patches(x, boxes, 16)
    assert {key: buffer.data_ptr() for key, buffer in extraction._WORKSPACE.buffers.items()} == held

    seen = {}
    thread = threading.Thread(target=lambda: seen.update(result=extract_patches(x, boxes, 16), keys=set(extraction._WORKSPACE.buffers)))
    thread.start()
    thread.join()
    assert torch.equal(seen["result"], extract_patches(x, boxes, 16))
    assert len(seen["keys"]) == 2 and {key: b.data_ptr() for key, b in extraction._WORKSPACE.buffers.items()} == held
    release_workspace()
    assert extraction._WORKSPACE.buffers == {}


def test_inference_mode_then_training_mode():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 2, 30, 30, generator=gen)
    boxes = _random_unscaled(x.shape, (6, 6), 4, gen, torch.float32)
    release_workspace()
    with torch.inference_mode():  # the workspace is created here, then written to outside it
        inside = extract_patches(x, boxes, 6)
    outside = extract_patches(x, boxes, 6)
    assert torch.equal(inside, outside)
    assert torch.equal(outside, shifted_slices_before(x, boxes, (6, 6), "border"))


@pytest.mark.parametrize("shape, out", CASES)
def test_gathering_by_rows_or_by_windows_and_in_passes_gives_the_same_bits(shape, out, monkeypatch):
    """Windows copied one row at a time or one box at a time, and a batch blended one sample per
    pass or all at once, are the same patches (the copy is exact, every lerp sees the same operands)."""
    gen = torch.Generator().manual_seed(len(shape) + out[-1])
    x = torch.randn(shape, generator=gen)
    boxes = _random_unscaled(shape, out, 40, gen, torch.float32)
    grid_boxes = Boxes(boxes.center.round() + torch.tensor([p % 2 / 2 for p in out]), boxes.size)  # integer corners
    results = []
    for min_run, chunk in ((10**9, 1 << 30), (0, 1 << 30), (0, 1), (10**9, 1)):
        monkeypatch.setattr(extraction, "MIN_CPU_WINDOW_RUN", min_run)  # by rows / by whole windows
        monkeypatch.setattr(extraction, "CPU_BLEND_CHUNK", chunk)  # one pass / one sample per pass
        results.append((extract_patches(x, boxes, out), extract_patches(x, grid_boxes, out)))
    reference = shifted_slices_before(x, boxes, out, "border")
    for blended, copied in results:
        assert torch.equal(blended, reference)
        assert torch.equal(copied, results[0][1])
    # the copy path really copied: a box with integer corners is the slice itself
    b, n = 0, 0
    corner = (grid_boxes.center[b, n] - grid_boxes.size[b, n] / 2).long().clamp(min=0)
    inside = all(int(c) + p <= e for c, p, e in zip(corner, out, shape[2:])) and bool((grid_boxes.center[b, n] - grid_boxes.size[b, n] / 2 >= 0).all())
    if inside:
        window = x[(b, slice(None)) + tuple(slice(int(c), int(c) + p) for c, p in zip(corner, out))]
        assert torch.equal(results[0][1][b, n], window)


@pytest.mark.parametrize("shape, out", CASES)
def test_a_layout_read_on_the_host_takes_the_road_reading_the_boxes_takes(shape, out):
    """layout_of(boxes) gives extract_patches what it would read: the same patches bit for bit, for
    boxes inside, past a border (no layout: extraction reads them itself) and rescaled (resampled)."""
    from relpos.extraction import layout_of

    gen = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=gen)
    inside = _random_unscaled(shape, out, 12, gen, torch.float32, reach=0.0)
    past = _random_unscaled(shape, out, 12, gen, torch.float32, reach=1.5)
    rescaled = Boxes(inside.center, inside.size * 1.25)
    for boxes, expected in ((inside, tuple(float(p) for p in out)), (rescaled, None)):
        layout = layout_of(boxes, shape[2:], out)
        assert layout is not None and layout.size == expected and layout.extent == tuple(shape[2:])
        vouched = Boxes(boxes.center, boxes.size, layout)
        assert torch.equal(extract_patches(x, vouched, out), extract_patches(x, boxes, out))
    crossing = past.center - past.size / 2 < 0
    if bool(crossing.any()):
        assert layout_of(past, shape[2:], out) is None
    # a layout made for another extent is not trusted: the boxes are read
    other = Boxes(inside.center, inside.size, layout_of(inside, [e + 1 for e in shape[2:]], out))
    assert torch.equal(extract_patches(x, other, out), extract_patches(x, inside, out))

"""The shifted-slice and copy paths of ``extract_patches`` give ``grid_sample``'s values.

Unscaled boxes (size == patch resolution) are blends of integer-shifted slices; integer-aligned
ones are plain copies. ``method="grid_sample"`` forces the general path, the reference here.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from relpos import extraction
from relpos.extraction import extract_patches
from relpos.geometry import Boxes


@pytest.fixture(autouse=True)
def blend_every_size(monkeypatch):
    """Use the blend at the small sizes tested here too (on a CPU it starts at 15-sample rows)."""
    monkeypatch.setattr(extraction, "MIN_CPU_BLEND_RUN", 0)

CASES = [((3, 2, 40), (7,)), ((2, 3, 24, 20), (4, 5)), ((2, 2, 9, 8, 10), (3, 2, 4))]


def _unscaled_boxes(extent, out, n, gen, reach=0.0):
    """Random unscaled boxes; ``reach`` > 0 lets them stick out of the input by up to that many samples."""
    out_t = torch.tensor(out, dtype=torch.float32)
    extent_t = torch.tensor(extent, dtype=torch.float32)
    low = -reach
    high = extent_t - out_t + reach
    start = low + torch.rand(2 if len(extent) > 1 else 3, n, len(out), generator=gen) * (high - low)
    return Boxes(start + out_t / 2, out_t.expand_as(start).clone())


def _boxes_for(x, out, gen, reach=0.0):
    boxes = _unscaled_boxes(x.shape[2:], out, 6, gen, reach)
    return Boxes(boxes.center[: x.shape[0]], boxes.size[: x.shape[0]])


@pytest.mark.parametrize("shape, out", CASES)
@pytest.mark.parametrize("padding_mode", ["border", "zeros", "reflection"])
def test_unscaled_random_boxes_equal_grid_sample_including_borders(shape, out, padding_mode):
    gen = torch.Generator().manual_seed(len(shape))
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    boxes = _boxes_for(x, out, gen, reach=2.5)  # some boxes cross the border by up to 2.5 samples
    boxes = Boxes(boxes.center.double(), boxes.size.double())
    fast = extract_patches(x, boxes, out, padding_mode=padding_mode)
    reference = extract_patches(x, boxes, out, padding_mode=padding_mode, method="grid_sample")
    assert fast.shape == reference.shape == (shape[0], 6, shape[1], *out)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-10)
    # float32 inputs stay within float32 rounding of the float64 values (reflection, which keeps
    # grid_sample for boxes crossing the border, carries its ~2e-6 coordinate rounding here).
    fast32 = extract_patches(x.float(), Boxes(boxes.center.float(), boxes.size.float()), out, padding_mode=padding_mode)
    torch.testing.assert_close(fast32.double(), reference, rtol=0, atol=1e-5)


def test_224_px_patches_equal_grid_sample_to_float32_tolerance():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 224, 224, generator=gen)
    boxes = _unscaled_boxes((224, 224), (16, 16), 50, gen, reach=1.0)
    fast = extract_patches(x, boxes, 16)
    slow = extract_patches(x, boxes, 16, method="grid_sample")
    # grid_sample's normalised float32 coordinates carry ~1e-4 pixel of rounding at 224 px.
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-3)
    exact = extract_patches(x.double(), Boxes(boxes.center.double(), boxes.size.double()), 16, method="grid_sample")
    assert (fast.double() - exact).abs().max() < (slow.double() - exact).abs().max()


def test_quarter_pixel_shift_on_a_planar_ramp():
    # x[r, c] = 10·r + c at index (r, c); box rows [1.25, 3.25), cols [2.5, 4.5) → points at indices
    # rows 1.25, 2.25 and cols 2.5, 3.5 (sample i sits at i + 0.5, a box point at start + k + 0.5);
    # bilinear is exact on a plane: 12.5 + 2.5 = 15.0, 16.0, 25.0, 26.0
    x = (10 * torch.arange(6.0)[:, None] + torch.arange(7.0)[None, :]).reshape(1, 1, 6, 7)
    box = Boxes(torch.tensor([[[2.25, 3.5]]]), torch.tensor([[[2.0, 2.0]]]))
    out = extract_patches(x, box, 2)[0, 0, 0]
    torch.testing.assert_close(out, torch.tensor([[15.0, 16.0], [25.0, 26.0]]))


def test_box_past_the_corner_repeats_the_edge_with_border_and_reads_zero_with_zeros():
    # 3 × 3 input 1..9; a 2 × 2 box starting at (-1, -1): points at index (-1, -1), (-1, 0), (0, -1),
    # (0, 0). Border clamps every coordinate to 0 → all x[0, 0] = 1. Zeros: a point one pixel out
    # reads only zeros; (0, 0) reads 1.
    x = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    box = Boxes(torch.tensor([[[0.0, 0.0]]]), torch.tensor([[[2.0, 2.0]]]))
    assert extract_patches(x, box, 2)[0, 0, 0].tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert extract_patches(x, box, 2, padding_mode="zeros")[0, 0, 0].tolist() == [[0.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize("shape, out", CASES)
def test_integer_boxes_are_exact_copies_of_the_slices(shape, out):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=gen)
    extent = torch.tensor(shape[2:])
    start = (torch.rand(shape[0], 5, len(out), generator=gen) * (extent - torch.tensor(out) + 1)).floor()
    boxes = Boxes(start + torch.tensor(out) / 2, torch.tensor(out, dtype=torch.float32).expand_as(start).clone())
    patches = extract_patches(x, boxes, out)
    for b in range(shape[0]):
        for n in range(5):
            index = tuple(slice(int(s), int(s) + p) for s, p in zip(start[b, n], out))
            assert torch.equal(patches[b, n], x[b][(slice(None), *index)])  # bit for bit


def test_grid_patches_equal_unfold():
    # the PART-grid / MAE case: a 6 × 5 grid of 4-px cells tiles a 24 × 20 image, flush with its ends
    x = torch.randn(2, 3, 24, 20, generator=torch.Generator().manual_seed(0))
    rows, cols = torch.meshgrid(torch.arange(6.0), torch.arange(5.0), indexing="ij")
    center = torch.stack([rows, cols], -1).reshape(1, 30, 2) * 4 + 2
    boxes = Boxes(center.expand(2, -1, -1), torch.full((2, 30, 2), 4.0))
    expected = x.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).reshape(2, 30, 3, 4, 4)
    assert torch.equal(extract_patches(x, boxes, 4), expected)


def test_unscaled_boxes_do_not_call_grid_sample(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("grid_sample was called")

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 32, 32, generator=gen)
    boxes = _unscaled_boxes((32, 32), (4, 4), 64, gen, reach=0.5)
    monkeypatch.setattr(F, "grid_sample", refuse)
    assert extract_patches(x, Boxes(boxes.center[:2], boxes.size[:2]), 4).shape == (2, 64, 3, 4, 4)
    with pytest.raises(AssertionError, match="grid_sample was called"):  # rescaled boxes still use it
        extract_patches(x, Boxes(boxes.center[:2], boxes.size[:2] * 1.5), 4)
    with pytest.raises(AssertionError, match="grid_sample was called"):
        extract_patches(x, Boxes(boxes.center[:2], boxes.size[:2]), 4, method="grid_sample")


def test_by_default_a_cpu_blends_16_px_patches_and_resamples_4_px_ones(monkeypatch):
    monkeypatch.undo()  # the default threshold
    calls = []
    real = F.grid_sample
    monkeypatch.setattr(F, "grid_sample", lambda *a, **k: calls.append(1) or real(*a, **k))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 64, 64, generator=gen)
    extract_patches(x, _unscaled_boxes((64, 64), (16, 16), 8, gen), 16)
    assert calls == []
    extract_patches(x, _unscaled_boxes((64, 64), (4, 4), 8, gen), 4)
    assert calls == [1]
    # integer-aligned 4-px boxes are copies at any size
    extract_patches(x, Boxes(torch.full((2, 3, 2), 10.0), torch.full((2, 3, 2), 4.0)), 4)
    assert calls == [1]


def test_unknown_method_is_one_sentence():
    x = torch.zeros(1, 1, 8)
    with pytest.raises(ValueError, match=r"'method' parameter: got 'roi'; allowed values are 'auto', 'grid_sample'"):
        extract_patches(x, Boxes(torch.full((1, 1, 1), 4.0), torch.full((1, 1, 1), 2.0)), 2, method="roi")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
def test_cuda_fast_path_equals_grid_sample():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 64, 64, generator=gen)
    boxes = _unscaled_boxes((64, 64), (8, 8), 40, gen, reach=1.5)
    boxes = Boxes(boxes.center.cuda(), boxes.size.cuda())
    fast = extract_patches(x[:2].cuda(), boxes, 8)
    slow = extract_patches(x[:2].cuda(), boxes, 8, method="grid_sample")
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-4)

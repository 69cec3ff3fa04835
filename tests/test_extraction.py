"""Boxes → patches: exact slices at integer boxes, bilinear values between pixels.

Convention (src/relpos/extraction.py): pixel ``i`` covers ``[i, i + 1)`` and its value sits at
``i + 0.5``; a box with ``out_size`` points samples at the centres of ``out_size`` equal cells, i.e.
at ``start + (k + 0.5) · size / out_size``. On the ramp ``x[i] = i`` the interpolated value at a
continuous position ``p`` (away from the border) is therefore ``p − 0.5``.
"""

from __future__ import annotations

import pytest
import torch

from relpos.extraction import extract_patches, extract_patches_loop
from relpos.geometry import Boxes


def assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 rounding: positions pass through grid_sample's [-1, 1] normalisation,
    so an exact pixel comes back as e.g. 1.19e-07 instead of 0."""
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=1e-6, atol=1e-5)


def corner_boxes(starts, size) -> Boxes:
    """``(B, N, D)`` boxes from integer lower corners and one size for all."""
    start = torch.tensor(starts, dtype=torch.float32)
    return Boxes(start + torch.tensor(size, dtype=torch.float32) / 2, torch.tensor(size, dtype=torch.float32).expand_as(start).clone())


# -- exact slices -----------------------------------------------------------------------------------
def test_integer_boxes_1d_equal_the_slices():
    # x: (B=2, C=3, T=20) with distinct values everywhere
    x = torch.arange(2 * 3 * 20, dtype=torch.float32).reshape(2, 3, 20)
    starts = [[[0], [7], [15]], [[3], [12], [1]]]
    patches = extract_patches(x, corner_boxes(starts, [5.0]), 5)
    assert patches.shape == (2, 3, 3, 5)  # (B, N, C, P)
    for b in range(2):
        for n in range(3):
            s = starts[b][n][0]
            assert_same(patches[b, n], x[b, :, s : s + 5])


def test_integer_boxes_2d_equal_the_slices():
    x = torch.arange(2 * 3 * 10 * 12, dtype=torch.float32).reshape(2, 3, 10, 12)
    starts = [[[0, 0], [6, 8], [3, 5]], [[2, 1], [0, 8], [6, 0]]]
    patches = extract_patches(x, corner_boxes(starts, [4.0, 4.0]), (4, 4))
    assert patches.shape == (2, 3, 3, 4, 4)
    for b in range(2):
        for n in range(3):
            r, c = starts[b][n]
            assert_same(patches[b, n], x[b, :, r : r + 4, c : c + 4])


def test_integer_rectangular_boxes_2d_equal_the_slices():
    x = torch.arange(1 * 2 * 9 * 11, dtype=torch.float32).reshape(1, 2, 9, 11)
    starts = [[[0, 0], [5, 2], [1, 6]]]
    patches = extract_patches(x, corner_boxes(starts, [3.0, 5.0]), (3, 5))
    assert patches.shape == (1, 3, 2, 3, 5)
    for n in range(3):
        r, c = starts[0][n]
        assert_same(patches[0, n], x[0, :, r : r + 3, c : c + 5])


def test_integer_boxes_3d_equal_the_slices():
    x = torch.arange(2 * 2 * 6 * 7 * 8, dtype=torch.float32).reshape(2, 2, 6, 7, 8)
    starts = [[[0, 0, 0], [3, 4, 5], [1, 2, 3]], [[2, 1, 0], [0, 4, 4], [3, 0, 5]]]
    patches = extract_patches(x, corner_boxes(starts, [3.0, 3.0, 3.0]), 3)
    assert patches.shape == (2, 3, 2, 3, 3, 3)
    for b in range(2):
        for n in range(3):
            d, r, c = starts[b][n]
            assert_same(patches[b, n], x[b, :, d : d + 3, r : r + 3, c : c + 3])


def test_integer_input_is_read_as_float():
    x = torch.arange(12).reshape(1, 1, 12)  # int64
    patches = extract_patches(x, corner_boxes([[[4]]], [3.0]), 3)
    assert patches.dtype == torch.float32
    assert_same(patches.flatten(), torch.tensor([4.0, 5.0, 6.0]))


# -- sub-pixel ----------------------------------------------------------------------------------------
def test_half_pixel_shift_1d_averages_neighbours():
    # ramp x[i] = i; box [2.5, 6.5), 4 points at 3, 4, 5, 6 → halfway between pixels 2|3, 3|4, ...
    # → (2 + 3) / 2, (3 + 4) / 2, ... = 2.5, 3.5, 4.5, 5.5
    x = torch.arange(10, dtype=torch.float32).reshape(1, 1, 10)
    box = Boxes(torch.tensor([[[4.5]]]), torch.tensor([[[4.0]]]))
    assert_same(extract_patches(x, box, 4).flatten(), torch.tensor([2.5, 3.5, 4.5, 5.5]))


def test_half_pixel_shift_on_a_non_linear_signal_averages_neighbours():
    # x = [0, 1, 4, 9, 16, 25]; box [1.5, 3.5), 2 points at 2 and 3
    # → (x[1] + x[2]) / 2 = 2.5 and (x[2] + x[3]) / 2 = 6.5
    x = torch.tensor([0.0, 1.0, 4.0, 9.0, 16.0, 25.0]).reshape(1, 1, 6)
    box = Boxes(torch.tensor([[[2.5]]]), torch.tensor([[[2.0]]]))
    assert_same(extract_patches(x, box, 2).flatten(), torch.tensor([2.5, 6.5]))


def test_half_pixel_shift_2d_averages_four_neighbours():
    # x[r, c] = 10·r + c (5 × 5); box rows [1.5, 3.5), cols [0.5, 2.5) with 2 × 2 points at
    # rows 2, 3 and cols 1, 2: the first value is the mean of x[1,0], x[1,1], x[2,0], x[2,1]
    # = (10 + 11 + 20 + 21) / 4 = 15.5; stepping a row adds 10, a column adds 1.
    x = (10 * torch.arange(5.0)[:, None] + torch.arange(5.0)[None, :]).reshape(1, 1, 5, 5)
    box = Boxes(torch.tensor([[[2.5, 1.5]]]), torch.tensor([[[2.0, 2.0]]]))
    out = extract_patches(x, box, (2, 2))[0, 0, 0]
    torch.testing.assert_close(out, torch.tensor([[15.5, 16.5], [25.5, 26.5]]))


def test_box_twice_the_output_size_samples_between_pixel_pairs():
    # box [2, 10) with 4 points: cells of 2 samples, points at 2 + (k + 0.5)·2 = 3, 5, 7, 9
    # → on the ramp, values 2.5, 4.5, 6.5, 8.5 (each the mean of a pixel pair)
    x = torch.arange(12, dtype=torch.float32).reshape(1, 1, 12)
    box = Boxes(torch.tensor([[[6.0]]]), torch.tensor([[[8.0]]]))
    assert_same(extract_patches(x, box, 4).flatten(), torch.tensor([2.5, 4.5, 6.5, 8.5]))


def test_fractional_box_on_a_ramp_samples_at_the_computed_positions():
    # centre 5.25, size 3, 2 points: 5.25 + (0.25 − 0.5)·3 = 4.5 and 5.25 + (0.75 − 0.5)·3 = 6.0
    # → ramp values 4.5 − 0.5 = 4.0 and 6.0 − 0.5 = 5.5
    x = torch.arange(12, dtype=torch.float32).reshape(1, 1, 12)
    box = Boxes(torch.tensor([[[5.25]]]), torch.tensor([[[3.0]]]))
    torch.testing.assert_close(extract_patches(x, box, 2).flatten(), torch.tensor([4.0, 5.5]))


def test_large_box_2d_on_a_planar_ramp():
    # x[r, c] = 100·r + c on 16 × 16; box centre (8, 6), size (8, 4) → 2 × 2 points at
    # rows 8 + (±0.25)·8 = 6, 10 and cols 6 + (±0.25)·4 = 5, 7; bilinear is exact on a plane:
    # value = 100·(row − 0.5) + (col − 0.5): 100·5.5 + 4.5 = 554.5, 100·5.5 + 6.5 = 556.5,
    # 100·9.5 + 4.5 = 954.5, 100·9.5 + 6.5 = 956.5
    x = (100 * torch.arange(16.0)[:, None] + torch.arange(16.0)[None, :]).reshape(1, 1, 16, 16)
    box = Boxes(torch.tensor([[[8.0, 6.0]]]), torch.tensor([[[8.0, 4.0]]]))
    out = extract_patches(x, box, (2, 2))[0, 0, 0]
    torch.testing.assert_close(out, torch.tensor([[554.5, 556.5], [954.5, 956.5]]))


def test_box_past_the_border_repeats_the_edge_value():
    # x = 10, 11, ..., 15; box [-2, 2) with 4 points at -1.5, -0.5, 0.5, 1.5: positions before the
    # first pixel centre (0.5) read x[0] with padding "border" → 10, 10, 10, 11 (zero padding
    # would give 0, 0, 10, 11)
    x = 10 + torch.arange(6, dtype=torch.float32).reshape(1, 1, 6)
    box = Boxes(torch.tensor([[[0.0]]]), torch.tensor([[[4.0]]]))
    assert_same(extract_patches(x, box, 4).flatten(), torch.tensor([10.0, 10.0, 10.0, 11.0]))


# -- batched vs loop ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape, out",
    [((3, 2, 50), (6,)), ((2, 3, 20, 24), (4, 5)), ((2, 2, 8, 9, 10), (3, 2, 4))],
)
def test_batched_extraction_equals_the_per_patch_loop(shape, out):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen)
    extent = torch.tensor(shape[2:], dtype=torch.float32)
    batch, n = shape[0], 5
    size = (0.5 + 2.5 * torch.rand(batch, n, len(out), generator=gen)) * torch.tensor(out, dtype=torch.float32)
    size = torch.minimum(size, extent)
    center = size / 2 + torch.rand(batch, n, len(out), generator=gen) * (extent - size)
    boxes = Boxes(center, size)
    fast = extract_patches(x, boxes, out)
    slow = extract_patches_loop(x, boxes, out)
    assert fast.shape == (batch, n, shape[1], *out)
    torch.testing.assert_close(fast, slow)


def test_patches_of_different_samples_come_from_their_own_sample():
    # sample b is constant b: every patch of sample b must be exactly b
    x = torch.arange(3, dtype=torch.float32).reshape(3, 1, 1).expand(3, 1, 30).contiguous()
    gen = torch.Generator().manual_seed(1)
    center = 5 + 20 * torch.rand(3, 4, 1, generator=gen)
    boxes = Boxes(center, torch.full((3, 4, 1), 6.0))
    out = extract_patches(x, boxes, 3)
    for b in range(3):
        assert (out[b] == b).all()


def test_boxes_with_wrong_number_of_axes_are_rejected():
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="axes"):
        extract_patches(x, Boxes(torch.zeros(1, 1, 1), torch.ones(1, 1, 1)), 2)


def test_four_axes_are_rejected():
    x = torch.zeros(1, 1, 2, 2, 2, 2)
    with pytest.raises(ValueError, match="1 to 3 axes"):
        extract_patches(x, Boxes(torch.zeros(1, 1, 4), torch.ones(1, 1, 4)), 1)

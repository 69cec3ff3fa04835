"""1-D patches that are not rescaled (the EEG case) are linear interpolations of shifted slices."""

from __future__ import annotations

import torch

from relpos.extraction import extract_patches
from relpos.geometry import Boxes
from relpos.sampling import sample_offgrid


def _linear_reference(x: torch.Tensor, boxes: Boxes, size: int) -> torch.Tensor:
    """Float64 linear interpolation at the patch's sample points, written out longhand."""
    xd = x.double()
    length = x.shape[-1]
    # Sample k of a box sits at start + k + 0.5, i.e. index u = start + k (sample i is at i + 0.5).
    start = boxes.center[..., 0].double() - size / 2
    u = start[..., None] + torch.arange(size, dtype=torch.float64)
    lo = u.floor().long().clamp(0, length - 1)
    hi = (lo + 1).clamp(max=length - 1)
    w = u - u.floor()
    out = []
    for b in range(x.shape[0]):
        out.append((xd[b][:, lo[b]] * (1 - w[b]) + xd[b][:, hi[b]] * w[b]).permute(1, 0, 2))
    return torch.stack(out)


def test_offgrid_eeg_patches_match_linear_interpolation_at_3000_samples():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 3000)
    boxes = sample_offgrid(4, (3000,), 100.0, 40, gen)
    patches = extract_patches(x, boxes, 100)
    assert patches.shape == (4, 40, 3, 100)
    # Float32 box positions near 3000 carry ~1e-4 sample of rounding; values are N(0, 1).
    torch.testing.assert_close(patches.double(), _linear_reference(x, boxes, 100), atol=1e-4, rtol=0)


def test_box_flush_with_the_end_returns_the_last_samples():
    x = torch.arange(20.0).reshape(1, 1, 20)
    # A 5-sample box covering [15, 20): centre 17.5.
    boxes = Boxes(torch.tensor([[[17.5]]]), torch.tensor([[[5.0]]]))
    assert extract_patches(x, boxes, 5)[0, 0, 0].tolist() == [15.0, 16.0, 17.0, 18.0, 19.0]


def test_quarter_sample_shift_on_a_ramp():
    x = (torch.arange(10.0) * 2).reshape(1, 1, 10)  # value 2i at index i
    # Box [2.25, 5.25): sample points at indices 2.25, 3.25, 4.25 -> values 4.5, 6.5, 8.5.
    boxes = Boxes(torch.tensor([[[3.75]]]), torch.tensor([[[3.0]]]))
    torch.testing.assert_close(extract_patches(x, boxes, 3)[0, 0, 0], torch.tensor([4.5, 6.5, 8.5]))


def test_rescaled_and_out_of_range_boxes_take_the_general_path_with_the_same_convention():
    x = (torch.arange(10.0) * 2).reshape(1, 1, 10)
    # Rescaled: a 6-sample box [2, 8) read at 3 points -> indices 2.5, 4.5, 6.5 -> 5, 9, 13.
    boxes = Boxes(torch.tensor([[[5.0]]]), torch.tensor([[[6.0]]]))
    torch.testing.assert_close(extract_patches(x, boxes, 3)[0, 0, 0], torch.tensor([5.0, 9.0, 13.0]))
    # Partly past the end, [8, 11): border padding repeats the last value (18).
    boxes = Boxes(torch.tensor([[[9.5]]]), torch.tensor([[[3.0]]]))
    torch.testing.assert_close(extract_patches(x, boxes, 3)[0, 0, 0], torch.tensor([16.0, 18.0, 18.0]))

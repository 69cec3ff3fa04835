"""Patch geometry: known boxes give a known relative transform θ, in 1 and 2 axes."""

from __future__ import annotations

import pytest
import torch

from relpos.geometry import Boxes, relative_transform, target_dim


def boxes(center, size) -> Boxes:
    return Boxes(torch.tensor(center, dtype=torch.float32), torch.tensor(size, dtype=torch.float32))


def test_delta_t_in_one_axis():
    # ref: centre 50, length 100 samples; tgt: centre 300, length 100.
    # Δt = (300 - 50) / 100 = 2.5
    ref = boxes([[50.0]], [[100.0]])
    tgt = boxes([[300.0]], [[100.0]])
    theta = relative_transform(ref, tgt)
    assert theta.shape == (1, 1)
    assert theta.tolist() == [[2.5]]


def test_delta_t_negative_when_target_is_earlier():
    # ref centre 250, size 50; tgt centre 100 → Δt = (100 - 250) / 50 = -3
    theta = relative_transform(boxes([[250.0]], [[50.0]]), boxes([[100.0]], [[50.0]]))
    assert theta.tolist() == [[-3.0]]


def test_two_axes_are_row_then_col():
    # ref centre (row 10, col 20), size (4, 8); tgt centre (18, 4), size (2, 16).
    # Δc = ((18 - 10) / 4, (4 - 20) / 8) = (2, -2)      (Δy first, then Δx)
    ref = boxes([10.0, 20.0], [4.0, 8.0])
    tgt = boxes([18.0, 4.0], [2.0, 16.0])
    assert relative_transform(ref, tgt).tolist() == [2.0, -2.0]


def test_with_size_appends_size_ratios_after_centre_offsets():
    # Same boxes: Δs = (2 / 4, 16 / 8) = (0.5, 2); layout is (Δy, Δx, Δh, Δw).
    ref = boxes([10.0, 20.0], [4.0, 8.0])
    tgt = boxes([18.0, 4.0], [2.0, 16.0])
    theta = relative_transform(ref, tgt, with_size=True)
    assert theta.tolist() == [2.0, -2.0, 0.5, 2.0]
    assert theta.shape[-1] == target_dim(2, with_size=True) == 4
    assert target_dim(2, with_size=False) == 2
    assert target_dim(1, with_size=True) == 2


def test_with_size_in_one_axis():
    # ref centre 10 size 4, tgt centre 22 size 6 → Δt = 12 / 4 = 3, Δs = 6 / 4 = 1.5
    theta = relative_transform(boxes([10.0], [4.0]), boxes([22.0], [6.0]), with_size=True)
    assert theta.tolist() == [3.0, 1.5]


def test_reverse_pair_negates_theta_for_equal_sizes():
    gen = torch.Generator().manual_seed(0)
    size = torch.full((5, 2), 3.0)
    a = Boxes(torch.rand(5, 2, generator=gen) * 30, size)
    b = Boxes(torch.rand(5, 2, generator=gen) * 30, size)
    forward = relative_transform(a, b)
    backward = relative_transform(b, a)
    torch.testing.assert_close(backward, -forward)
    assert forward.abs().sum() > 0  # the pairs are not all identical


def test_reverse_pair_is_not_negation_when_sizes_differ():
    # ref size 2, tgt size 4, centres 0 and 8: θ(ref→tgt) = 8 / 2 = 4, θ(tgt→ref) = -8 / 4 = -2
    a, b = boxes([0.0], [2.0]), boxes([8.0], [4.0])
    assert relative_transform(a, b).tolist() == [4.0]
    assert relative_transform(b, a).tolist() == [-2.0]


def test_from_corners_start_end_roundtrip():
    # start (2, 4), end (6, 12) → centre (4, 8), size (4, 8)
    b = Boxes.from_corners([2, 4], [6, 12])
    assert b.center.tolist() == [4.0, 8.0]
    assert b.size.tolist() == [4.0, 8.0]
    assert b.start.tolist() == [2.0, 4.0]
    assert b.end.tolist() == [6.0, 12.0]
    assert b.n_axes == 2
    assert b.center.dtype == torch.float32


def test_mismatched_centre_and_size_shapes_are_rejected():
    with pytest.raises(ValueError, match="same shape"):
        Boxes(torch.zeros(3, 2), torch.ones(3, 1))


def test_gather_selects_boxes_per_sample():
    # Two samples, three 1-D boxes each; centres 10·b + n, sizes 1 + n.
    center = torch.tensor([[[0.0], [1.0], [2.0]], [[10.0], [11.0], [12.0]]])
    size = torch.tensor([[[1.0], [2.0], [3.0]], [[1.0], [2.0], [3.0]]])
    b = Boxes(center, size)
    index = torch.tensor([[2, 0], [1, 1]])
    picked = b.gather(index)
    assert picked.center.shape == (2, 2, 1)
    assert picked.center[..., 0].tolist() == [[2.0, 0.0], [11.0, 11.0]]
    assert picked.size[..., 0].tolist() == [[3.0, 1.0], [2.0, 2.0]]


def test_gather_then_transform_matches_hand_computation():
    # Sample 0 boxes (2-D): A centre (4, 4) size (8, 8), B centre (4, 20) size (8, 8).
    # θ(A→B) = ((4 - 4) / 8, (20 - 4) / 8) = (0, 2); θ(B→A) = (0, -2).
    b = Boxes(
        torch.tensor([[[4.0, 4.0], [4.0, 20.0]]]),
        torch.tensor([[[8.0, 8.0], [8.0, 8.0]]]),
    )
    ref = torch.tensor([[0, 1]])
    tgt = torch.tensor([[1, 0]])
    theta = relative_transform(b.gather(ref), b.gather(tgt))
    assert theta.tolist() == [[[0.0, 2.0], [0.0, -2.0]]]

"""Patch samplers: off-grid boxes, grid boxes and (reference, target) pairs."""

from __future__ import annotations

import pytest
import torch

from relpos.errors import ConfigError
from relpos.sampling import grid_boxes, grid_count, sample_offgrid, sample_pairs


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- off-grid ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extent, patch, scale, aspect",
    [
        ((3000,), 100.0, (1.0, 1.0), (1.0, 1.0)),
        ((3000,), 100.0, (0.5, 2.0), (1.0, 1.0)),
        ((32, 48), 8.0, (1.0, 1.0), (1.0, 1.0)),
        ((32, 48), 8.0, (0.5, 3.0), (0.5, 2.0)),
        ((8, 16, 16), 4.0, (0.5, 2.0), (1.0, 1.0)),
    ],
)
def test_offgrid_boxes_lie_inside_the_sample(extent, patch, scale, aspect):
    b = sample_offgrid(4, extent, patch, 64, gen(0), scale_range=scale, aspect_range=aspect)
    assert b.center.shape == b.size.shape == (4, 64, len(extent))
    ext = torch.tensor(extent, dtype=torch.float32)
    eps = 1e-4
    assert (b.start >= -eps).all()
    assert (b.end <= ext + eps).all()
    assert (b.size > 0).all()


def test_offgrid_box_larger_than_sample_is_clipped_to_the_sample():
    # patch 10 × scale 2 = 20 > extent 12 → size becomes 12 and the only valid centre is 6
    b = sample_offgrid(2, (12,), 10.0, 5, gen(0), scale_range=(2.0, 2.0))
    assert torch.allclose(b.size, torch.full_like(b.size, 12.0))
    assert torch.allclose(b.center, torch.full_like(b.center, 6.0))


def test_offgrid_positions_cover_the_sample():
    # Uniform corner in [0, 100 - 10]: centres span [5, 95]; with 2000 draws both ends are reached
    # to within a couple of samples, and the mean is close to 50.
    b = sample_offgrid(1, (100,), 10.0, 2000, gen(1))
    c = b.center.flatten()
    assert c.min() < 7 and c.max() > 93
    assert abs(c.mean().item() - 50.0) < 3.0


def test_offgrid_same_seed_same_boxes_different_seed_different_boxes():
    kwargs = dict(scale_range=(0.5, 2.0), aspect_range=(0.5, 2.0))
    a = sample_offgrid(2, (32, 32), 4, 16, gen(7), **kwargs)
    b = sample_offgrid(2, (32, 32), 4, 16, gen(7), **kwargs)
    c = sample_offgrid(2, (32, 32), 4, 16, gen(8), **kwargs)
    assert torch.equal(a.center, b.center) and torch.equal(a.size, b.size)
    assert not torch.equal(a.center, c.center)
    assert not torch.equal(a.size, c.size)


def test_offgrid_fixed_size_without_ranges():
    b = sample_offgrid(3, (30, 40), (4, 6), 10, gen(0))
    assert (b.size[..., 0] == 4).all() and (b.size[..., 1] == 6).all()


def test_offgrid_scale_and_aspect_lie_in_their_ranges_2d():
    patch = 8.0
    b = sample_offgrid(4, (64, 64), patch, 256, gen(3), scale_range=(0.5, 2.0), aspect_range=(0.5, 2.0))
    h, w = b.size[..., 0], b.size[..., 1]
    # size = patch·scale·(1/√a, √a) → w / h = a and √(h·w) / patch = scale
    aspect = w / h
    scale = torch.sqrt(h * w) / patch
    eps = 1e-4
    assert aspect.min() >= 0.5 - eps and aspect.max() <= 2.0 + eps
    assert scale.min() >= 0.5 - eps and scale.max() <= 2.0 + eps
    # both ranges are actually used, not just one end of them
    assert aspect.min() < 0.7 and aspect.max() > 1.4
    assert scale.min() < 0.7 and scale.max() > 1.7


def test_offgrid_sides_stay_within_half_and_twice_the_patch_size():
    # PART's extension keeps every side within [P/2, 2P] (configs/image_part_scale.yaml: scale_range
    # and aspect_range [0.5, 2]). The old sampler multiplied a scale in [0.5, 2] by √a in [0.71, 1.41],
    # so sides reached 0.35 P to 2.83 P. Now every side of every draw lies in [2, 8] px for P = 4,
    # and both ends are reached (to within 1 %) over 20,000 draws.
    b = sample_offgrid(2, (64, 64), 4.0, 10_000, gen(5), scale_range=(0.5, 2.0), aspect_range=(0.5, 2.0))
    sides = b.size / 4.0
    eps = 1e-5
    assert sides.min() >= 0.5 - eps and sides.max() <= 2.0 + eps
    assert sides.min() < 0.505 and sides.max() > 1.98
    for axis in (0, 1):  # each of height and width reaches both ends
        assert sides[..., axis].min() < 0.52 and sides[..., axis].max() > 1.95
    # the aspect ratio still covers its range
    aspect = b.size[..., 1] / b.size[..., 0]
    assert aspect.min() < 0.52 and aspect.max() > 1.95


def test_aspect_range_wider_than_the_side_bounds_allow_is_a_config_error():
    # sides within [1, 1] patch sizes leave only square boxes; [0.5, 2] allows aspect ratios [0.25, 4]
    with pytest.raises(ConfigError, match=r"aspect ratio \(width / height\) must lie within \[1, 1\]"):
        sample_offgrid(1, (32, 32), 4, 4, gen(0), aspect_range=(0.5, 2.0))
    with pytest.raises(ConfigError, match=r"within \[0.25, 4\], got \[0.2, 4.0\]"):
        sample_offgrid(1, (32, 32), 4, 4, gen(0), scale_range=(0.5, 2.0), aspect_range=(0.2, 4.0))
    b = sample_offgrid(1, (32, 32), 4, 4, gen(0), scale_range=(0.5, 2.0), aspect_range=(0.25, 4.0))
    assert (b.size >= 2.0 - 1e-5).all() and (b.size <= 8.0 + 1e-5).all()


def test_offgrid_scale_range_in_one_axis():
    b = sample_offgrid(2, (3000,), 100.0, 128, gen(0), scale_range=(0.5, 1.5))
    s = b.size / 100.0
    assert s.min() >= 0.5 - 1e-5 and s.max() <= 1.5 + 1e-5
    assert s.max() - s.min() > 0.5  # sizes vary


def test_aspect_range_with_one_axis_is_a_config_error():
    with pytest.raises(ConfigError, match="aspect_range"):
        sample_offgrid(1, (3000,), 100.0, 4, gen(0), aspect_range=(0.5, 2.0))


@pytest.mark.parametrize("bad", [(2.0, 1.0), (0.0, 1.0), (-1.0, 2.0), (1.0,)])
def test_invalid_scale_range_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="scale_range"):
        sample_offgrid(1, (32, 32), 4, 4, gen(0), scale_range=bad)


def test_patch_size_with_wrong_number_of_axes_is_a_config_error():
    with pytest.raises(ConfigError, match="patch_size"):
        sample_offgrid(1, (32, 32), (4, 4, 4), 4, gen(0))


# -- grid -------------------------------------------------------------------------------------------
def test_grid_boxes_are_row_major_cell_centres():
    # extent (8, 12), patch 4 → 2 rows × 3 cols; centres at 2, 6 (rows) and 2, 6, 10 (cols)
    g = grid_boxes((8, 12), 4)
    assert g.center.tolist() == [
        [2.0, 2.0], [2.0, 6.0], [2.0, 10.0],
        [6.0, 2.0], [6.0, 6.0], [6.0, 10.0],
    ]
    assert g.size.tolist() == [[4.0, 4.0]] * 6


def test_grid_boxes_leave_out_the_remainder():
    # extent 10 with patch 4 → floor(10 / 4) = 2 cells, centres 2 and 6; the last 2 samples unused
    g = grid_boxes((10,), 4)
    assert g.center.tolist() == [[2.0], [6.0]]
    assert (g.end <= 10).all()


def test_grid_boxes_rectangular_patches():
    # extent (4, 9), patch (2, 3) → 2 × 3 cells; centres rows 1, 3; cols 1.5, 4.5, 7.5
    g = grid_boxes((4, 9), (2, 3))
    assert g.center.tolist() == [
        [1.0, 1.5], [1.0, 4.5], [1.0, 7.5],
        [3.0, 1.5], [3.0, 4.5], [3.0, 7.5],
    ]


def test_grid_boxes_tile_without_overlap():
    g = grid_boxes((12, 16), 4)
    # 3 × 4 = 12 cells of 16 px² cover 12·16 = 192 px² exactly
    assert len(g.center) == 12
    assert float((g.size.prod(-1)).sum()) == 12 * 16
    starts = {tuple(s) for s in g.start.tolist()}
    assert len(starts) == 12


@pytest.mark.parametrize(
    "extent, patch, expected",
    [
        ((8, 12), 4, 6),  # 2 × 3
        ((32, 32), 4, 64),  # 8 × 8
        ((3000,), 100, 30),
        ((10,), 4, 2),  # floor(2.5)
        ((9, 9), 3.0, 9),
        ((4, 9), (2, 3), 6),
        ((4, 4, 4), 2, 8),
    ],
)
def test_grid_count(extent, patch, expected):
    assert grid_count(extent, patch) == expected
    assert len(grid_boxes(extent, patch).center) == expected


def test_grid_patch_larger_than_sample_is_a_config_error():
    with pytest.raises(ConfigError, match="does not fit"):
        grid_boxes((8, 8), 16)


# -- pairs ------------------------------------------------------------------------------------------
def test_sample_pairs_never_pairs_a_patch_with_itself():
    ref, tgt = sample_pairs(4, 5, 500, gen(0))
    assert ref.shape == tgt.shape == (4, 500)
    assert ref.dtype == tgt.dtype == torch.long
    assert (ref != tgt).all()
    assert ref.min() >= 0 and ref.max() <= 4
    assert tgt.min() >= 0 and tgt.max() <= 4


def test_sample_pairs_with_two_patches_alternate():
    # with 2 patches the only pairs are (0, 1) and (1, 0)
    ref, tgt = sample_pairs(3, 2, 50, gen(0))
    assert ((ref + tgt) == 1).all()
    assert set(ref.flatten().tolist()) == {0, 1}


def test_sample_pairs_reach_every_ordered_pair():
    # 4 patches → 4·3 = 12 ordered pairs; 2000 draws reach all of them
    ref, tgt = sample_pairs(1, 4, 2000, gen(0))
    pairs = set(zip(ref.flatten().tolist(), tgt.flatten().tolist()))
    assert pairs == {(i, j) for i in range(4) for j in range(4) if i != j}


def test_sample_pairs_seeded():
    a = sample_pairs(2, 10, 16, gen(5))
    b = sample_pairs(2, 10, 16, gen(5))
    c = sample_pairs(2, 10, 16, gen(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))


def test_sample_pairs_needs_two_patches():
    with pytest.raises(ConfigError, match="at least 2"):
        sample_pairs(1, 1, 4, gen(0))


def test_offgrid_same_seed_gives_same_boxes_with_a_device_argument():
    # drawing happens on the generator's device, so asking for a device does not change the boxes
    a = sample_offgrid(1, (16,), 4, 3, gen(0))
    b = sample_offgrid(1, (16,), 4, 3, gen(0), device="cpu")
    assert torch.equal(a.center, b.center)
    assert b.center.device.type == "cpu" and b.size.device.type == "cpu"

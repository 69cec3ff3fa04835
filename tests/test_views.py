"""Views as boxes: token boxes, one-call extraction, flips, positions and batched crop sampling."""

from __future__ import annotations

import pytest
import torch

from relpos.errors import ConfigError
from relpos.geometry import Boxes
from relpos.views import Views, extract_view_tokens, sample_views

pytestmark = pytest.mark.usefixtures("one_thread")


def one_view(start, end, resolution, patch, extent, flip=None, batch=1):
    start = torch.tensor(start, dtype=torch.float32).expand(batch, 1, -1)
    end = torch.tensor(end, dtype=torch.float32).expand(batch, 1, -1)
    flip = torch.tensor(flip or [False] * len(resolution)).expand(batch, 1, -1)
    return Views(Boxes.from_corners(start, end), flip, tuple(resolution), tuple(patch), tuple(extent))


def test_whole_sample_at_its_own_resolution_gives_the_grid_patches():
    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    view = one_view([0, 0], [8, 12], [8, 12], [4, 4], [8, 12], batch=2)
    (tokens,) = extract_view_tokens(x, [view])
    assert tokens.shape == (2, 1, 6, 3, 4, 4)
    expected = torch.stack([x[:, :, r * 4:(r + 1) * 4, c * 4:(c + 1) * 4] for r in range(2) for c in range(3)], 1)
    torch.testing.assert_close(tokens[:, 0], expected, atol=1e-3, rtol=0)


def test_whole_series_at_native_resolution_gives_the_grid_patches():
    x = torch.randn(2, 4, 30)
    view = one_view([0], [30], [30], [10], [30], batch=2)
    (tokens,) = extract_view_tokens(x, [view])
    expected = torch.stack([x[:, :, i * 10:(i + 1) * 10] for i in range(3)], 1)
    torch.testing.assert_close(tokens[:, 0], expected, atol=1e-5, rtol=0)


def test_flipped_view_gives_mirrored_patches_in_mirrored_order():
    x = torch.randn(1, 2, 8, 12)
    view = one_view([0, 0], [8, 12], [8, 12], [4, 4], [8, 12], flip=[False, True])
    (tokens,) = extract_view_tokens(x, [view])
    # token (r, c) of the flipped view is the sample's patch (r, 2 - c), mirrored left-right
    expected = torch.stack(
        [x[0, :, r * 4:(r + 1) * 4, (2 - c) * 4:(3 - c) * 4].flip(-1) for r in range(2) for c in range(3)]
    )
    torch.testing.assert_close(tokens[0, 0], expected, atol=1e-3, rtol=0)
    # the same as flipping the image first and reading its grid
    plain = one_view([0, 0], [8, 12], [8, 12], [4, 4], [8, 12])
    (of_flipped_image,) = extract_view_tokens(x.flip(-1), [plain])
    torch.testing.assert_close(tokens, of_flipped_image, atol=1e-3, rtol=0)


def test_flipped_time_view_reverses_order_and_time():
    x = torch.arange(20, dtype=torch.float32).reshape(1, 1, 20)
    view = one_view([4], [16], [12], [4], [20], flip=[True])
    (tokens,) = extract_view_tokens(x, [view])
    # crop = samples 4..15 reversed: 15..4, in patches of 4
    assert tokens[0, 0, :, 0].tolist() == [[15, 14, 13, 12], [11, 10, 9, 8], [7, 6, 5, 4]]


def test_token_boxes_of_a_known_crop():
    # crop rows [2, 10), cols [4, 20), resampled to 4×8 with 2×2 patches: a 2×4 grid whose cells are
    # (8 / 4 · 2, 16 / 8 · 2) = (4, 4) sample units
    view = one_view([2, 4], [10, 20], [4, 8], [2, 2], [32, 32])
    boxes = view.token_boxes()
    assert boxes.center.shape == (1, 1, 8, 2)
    assert boxes.center[0, 0].tolist() == [
        [4, 6], [4, 10], [4, 14], [4, 18],
        [8, 6], [8, 10], [8, 14], [8, 18],
    ]
    assert boxes.size[0, 0].tolist() == [[4, 4]] * 8
    flipped = one_view([2, 4], [10, 20], [4, 8], [2, 2], [32, 32], flip=[True, True]).token_boxes()
    assert flipped.center[0, 0].tolist() == [
        [8, 18], [8, 14], [8, 10], [8, 6],
        [4, 18], [4, 14], [4, 10], [4, 6],
    ]


def test_remainder_of_the_view_is_left_out():
    # 10 samples of view at patch 4: 2 tokens, the last 2 samples of the view are not read
    view = one_view([0], [20], [10], [4], [20])
    assert view.grid_shape == (2,)
    assert view.token_boxes().center[0, 0, :, 0].tolist() == [4.0, 12.0]  # cells of 8 samples


def test_positions_span_the_extent_whatever_the_crop():
    whole = one_view([0, 0], [8, 12], [8, 12], [4, 4], [8, 12])
    small = one_view([2, 2], [6, 8], [4, 8], [4, 4], [8, 12])
    assert whole.token_positions()[0, 0].tolist() == [[2, 2], [2, 6], [2, 10], [6, 2], [6, 6], [6, 10]]
    # a 1×2 grid spread over the same 8×12 range: centres at (0.5·8, 0.25·12) and (0.5·8, 0.75·12)
    assert small.token_positions()[0, 0].tolist() == [[4, 3], [4, 9]]


def test_two_groups_of_views_in_one_call_match_separate_calls():
    x = torch.randn(3, 1, 16, 16)
    gen = torch.Generator().manual_seed(0)
    big = sample_views(3, 2, (16, 16), (4, 4), (0.4, 1.0), (16, 16), gen, flippable=(False, True))
    small = sample_views(3, 4, (16, 16), (4, 4), (0.05, 0.4), (8, 8), gen, flippable=(False, True))
    together = extract_view_tokens(x, [big, small])
    torch.testing.assert_close(together[0], extract_view_tokens(x, [big])[0])
    torch.testing.assert_close(together[1], extract_view_tokens(x, [small])[0])
    assert together[1].shape == (3, 4, 4, 1, 4, 4)


def test_sampled_crops_are_seeded_inside_and_in_the_scale_range():
    def draw(seed):
        return sample_views(64, 3, (20, 30), (2, 2), (0.2, 0.5), (10, 10), torch.Generator().manual_seed(seed),
                            flippable=(False, True))

    first, again, other = draw(1), draw(1), draw(2)
    assert torch.equal(first.crop.center, again.crop.center) and torch.equal(first.flip, again.flip)
    assert not torch.equal(first.crop.center, other.crop.center)
    assert (first.crop.start >= -1e-4).all() and (first.crop.end <= torch.tensor([20.0, 30.0]) + 1e-4).all()
    area = first.crop.size.prod(-1) / (20 * 30)
    assert area.min() >= 0.2 * 0.99 - 1e-6 and area.max() <= 0.5 + 1e-6  # clipping can only shrink
    assert not first.flip[..., 0].any()  # rows may not flip
    share = first.flip[..., 1].float().mean().item()
    assert 0.3 < share < 0.7  # p = 0.5 on the allowed axis (192 draws)
    # per-sample crops: not one crop for the whole batch
    assert first.crop.center[:, 0].std(0).min() > 0


def test_native_resolution_crops_are_whole_patches_and_not_resampled():
    gen = torch.Generator().manual_seed(0)
    views = sample_views(5, 2, (300,), (25,), (0.1, 0.3), None, gen)
    length = views.resolution[0]
    assert length % 25 == 0 and 25 <= length <= 0.3 * 300
    assert torch.all(views.crop.size == length)
    assert torch.all(views.token_boxes().size == 25)  # one token = one patch of the modality, unstretched


@pytest.mark.parametrize("scale", [(0.0, 0.5), (0.5, 1.5), (0.6, 0.3), (-0.1, 0.2)])
def test_bad_scale_ranges_are_one_sentence(scale):
    with pytest.raises(ConfigError, match=r"0 < low <= high <= 1.*got"):
        sample_views(2, 1, (16, 16), (4, 4), scale, (16, 16))


def test_resolution_without_a_whole_patch_is_refused():
    with pytest.raises(ConfigError, match="holds no whole patch"):
        sample_views(2, 1, (16, 16), (4, 4), (0.5, 1.0), (16, 3))

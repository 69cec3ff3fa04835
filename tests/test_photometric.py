"""Modality photometric hooks: per-view parameters are shared by a view's patches, per-patch ones are not."""

from __future__ import annotations

import pytest
import torch

import relpos_modalities.common.series_photometric as series
from relpos_modalities.image import ImageConfig, ImageModality
from relpos_modalities.image.photometric import photometric_images

pytestmark = pytest.mark.usefixtures("one_thread")


def flat_views(rows=6, n=5, channels=3, value=0.2):
    """Views whose patches are all the same flat grey: any difference comes from the parameters."""
    return torch.full((rows, n, channels, 4, 4), value)


@pytest.mark.parametrize("view", ["global-1", "global-2", "local"])
def test_image_view_parameters_are_shared_by_the_patches_of_a_view(view):
    out = photometric_images(flat_views(), torch.Generator().manual_seed(0), view, False, image_size=32)
    assert out.shape == (6, 5, 3, 4, 4)
    assert torch.allclose(out, out[:, :1].expand_as(out), atol=1e-5)  # every patch of a view alike
    assert (out[:, 0] - out[:1, 0]).abs().max() > 1e-3  # views differ from each other
    assert out.min() >= -1 - 1e-6 and out.max() <= 1 + 1e-6


def test_image_patch_parameters_differ_between_patches():
    out = photometric_images(flat_views(rows=2, n=16), torch.Generator().manual_seed(0), "local", True, 32)
    per_patch = out.reshape(2, 16, -1).mean(-1)
    assert per_patch.std(1).min() > 1e-3


def test_image_augmentation_is_seeded():
    x = torch.rand(3, 4, 3, 4, 4) * 2 - 1
    a = photometric_images(x, torch.Generator().manual_seed(5), "global-2", True, 32)
    b = photometric_images(x, torch.Generator().manual_seed(5), "global-2", True, 32)
    c = photometric_images(x, torch.Generator().manual_seed(6), "global-2", True, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_grey_images_stay_grey_and_the_modality_hook_calls_the_recipe():
    modality = ImageModality(ImageConfig(image_size=16, patch_size=4))
    grey = flat_views(channels=1)
    out = modality.photometric(grey, torch.Generator().manual_seed(0), "global-1", False)
    assert out.shape == grey.shape
    assert modality.flip_axes == ("col",)
    assert ImageModality(ImageConfig(image_size=16, patch_size=4, hflip=False)).flip_axes == ()


@pytest.mark.parametrize("per_patch", [False, True])
def test_series_scaling_is_per_view_or_per_patch(per_patch, monkeypatch):
    # Without noise, dropout and masking, an augmented patch is the input times a per-channel factor;
    # per view, every patch of a view has the same factors.
    monkeypatch.setattr(series, "NOISE_STD", 0.0)
    monkeypatch.setattr(series, "CHANNEL_DROP_P", 0.0)
    monkeypatch.setattr(series, "MASK_FRACTION", 0.0)
    x = torch.ones(8, 6, 3, 10)
    out = series.photometric_series(x, torch.Generator().manual_seed(0), per_patch)
    factors = out[..., 0]  # (views, patches, channels)
    assert torch.allclose(out, factors[..., None].expand_as(out))
    spread_over_patches = (factors - factors[:, :1]).abs().amax(dim=(1, 2))
    if per_patch:
        assert spread_over_patches.max() > 0.1
    else:
        assert spread_over_patches.max() == 0
    assert factors.min() >= 0.5 - 1e-6 and factors.max() <= 2.0 + 1e-6


def test_series_time_mask_is_one_stretch_of_the_view(monkeypatch):
    monkeypatch.setattr(series, "APPLY_P", 1.0)  # every augmentation applies
    monkeypatch.setattr(series, "NOISE_STD", 0.0)
    monkeypatch.setattr(series, "CHANNEL_DROP_P", 0.0)
    monkeypatch.setattr(series, "MASK_FRACTION", 0.5)
    x = torch.ones(4, 5, 2, 20)
    out = series.photometric_series(x, torch.Generator().manual_seed(1), False)
    for view in out:
        zero = (view[:, 0] == 0).reshape(-1)  # the view's 100 samples in order, channel 0
        changes = (zero[1:] != zero[:-1]).sum().item()
        assert zero.sum() <= 50 and changes <= 2  # one contiguous masked stretch at most
    assert (out == 0).any()

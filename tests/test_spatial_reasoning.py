"""The spatial-reasoning pretext: pairs, targets and losses by hand, patch sampling, bad input, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import relpos
from relpos.cli import main
from relpos.config import resolve_config
from relpos.errors import ConfigError
from relpos.training import build_modality, build_pretext
from relpos_plugins.spatial_reasoning import (
    DIFFERENT,
    SAME,
    SpatialReasoning,
    additive_inputs,
    patch_pairs,
    roll_pairs,
    sample_patch_starts,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_VIT = ["encoder.dim=16", "encoder.depth=1", "encoder.heads=2"]


def images(n=6, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def build(extra=(), data=None, modality="image"):
    base = ["modality.image_size=16", "modality.patch_size=4"] if modality == "image" else []
    config = resolve_config(modality=modality, pretext="spatial-reasoning", overrides=[*TINY_VIT, *base, *extra])
    mod = build_modality(config)
    windows = mod.load(images() if data is None else data)
    return build_pretext(config, mod, windows), windows


# -- pairs by hand ----------------------------------------------------------------------------------
def test_roll_pairs_for_three_images_and_two_augmentations():
    # rows: augmentation k of image m at k * 3 + m. One (i, j) = (0, 1) pair of augmentations, shift 1:
    # positives (a0, b0), (a1, b1), (a2, b2); negatives pair b rolled by one: (a0, b2), (a1, b0), (a2, b1).
    first, second, different = roll_pairs(3, 2)
    assert first.tolist() == [0, 1, 2, 0, 1, 2]
    assert second.tolist() == [3, 4, 5, 5, 3, 4]
    assert different.tolist() == [False] * 3 + [True] * 3
    assert len(first) == 3 * (2**2 - 2)  # M (K² − K)


def test_roll_shift_grows_per_pair_and_never_reaches_the_batch_size():
    # K = 3, M = 3: pairs (0,1) shift 1, (0,2) shift 2, (1,2) shift 3 → reset to 1.
    first, second, different = roll_pairs(3, 3)
    negatives = [(int(a), int(b)) for a, b, d in zip(first, second, different) if d]
    assert negatives == [
        (0, 5), (1, 3), (2, 4),      # a = augmentation 0, b = augmentation 1 rolled by 1
        (0, 7), (1, 8), (2, 6),      # augmentation 2 (rows 6..8) rolled by 2
        (3, 8), (4, 6), (5, 7),      # augmentation 1 against 2 rolled by 1 again
    ]
    assert all(a % 3 != b % 3 for a, b in negatives)  # never the same image


def test_patch_pairs_for_three_images_and_three_patches():
    a, b = patch_pairs(3, 3)
    assert list(zip(a.tolist(), b.tolist())) == [
        (0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5), (6, 7), (6, 8), (7, 8),
    ]  # M (N² − N) / 2 = 9, all within one image


def test_targets_of_the_papers_example_and_the_same_class_convention():
    pretext, _ = build(["pretext.n_augmentations=2", "pretext.n_patches=3"])
    m, f = 3, 4
    features = torch.arange((2 * m + 3 * m) * f, dtype=torch.float32).reshape(-1, f)
    # image 0: the paper's (0.2, 0.6) and (0.4, 0.1), then (0.5, 0.5); images 1 and 2: other values
    positions = torch.tensor([
        [[0.2, 0.6], [0.4, 0.1], [0.5, 0.5]],
        [[0.0, 0.0], [1.0, 1.0], [0.25, 0.75]],
        [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]],
    ])
    pairs, target = pretext.pairs_and_targets(features, m, positions)
    assert pairs.shape == (6 + 9, 2 * f)
    # augmentation pairs: label and both pseudo-coordinates 0 (same image) or 1 (different image)
    assert SAME == 0.0 and DIFFERENT == 1.0
    assert target[:6].tolist() == [[0.0, 0.0, 0.0]] * 3 + [[1.0, 1.0, 1.0]] * 3
    assert torch.equal(pairs[3], torch.cat([features[0], features[5]]))  # a0 with b2
    # patch pairs: label 0 (same image), coordinates p_a − p_b
    patch_targets = target[6:]
    assert patch_targets[:, 0].tolist() == [0.0] * 9
    expected = [
        [-0.2, 0.5], [-0.3, 0.1], [-0.1, -0.4],
        [-1.0, -1.0], [-0.25, -0.75], [0.75, 0.25],
        [0.0, 0.0], [0.0, 0.0], [0.0, 0.0],
    ]
    assert torch.allclose(patch_targets[:, 1:], torch.tensor(expected), atol=1e-6)
    patch_features = features[6:]
    assert torch.equal(pairs[6 + 5], torch.cat([patch_features[4], patch_features[5]]))  # image 1, patches 1 and 2


def test_one_dimensional_targets():
    x = np.random.default_rng(0).standard_normal((2, 3, 400)).astype(np.float32)
    series = ["modality.sfreq=100", "modality.window_s=2", "modality.stride_s=1", "modality.patch_s=0.5"]
    pretext, _ = build([*series, "pretext.n_augmentations=2", "pretext.n_patches=3"], data=x, modality="timeseries")
    assert pretext.head[-1].out_features == 2  # one logit, one coordinate
    features = torch.randn(2 * 2 + 2 * 3, 5)
    positions = torch.tensor([[[0.1], [0.7], [0.4]], [[0.9], [0.2], [0.2]]])
    _, target = pretext.pairs_and_targets(features, 2, positions)
    assert target[:4].tolist() == [[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
    assert torch.allclose(target[4:, 1], torch.tensor([-0.6, -0.3, 0.3, 0.7, 0.7, 0.0]), atol=1e-6)


def test_loss_and_trivial_baseline_by_hand():
    # zero logits: BCE = log 2 whatever the label; zero coordinates: MSE = mean of squared targets per axis
    target = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, -0.2, 0.5], [0.0, 0.4, -0.1]])
    bce, mse = SpatialReasoning.loss_terms(torch.zeros(4, 3), target)
    assert bce.item() == pytest.approx(math.log(2))
    assert mse.item() == pytest.approx((1 + 0.04 + 0.16) / 4 + (1 + 0.25 + 0.01) / 4)
    # best constant: label frequency 1/4 → entropy; coordinates → their variances
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    var_x = np.var([0.0, 1.0, -0.2, 0.4])
    var_y = np.var([0.0, 1.0, 0.5, -0.1])
    assert SpatialReasoning.trivial_loss(target) == pytest.approx(entropy + var_x + var_y)


# -- patches ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("extent, size", [((16, 16), (8, 8)), ((32, 20), (12, 10)), ((200,), (75,)), ((9, 9), (3, 3))])
def test_the_first_two_patches_never_overlap(extent, size):
    starts = sample_patch_starts(2000, 3, extent, size, torch.Generator().manual_seed(0))
    ext, sz = torch.tensor(extent, dtype=torch.float32), torch.tensor(size, dtype=torch.float32)
    assert bool((starts >= 0).all()) and bool((starts + sz <= ext).all())
    assert torch.equal(starts, starts.round())  # whole pixels / samples
    apart = ((starts[:, 0] - starts[:, 1]).abs() >= sz).any(dim=1)
    assert bool(apart.all())
    # the third patch is free to overlap: over 2000 draws some do
    third_apart = ((starts[:, 0] - starts[:, 2]).abs() >= sz).any(dim=1)
    assert not bool(third_apart.all())


def test_additive_patches_sit_at_their_position_with_zeros_elsewhere():
    x = torch.arange(1, 1 + 2 * 6 * 8, dtype=torch.float32).reshape(1, 2, 6, 8)
    starts = torch.tensor([[[1.0, 2.0], [3.0, 5.0]]])
    out = additive_inputs(x, starts, (2, 3))
    assert out.shape == (1, 2, 2, 6, 8)
    expected = torch.zeros_like(out)
    expected[0, 0, :, 1:3, 2:5] = x[0, :, 1:3, 2:5]
    expected[0, 1, :, 3:5, 5:8] = x[0, :, 3:5, 5:8]
    assert torch.equal(out, expected)


def test_additive_patches_pasted_elsewhere_by_hand():
    x = torch.arange(1, 1 + 2 * 6 * 8, dtype=torch.float32).reshape(1, 2, 6, 8)
    starts = torch.tensor([[[1.0, 2.0], [3.0, 5.0]]])
    paste = torch.tensor([[[4.0, 0.0], [0.0, 5.0]]])
    out = additive_inputs(x, starts, (2, 3), paste)
    expected = torch.zeros_like(out)
    expected[0, 0, :, 4:6, 0:3] = x[0, :, 1:3, 2:5]  # cut at (1, 2), pasted at (4, 0)
    expected[0, 1, :, 0:2, 5:8] = x[0, :, 3:5, 5:8]  # cut at (3, 5), pasted at (0, 5)
    assert torch.equal(out, expected)
    one_axis = additive_inputs(torch.arange(1.0, 11.0).reshape(1, 1, 10), torch.tensor([[[6.0]]]), (3,),
                               torch.tensor([[[1.0]]]))
    assert one_axis.flatten().tolist() == [0, 7, 8, 9, 0, 0, 0, 0, 0, 0]


def test_additive_target_is_where_the_patch_was_cut_not_where_it_is_pasted():
    # Every value of the image is unique and non-zero, so a pasted patch's values tell where it was
    # cut from. The target must be that original position; the non-zero pixels sit elsewhere, so
    # their centroid no longer gives the target away.
    pretext, _ = build(["pretext.photometric=false", "pretext.patch_use=additive", "pretext.patch_fraction=0.25",
                        "pretext.n_patches=4"])
    x = torch.arange(1, 1 + 8 * 3 * 16 * 16, dtype=torch.float32).reshape(8, 3, 16, 16)
    inputs, centres = pretext.patches(x, torch.Generator().manual_seed(0))
    inputs = inputs.reshape(8, 4, 3, 16, 16)
    moved = 0
    for m in range(8):
        for n in range(4):
            nonzero = torch.nonzero(inputs[m, n, 0])
            paste = nonzero.min(dim=0).values
            assert (nonzero.max(dim=0).values - paste).tolist() == [3, 3]  # a whole 4 × 4 patch
            flat = int(inputs[m, n, 0, paste[0], paste[1]]) - 1 - m * 3 * 256  # index in channel 0 of image m
            cut = torch.tensor(divmod(flat, 16), dtype=torch.float32)
            torch.testing.assert_close(inputs[m, n, :, paste[0]:paste[0] + 4, paste[1]:paste[1] + 4],
                                       x[m, :, int(cut[0]):int(cut[0]) + 4, int(cut[1]):int(cut[1]) + 4])
            # the target: the centre where the patch was cut, as a fraction of the extent
            torch.testing.assert_close(centres[m, n], (cut + 2) / 16)
            centroid = (nonzero.float().mean(dim=0) + 0.5) / 16  # pixel centres
            moved += not torch.allclose(centroid, centres[m, n])
    assert moved >= 28  # of 32 (a paste lands exactly on its cut with probability 1/169)


def test_additive_run_pastes_unscaled_patches_and_plain_resizes_them():
    pretext, windows = build(["pretext.photometric=false", "pretext.patch_use=additive", "pretext.patch_fraction=0.25"])
    inputs, centres = pretext.patches(windows.x[:2], torch.Generator().manual_seed(0))
    assert inputs.shape == (4, 3, 16, 16)
    nonzero = (inputs != 0).any(dim=1)  # (4, 16, 16)
    assert nonzero.sum(dim=(1, 2)).max() <= 16  # a 4 × 4 patch at most (a zero pixel may hide one)
    plain, _ = build(["pretext.photometric=false", "pretext.patch_fraction=0.25"])
    inputs, _ = plain.patches(windows.x[:2], torch.Generator().manual_seed(0))
    assert (inputs != 0).any(dim=1).float().mean() > 0.9  # resized to fill the input


# -- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["pretext.patch_fraction=0.6"], r"leaves no room for two non-overlapping patches; the largest that fits is 0\.5\."),
        (["pretext.n_augmentations=1"], r"'pretext\.n_augmentations'.*>= 2.*got 1"),
        (["pretext.n_patches=1"], r"'pretext\.n_patches'.*0 or an integer >= 2.*got 1"),
        (["encoder.arch=resnet23"], r"unknown encoder 'resnet23'\. Did you mean 'resnet32'\? Registered encoders: 'resnet32', 'timm', 'vit'"),
    ],
)
def test_bad_settings_are_one_sentence(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(modality="image", pretext="spatial-reasoning", overrides=overrides)


def test_a_cnn_on_one_axis_is_refused():
    with pytest.raises(ConfigError, match=r"Encoder 'resnet32' embeds inputs with 2 positional axes, but modality 'eeg' has 1 \(time\); encoders for 1-axis data: 'vit'"):
        resolve_config(modality="eeg", pretext="spatial-reasoning", overrides=["encoder.arch=resnet32"])


def test_an_encoder_that_cannot_embed_an_input_is_refused_for_spatial_reasoning():
    from relpos.encoders import Encoder

    class TokensOnly(Encoder):
        name = "tokens-only"
        outputs = ("tokens",)

        def forward(self, patches, centers=None):
            return patches

    class Plugin:
        @relpos.hookimpl
        def register_encoders(self, register):
            register(TokensOnly)

    relpos.plugins.register_plugin(Plugin(), "tokens-only-plugin")
    try:
        with pytest.raises(ConfigError, match=r"Pretext 'spatial-reasoning' needs an encoder with one vector per input, but encoder 'tokens-only' gives per-token outputs"):
            resolve_config(modality="image", pretext="spatial-reasoning", overrides=["encoder.arch=tokens-only"])
    finally:
        relpos.plugins.unregister_plugin("tokens-only-plugin")


# -- training, checkpoints, evaluation ---------------------------------------------------------------
def test_resnet32_trains_and_its_run_embeds_with_the_grid_features(tmp_path):
    data = tmp_path / "img.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8), y=np.arange(8) % 2)
    out = tmp_path / "run"
    code = main([
        "train", "--modality", "image", "--pretext", "spatial-reasoning", "--data", str(data), "--out", str(out),
        "--set", "encoder.arch=resnet32", "--set", "modality.image_size=32", "--set", "modality.patch_size=4",
        "--set", "train.steps=1", "--set", "train.batch_size=4", "--set", "train.progress=false",
    ])
    assert code == 0
    pretrained = relpos.load_encoder(out)
    assert pretrained.encoder.config.arch == "resnet32" and pretrained.dim == 64
    assert pretrained.grid_patch_fraction == 0.375  # the run's training patch size
    x = pretrained.open(str(data)).x[:2]
    assert pretrained.embed(x).shape == (2, 64)
    assert pretrained.embed(x, features="grid").shape == (2, 10 * 64)  # whole image + 3 × 3 patches
    with pytest.raises(relpos.errors.RelposError, match="Features 'mean' read per-token outputs, but encoder 'resnet32' gives one vector per input"):
        pretrained.embed(x, features="mean")
    # the exported file rebuilds the same CNN and the same grid features
    assert main(["export", str(out)]) == 0
    exported = relpos.load_encoder(out / "export" / "encoder.safetensors")
    assert torch.allclose(exported.embed(x, features="grid"), pretrained.embed(x, features="grid"))


def test_vit_on_a_time_series_with_the_patch_term_off(tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 3, 400)).astype(np.float32)
    series = ["modality.sfreq=100", "modality.window_s=2", "modality.stride_s=1", "modality.patch_s=0.5"]
    pretext, windows = build([*series, "pretext.n_patches=0"], data=x, modality="timeseries")
    pretext.train()
    loss, logs = pretext({"x": windows.x[:4]}, torch.Generator().manual_seed(0))
    # Relational Reasoning only: 4 · (4² − 4) = 48 augmentation pairs, half of them negative
    assert logs["loss_baseline"] == pytest.approx(math.log(2) + 0.25)  # one coordinate, variance 1/4
    loss.backward()
    assert pretext.encoder.patch_embed.weight.grad is not None

"""PART and PART-grid: what they train on, how they refuse bad options, and that they can learn."""

from __future__ import annotations

import time

import pytest
import torch

from relpos.config import resolve_config
from relpos.errors import ConfigError
from relpos.geometry import relative_transform
from relpos.modality import Windows
from relpos.training import build_modality, build_pretext

from conftest import TINY_OVERRIDES as TINY

pytestmark = pytest.mark.usefixtures("one_thread")
IMAGE = ["modality.image_size=16", "modality.patch_size=4"]
EEG = ["modality.window_s=10", "modality.patch_s=1"]  # 100 Hz → windows of 1000 samples, patches of 100


def make(modality: str, pretext: str, overrides=(), x: torch.Tensor | None = None):
    """A PART pretext on in-memory windows; returns (pretext, x)."""
    base = IMAGE if modality == "image" else EEG
    config = resolve_config(modality=modality, pretext=pretext, overrides=[*TINY, *base, *overrides])
    mod = build_modality(config)
    if x is None:
        gen = torch.Generator().manual_seed(0)
        shape = (2, 3, 16, 16) if modality == "image" else (2, 4, 1000)
        x = torch.randn(shape, generator=gen)
    return build_pretext(config, mod, Windows(x=x)), x


class Spy:
    """Records what PART sampled and predicted during one forward pass."""

    def __init__(self, pretext, monkeypatch):
        import relpos_plugins.part as part_module

        self.boxes = self.pairs = self.pred = None
        sample_boxes = pretext.sample_boxes
        sample_pairs = part_module.sample_pairs
        head_forward = pretext.head.forward

        def boxes_spy(*args, **kwargs):
            self.boxes = sample_boxes(*args, **kwargs)
            return self.boxes

        def pairs_spy(*args, **kwargs):
            self.pairs = sample_pairs(*args, **kwargs)
            return self.pairs

        def head_spy(*args, **kwargs):
            self.pred = head_forward(*args, **kwargs)
            return self.pred

        monkeypatch.setattr(pretext, "sample_boxes", boxes_spy)
        monkeypatch.setattr(part_module, "sample_pairs", pairs_spy)
        monkeypatch.setattr(pretext.head, "forward", head_spy)


# -- targets ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "modality, overrides",
    [
        ("image", []),
        ("image", ["pretext.predict_size=true", "pretext.scale_range=[0.5, 2]", "pretext.aspect_range=[0.5, 2]"]),
        ("eeg", []),
        ("eeg", ["pretext.predict_size=true", "pretext.scale_range=[0.5, 2]"]),
    ],
)
def test_part_trains_on_the_relative_transform_of_its_boxes(modality, overrides, monkeypatch):
    pretext, x = make(modality, "part", overrides)
    spy = Spy(pretext, monkeypatch)
    loss, logs = pretext({"x": x}, torch.Generator().manual_seed(0))
    ref, tgt = spy.pairs
    boxes = spy.boxes
    with_size = "pretext.predict_size=true" in overrides
    # θ computed pair by pair from the sampled boxes: (c_tgt − c_ref) / s_ref [, s_tgt / s_ref]
    expected = torch.zeros_like(spy.pred)
    for b in range(x.shape[0]):
        for m in range(ref.shape[1]):
            i, j = ref[b, m], tgt[b, m]
            c_i, c_j, s_i, s_j = boxes.center[b, i], boxes.center[b, j], boxes.size[b, i], boxes.size[b, j]
            row = (c_j - c_i) / s_i
            if with_size:
                row = torch.cat([row, s_j / s_i])
            expected[b, m] = row
    assert (ref != tgt).all()
    assert spy.pred.shape == (x.shape[0], 16, expected.shape[-1])
    torch.testing.assert_close(relative_transform(boxes.gather(ref), boxes.gather(tgt), with_size), expected)
    # the loss is the MSE between the head's predictions and these targets
    torch.testing.assert_close(loss, ((spy.pred - expected) ** 2).mean())
    d = len(boxes.center[0, 0])
    center_l2 = (spy.pred[..., :d] - expected[..., :d]).norm(dim=-1).mean().item()
    assert logs["center_l2"] == pytest.approx(center_l2, rel=1e-5)


def test_part_grid_targets_on_an_image_are_grid_steps(monkeypatch):
    # 16 × 16 image, 4-px patches → a 4 × 4 grid, index = 4·row + col, centres 4·(row, col) + 2.
    # θ(ref → tgt) = ((4·row_t + 2) − (4·row_r + 2)) / 4, same for cols = (row_t − row_r, col_t − col_r)
    pretext, x = make("image", "part-grid")
    spy = Spy(pretext, monkeypatch)
    pretext({"x": x}, torch.Generator().manual_seed(1))
    ref, tgt = spy.pairs
    assert pretext.n_patches == 16
    expected = torch.stack([tgt // 4 - ref // 4, tgt % 4 - ref % 4], dim=-1).float()
    target = relative_transform(spy.boxes.gather(ref), spy.boxes.gather(tgt))
    torch.testing.assert_close(target, expected)
    assert spy.boxes.center[0, :5].tolist() == [[2.0, 2.0], [2.0, 6.0], [2.0, 10.0], [2.0, 14.0], [6.0, 2.0]]


def test_part_grid_targets_on_eeg_are_patch_steps(monkeypatch):
    # 1000-sample windows, 100-sample patches → 10 patches centred at 50, 150, ..., 950;
    # Δt(ref → tgt) = (100·tgt + 50 − 100·ref − 50) / 100 = tgt − ref
    pretext, x = make("eeg", "part-grid")
    spy = Spy(pretext, monkeypatch)
    pretext({"x": x}, torch.Generator().manual_seed(2))
    ref, tgt = spy.pairs
    assert pretext.n_patches == 10
    assert spy.boxes.center[0, :, 0].tolist() == [50.0 + 100 * k for k in range(10)]
    target = relative_transform(spy.boxes.gather(ref), spy.boxes.gather(tgt))
    torch.testing.assert_close(target[..., 0], (tgt - ref).float())


def test_part_samples_the_configured_number_of_patches(monkeypatch):
    pretext, x = make("eeg", "part")
    spy = Spy(pretext, monkeypatch)
    pretext({"x": x}, torch.Generator().manual_seed(0))
    assert spy.boxes.center.shape == (2, 40, 1)  # EEG default: 40 off-grid patches per window
    pretext, x = make("image", "part", ["pretext.n_patches=7"])
    spy = Spy(pretext, monkeypatch)
    pretext({"x": x}, torch.Generator().manual_seed(0))
    assert spy.boxes.center.shape == (2, 7, 2)


def test_part_same_generator_same_loss():
    pretext, x = make("image", "part")
    a, _ = pretext({"x": x}, torch.Generator().manual_seed(5))
    b, _ = pretext({"x": x}, torch.Generator().manual_seed(5))
    c, _ = pretext({"x": x}, torch.Generator().manual_seed(6))
    assert a.item() == b.item()
    assert a.item() != c.item()


def test_head_sizes_follow_the_paper():
    # image 16 × 16 / 4 px → N = 16 patches, d = 32, |θ| = 2
    # pairwise_mlp: Linear(2d → |θ|) = 64·2 + 2 = 130 parameters
    pairwise, _ = make("image", "part", ["pretext.head=pairwise_mlp"])
    assert sum(p.numel() for p in pairwise.head.parameters()) == 64 * 2 + 2
    # mlp: Linear(N·d → N²·|θ|) = 512·512 weights + 512 biases
    full, _ = make("image", "part", ["pretext.head=mlp"])
    assert sum(p.numel() for p in full.head.parameters()) == 512 * 512 + 512


# -- refusing bad options ----------------------------------------------------------------------------------
def test_part_grid_with_scale_range_is_a_config_error():
    with pytest.raises(ConfigError, match="scale_range"):
        make("image", "part-grid", ["pretext.scale_range=[0.5, 2]"])


def test_part_grid_with_aspect_range_is_a_config_error():
    with pytest.raises(ConfigError, match="aspect_range"):
        make("image", "part-grid", ["pretext.aspect_range=[0.5, 2]"])


def test_part_grid_with_a_different_patch_count_is_a_config_error():
    # 16 × 16 / 4 px → 16 grid patches; asking for 10 cannot be honoured
    with pytest.raises(ConfigError, match="16"):
        make("image", "part-grid", ["pretext.n_patches=10"])


def test_predict_size_without_varying_sizes_is_a_config_error():
    with pytest.raises(ConfigError, match="predict_size"):
        make("image", "part", ["pretext.predict_size=true"])


def test_aspect_range_on_eeg_is_a_config_error():
    with pytest.raises(ConfigError, match="aspect_range"):
        make("eeg", "part", ["pretext.aspect_range=[0.5, 2]"])


def test_aspect_range_beyond_the_side_bounds_is_a_config_error():
    # sides held to [1, 1] patch sizes leave only squares: aspect ratios other than 1 cannot be met
    with pytest.raises(ConfigError, match=r"'pretext.aspect_range'.*must lie within \[1, 1\], got \[0.5, 2.0\]"):
        make("image", "part", ["pretext.aspect_range=[0.5, 2]"])


def test_the_scale_recipe_keeps_every_side_within_half_and_twice_the_patch_size():
    # configs/image_part_scale.yaml: 4-px patches, every side within [2, 8] px (the paper's [P/2, 2P])
    from conftest import CONFIGS

    config = resolve_config(CONFIGS / "image_part_scale.yaml", overrides=[*TINY, "modality.image_size=32"])
    mod = build_modality(config)
    pretext = build_pretext(config, mod, Windows(x=torch.randn(2, 3, 32, 32)))
    boxes = pretext.sample_boxes(64, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert boxes.size.min() >= 2.0 - 1e-5 and boxes.size.max() <= 8.0 + 1e-5
    assert boxes.size.min() < 2.1 and boxes.size.max() > 7.9


def test_misspelled_head_suggests_the_right_one():
    with pytest.raises(ConfigError) as info:
        make("image", "part", ["pretext.head=cross_atention"])
    assert "Did you mean 'cross_attention'" in str(info.value)
    assert "pairwise_mlp" in str(info.value)


@pytest.mark.parametrize("n_patches", [1, -3])
def test_invalid_patch_count_is_a_config_error(n_patches):
    with pytest.raises(ConfigError, match="n_patches"):
        make("image", "part", [f"pretext.n_patches={n_patches}"])


def test_head_heads_must_divide_the_width():
    with pytest.raises(ConfigError, match="head_heads"):
        make("image", "part", ["pretext.head_heads=3"])


# -- learning -----------------------------------------------------------------------------------------------
def train_steps(pretext, x, steps, generator_for_step, monkeypatch):
    """Run ``steps`` AdamW steps; return the losses and the zero-prediction baseline of each step."""
    spy = Spy(pretext, monkeypatch)
    optimizer = torch.optim.AdamW(pretext.parameters(), lr=2e-3, weight_decay=0.0)
    pretext.train()
    losses, baselines = [], []
    for step in range(steps):
        loss, _ = pretext({"x": x}, generator_for_step(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ref, tgt = spy.pairs
        theta = relative_transform(spy.boxes.gather(ref), spy.boxes.gather(tgt))
        losses.append(loss.item())
        baselines.append((theta**2).mean().item())  # the MSE of always predicting θ̂ = 0
    return losses, baselines


@pytest.mark.parametrize("head", ["cross_attention", "pairwise_mlp", "mlp"])
def test_part_overfits_one_fixed_batch(head, monkeypatch):
    # One fixed random image batch with fixed boxes and pairs (the same generator seed every step):
    # 150 steps of a tiny model must fit these targets far better than the constant prediction 0.
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pretext, _ = make("image", "part", ["pretext.n_pairs=64", f"pretext.head={head}"], x=x)
    start = time.perf_counter()
    losses, baselines = train_steps(pretext, x, 150, lambda step: torch.Generator().manual_seed(123), monkeypatch)
    elapsed = time.perf_counter() - start
    assert len(set(baselines)) == 1  # the same boxes and pairs every step
    baseline = baselines[0]
    assert baseline > 0.5  # offsets of a few patch sizes: not a trivially small target
    final = sum(losses[-10:]) / 10
    assert final < 0.1 * baseline, (final, baseline, losses[::15])
    assert elapsed < 30, f"150 tiny steps took {elapsed:.1f} s"


@pytest.mark.parametrize("head", ["cross_attention", "pairwise_mlp"])
def test_part_learns_positions_that_the_content_reveals(head, monkeypatch):
    # On an image whose channels are ramps of the row and the column, a patch's content says where
    # it is, so relative positions of *new* boxes (fresh each step) can be learned, not memorised.
    torch.manual_seed(0)
    ramp = torch.arange(16.0) / 8 - 1
    image = torch.stack([ramp[:, None].expand(16, 16), ramp[None, :].expand(16, 16), torch.zeros(16, 16)])
    x = image[None].repeat(2, 1, 1, 1)
    pretext, _ = make("image", "part", ["pretext.n_pairs=64", f"pretext.head={head}"], x=x)
    generator = torch.Generator().manual_seed(1)
    losses, baselines = train_steps(pretext, x, 150, lambda step: generator, monkeypatch)
    assert len(set(baselines[-10:])) == 10  # boxes really were new every step
    final, baseline = sum(losses[-10:]) / 10, sum(baselines[-10:]) / 10
    assert final < 0.25 * baseline, (final, baseline, losses[::15])


def test_near_pairs_stay_within_the_offset_and_cover_every_allowed_target():
    from relpos.geometry import Boxes
    from relpos.sampling import sample_near_pairs

    # 1-s patches at 0, 0.5, 1.4 and 9 s: within one patch length, 0 ↔ 0.5 and 0.5 ↔ 1.4 only;
    # the patch at 9 s has no neighbour and is paired with its nearest, the one at 1.4 s.
    boxes = Boxes(torch.tensor([[[0.0], [0.5], [1.4], [9.0]]]), torch.ones(1, 4, 1))
    ref, tgt = sample_near_pairs(boxes, 4000, 1.0, torch.Generator().manual_seed(0))
    pairs = set(zip(ref[0].tolist(), tgt[0].tolist()))
    assert pairs == {(0, 1), (1, 0), (1, 2), (2, 1), (3, 2)}
    from_one = tgt[0][ref[0] == 1]
    assert 0.4 < (from_one == 0).float().mean().item() < 0.6  # uniform among the allowed targets


def test_part_with_pair_max_offset_trains_on_near_pairs_only(monkeypatch):
    pretext, x = make("eeg", "part", ["pretext.pair_max_offset=1.0", "pretext.n_pairs=64"])
    spy = Spy(pretext, monkeypatch)
    import relpos_plugins.part as part_module

    seen = {}
    near = part_module.sample_near_pairs

    def near_spy(*args, **kwargs):
        seen["pairs"] = near(*args, **kwargs)
        return seen["pairs"]

    monkeypatch.setattr(part_module, "sample_near_pairs", near_spy)
    _, logs = pretext({"x": x}, torch.Generator().manual_seed(0))
    ref, tgt = seen["pairs"]
    centre, size = spy.boxes.center[..., 0], spy.boxes.size[..., 0]
    offset = (centre.gather(1, tgt) - centre.gather(1, ref)).abs() / size.gather(1, ref)
    assert (ref != tgt).all() and offset.max() <= 1.0 + 1e-6  # 40 patches in 10 s: every one has a neighbour
    assert logs["loss_baseline"] < 0.5  # targets within ±1 patch length

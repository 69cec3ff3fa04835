"""One tiny CPU training step for every compatible (modality, pretext) pair in the registry.

The pairs come from :func:`relpos.plugins.compatible_pairs`, so a new modality or pretext plugin is
tested here without writing a test (timm's ``tests/test_models.py`` habit). A modality this file
does not know how to make data for is skipped with a reason; add a builder to ``DATA_BUILDERS``.
The example plugins in examples/ take part whether or not they are installed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import relpos.plugins
from relpos.config import resolve_config
from relpos.neighbours import index_for_request
from relpos.training import build_modality, build_pretext

from conftest import TINY_OVERRIDES as TINY
from example_plugins import EXAMPLE_PLUGINS, registered

pytestmark = pytest.mark.usefixtures("one_thread")


# -- tiny data per modality ------------------------------------------------------------------------------
def image_data(tmp_path_factory):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8)  # (N, H, W, C) in memory
    return images, ["modality.image_size=16", "modality.patch_size=4"]


def eeg_data(tmp_path_factory):
    import mne

    # 4 EEG channels at 200 Hz for 25 s: after resampling to 100 Hz, 10-s windows every 5 s give
    # starts 0, 5, 10, 15 s → 4 windows of (4, 1000); 1-s patches are 100 samples.
    sfreq, seconds = 200.0, 25.0
    rng = np.random.default_rng(0)
    t = np.arange(int(sfreq * seconds)) / sfreq
    signal = 20e-6 * np.sin(2 * np.pi * 10 * t) + 10e-6 * rng.standard_normal((4, t.size))
    info = mne.create_info(["C3", "C4", "O1", "O2"], sfreq, ch_types="eeg")
    raw = mne.io.RawArray(signal, info, verbose="error")
    path = tmp_path_factory.mktemp("eeg") / "x_raw.fif"
    raw.save(path, verbose="error")
    # normalize pinned: test_tiny_eeg_data_has_the_expected_windows checks each window's mean and std
    return str(path), ["modality.window_s=10", "modality.stride_s=5", "modality.patch_s=1", "modality.normalize=instance"]


def timeseries_data(tmp_path_factory):
    # 2 cases × 3 channels × 400 samples at 100 Hz; 2-s windows every 1 s:
    # floor((400 - 200) / 100) + 1 = 3 per case → 6 windows of (3, 200); 0.5-s patches = 50 samples
    rng = np.random.default_rng(0)
    return rng.standard_normal((2, 3, 400)).astype(np.float32), [
        "modality.sfreq=100", "modality.window_s=2", "modality.stride_s=1", "modality.patch_s=0.5"]


def npysignal_data(tmp_path_factory):
    # the example modality: 4 signals × 2 channels × 64 samples; 16-sample patches → 4 grid cells
    t = np.arange(64, dtype=np.float32)
    signals = np.stack([np.stack([np.sin(t / (2 + k)), np.cos(t / (3 + k))]) for k in range(4)])
    path = tmp_path_factory.mktemp("npysignal") / "signals.npy"
    np.save(path, signals)
    return str(path), []


DATA_BUILDERS = {"image": image_data, "eeg": eeg_data, "timeseries": timeseries_data, "npysignal": npysignal_data}


@pytest.fixture(scope="module", autouse=True)
def _example_plugins():
    """The example plugins, registered from their sources for this module when not installed."""
    with registered(*EXAMPLE_PLUGINS):
        yield


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """``tiny_data(modality)`` → (data, overrides, cache for the loaded windows), built once per module."""
    cache: dict = {}

    def get(modality: str):
        if modality not in DATA_BUILDERS:
            pytest.skip(f"no tiny data builder for modality {modality!r}; add one to DATA_BUILDERS")
        if modality not in cache:
            data, overrides = DATA_BUILDERS[modality](tmp_path_factory)
            cache[modality] = (data, overrides, {})
        return cache[modality]

    return get


#: Smaller projection heads for pretexts that have them (DINO-style heads default to 2048-wide).
TINY_HEADS = ["pretext.out_dim=64", "pretext.head_hidden_dim=32", "pretext.head_bottleneck_dim=16"]
#: Separations and sequences that the tiny EEG recording (windows at 0, 5, 10 and 15 s) can serve.
TINY_RECORDING = ["pretext.tau_pos_s=10", "pretext.tau_neg_s=15", "pretext.n_context=2", "pretext.n_predict=1",
                  "pretext.n_negatives=1"]


def tiny_overrides(pretext_name):
    """TINY, TINY_HEADS and TINY_RECORDING, keeping only the ``pretext.*`` keys this pretext's Config has."""
    fields = {f.name for f in dataclasses.fields(relpos.plugins.get_pretext(pretext_name).Config)}
    return [o for o in [*TINY, *TINY_HEADS, *TINY_RECORDING] if not o.startswith("pretext.") or o.split("=")[0].split(".")[1] in fields]


def build(modality_name, pretext_name, tiny_data, extra=()):
    data, overrides, loaded = tiny_data(modality_name)
    config = resolve_config(
        modality=modality_name, pretext=pretext_name, overrides=[*tiny_overrides(pretext_name), *overrides, *extra]
    )
    modality = build_modality(config)
    if "windows" not in loaded:  # the modality options are the same in every test: load once
        loaded["windows"] = modality.load(data)
    windows = loaded["windows"]
    assert len(windows) >= 2
    if relpos.plugins.get_pretext(pretext_name).needs_recording_time and not windows.has_recording_time:
        pytest.skip(f"the tiny {modality_name} data is a trial archive, and {pretext_name!r} needs recording time")
    pretext = build_pretext(config, modality, windows)
    request = pretext.window_request
    if request is None:
        return pretext, windows.x[:2]
    # a batch of 2 samples of K windows of one recording, as the training loop gathers it
    rows = request.draw(index_for_request(request, windows, pretext_name, say=False), 2, torch.Generator().manual_seed(0))
    return pretext, {"x": windows.x[rows], "onsets": torch.from_numpy(windows.onsets)[rows].float(), "window_index": rows}


def one_step(pretext, x, seed=0):
    """One step on ``x``: the windows of a batch, or a whole batch (a dict) for a pretext with a window request."""
    pretext.train()
    pretext.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss, logs = pretext(x if isinstance(x, dict) else {"x": x}, torch.Generator().manual_seed(seed))
    loss.backward()
    return loss, logs


#: Encoder parameters a pretext cannot train by construction: a head on |h(x) − h(x')| cancels the
#: bias of the encoder's last LayerNorm, which every window's vector shares (rp, ts).
NO_GRADIENT_BY_CONSTRUCTION = {"rp": {"norm.bias"}, "ts": {"norm.bias"}}


def assert_gradients(module, prefix="", exempt=()):
    missing = []
    for name, param in module.named_parameters():
        if not param.requires_grad or name in exempt:
            continue
        if param.grad is None or not torch.isfinite(param.grad).all() or param.grad.abs().sum() == 0:
            missing.append(prefix + name)
    assert not missing, f"parameters without a finite, non-zero gradient: {missing}"


def _pairs():
    with registered(*EXAMPLE_PLUGINS):
        return relpos.plugins.compatible_pairs()


PAIRS = _pairs()


def test_tiny_eeg_data_has_the_expected_windows(tiny_data):
    # 25 s resampled to 100 Hz = 2500 samples; 1000-sample windows every 500 samples start at
    # 0, 500, 1000, 1500 → 4 windows of 4 channels, each normalised to mean 0 and std 1 per channel
    pretext, _ = build("eeg", "part", tiny_data)
    windows = tiny_data("eeg")[2]["windows"]
    assert tuple(windows.x.shape) == (4, 4, 1000)
    torch.testing.assert_close(windows.x.mean(-1), torch.zeros(4, 4), atol=1e-4, rtol=0)
    torch.testing.assert_close(windows.x.std(-1, unbiased=False), torch.ones(4, 4), atol=1e-3, rtol=0)
    assert pretext.patch_shape == (100,)


def test_every_builtin_pair_is_covered():
    assert {("eeg", "part"), ("eeg", "part-grid"), ("image", "part"), ("image", "part-grid")} <= set(PAIRS)
    for pretext_name in ("dino", "pw-self"):
        assert {(m, pretext_name) for m in ("eeg", "image", "timeseries")} <= set(PAIRS)


def test_the_example_plugins_take_part():
    assert {("npysignal", "part"), ("eeg", "jigsaw"), ("image", "jigsaw"), ("npysignal", "jigsaw")} <= set(PAIRS)


@pytest.mark.parametrize("modality_name, pretext_name", PAIRS, ids=[f"{m}-{p}" for m, p in PAIRS])
def test_one_training_step(modality_name, pretext_name, tiny_data):
    pretext, x = build(modality_name, pretext_name, tiny_data)
    loss, logs = one_step(pretext, x)
    assert loss.dim() == 0
    assert math.isfinite(loss.item())
    assert isinstance(logs, dict)
    assert set(logs) <= set(pretext.log_keys)
    assert all(math.isfinite(float(v)) for v in logs.values())
    encoder = pretext.encoder
    assert_gradients(encoder, "encoder.", NO_GRADIENT_BY_CONSTRUCTION.get(pretext_name, ()))
    # the named parts every pretext trains
    assert encoder.patch_embed.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.blocks.parameters())


@pytest.mark.parametrize("modality_name, pretext_name", PAIRS, ids=[f"{m}-{p}" for m, p in PAIRS])
def test_same_random_streams_give_the_same_loss(modality_name, pretext_name, tiny_data):
    # Exact resume needs a step to depend only on the model, the batch and the saved random streams.
    pretext, x = build(modality_name, pretext_name, tiny_data)
    first, _ = one_step(pretext, x, seed=3)
    second, _ = one_step(pretext, x, seed=3)
    assert first.item() == second.item()


# -- PART's variants (paper Table 5 heads; the size-prediction extension) -----------------------------------
@pytest.mark.parametrize("head", ["cross_attention", "pairwise_mlp", "mlp"])
@pytest.mark.parametrize("modality_name", ["image", "eeg"])
def test_part_heads(modality_name, head, tiny_data):
    pretext, x = build(modality_name, "part", tiny_data, [f"pretext.head={head}"])
    loss, _ = one_step(pretext, x)
    assert math.isfinite(loss.item())
    assert_gradients(pretext)  # the head and the encoder


@pytest.mark.parametrize("head", ["cross_attention", "pairwise_mlp", "mlp"])
def test_part_predict_size_on_images(head, tiny_data):
    pretext, x = build(
        "image",
        "part",
        tiny_data,
        [f"pretext.head={head}", "pretext.predict_size=true", "pretext.scale_range=[0.5, 2]"],
    )
    loss, logs = one_step(pretext, x)
    assert math.isfinite(loss.item())
    assert set(logs) == {"center_l2", "size_mse", "loss_baseline"}  # and the trivial baseline
    # 2 axes × (Δc, Δs) = 4 outputs per pair
    out_layer = pretext.head.out
    assert out_layer.out_features % 4 == 0
    assert_gradients(pretext)


def test_part_with_aspect_range_on_images(tiny_data):
    pretext, x = build(
        "image", "part", tiny_data,
        ["pretext.predict_size=true", "pretext.scale_range=[0.5, 2]", "pretext.aspect_range=[0.5, 2]"],
    )
    loss, _ = one_step(pretext, x)
    assert math.isfinite(loss.item())
    assert_gradients(pretext)


def test_part_predict_size_on_eeg(tiny_data):
    pretext, x = build("eeg", "part", tiny_data, ["pretext.predict_size=true", "pretext.scale_range=[0.5, 2]"])
    loss, logs = one_step(pretext, x)
    assert math.isfinite(loss.item())
    assert "size_mse" in logs
    assert pretext.head.out.out_features == 2  # Δt and Δs

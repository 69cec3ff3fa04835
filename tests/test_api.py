"""The Python API: resolve_config -> train -> load_encoder -> embed_data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EEG_SAMPLE, TINY_OVERRIDES, read_metrics

import relpos
from relpos.errors import DataError, RelposError


def tiny_config(out: Path, modality: str = "eeg", pretext: str = "part", steps: int = 2):
    return relpos.resolve_config(
        modality=modality,
        pretext=pretext,
        overrides=[*TINY_OVERRIDES, f"train.steps={steps}", "train.progress=false", f"out={out}"],
    )


def test_embedded_sample_opens_into_seven_windows():
    modality = relpos.get_modality("eeg")()
    assert Path(modality.default_data()).resolve() == EEG_SAMPLE.resolve()
    windows = modality.load_with(EEG_SAMPLE, normalize="instance")  # pinned: the check below is per window
    # 61.0 s resampled to 100 Hz = 6100 samples; 30-s windows = 3000 samples every 5 s = 500 samples:
    # floor((6100 - 3000) / 500) + 1 = 6 + 1 = 7 windows of 64 channels.
    assert tuple(windows.x.shape) == (7, 64, 3000)
    assert windows.x.dtype == torch.float32
    assert windows.info["sfreq"] == 100.0
    assert len(windows.info["ch_names"]) == 64
    assert set(windows.groups) == {"eegmmidb_S001R02"}
    # Each window is normalised per channel: mean 0, standard deviation 1.
    assert windows.x.mean(-1).abs().max() < 1e-4
    assert (windows.x.double().std(-1, unbiased=False) - 1).abs().max() < 1e-4


def test_window_count_follows_window_and_stride():
    # 6100 samples, 10-s windows (1000 samples) every 10 s: floor((6100 - 1000) / 1000) + 1 = 6.
    cls = relpos.get_modality("eeg")
    windows = cls(cls.Config(window_s=10.0, stride_s=10.0)).load(EEG_SAMPLE)
    assert tuple(windows.x.shape) == (6, 64, 1000)


@pytest.fixture(scope="module")
def eeg_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "eeg-run"
    config = tiny_config(out)
    return relpos.train(config)


def test_train_returns_a_result_with_its_run_dir(eeg_result):
    assert isinstance(eeg_result, relpos.TrainResult)
    assert eeg_result.run_dir.is_dir()
    assert eeg_result.run_dir.name == "eeg-run"
    assert eeg_result.step == 2
    assert (eeg_result.run_dir / "checkpoints" / "last.pt").is_file()
    _, rows = read_metrics(eeg_result.run_dir)
    assert math.isfinite(eeg_result.loss)
    assert eeg_result.loss == float(rows[-1]["loss"])


def test_load_encoder_embeds_every_window(eeg_result):
    encoder = relpos.load_encoder(eeg_result.run_dir)
    assert encoder.step == 2
    assert encoder.dim == 32
    cls = encoder.embed_data(str(EEG_SAMPLE))
    both = encoder.embed_data(EEG_SAMPLE, features="both")
    mean = encoder.embed_data(EEG_SAMPLE, features="mean")
    assert tuple(cls.shape) == (7, 32)  # 7 windows x encoder.dim
    assert tuple(mean.shape) == (7, 32)
    assert tuple(both.shape) == (7, 64)  # CLS and mean concatenated: 2 x 32
    assert torch.equal(both, torch.cat([cls, mean], dim=1))
    assert torch.isfinite(both).all()
    # Different windows get different embeddings.
    assert not torch.allclose(cls[0], cls[1])


def test_embeddings_are_deterministic_and_come_from_the_checkpoint(eeg_result):
    first = relpos.load_encoder(eeg_result.run_dir)
    second = relpos.load_encoder(eeg_result.run_dir / "checkpoints" / "last.pt")  # a file works too
    a = first.embed_data(EEG_SAMPLE)
    assert torch.equal(a, first.embed_data(EEG_SAMPLE))
    assert torch.equal(a, second.embed_data(EEG_SAMPLE))
    # The loaded weights are the checkpoint's, which are the weights training ended with.
    state = torch.load(eeg_result.run_dir / "checkpoints" / "last.pt", weights_only=True)
    trained = eeg_result.pretext.encoder.state_dict()
    loaded = first.encoder.state_dict()
    assert loaded.keys() == trained.keys()
    for name, tensor in loaded.items():
        assert torch.equal(tensor, state["model"][f"encoder.{name}"]), name
        assert torch.equal(tensor, trained[name].cpu()), name


def test_embed_rejects_bad_features_and_channel_counts(eeg_result):
    encoder = relpos.load_encoder(eeg_result.run_dir)
    with pytest.raises(ValueError, match="'features'.*'token'"):
        encoder.embed(torch.zeros(1, 64, 3000), features="token")
    with pytest.raises(DataError, match="trained on 64 channels, but the data has 3"):
        encoder.embed(torch.zeros(1, 3, 3000))


def test_load_encoder_without_a_checkpoint(tmp_path):
    with pytest.raises(RelposError, match="has no checkpoint"):
        relpos.load_encoder(tmp_path)


def test_train_on_an_in_memory_image_array(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, size=(8, 20, 20), dtype=np.uint8)
    result = relpos.train(tiny_config(tmp_path / "img-run", modality="image"), data=images)
    assert result.run_dir.is_dir() and result.step == 2
    state = torch.load(result.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["data_info"]["source"] == "array"
    # (8, 20, 20) -> 1 grey channel, upsampled to image_size 32; 4-px patches.
    assert state["data_info"]["channels"] == 1 and state["data_info"]["extent"] == [32, 32]
    encoder = relpos.load_encoder(result.run_dir)
    assert tuple(encoder.embed_data(images).shape) == (8, 32)


def test_train_on_windows_opened_beforehand(tmp_path):
    modality = relpos.get_modality("eeg")()
    windows = modality.load(EEG_SAMPLE)
    cut = relpos.Windows(x=windows.x[:3], info=windows.info)  # the first 3 of the 7 windows
    result = relpos.train(tiny_config(tmp_path / "win-run"), data=cut)
    assert result.step == 2
    state = torch.load(result.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["data_info"]["extent"] == [3000] and state["data_info"]["channels"] == 64


def test_tokens_features_keep_the_patches_in_grid_order(eeg_result):
    """``tokens`` is the patch tokens concatenated in grid order: N x dim numbers per window."""
    encoder = relpos.load_encoder(eeg_result.run_dir)
    windows = encoder.open(EEG_SAMPLE)
    tokens = encoder.embed(windows.x, features="tokens")
    mean = encoder.embed(windows.x, features="mean")
    n_patches = windows.x.shape[-1] // int(encoder.modality.patch_size()[0])
    assert tuple(tokens.shape) == (7, n_patches * 32)
    per_patch = tokens.reshape(7, n_patches, 32)
    assert torch.allclose(per_patch.mean(1), mean, atol=1e-6)
    # Reversing the order of the patches leaves the mean (a set function without position
    # embeddings) unchanged but reverses the tokens.
    patch = int(encoder.modality.patch_size()[0])
    x = windows.x[..., : n_patches * patch]
    flipped = x.reshape(*x.shape[:-1], n_patches, patch).flip(-2).reshape(x.shape)
    assert torch.allclose(encoder.embed(flipped, features="mean"), encoder.embed(x, features="mean"), atol=1e-5)
    assert torch.allclose(encoder.embed(flipped, features="tokens").reshape(7, n_patches, 32),
                          encoder.embed(x, features="tokens").reshape(7, n_patches, 32).flip(1), atol=1e-5)


def test_unknown_features_name_the_allowed_ones(eeg_result):
    encoder = relpos.load_encoder(eeg_result.run_dir)
    with pytest.raises(ValueError, match="allowed cls, mean, both, tokens, grid, got 'patches'"):
        encoder.embed(torch.zeros(1, 64, 3000), features="patches")

"""The encoder registry: built-in encoders, a third-party one, checkpoints and the grid features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import relpos
from relpos.api import grid_features, grid_patch_boxes
from relpos.encoders.vit import EncoderConfig
from relpos.encoders import Encoder, build_encoder, list_encoders, rebuild_encoder

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_builtin_encoders_are_registered():
    assert list_encoders() == ["resnet32", "timm", "vit"]
    assert list_encoders("res*") == ["resnet32"]


def test_resnet32_has_the_papers_size_and_a_64_wide_output():
    encoder = build_encoder(EncoderConfig(arch="resnet32"), 3, (4, 4))
    # by hand: stem 3·16·9 + BN 32 = 464; stage 1: 10 convs of 16·16·9 + 10 BN of 32 = 23,360;
    # stage 2: 32·16·9 + 9 · 32·32·9 + 10 BN of 64 + shortcut 16·32 + BN 64 = 88,768;
    # stage 3: 64·32·9 + 9 · 64·64·9 + 10 BN of 128 + shortcut 32·64 + BN 128 = 353,664 → 466,256
    assert sum(p.numel() for p in encoder.parameters()) == 466_256
    grey = build_encoder(EncoderConfig(arch="resnet32"), 1, (4, 4))
    assert sum(p.numel() for p in grey.parameters()) == 466_256 - 2 * 16 * 9
    out = encoder.embed_inputs(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 64) and encoder.feature_dim == 64
    # no pooling in the stem: the last stage still sees 8 x 8 of a 32 x 32 image
    assert encoder.blocks(encoder.stem(torch.randn(1, 3, 32, 32))).shape == (1, 64, 8, 8)


def test_a_timm_cnn_by_name():
    encoder = build_encoder(EncoderConfig(arch="timm:resnet18"), 1, (4, 4))
    assert encoder.feature_dim == 512
    assert encoder.embed_inputs(torch.randn(2, 1, 32, 32)).shape == (2, 512)
    assert encoder.model.conv1.in_channels == 1


def test_checkpoint_args_record_the_arch_and_old_ones_load_as_vit():
    cnn = build_encoder(EncoderConfig(arch="resnet32"), 3, (4, 4))
    args = cnn.init_args()
    assert args["config"]["arch"] == "resnet32"
    assert type(rebuild_encoder(args)).__name__ == "ResNet32Encoder"
    vit = build_encoder(EncoderConfig(dim=16, depth=1, heads=2), 3, (4, 4))
    old = vit.init_args()
    del old["config"]["arch"]  # written before encoders were a registry
    rebuilt = rebuild_encoder(old)
    rebuilt.load_state_dict(vit.state_dict())
    assert isinstance(rebuilt, relpos.PatchEncoder) and rebuilt.config.arch == "vit"


def test_grid_patches_of_the_papers_size_overlap_slightly():
    # 24-px patches on a 64-px image, 3 per axis: starts 0, 20, 40 → centres 12, 32, 52
    boxes = grid_patch_boxes((64, 64), 3, 0.375)
    assert boxes.center[:3].tolist() == [[12.0, 12.0], [12.0, 32.0], [12.0, 52.0]]
    assert boxes.size[0].tolist() == [24.0, 24.0] and len(boxes.center) == 9
    # 1-D: 3 patches along time; one patch per axis is centred
    assert grid_patch_boxes((100,), 3, 0.5).center.squeeze(1).tolist() == [25.0, 50.0, 75.0]
    assert grid_patch_boxes((10, 10), 1, 0.4).center.tolist() == [[5.0, 5.0]]


def test_grid_features_are_one_plus_nine_vectors():
    cnn = build_encoder(EncoderConfig(arch="resnet32"), 3, (4, 4)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = grid_features(cnn, x, 3, 0.375)
        assert features.shape == (2, 10 * 64)
        assert torch.allclose(features[:, :64], cnn.embed_inputs(x), atol=1e-5)  # the whole image first
    vit = build_encoder(EncoderConfig(dim=16, depth=1, heads=2, pos_embed="sincos"), 2, (10,)).eval()
    with torch.no_grad():
        assert grid_features(vit, torch.randn(2, 2, 100), 3, 0.3).shape == (2, 4 * 16)  # 1 + 3 along time


class ShallowSeries(Encoder):
    """A third party's 1-D CNN: one convolution, mean over time."""

    name = "shallow-series"
    outputs = ("vector",)
    n_axes = (1,)

    def __init__(self, config, in_channels, patch_shape):
        super().__init__(config, in_channels, patch_shape)
        self.conv = nn.Conv1d(in_channels, 8, 5)
        self.feature_dim = 8

    def embed_inputs(self, x):
        return torch.relu(self.conv(x)).mean(-1)


class SeriesPlugin:
    @relpos.hookimpl
    def register_encoders(self, register):
        register(ShallowSeries)


@pytest.fixture
def series_plugin():
    relpos.plugins.register_plugin(SeriesPlugin(), "shallow-series-plugin")
    yield
    relpos.plugins.unregister_plugin("shallow-series-plugin")


def test_a_third_party_series_cnn_trains_spatial_reasoning_and_loads_back(series_plugin, tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 3, 400)).astype(np.float32)
    overrides = ["modality.sfreq=100", "modality.window_s=2", "modality.stride_s=1", "modality.patch_s=0.5",
                 "encoder.arch=shallow-series", "train.steps=2", "train.batch_size=4", "train.progress=false",
                 f"out={tmp_path / 'run'}"]
    config = relpos.resolve_config(modality="timeseries", pretext="spatial-reasoning", overrides=overrides)
    relpos.train(config, data=x)
    pretrained = relpos.load_encoder(tmp_path / "run")
    assert isinstance(pretrained.encoder, ShallowSeries)
    assert pretrained.embed(torch.from_numpy(x[:, :, :200])).shape == (2, 8)
    with pytest.raises(relpos.errors.ConfigError, match="Pretext 'part' needs an encoder with per-token outputs"):
        relpos.resolve_config(modality="timeseries", pretext="part", overrides=["encoder.arch=shallow-series"])
    with pytest.raises(relpos.errors.ConfigError, match="modality 'image' has 2 .*encoders for 2-axis data: 'resnet32', 'timm', 'vit'"):
        relpos.resolve_config(modality="image", pretext="spatial-reasoning", overrides=["encoder.arch=shallow-series"])


def test_a_broken_encoder_plugin_is_reported_at_registration():
    class NoEmbed(Encoder):
        name = "no-embed"
        outputs = ("vector",)

    class Plugin:
        @relpos.hookimpl
        def register_encoders(self, register):
            register(NoEmbed)

    relpos.plugins.register_plugin(Plugin(), "no-embed-plugin")
    try:
        registry = relpos.plugins.get_registry()
        assert "no-embed" not in registry.names("encoder")
        [failure] = [f for f in registry.failures if f.plugin == "no-embed-plugin"]
        assert "gives one vector per input but does not implement embed_inputs(x)" in failure.error
    finally:
        relpos.plugins.unregister_plugin("no-embed-plugin")


def test_relpos_plugins_lists_the_encoders(capsys):
    import json

    from relpos.cli import main

    assert main(["plugins", "--json"]) == 0
    entries = {p["name"]: p for p in json.loads(capsys.readouterr().out)["plugins"] if p["kind"] == "encoder"}
    assert set(entries) == {"resnet32", "timm", "vit"}
    assert entries["resnet32"]["outputs"] == ["vector"] and entries["resnet32"]["axes"] == [2]
    assert entries["vit"]["outputs"] == ["tokens", "vector"] and entries["vit"]["axes"] == [1, 2, 3]
    assert main(["plugins"]) == 0
    assert "Encoders:\n  resnet32 " in capsys.readouterr().out


def test_a_cnn_fine_tunes_end_to_end():
    from relpos.evaluation.finetune import FinetuneOptions, finetune
    from relpos.plugins import get_modality

    modality = get_modality("image")(get_modality("image").Config(image_size=16, patch_size=4))
    encoder = build_encoder(EncoderConfig(arch="resnet32"), 3, (4, 4))
    before = encoder.stem[0].weight.detach().clone()
    x, y = torch.rand(8, 3, 16, 16), np.arange(8) % 2
    result = finetune(encoder, modality, x, y, x, y, options=FinetuneOptions(steps=2, batch_size=4, warmup_steps=0))
    assert result.chosen["pos_embed"] == "none"
    assert not torch.equal(before, encoder.stem[0].weight)  # the CNN itself was trained, not only a head
    assert len(result.predictions) == 8

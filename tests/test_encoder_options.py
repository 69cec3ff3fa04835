"""Encoders declare options of their own and a minimum input size; timm models that cannot take the data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import relpos
import relpos.plugins
from relpos.cli import main
from relpos.config import config_from_dict, resolve_config, setting
from relpos.encoders.vit import EncoderConfig
from relpos.encoders import Encoder, EncoderOptions, build_encoder, rebuild_encoder
from relpos.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class TinyConvOptions(EncoderOptions):
    dim: int = setting(30, ge=1, le=4096)  # the ViT's name, without its dim % heads rule
    kernel: int = setting(5, ge=1, le=31)  # an option of its own


class TinyConv(Encoder):
    """A third party's image CNN: one unpadded convolution, so inputs smaller than its kernel crash it."""

    name = "tiny-conv"
    outputs = ("vector",)
    n_axes = (2,)
    Config = TinyConvOptions

    @classmethod
    def min_input_shape(cls, config, n_axes):
        return (config.kernel,) * n_axes

    def __init__(self, config, in_channels, patch_shape):
        super().__init__(config, in_channels, patch_shape)
        self.conv = nn.Conv2d(in_channels, config.dim, config.kernel)
        self.feature_dim = config.dim

    def embed_inputs(self, x):
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


class TinyConvPlugin:
    @relpos.hookimpl
    def register_encoders(self, register):
        register(TinyConv)


@pytest.fixture
def tiny_conv():
    relpos.plugins.register_plugin(TinyConvPlugin(), "tiny-conv-plugin")
    yield
    relpos.plugins.unregister_plugin("tiny-conv-plugin")


IMAGE_SR = {"modality": "image", "pretext": "spatial-reasoning"}


def test_a_third_party_encoder_reuses_dim_without_the_vits_heads_rule(tiny_conv):
    config = resolve_config(**IMAGE_SR, overrides=["encoder.arch=tiny-conv", "encoder.dim=32"])
    # 32 % 3 != 0: the ViT's rule (heads=3 by default) is not the CNN's
    assert config.to_dict()["encoder"] == {"arch": "tiny-conv", "dim": 32, "kernel": 5}
    with pytest.raises(ConfigError, match=r"'encoder.dim' \(32\) must be divisible by 'encoder.heads' \(3\)"):
        resolve_config(**IMAGE_SR, overrides=["encoder.arch=vit", "encoder.dim=32"])
    encoder = build_encoder(resolve_config(**IMAGE_SR, overrides=["encoder.arch=tiny-conv", "encoder.kernel=3"]).encoder, 1, (4, 4))
    assert tuple(encoder.conv.weight.shape) == (30, 1, 3, 3) and encoder.feature_dim == 30


def test_print_config_lists_only_the_chosen_encoders_options(tiny_conv, capsys):
    def printed_encoder(*overrides):
        sets = [a for o in overrides for a in ("--set", o)]
        assert main(["train", "--modality", "image", "--pretext", "spatial-reasoning", *sets, "--print-config"]) == 0
        return yaml.safe_load(capsys.readouterr().out)["encoder"]

    assert printed_encoder("encoder.arch=tiny-conv") == {"arch": "tiny-conv", "dim": 30, "kernel": 5}
    assert printed_encoder("encoder.arch=resnet32") == {"arch": "resnet32"}
    # the ViT keeps every key users write today, with Spatial Reasoning's default sin-cos positions
    assert printed_encoder("encoder.dim=64", "encoder.heads=4") == {
        "arch": "vit", "dim": 64, "depth": 6, "heads": 4, "mlp_ratio": 4.0, "drop_path": 0.0,
        "pos_embed": "sincos", "pos_mask_ratio": 0.0,
    }


@pytest.mark.parametrize(
    "override, message",
    [
        ("encoder.kernal=3", r"Unknown config key 'encoder.kernal'\. Did you mean 'kernel'\? Valid keys in 'encoder': arch, dim, kernel\."),
        ("encoder.depth=2", r"'encoder.depth' is an option of encoder 'vit', not of 'tiny-conv'; the options of 'tiny-conv' are arch, dim, kernel\."),
        ("encoder.kernel=0", r"'encoder.kernel'.*got 0"),
    ],
)
def test_a_wrong_encoder_option_is_one_sentence(tiny_conv, capsys, override, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(**IMAGE_SR, overrides=["encoder.arch=tiny-conv", override])
    assert main(["train", "--modality", "image", "--pretext", "spatial-reasoning", "--set", "encoder.arch=tiny-conv",
                 "--set", override, "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_misspelled_vit_option_still_gets_did_you_mean():
    with pytest.raises(ConfigError, match=r"Unknown config key 'encoder.dpeth'\. Did you mean 'depth'\?"):
        resolve_config(overrides=["encoder.dpeth=2"])


def test_windows_smaller_than_the_encoders_minimum_are_refused_before_training(tiny_conv, tmp_path, capsys):
    data = tmp_path / "img.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.integers(0, 256, size=(8, 8, 8, 3), dtype=np.uint8), y=np.arange(8) % 2)
    out = tmp_path / "run"
    code = main([
        "train", "--modality", "image", "--pretext", "spatial-reasoning", "--data", str(data), "--out", str(out),
        "--set", "encoder.arch=tiny-conv", "--set", "encoder.kernel=9", "--set", "modality.image_size=8",
        "--set", "modality.patch_size=4", "--set", "train.steps=1", "--set", "train.batch_size=4",
        "--set", "train.progress=false",
    ])
    err = capsys.readouterr().err
    assert code == 2, err
    assert ("Encoder 'tiny-conv' embeds inputs of at least 9 × 9 samples, but the training windows "
            "are 8 × 8; use larger inputs or another encoder.arch.") in err
    assert "Traceback" not in err and not out.exists()


def test_a_token_encoders_minimum_is_checked_against_the_patch_shape():
    class WidePatches(Encoder):
        name = "wide-patches"
        outputs = ("tokens",)
        min_input = (16,)

    class Plugin:
        @relpos.hookimpl
        def register_encoders(self, register):
            register(WidePatches)

    relpos.plugins.register_plugin(Plugin(), "wide-patches-plugin")
    try:
        with pytest.raises(ConfigError, match=r"Encoder 'wide-patches' embeds inputs of at least 16 samples, "
                                              r"but the patches \(the modality's patch size\) are 10;"):
            build_encoder(EncoderOptions(arch="wide-patches"), 1, (10,))
        assert build_encoder(EncoderOptions(arch="wide-patches"), 1, (16,)).patch_shape == (16,)
    finally:
        relpos.plugins.unregister_plugin("wide-patches-plugin")


def test_a_bad_min_input_or_config_is_reported_at_registration():
    class BadMinimum(Encoder):
        name = "bad-minimum"
        min_input = 0

        def embed_inputs(self, x):
            return x.mean(dim=(2, 3))

    class BadConfig(BadMinimum):
        name = "bad-config"
        min_input = 1
        Config = object  # not an EncoderOptions

    class Plugin:
        def __init__(self, cls):
            self.cls = cls

        @relpos.hookimpl
        def register_encoders(self, register):
            register(self.cls)

    relpos.plugins.register_plugin(Plugin(BadMinimum), "bad-minimum-plugin")
    relpos.plugins.register_plugin(Plugin(BadConfig), "bad-config-plugin")
    try:
        failures = {f.plugin: f.error for f in relpos.plugins.get_registry().failures}
        assert "BadMinimum.min_input must be a whole number of samples of at least 1, or a tuple of one per axis, got 0." in failures["bad-minimum-plugin"]
        assert "BadConfig.Config must be relpos.encoders.EncoderOptions or a dataclass subclassing it" in failures["bad-config-plugin"]
    finally:
        relpos.plugins.unregister_plugin("bad-minimum-plugin")
        relpos.plugins.unregister_plugin("bad-config-plugin")


def test_checkpoints_written_before_encoders_had_options_still_load():
    # relpos used to store the ViT's options for every encoder
    vit_keys = {"dim": 192, "depth": 6, "heads": 3, "mlp_ratio": 4.0, "drop_path": 0.0, "pos_embed": "sincos",
                "pos_mask_ratio": 0.0}
    encoder = rebuild_encoder({"config": {"arch": "resnet32", **vit_keys}, "in_channels": 3, "patch_shape": [4, 4]})
    assert type(encoder).__name__ == "ResNet32Encoder" and encoder.init_args()["config"] == {"arch": "resnet32"}
    stored = resolve_config(**IMAGE_SR).to_dict()
    stored["encoder"] = {"arch": "resnet32", **vit_keys}
    assert config_from_dict(stored).to_dict()["encoder"] == {"arch": "resnet32"}
    # an older run's config.yaml (the values relpos wrote) still resolves; a value of the user's own is refused
    assert resolve_config(stored).to_dict()["encoder"] == {"arch": "resnet32"}
    stored["encoder"]["dim"] = 64
    with pytest.raises(ConfigError, match=r"'encoder.dim' is an option of encoder 'vit', not of 'resnet32'"):
        resolve_config(stored)
    # and a ViT's stored keys keep their meaning
    vit = rebuild_encoder({"config": {"arch": "vit", **vit_keys, "dim": 16, "depth": 1, "heads": 2},
                           "in_channels": 1, "patch_shape": [4]})
    assert vit.dim == 16 and len(vit.blocks) == 1 and vit.blocks[0].attn.num_heads == 2


# -- timm models that cannot take the data ---------------------------------------------------------------
def test_timm_with_no_model_name_is_one_sentence(capsys):
    assert main(["train", "--modality", "image", "--pretext", "spatial-reasoning", "--set", "encoder.arch=timm:",
                 "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "'timm:' names no timm model; use timm:NAME, e.g. timm:resnet18." in err
    assert "Traceback" not in err and "expected a string" not in err


def test_a_fixed_size_timm_vit_reads_small_images():
    # timm asserts 224 x 224 for vit_tiny_patch16_224 unless built with a dynamic size
    encoder = build_encoder(EncoderOptions(arch="timm:vit_tiny_patch16_224"), 1, (4, 4), (32, 32))
    assert encoder.fixed_input_size is None
    assert encoder.embed_inputs(torch.randn(2, 1, 32, 32)).shape == (2, 192)
    assert encoder.embed_inputs(torch.randn(2, 1, 20, 20)).shape == (2, 192)  # padded to whole patches


def test_a_timm_model_of_one_fixed_size_is_refused_naming_both_sizes():
    # MLP-Mixer has no dynamic size: its token-mixing layers are as wide as 224 / 16 squared
    with pytest.raises(ConfigError, match=r"Encoder 'timm:mixer_s16_224' is built by timm for inputs of 224 × 224 "
                                          r"pixels only, but the training windows are 32 × 32;"):
        build_encoder(EncoderOptions(arch="timm:mixer_s16_224"), 3, (4, 4), (32, 32))
    assert build_encoder(EncoderOptions(arch="timm:mixer_s16_224"), 3, (16, 16), (224, 224)).fixed_input_size == (224, 224)


def test_a_fixed_size_timm_model_stops_the_cli_before_training(tmp_path, capsys):
    data = tmp_path / "img.npz"
    np.savez(data, x=np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8))
    out = tmp_path / "run"
    code = main([
        "train", "--modality", "image", "--pretext", "spatial-reasoning", "--data", str(data), "--out", str(out),
        "--set", "encoder.arch=timm:mixer_s16_224", "--set", "modality.image_size=32", "--set", "train.steps=1",
        "--set", "train.progress=false",
    ])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and not out.exists()
    assert "inputs of 224 × 224 pixels only, but the training windows are 32 × 32" in err


def test_relpos_plugins_lists_each_encoders_options(tiny_conv, capsys):
    import json

    assert main(["plugins", "--json"]) == 0
    entries = {p["name"]: p for p in json.loads(capsys.readouterr().out)["plugins"] if p["kind"] == "encoder"}
    assert entries["tiny-conv"]["options"] == ["dim", "kernel"] and entries["resnet32"]["options"] == []
    assert entries["vit"]["options"][:3] == ["dim", "depth", "heads"]
    assert main(["plugins"]) == 0
    assert "[outputs: vector; axes: 2; options: dim, kernel]" in capsys.readouterr().out

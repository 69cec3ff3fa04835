"""The contract between the engine and third-party plugins, seen from a user's side: positions a
pretext does not pass are refused before any data is read, a 3-axis modality written against the
public API trains PART, and what the CLI prints about it reads right."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

import relpos
import relpos.plugins
from relpos.checkpoint import checkpoint_path
from relpos.cli import format_inspect_report, main
from relpos.errors import ConfigError, DataError

from conftest import tiny_args


# -- a 3-axis modality, as the third-party author wrote it -------------------------------------
@dataclass
class VolumeConfig:
    patch_size: int = 4  # voxels per axis


class Volume(relpos.Modality):
    """Cubes of voxels from a .npy array (n_volumes, channels, depth, height, width)."""

    name = "volume"
    axes = ("depth", "row", "col")
    Config = VolumeConfig

    def load(self, data):
        try:
            array = np.load(data, allow_pickle=False)
        except OSError:
            raise DataError(f"Cannot read {str(data)!r} as a .npy array of volumes.") from None
        # one recording per volume, named as a scanner would: vol0, vol1, ..., vol11
        return relpos.Windows(
            x=torch.as_tensor(array, dtype=torch.float32),
            groups=np.array([f"vol{i}" for i in range(len(array))]),
        )


class PositionedPretext(relpos.Pretext):
    """Passes box centres to its encoder, so it may train with sin-cos positions."""

    name = "positioned"
    Config = VolumeConfig
    encoder_pos_embed = ("none", "sincos")

    def forward(self, batch, generator):
        x = batch["x"]
        boxes = relpos.grid_boxes(self.extent, self.modality.patch_size(), device=x.device)
        boxes = relpos.Boxes(boxes.center.expand(len(x), -1, -1), boxes.size.expand(len(x), -1, -1))
        patches = relpos.extract_patches(x, boxes, self.modality.patch_shape())
        return self.encoder(patches, boxes.center, generator).pow(2).mean(), {}


class PositionFreePretext(PositionedPretext):
    """The same method without centres: the default encoder_pos_embed, ("none",)."""

    name = "position-free"
    encoder_pos_embed = ("none",)


class DefaultPositionsPretext(relpos.Pretext):
    """Says nothing about positions: the base class's ("none",) applies."""

    name = "default-positions"
    Config = VolumeConfig

    def forward(self, batch, generator):
        raise NotImplementedError("only its configuration is resolved")


class ContractPlugin:
    @relpos.hookimpl
    def register_modalities(self, register):
        register(Volume)

    @relpos.hookimpl
    def register_pretexts(self, register):
        register(PositionedPretext)
        register(PositionFreePretext)
        register(DefaultPositionsPretext)


@pytest.fixture
def contract_plugin():
    relpos.plugins.register_plugin(ContractPlugin(), "contract")
    try:
        assert relpos.plugins.get_registry().failures == []
        yield
    finally:
        relpos.plugins.unregister_plugin("contract")


@pytest.fixture
def volumes(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "volumes.npy"
    np.save(path, rng.standard_normal((12, 1, 8, 8, 8)).astype(np.float32))  # 2×2×2 = 8 patches of 4³
    return path


# -- positions -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pretext", ["position-free", "default-positions"])
def test_sincos_positions_for_a_pretext_that_takes_none_are_refused_at_config_time(contract_plugin, pretext):
    with pytest.raises(ConfigError) as info:
        relpos.resolve_config(modality="volume", pretext=pretext, overrides=["encoder.pos_embed=sincos"])
    assert str(info.value) == (
        f"Pretext {pretext!r} trains its encoder without position embeddings, so 'encoder.pos_embed' "
        f"must be 'none', got 'sincos'."
    )


def test_a_pretext_that_passes_centres_trains_with_sincos_positions(contract_plugin, volumes, tmp_path, one_thread):
    config = relpos.resolve_config(
        modality="volume", pretext="positioned",
        overrides=["encoder.dim=32", "encoder.depth=1", "encoder.heads=2", "encoder.pos_embed=sincos", "train.steps=1", "train.progress=false",
                   "train.tensorboard=false", f"data={volumes}", f"out={tmp_path / 'run'}"],
    )
    assert config.encoder.pos_embed == "sincos"
    result = relpos.train(config)
    assert np.isfinite(result.loss)


def test_building_the_pretext_directly_checks_positions_too(contract_plugin, volumes):
    # The Python API may skip resolve_config; the base class checks in its constructor.
    modality = Volume()
    windows = modality.load(volumes)
    with pytest.raises(ConfigError, match="'position-free' trains its encoder without position embeddings"):
        PositionFreePretext(VolumeConfig(), modality, relpos.EncoderConfig(pos_embed="sincos"), windows)


def test_cli_refuses_sincos_for_part_before_reading_data_and_writes_nothing(cli, tmp_path):
    # Every position visible gives PART's offsets away; only the position-masked variant may use them.
    out = tmp_path / "run"
    code, stdout, stderr = cli(
        "train", "--pretext", "part", "--set", "encoder.pos_embed=sincos",
        "--data", tmp_path / "no-such-file.edf", "--out", out,
    )
    assert code == 2
    assert stderr.strip().splitlines() == [
        "relpos: error: With 'encoder.pos_embed' 'sincos' and no masking PART's encoder sees every "
        "patch's position, which gives every offset away; set 'encoder.pos_mask_ratio' in (0, 1) (the "
        "paper's EEG experiment uses 0.2) or 'encoder.pos_embed' to 'none', got pos_mask_ratio 0."
    ]
    assert "Traceback" not in stderr
    assert not out.exists()


# -- a 3-axis modality end to end, and what the CLI says about it ----------------------------------------------
def test_part_trains_one_step_on_a_3_axis_modality_and_says_step(contract_plugin, volumes, tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    code = main(["train", "--modality", "volume", "--pretext", "part", "--data", str(volumes),
                 "--out", str(out), *tiny_args(steps=1)])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("relpos: trained 1 step, final loss ")
    assert checkpoint_path(out).is_file()


def test_recordings_are_listed_in_natural_order(contract_plugin, volumes):
    report = Volume().inspect(str(volumes))
    assert list(report["recordings"]) == [f"vol{i}" for i in range(12)]  # not vol0, vol1, vol10, vol11, vol2
    text = format_inspect_report(report)
    listed = [line.split(":")[0].strip() for line in text.splitlines() if line.startswith("  vol")]
    assert listed == [f"vol{i}" for i in range(12)]


def test_plugins_listing_of_a_run_time_plugin_reads_right(contract_plugin, capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if line.strip().startswith("volume ")]
    assert line.endswith("(plugin 'contract', registered at run time)")
    assert "((" not in out and "))" not in out

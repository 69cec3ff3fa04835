"""The example third-party plugins in examples/ work through the public plugin API.

Each example is used as installed when its distribution is (``.ci/run`` installs both), and is
otherwise loaded from its source file and registered for the test, so these tests run either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import relpos
import relpos.plugins
from relpos.checkpoint import checkpoint_path
from relpos.errors import ConfigError

from conftest import EEG_SAMPLE, TINY_OVERRIDES, read_metrics
from example_plugins import installed, registered


@pytest.fixture
def npysignal_plugin():
    with registered("relpos-npysignal") as modules:
        yield modules["relpos-npysignal"]


@pytest.fixture
def jigsaw_plugin():
    with registered("relpos-jigsaw") as modules:
        yield modules["relpos-jigsaw"]


# -- the npysignal modality -----------------------------------------------------------------------------------
def test_example_modality_trains_with_part(npysignal_plugin, tmp_path):
    registry = relpos.plugins.get_registry()
    assert registry.failures == []
    assert registry.entry("modality", "npysignal").plugin == "npysignal"
    assert ("npysignal", "part") in relpos.plugins.compatible_pairs()
    t = np.arange(128, dtype=np.float32)
    signals = np.stack([np.stack([np.sin(t / (3 + k)), np.cos(t / (5 + k))]) for k in range(6)])
    path = tmp_path / "signals.npy"
    np.save(path, signals)  # (6 signals, 2 channels, 128 samples): 128 / 16 = 8 grid patches each
    config = relpos.resolve_config(
        modality="npysignal",
        pretext="part",
        overrides=[
            *TINY_OVERRIDES, "train.steps=2", "train.progress=false", "train.tensorboard=false",
            f"data={path}", f"out={tmp_path / 'run'}",
        ],
    )
    result = relpos.train(config)
    assert result.pretext.n_patches == 8
    assert np.isfinite(result.loss)
    embeddings = relpos.load_encoder(result.run_dir).embed_data(path)
    assert tuple(embeddings.shape) == (6, 32)


# -- the jigsaw pretext ----------------------------------------------------------------------------------------
@dataclass
class CellsConfig:
    patch_size: int = 2


class Cells1D(relpos.Modality):
    """Stand-in modality: the tests hand it windows directly."""

    name = "cells-1d"
    axes = ("time",)
    Config = CellsConfig

    def load(self, data):
        return data


class Cells2D(Cells1D):
    name = "cells-2d"
    axes = ("row", "col")


def numbered_cells(extent: tuple[int, ...], patch: int) -> torch.Tensor:
    """A (2, 1, *extent) batch whose every grid cell holds its row-major cell index."""
    counts = [e // patch for e in extent]
    index = torch.arange(math.prod(counts), dtype=torch.float32).reshape(counts)
    for axis in range(len(extent)):
        index = index.repeat_interleave(patch, dim=axis)
    return index.expand(2, 1, *extent).clone()


def jigsaw_for(module, modality_cls, x, **options):
    windows = relpos.Windows(x=x)
    config = module.JigsawConfig(**options)
    encoder = relpos.EncoderConfig(dim=16, depth=1, heads=2)
    return module.Jigsaw(config, modality_cls(), encoder, windows)


def test_permutation_sets_checked_by_hand(jigsaw_plugin):
    make = jigsaw_plugin.max_hamming_permutations
    # 3 cells have 3! = 6 permutations: asking for 64 gives each exactly once
    assert sorted(map(tuple, make(3, 64, seed=0).tolist())) == sorted(
        [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    )
    # the farthest permutation of 4 cells from any first one moves every cell: Hamming distance 4
    first, second = make(4, 2, seed=5)
    assert sorted(first.tolist()) == sorted(second.tolist()) == [0, 1, 2, 3]
    assert int((first != second).sum()) == 4
    # 9 cells (the paper's 3×3 grid), drawn candidates: 30 distinct permutations, same seed same set
    perms = make(9, 30, seed=1)
    assert perms.shape == (30, 9)
    assert len({tuple(p) for p in perms.tolist()}) == 30
    assert all(sorted(p) == list(range(9)) for p in perms.tolist())
    np.testing.assert_array_equal(perms, make(9, 30, seed=1))
    assert not np.array_equal(perms, make(9, 30, seed=2))


@pytest.mark.parametrize("modality_cls, extent", [(Cells1D, (8,)), (Cells2D, (4, 6))], ids=["1-axis", "2-axes"])
def test_each_slot_holds_the_cell_its_permutation_names(jigsaw_plugin, modality_cls, extent):
    # 1 axis: 8 samples / 2 = 4 cells; 2 axes: (4 / 2) × (6 / 2) = 6 cells, row-major
    x = numbered_cells(extent, 2)
    pretext = jigsaw_for(jigsaw_plugin, modality_cls, x, n_permutations=5)
    assert pretext.n_cells == math.prod(e // 2 for e in extent)
    tiles, label = pretext.make_puzzles(x, torch.Generator().manual_seed(0))
    assert tuple(tiles.shape) == (2, pretext.n_cells, 1, *([2] * len(extent)))
    expected = pretext.permutations[label].float()  # (B, N): the cell shown in each slot
    values = tiles.flatten(2)  # every value of a tile is its cell's index
    torch.testing.assert_close(values, expected[..., None].expand_as(values), atol=1e-5, rtol=0)


def test_jitter_moves_tiles_inside_the_sample_only(jigsaw_plugin):
    x = numbered_cells((8,), 2)  # cells 0..3 of 2 samples each
    pretext = jigsaw_for(jigsaw_plugin, Cells1D, x, jitter=1.0)
    tiles, label = pretext.make_puzzles(x, torch.Generator().manual_seed(0))
    cell = pretext.permutations[label].float()[..., None, None]
    # a shift of at most half a patch (1 sample) reads only the neighbouring cells' values
    assert bool(((tiles - cell).abs() <= 1 + 1e-5).all())
    assert not torch.equal(tiles, cell.expand_as(tiles))  # some tiles did move
    assert float(tiles.min()) >= 0 and float(tiles.max()) <= 3  # never past the borders


def test_jigsaw_learns_the_order_of_chirp_segments(jigsaw_plugin, one_thread, tmp_path):
    # Chirps with random phase: a 1-s segment's frequency tells where it belongs, so a
    # trained encoder solves puzzles of 4 segments far above chance (1 / 24).
    rng = np.random.default_rng(0)
    t = np.arange(400) / 100.0
    chirps = np.stack([
        np.sin(2 * np.pi * (1 + 2 * t) * t + rng.uniform(0, 2 * np.pi))[None] + 0.1 * rng.standard_normal((1, 400))
        for _ in range(64)
    ]).astype(np.float32)
    config = relpos.resolve_config(
        modality="timeseries", pretext="jigsaw",
        overrides=["modality.sfreq=100", "modality.window_s=4", "modality.stride_s=4", "modality.patch_s=1",
                   "pretext.n_permutations=24", "encoder.dim=32", "encoder.depth=1", "encoder.heads=2",
                   "train.batch_size=32", "train.lr=1e-3", "train.steps=120", "train.progress=false",
                   "train.tensorboard=false", "train.ckpt_every=1000", f"out={tmp_path / 'run'}"],
    )
    pretext = relpos.train(config, data=chirps).pretext.eval()
    with torch.no_grad():
        x = torch.as_tensor(chirps).reshape(64, 1, 400)
        tiles, label = pretext.make_puzzles(x, torch.Generator().manual_seed(123))
        accuracy = (pretext.head(pretext.encoder(tiles)[:, 1:]).argmax(1) == label).float().mean().item()
    assert accuracy > 0.3


@pytest.mark.parametrize("modality", ["eeg", "image"])
def test_jigsaw_trains_and_its_encoder_loads(jigsaw_plugin, modality, tmp_path, one_thread, make_image_folder):
    registry = relpos.plugins.get_registry()
    assert registry.failures == []
    assert (modality, "jigsaw") in relpos.plugins.compatible_pairs()
    if modality == "eeg":
        data, extra = EEG_SAMPLE, ["modality.window_s=10", "modality.stride_s=10"]  # 10 one-second cells
    else:
        data, extra = make_image_folder(), ["modality.image_size=16", "modality.patch_size=8"]  # 2×2 cells
    config = relpos.resolve_config(
        modality=modality, pretext="jigsaw",
        overrides=[*[o for o in TINY_OVERRIDES if not o.startswith("pretext.")], *extra,
                   "train.steps=2", "train.log_every=1", "train.progress=false", "train.tensorboard=false",
                   f"data={data}", f"out={tmp_path / 'run'}"],
    )
    result = relpos.train(config)
    header, rows = read_metrics(result.run_dir)
    assert {"loss_baseline", "accuracy"} <= set(header) and len(rows) == 2
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    n_cells = 10 if modality == "eeg" else 4
    assert result.pretext.n_classes == min(64, math.factorial(n_cells))  # 64, or 4! = 24 for 2×2 cells
    # a uniform guess over the permutations: cross-entropy log 64 = 4.159, log 24 = 3.178
    assert float(rows[0]["loss_baseline"]) == pytest.approx(math.log(result.pretext.n_classes))
    state = torch.load(checkpoint_path(result.run_dir), map_location="cpu", weights_only=True)
    torch.testing.assert_close(state["model"]["permutations"], result.pretext.permutations)
    encoder = relpos.load_encoder(result.run_dir)
    assert encoder.embed_data(data).shape[1] == 32


def test_jigsaw_refuses_positions_before_reading_data(jigsaw_plugin):
    with pytest.raises(ConfigError, match="'jigsaw' trains its encoder without position embeddings"):
        relpos.resolve_config(pretext="jigsaw", overrides=["encoder.pos_embed=sincos"])


@pytest.mark.parametrize(
    "option, message",
    [
        ("n_permutations=1", "Invalid value for 'pretext.n_permutations': allowed an integer >= 2, got 1."),
        ("jitter=1.5", "Invalid value for 'pretext.jitter': allowed a finite number >= 0 and <= 1, got 1.5."),
        ("hidden=-1", "Invalid value for 'pretext.hidden': allowed an integer >= 0, got -1."),
    ],
)
def test_jigsaw_options_are_checked(jigsaw_plugin, option, message):
    with pytest.raises(ConfigError) as info:
        relpos.resolve_config(pretext="jigsaw", overrides=[f"pretext.{option}"])
    assert str(info.value) == message


@pytest.mark.skipif(not installed("relpos-jigsaw"), reason="relpos-jigsaw is not installed (.ci/run installs it)")
def test_installed_jigsaw_trains_from_the_command_line(cli, tmp_path):
    code, out, err = cli("plugins")
    assert code == 0
    assert "(plugin 'jigsaw' from relpos-jigsaw)" in out
    run = tmp_path / "run"
    args = [a for o in TINY_OVERRIDES if not o.startswith("pretext.") for a in ("--set", o)]
    code, out, err = cli("train", "--pretext", "jigsaw", "--set", "modality.window_s=10",
                         "--steps", "1", "--no-progress", "--out", run, *args)
    assert code == 0, err
    assert out.startswith("relpos: trained 1 step, final loss ")
    assert checkpoint_path(run).is_file()

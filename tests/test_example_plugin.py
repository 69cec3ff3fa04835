"""The example third-party plugin in examples/ works through the public plugin API."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import relpos
import relpos.plugins

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "relpos-npysignal" / "relpos_npysignal" / "__init__.py"


@pytest.fixture
def npysignal_plugin():
    spec = importlib.util.spec_from_file_location("relpos_npysignal_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    relpos.plugins.register_plugin(module, name="npysignal-example")
    try:
        yield module
    finally:
        relpos.plugins.unregister_plugin("npysignal-example")
        sys.modules.pop(spec.name, None)


def test_example_modality_trains_with_part(npysignal_plugin, tmp_path):
    entry = relpos.plugins.get_registry().entry("modality", "npysignal")
    assert entry.plugin == "npysignal-example"
    assert ("npysignal", "part") in relpos.plugins.compatible_pairs()
    t = np.arange(128, dtype=np.float32)
    signals = np.stack([np.stack([np.sin(t / (3 + k)), np.cos(t / (5 + k))]) for k in range(6)])
    path = tmp_path / "signals.npy"
    np.save(path, signals)  # (6 signals, 2 channels, 128 samples): 128 / 16 = 8 grid patches each
    config = relpos.resolve_config(
        modality="npysignal",
        pretext="part",
        overrides=[
            "encoder.dim=32", "encoder.depth=1", "encoder.heads=2", "pretext.n_pairs=16",
            "train.batch_size=2", "train.steps=2", "train.progress=false", "train.tensorboard=false",
            f"data={path}", f"out={tmp_path / 'run'}",
        ],
    )
    result = relpos.train(config)
    assert result.pretext.n_patches == 8
    assert np.isfinite(result.loss)
    embeddings = relpos.load_encoder(result.run_dir).embed_data(path)
    assert tuple(embeddings.shape) == (6, 32)

"""A loaded encoder knows its patch geometry before any new data is opened."""

from __future__ import annotations

import numpy as np

import relpos
from conftest import TINY_OVERRIDES


def test_timeseries_encoder_embeds_tensors_right_after_loading(tmp_path):
    rng = np.random.default_rng(0)
    signals = rng.standard_normal((4, 3, 400)).astype(np.float32)
    config = relpos.resolve_config(
        modality="timeseries",
        pretext="part",
        overrides=[*TINY_OVERRIDES, "modality.sfreq=100", "modality.patch_s=0.5", "train.steps=1",
                   "train.progress=false", "train.tensorboard=false", f"out={tmp_path / 'run'}"],
    )
    result = relpos.train(config, data=signals)
    encoder = relpos.load_encoder(result.run_dir)
    # 0.5 s at 100 Hz = 50-sample patches, known from the checkpoint alone: 400 / 50 = 8 per window.
    assert encoder.modality.patch_size() == (50.0,)
    import torch

    embeddings = encoder.embed(torch.from_numpy(signals))
    assert tuple(embeddings.shape) == (4, 32)

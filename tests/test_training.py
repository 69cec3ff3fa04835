"""The training loop: schedule, non-finite-loss stop, weight-decay groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import relpos
from relpos.config import TrainConfig
from relpos.errors import TrainingError
from relpos.optim import lr_schedule, param_groups as _param_groups

from conftest import TINY_OVERRIDES

TINY = [*TINY_OVERRIDES, "train.progress=false", "train.tensorboard=false"]


def test_schedule_warms_up_linearly_then_decays_by_cosine():
    cfg = TrainConfig(steps=6, lr=1.0, min_lr=0.0, warmup_steps=2)
    lrs = lr_schedule(cfg)
    # Warm-up: step k (1-based) of 2 gets k/2. Then 4 cosine steps at progress 0, 1/4, 2/4, 3/4:
    # 0.5 * (1 + cos(pi * p)) = 1, 0.8536, 0.5, 0.1464.
    expected = [0.5, 1.0, 1.0, 0.853553, 0.5, 0.146447]
    np.testing.assert_allclose(lrs, expected, atol=1e-6)


def test_schedule_without_warmup_starts_at_peak_and_ends_above_min_lr():
    lrs = lr_schedule(TrainConfig(steps=10, lr=2e-3, min_lr=1e-5, warmup_steps=0))
    assert lrs[0] == pytest.approx(2e-3)
    assert 1e-5 < lrs[-1] < 2e-3 * 0.05
    assert np.all(np.diff(lrs) < 0)


def test_weight_decay_skips_biases_norms_and_tokens():
    config = relpos.resolve_config(modality="image", pretext="part", overrides=TINY)
    windows = relpos.Windows(x=torch.zeros(2, 3, 16, 16))
    modality = relpos.get_modality("image")(config.modality_config)
    pretext = relpos.get_pretext("part")(config.pretext_config, modality, config.encoder, windows)
    decay, no_decay = _param_groups(pretext, 0.05)
    decayed = {id(p) for p in decay["params"]}
    names = {name for name, p in pretext.named_parameters() if id(p) in decayed}
    assert "encoder.patch_embed.weight" in names
    assert "encoder.cls_token" not in names
    assert not any(n.endswith(".bias") or "norm" in n for n in names)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0


def test_non_finite_loss_stops_with_a_message(tmp_path, monkeypatch):
    part = relpos.get_pretext("part")
    original = part.forward
    monkeypatch.setattr(part, "forward", lambda self, *a, **k: (original(self, *a, **k)[0] * float("inf"), {}))
    images = np.zeros((4, 16, 16), dtype=np.uint8)
    config = relpos.resolve_config(
        modality="image", pretext="part", overrides=[*TINY, f"out={tmp_path / 'run'}", "train.steps=3"]
    )
    with pytest.raises(TrainingError, match=r"loss became (inf|nan) at step 1, so training stopped and no checkpoint"):
        relpos.train(config, data=images)
    # Nothing was checkpointed, so nothing can be resumed from a broken state, and nothing is left.
    assert not (tmp_path / "run").exists()

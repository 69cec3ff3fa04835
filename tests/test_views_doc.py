"""The multi-view pretext example of docs/views.md runs as written, on images and on a time series."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from relpos.config import resolve_config
from relpos.encoders.vit import EncoderConfig
from relpos.training import build_modality

pytestmark = pytest.mark.usefixtures("one_thread")

DOC = Path(__file__).resolve().parents[1] / "docs" / "views.md"


def example_class():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/views.md should hold one python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace["TwoViewDistillation"]


@pytest.mark.parametrize("modality_name", ["image", "timeseries"])
def test_doc_example_trains_and_updates_its_teacher(modality_name):
    if modality_name == "image":
        data = np.random.default_rng(0).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
        overrides = ["modality.image_size=16", "modality.patch_size=4"]
    else:
        data = np.random.default_rng(0).standard_normal((2, 3, 400)).astype(np.float32)
        overrides = ["modality.sfreq=100", "modality.window_s=2", "modality.stride_s=1", "modality.patch_s=0.5"]
    modality = build_modality(resolve_config(modality=modality_name, pretext="part", overrides=overrides))
    windows = modality.load(data)
    cls = example_class()
    pretext = cls(cls.Config(), modality, EncoderConfig(dim=32, depth=1, heads=2, pos_embed="sincos"), windows)
    pretext.set_progress(0, 10)
    loss, _ = pretext({"x": windows.x[:4]}, torch.Generator().manual_seed(0))
    loss.backward()
    assert math.isfinite(loss.item())
    assert pretext.encoder.patch_embed.weight.grad is not None
    assert all(p.grad is None for p in pretext.teacher_encoder.parameters())
    before = pretext.teacher_encoder.patch_embed.weight.clone()
    with torch.no_grad():
        pretext.encoder.patch_embed.weight.add_(1.0)
    pretext.after_step(1)
    assert not torch.equal(before, pretext.teacher_encoder.patch_embed.weight)
    assert pretext.centering.center.abs().sum() > 0

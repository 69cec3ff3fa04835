"""The student–teacher skeleton (relpos.student_teacher): a pretext assembled from it, by hand."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from relpos.blocks import distillation_cross_entropy
from relpos.config import resolve_config
from relpos.encoders.vit import EncoderConfig
from relpos.errors import ConfigError, DataError
from relpos.modality import Windows
from relpos.student_teacher import MultiCropConfig, StudentTeacher, schedule_setting
from relpos.training import build_modality, build_pretext

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class TwoViewConfig(MultiCropConfig):
    method_name: ClassVar[str] = "Two-view"

    teacher_momentum: float = schedule_setting("teacher_momentum")
    warmup_teacher_temp: float = schedule_setting("warmup_teacher_temp")
    teacher_temp: float = schedule_setting("teacher_temp")
    teacher_temp_warmup: float = schedule_setting("teacher_temp_warmup", 0.5)
    student_temp: float = schedule_setting("student_temp")
    weight_decay: float = schedule_setting("weight_decay")
    weight_decay_end: float = schedule_setting("weight_decay_end")


class TwoView(StudentTeacher):
    """A third party's method: a linear head on CLS, each global view teaching the other."""

    name = "two-view-test"
    Config = TwoViewConfig

    def build_head(self, dim):
        return nn.Linear(dim, 8)

    def forward(self, batch, generator):
        tokens = self.run_views(batch, generator)
        student = self.head(tokens.student[0][:, :, 0])  # (B, 2, 8)
        with torch.no_grad():
            teacher = self.teacher_head(tokens.teacher[:, :, 0])
        loss = distillation_cross_entropy(teacher.flip(1), student, self.teacher_temp_now()).mean()
        return loss, {}


def image_data():
    data = np.random.default_rng(0).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    modality = build_modality(resolve_config(modality="image", pretext="part",
                                             overrides=["modality.image_size=16", "modality.patch_size=4"]))
    return modality, modality.load(data)


def series_data():
    data = np.random.default_rng(0).standard_normal((2, 3, 400)).astype(np.float32)
    overrides = ["modality.sfreq=100", "modality.window_s=2", "modality.stride_s=1", "modality.patch_s=0.5"]
    modality = build_modality(resolve_config(modality="timeseries", pretext="part", overrides=overrides))
    return modality, modality.load(data)


def two_view(modality, windows, **options):
    config = TwoViewConfig(**{"n_local": 0, **options})
    return TwoView(config, modality, EncoderConfig(dim=32, depth=1, heads=2, pos_embed="sincos"), windows)


def test_an_assembled_pretext_trains_the_student_and_its_teacher_follows_by_the_momentum():
    modality, windows = image_data()
    pretext = two_view(modality, windows)
    pretext.set_progress(0, 10)
    loss, _ = pretext({"x": windows.x}, torch.Generator().manual_seed(0))
    loss.backward()
    assert math.isfinite(loss.item())
    assert pretext.encoder.patch_embed.weight.grad is not None and pretext.head.weight.grad is not None
    teacher = [*pretext.teacher_encoder.parameters(), *pretext.teacher_head.parameters()]
    assert all(not p.requires_grad and p.grad is None for p in teacher)
    encoder_before = pretext.teacher_encoder.patch_embed.weight.clone()
    head_before = pretext.teacher_head.weight.clone()
    with torch.no_grad():
        pretext.encoder.patch_embed.weight.add_(1.0)
        pretext.head.weight.add_(1.0)
    pretext.after_step(1)  # the momentum of step 0 is 0.996: the teacher moves 0.004 of the way
    for moved in (pretext.teacher_encoder.patch_embed.weight - encoder_before, pretext.teacher_head.weight - head_before):
        torch.testing.assert_close(moved, torch.full_like(moved, 0.004), atol=1e-6, rtol=0)


def test_schedules_are_read_from_the_config_at_the_loops_progress():
    modality, windows = image_data()
    pretext = two_view(modality, windows)
    assert pretext.config.teacher_temp_warmup == 0.5  # schedule_setting's own default, not DINO's 0.3
    pretext.set_progress(5, 20)  # warm-up over 10 steps: half-way from 0.04 to 0.07
    assert pretext.teacher_temp_now() == pytest.approx(0.055)
    pretext.set_progress(10, 20)  # half-way along the cosines: the means of their ends
    assert pretext.momentum_now() == pytest.approx(0.998)
    assert pretext.weight_decay_at(10, 20) == pytest.approx(0.22)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"teacher_momentum": 1.5}, "'pretext.teacher_momentum': allowed a finite number >= 0 and <= 1, got 1.5."),
        ({"student_temp": 0.0}, "'pretext.student_temp': allowed a finite number >= 0.001 and <= 10, got 0.0."),
        ({"n_global": 1}, "Two-view compares different views, so it needs at least 2 views per sample; "
                          "got n_global=1 and n_local=0."),
        ({"global_scale": (0.1, 0.2), "local_scale": (0.3, 0.4), "n_local": 1},
         "'pretext.local_scale' [0.3, 0.4] exceeds 'pretext.global_scale' [0.1, 0.2]."),
    ],
)
def test_bad_settings_are_one_sentence_naming_the_setting(options, message):
    with pytest.raises(ConfigError) as raised:
        TwoViewConfig(**{"n_local": 0, **options}).validate()
    assert message in str(raised.value)


def test_a_method_that_needs_two_windows_says_why_when_given_one():
    modality, windows = image_data()
    one = Windows(x=windows.x[:1])
    two_view(modality, one)  # a method that states no need trains on a single window

    class Centred(TwoView):
        needs_two_windows = "its centre is a mean over different samples"

    with pytest.raises(DataError) as raised:
        Centred(TwoViewConfig(n_local=0), modality, EncoderConfig(dim=32, depth=1, heads=2, pos_embed="sincos"), one)
    assert str(raised.value) == (
        "Pretext 'two-view-test' needs at least 2 windows to train on (its centre is a mean over different "
        "samples), but the data holds 1; give it more data or shorter windows."
    )


def test_the_teacher_reads_the_global_views_whole_while_the_student_reads_the_mask_token():
    modality, windows = image_data()
    pretext = two_view(modality, windows)
    mask_token = nn.Parameter(torch.zeros(32))
    whole = pretext.run_views({"x": windows.x}, torch.Generator().manual_seed(3))
    # the teacher is a copy of the student: on the same views, the same tokens
    assert whole.token_mask is None and torch.equal(whole.student[0], whole.teacher)

    def first_token_of_every_view(views, generator):
        mask = torch.zeros(views.batch_size, views.n_views, views.n_tokens, dtype=torch.bool)
        mask[:, :, 0] = True
        return mask

    masked = pretext.run_views({"x": windows.x}, torch.Generator().manual_seed(3), first_token_of_every_view, mask_token)
    assert masked.token_mask[:, :, 0].all() and masked.token_mask.sum() == 4 * 2
    assert torch.equal(masked.teacher, whole.teacher)
    assert not torch.equal(masked.student[0], whole.student[0])


def test_token_counts_of_resampled_and_native_views_by_hand():
    # 16-px images, 4-px patches: global views at 16 px hold 4 × 4 tokens; local views at 96/224 · 16 ≈ 6.9 px,
    # rounded to 2 whole patches, hold 2 × 2
    modality, windows = image_data()
    pretext = two_view(modality, windows, n_local=2)
    assert pretext.view_token_counts() == (16, 4) and pretext.fewest_global_tokens() == 16
    # 2-s windows at 100 Hz (200 samples), 0.5-s patches (50): the longest global crop (100 %) holds 4
    # patches, the shortest (60 %, 120 samples) 2, the longest local one (30 %, 60 samples) 1
    modality, windows = series_data()
    pretext = two_view(modality, windows, n_local=2)
    assert pretext.view_token_counts() == (4, 1) and pretext.fewest_global_tokens() == 2
    assert "each sample makes up to 14 tokens, 2 global views of 5 and 2 local views of 2" in pretext.memory_hint(4)


#: The names a run of each built-in saved before the student–teacher skeleton existed (besides
#: ``encoder.*`` and ``teacher_encoder.*``), in the order the optimiser holds their trainable ones:
#: older checkpoints load, and resume, only while these stay.
DINO_HEAD = ["head.mlp.0.weight", "head.mlp.0.bias", "head.mlp.2.weight", "head.mlp.2.bias", "head.mlp.4.weight",
             "head.mlp.4.bias", "head.last_layer.parametrizations.weight.original0",
             "head.last_layer.parametrizations.weight.original1"]
SAVED_NAMES = {
    "dino": [*DINO_HEAD, *("teacher_" + n for n in DINO_HEAD), "centering.center"],
    "pw-self": [*DINO_HEAD, *("teacher_" + n for n in DINO_HEAD), "centering.center"],
    "sove": ["mask_token", *DINO_HEAD[:6], *("teacher_" + n for n in DINO_HEAD[:6]),
             *(f"{bank}.{n}" for bank in ("cls_memory", "patch_memory") for n in ("embeddings", "pointer", "count"))],
}


@pytest.mark.parametrize("name", sorted(SAVED_NAMES))
def test_checkpoints_of_the_built_ins_keep_the_names_older_runs_saved(name):
    overrides = ["encoder.dim=32", "encoder.depth=1", "encoder.heads=2", "pretext.head_hidden_dim=32",
                 "pretext.head_bottleneck_dim=16", "modality.image_size=16", "modality.patch_size=4"]
    config = resolve_config(modality="image", pretext=name, overrides=overrides)
    modality = build_modality(config)
    images = np.random.default_rng(0).integers(0, 256, size=(8, 16, 16, 3), dtype=np.uint8)
    pretext = build_pretext(config, modality, modality.load(images))
    state = pretext.state_dict()
    own = [k for k in state if not k.startswith(("encoder.", "teacher_encoder."))]
    assert sorted(own) == sorted(SAVED_NAMES[name])
    assert sorted(k[len("teacher_"):] for k in state if k.startswith("teacher_encoder.")) == sorted(
        k for k in state if k.startswith("encoder."))
    trainable = [n for n, p in pretext.named_parameters() if p.requires_grad and not n.startswith("encoder.")]
    assert trainable == [n for n in SAVED_NAMES[name] if not n.startswith(("teacher_", "centering", "cls_", "patch_"))
                         and not n.endswith("original0")]

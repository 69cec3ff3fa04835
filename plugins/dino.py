"""DINO: self-distillation with no labels, on multi-crop views of any modality.

The method of "Emerging properties in self-supervised vision transformers" (Caron et al., 2021), as
PW-Self's Eq. 7 writes its loss. Every sample gives ``n_global`` global views and ``n_local`` local
views (:mod:`relpos.views`). The student (encoder + :class:`relpos.blocks.DINOHead`) reads every
view; the teacher, an EMA of the student, reads the global views only. With ``P = softmax`` of the
head's outputs, the teacher centred and sharpened, the loss is the mean over the batch and over every
(teacher view i, student view j) pair with ``i ≠ j`` of the cross-entropy ``H(P_t^i, P_s^j)`` of the
CLS outputs. The skeleton (EMA teacher, views, schedules) is the core's
:class:`relpos.student_teacher.StudentTeacher`; DINO adds its head, the centring and this loss.

Schedules follow DINO and are functions of (step, total steps): teacher momentum 0.996 → 1 on a
cosine, teacher temperature 0.04 → 0.07 over the first 30 % of the run, weight decay 0.04 → 0.4 on a
cosine, the last layer frozen for the first ``freeze_last_layer`` steps. The centre is updated with
the teacher's CLS outputs after each optimiser step (the loss of a step uses the centre from before
it, as in DINO).

Views: images default to DINO's multi-crop (global scale 0.4–1 at the image size, local scale
0.05–0.4 at 96/224 of it, horizontal flips); time series to crops at native resolution (global 0.6–1
of the window, local 0.1–0.3), never flipped. Evaluation reads the student's encoder (``relpos
eval``'s default); the DINO paper evaluates the teacher, whose encoder the checkpoint holds too
(``teacher_encoder.*``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from relpos import hookimpl
from relpos.blocks import MIN_CLASSES, Centering, DINOHead, distillation_cross_entropy, off_diagonal
from relpos.config import MAX_STEPS, setting
from relpos.student_teacher import MultiCropConfig, StudentTeacher, schedule_setting
from relpos.trivial_baseline import BASELINE_KEY


@dataclass
class DINOConfig(MultiCropConfig):
    """Options of the DINO pretext (paper defaults unless noted): the views of
    :class:`relpos.student_teacher.MultiCropConfig`, then the head, centring and schedules."""

    method_name: ClassVar[str] = "DINO"

    # head outputs K; 65536 in the paper; at least 2 (with one, every probability is 1 and the loss 0)
    out_dim: int = setting(4096, ge=MIN_CLASSES, le=2**20)
    head_hidden_dim: int = setting(2048, ge=1, le=2**16)
    head_bottleneck_dim: int = setting(256, ge=1, le=2**16)
    head_layers: int = setting(3, ge=1, le=16)
    norm_last_layer: bool = setting(True)
    head_bn: bool = setting(False)  # batch norm in the head's hidden layers (DINO's use_bn_in_head)
    # steps during which the head's last layer gets no gradient
    freeze_last_layer: int = setting(0, ge=0, le=MAX_STEPS)
    teacher_momentum: float = schedule_setting("teacher_momentum")
    center_momentum: float = setting(0.9, ge=0, le=1)
    warmup_teacher_temp: float = schedule_setting("warmup_teacher_temp")
    teacher_temp: float = schedule_setting("teacher_temp")
    teacher_temp_warmup: float = schedule_setting("teacher_temp_warmup")
    student_temp: float = schedule_setting("student_temp")
    weight_decay: float = schedule_setting("weight_decay")
    weight_decay_end: float = schedule_setting("weight_decay_end")


class DINO(StudentTeacher):
    """DINO: self-distillation between the CLS outputs of multi-crop views (EMA teacher, centring)."""

    name = "dino"
    Config = DINOConfig
    # loss_baseline: the cross-entropy of a uniform student, log K (relpos.trivial_baseline)
    log_keys = (BASELINE_KEY, "teacher_temp", "momentum")
    needs_two_windows = "its teacher centres over a batch of different samples"

    def __init__(self, config, modality, encoder_config, data):
        super().__init__(config, modality, encoder_config, data)
        self.centering = Centering(config.out_dim, config.center_momentum)
        self._pending_center: torch.Tensor | None = None

    def build_head(self, dim: int) -> nn.Module:
        c = self.config
        return DINOHead(dim, c.out_dim, c.head_hidden_dim, c.head_bottleneck_dim, c.head_layers,
                        c.norm_last_layer, use_bn=c.head_bn)

    def after_step(self, step: int) -> None:
        super().after_step(step)  # the EMA teacher
        if self._pending_center is not None:
            self.centering.update(self._pending_center)
            self._pending_center = None

    # -- loss ---------------------------------------------------------------------------------------
    def forward(self, batch, generator):
        tokens = self.run_views(batch, generator)
        freeze = self.progress_step < self.config.freeze_last_layer
        student_cls = torch.cat([s[:, :, 0] for s in tokens.student], dim=1)  # (B, V, dim)
        student_out = self.head(student_cls, freeze_last_layer=freeze)
        with torch.no_grad():
            teacher_out = self.teacher_head(tokens.teacher[:, :, 0])  # (B, n_global, K)
        temp = self.teacher_temp_now()
        loss = self.cls_loss(teacher_out, student_out, temp)
        self._pending_center = teacher_out.detach()
        return loss, {BASELINE_KEY: self.uniform_ce(), "teacher_temp": temp, "momentum": self.momentum_now()}

    def uniform_ce(self) -> float:
        """The cross-entropy of a uniform student against any teacher distribution: log K.

        DINO's trivial baseline: a student that has learned nothing (or a teacher collapsed to the
        uniform distribution) scores exactly this.
        """
        return math.log(self.config.out_dim)

    def cls_loss(self, teacher_out: torch.Tensor, student_out: torch.Tensor, temp: float) -> torch.Tensor:
        """Eq. 7: mean over samples and (i, j ≠ i) pairs of H(P_t^i, P_s^j)."""
        centred = self.centering(teacher_out)
        # (B, n_teacher, n_student) cross-entropies of every pair, from one broadcast
        ce = distillation_cross_entropy(centred[:, :, None], student_out[:, None, :], temp, self.config.student_temp)
        return off_diagonal(ce).mean()


@hookimpl
def register_pretexts(register):
    register(DINO)

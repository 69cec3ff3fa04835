"""PW-Self: DINO plus self-distillation between *matched* patch tokens of different views.

The method of "PW-Self: Patch-Wise Self-Supervised Visual Representation Learning" (Javidani,
Sadeghi and Araabi):
DINO's multi-crop self-distillation (:mod:`relpos_plugins.dino`), where for every (teacher global
view i, student view j ≠ i) pair the cross-entropy also runs between the tokens that cover the same
region of the sample. Which tokens match is the paper's patch-matching algorithm (§3.4, Eqs. 1–6),
:func:`relpos.views.match_tokens`, per sample and vectorised; CLS always matches CLS, and views that
do not overlap match only their CLS. Patch tokens go through the same projection head as CLS, and
are centred with the same centre C (the paper's single C, the EMA of the teacher's CLS outputs).
As the paper's method is DINO plus patch matching, :class:`PWSelf` extends
:class:`relpos_plugins.dino.DINO` and only adds to it: the patch terms of the loss, patch-level
augmentation (the ``augment_patches`` hook of :class:`relpos.student_teacher.StudentTeacher`) and
its own warm-up default.

Losses over the ``p = 0 … P`` matched pairs of a view pair (p = 0 is CLS), averaged over samples
and view pairs as Eq. 7 is:

* ``mean`` (Eq. 8, the default): ``Σ_p H(g[p], l[p]) / (P + 1)``;
* ``sum`` (Eq. 9): ``Σ_p H(g[p], l[p])``;
* ``lambda`` (Eq. 10): ``λ · H(g[0], l[0]) + (1 − λ) · Σ_{p ≥ 1} H(g[p], l[p]) / P``, with
  ``λ = cls_weight`` (0.2, the paper's best). Eq. 10 divides by zero when no patch matches; then the
  pair contributes ``H(g[0], l[0])`` alone, as Eqs. 8 and 9 do.

Patch-level augmentation (§3.3) is on by default (``patch_augment``; the paper's ablation §5.4 turns
it off): after the per-view recipe, every patch independently draws a selection of the modality's
photometric operators.

The teacher temperature warms up from 0.04 to 0.07 over the first 15 % of the run
(``teacher_temp_warmup: 0.15``): the paper's 30 of its 200 epochs (§4), where DINO's 30 % default
comes from 30 of 100 epochs.

Differences from the paper's official code, where the paper is followed: the official code gives
every image of a batch the same crop so that matching runs once per batch in Python; here every
sample has its own crops and the matching is vectorised over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from relpos import hookimpl
from relpos.config import setting
from relpos.errors import ConfigError, did_you_mean
from relpos.student_teacher import schedule_setting
from relpos.trivial_baseline import BASELINE_KEY
from relpos.views import match_tokens
from relpos_plugins.dino import DINO, DINOConfig

LOSSES = ("mean", "sum", "lambda")


@dataclass
class PWSelfConfig(DINOConfig):
    """Options of PW-Self: DINO's, plus the patch-wise loss and patch-level augmentation."""

    loss: str = setting("mean", choices=LOSSES)  # mean (Eq. 8) | sum (Eq. 9) | lambda (Eq. 10)
    cls_weight: float = setting(0.2, ge=0, le=1)  # λ of Eq. 10: the CLS term's weight
    patch_augment: bool = setting(True)  # PW-Self's patch-level photometric augmentation (§3.3)
    # fraction of the run over which the teacher temperature warms up: the paper's 30 of 200 epochs
    teacher_temp_warmup: float = schedule_setting("teacher_temp_warmup", 0.15)

    def validate(self) -> None:
        super().validate()
        if self.loss not in LOSSES:
            raise ConfigError(
                f"Invalid value for 'pretext.loss': {self.loss!r}.{did_you_mean(self.loss, LOSSES)} "
                f"Allowed: {', '.join(LOSSES)}."
            )
        if not 0.0 <= self.cls_weight <= 1.0:
            raise ConfigError(f"'pretext.cls_weight' (λ of Eq. 10) must lie in [0, 1], got {self.cls_weight}.")


def _take(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tokens[b, index[b, m]]`` for ``(B, N, K)`` tokens and ``(B, M)`` indices."""
    return tokens.gather(1, index.unsqueeze(-1).expand(*index.shape, tokens.shape[-1]))


class PWSelf(DINO):
    """PW-Self: DINO plus cross-entropy between matched patch tokens of different views."""

    name = "pw-self"
    Config = PWSelfConfig
    log_keys = (BASELINE_KEY, "teacher_temp", "momentum", "cls_ce", "matched")

    def __init__(self, config, modality, encoder_config, data):
        super().__init__(config, modality, encoder_config, data)
        if not getattr(self.encoder, "per_token_outputs", True):
            raise ConfigError(
                f"Pretext 'pw-self' matches patch tokens across views, so it needs an encoder with "
                f"per-token outputs; {type(self.encoder).__name__} gives one vector per view."
            )

    def head_memory_clause(self) -> str:
        return f", every one projected to pretext.out_dim={self.config.out_dim} values"

    def augment_patches(self, patches, generator):
        if not self.config.patch_augment:
            return patches
        out = []
        for group, chunk in enumerate(patches):
            batch, n_views = chunk.shape[:2]
            flat = chunk.reshape(batch * n_views, *chunk.shape[2:])
            flat = self.modality.photometric(flat, generator, "local" if group else "global-1", True)
            out.append(flat.reshape(chunk.shape))
        return out

    def forward(self, batch, generator):
        c = self.config
        groups, student, teacher, _ = self.run_views(batch, generator)
        freeze = self.progress_step < c.freeze_last_layer
        student_logp = [F.log_softmax(self.head(s, freeze_last_layer=freeze).float() / c.student_temp, -1)
                        for s in student]  # per group (B, V, 1 + N, K)
        with torch.no_grad():
            teacher_out = self.teacher_head(teacher).float()  # (B, n_global, 1 + N, K)
            temp = self.teacher_temp_now()
            teacher_p = F.softmax(self.centering(teacher_out) / temp, dim=-1)
        terms, cls_terms, matched, uniform_terms = [], [], [], []
        uniform = self.uniform_ce()
        for i in range(teacher_out.shape[1]):
            teacher_view = groups[0].select(i)
            for g, views in enumerate(groups):
                for v in range(views.n_views):
                    if g == 0 and v == i:
                        continue  # the same view seen by teacher and student
                    match = match_tokens(teacher_view, views.select(v))
                    t, s = teacher_p[:, i], student_logp[g][:, v]
                    cls_ce = -(t[:, 0] * s[:, 0]).sum(-1)  # (B,)
                    patch_ce = -(_take(t[:, 1:], match.index_a) * _take(s[:, 1:], match.index_b)).sum(-1)
                    patch_sum = (patch_ce * match.mask).sum(-1)
                    count = match.count.to(patch_sum.dtype)
                    terms.append(self.combine(cls_ce, patch_sum, count))
                    # The trivial baseline: a uniform student scores log K on every CLS and patch term.
                    uniform_terms.append(self.combine(torch.full_like(cls_ce, uniform), uniform * count, count))
                    cls_terms.append(cls_ce.detach())
                    matched.append(count)
        loss = torch.stack(terms).mean()
        self._pending_center = teacher_out[:, :, 0].detach()
        logs = {
            BASELINE_KEY: torch.stack(uniform_terms).mean().detach(),
            "teacher_temp": temp,
            "momentum": self.momentum_now(),
            "cls_ce": torch.stack(cls_terms).mean(),
            "matched": torch.stack(matched).mean().detach(),
        }
        return loss, logs

    def combine(self, cls_ce: torch.Tensor, patch_sum: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """One view pair's loss per sample from its CLS term, summed patch terms and match count."""
        if self.config.loss == "mean":  # Eq. 8
            return (cls_ce + patch_sum) / (1 + count)
        if self.config.loss == "sum":  # Eq. 9
            return cls_ce + patch_sum
        lam = self.config.cls_weight  # Eq. 10
        patch_mean = patch_sum / count.clamp(min=1)
        return torch.where(count > 0, lam * cls_ce + (1 - lam) * patch_mean, cls_ce)


@hookimpl
def register_pretexts(register):
    register(PWSelf)

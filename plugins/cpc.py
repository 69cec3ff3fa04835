"""Contrastive predictive coding (CPC) over the windows of a recording.

The third task of Banville et al. (J. Neural Eng. 2021, §2.3.3), after van den Oord et al.,
"Representation learning with contrastive predictive coding" (2018). Each sample is, from one
recording, ``N_c`` consecutive context windows, the ``N_p`` windows that follow them, and ``N_b``
negative windows drawn uniformly among the recording's other windows
(:class:`relpos_plugins.recording_requests.SequenceWithNegatives`):

* every window is embedded by the run's encoder, one vector ``h`` each, standardised per feature
  over the batch's windows (a batch norm without affine parameters or running statistics; under
  torchrun over the global batch, every process's windows, with gradients through the statistics
  as in one process). Our addition: a ViT's CLS vectors differ little from window to window at
  initialisation, so without it every candidate scores alike, the context carries nothing, and the
  loss stays at ln(N_b + 1) (on the sleep night and on a toy recording whose frequency drifts in
  time alike);
* a GRU reads the context embeddings in time order; its last output is the context ``c_t``;
* one bilinear map ``W_k`` per future step scores each candidate ``x_j`` with ``h(x_j)ᵀ W_k c_t``;
* the loss is InfoNCE: for each sample and step ``k``, the cross-entropy of picking the true window
  ``x_{t+k}`` among it and the sample's ``N_b`` negatives, averaged over samples and steps.

The sequence's order is read from the onsets in the batch (its ``N_c + N_p`` windows are sorted
by onset), not assumed from the sampler. ``loss_baseline`` is ``ln(N_b + 1)``, the loss of a uniform
guess among the candidates; ``accuracy`` is the share of (sample, step) where the true window scores
highest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from relpos import hookimpl
from relpos.config import check_fields, setting
from relpos.distributed import all_reduce_sum, all_reduce_sum_with_grad
from relpos.trivial_baseline import BASELINE_KEY

from relpos_plugins.rp import RecordingPretext


@dataclass
class CPCConfig:
    """Options of contrastive predictive coding over windows (Banville et al. 2021, §2.3.3)."""

    # N_c: consecutive windows the GRU reads to form the context
    n_context: int = setting(7, ge=1, le=256)
    # N_p: the windows after the context, each predicted from it with its own W_k
    n_predict: int = setting(2, ge=1, le=64)
    # N_b: negative windows per sample, drawn from the same recording outside its sequence
    n_negatives: int = setting(10, ge=1, le=1024)

    def validate(self) -> None:
        check_fields(self, "pretext")


def infonce_logits(future: torch.Tensor, negatives: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """``(B, N_p, 1 + N_b)`` scores of the candidates of each sample and step, the true window first.

    ``future`` is ``(B, N_p, F)``, ``negatives`` ``(B, N_b, F)`` and ``predictions`` ``(B, N_p, F)``
    (``W_k c_t`` for each step ``k``).
    """
    positive = (future * predictions).sum(-1, keepdim=True)
    negative = torch.einsum("bnf,bkf->bkn", negatives, predictions)
    return torch.cat([positive, negative], dim=-1)


def standardize_over_batch(h: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``(N, F)`` vectors standardised per feature over the rows of the global batch.

    Subtracts each feature's mean and divides by the square root of its biased variance plus
    ``eps`` (``nn.BatchNorm1d(F, affine=False)`` in training mode, up to rounding). Under torchrun
    the statistics are those of every process's rows, differentiable, so two processes give one
    process's loss. One formula for any number of processes: the batch-norm kernel, which one
    process could use, rounds differently, and CPC's training carries that difference into later
    steps beyond the reassociation of two processes' sums.
    """
    count = all_reduce_sum(torch.tensor(float(h.shape[0]), dtype=h.dtype, device=h.device))
    mean = all_reduce_sum_with_grad(h.sum(0)) / count
    centred = h - mean
    variance = all_reduce_sum_with_grad(centred.square().sum(0)) / count
    return centred * torch.rsqrt(variance + eps)


class ContrastivePredictiveCoding(RecordingPretext):
    """CPC: predict the next windows of a recording from a GRU context, against negative windows."""

    name = "cpc"
    Config = CPCConfig
    log_keys = (BASELINE_KEY, "accuracy")

    def __init__(self, config, modality, encoder_config, data):
        from relpos_plugins.recording_requests import SequenceWithNegatives

        super().__init__(config, modality, encoder_config, data)
        self.window_request = SequenceWithNegatives(config.n_context + config.n_predict, config.n_negatives)
        dim = int(self.encoder.feature_dim)
        self.context = nn.GRU(dim, dim, batch_first=True)
        self.predictors = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(config.n_predict))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Runs saved before the standardisation became a function hold nn.BatchNorm1d's running
        # statistics, which nothing read (training mode only): resume and show them without those.
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            state_dict.pop(f"{prefix}standardize.{key}", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, batch, generator):
        n_context, n_predict, n_negatives = self.config.n_context, self.config.n_predict, self.config.n_negatives
        n_sequence = n_context + n_predict
        x, onsets = self.windows_of(batch, n_sequence + n_negatives)
        h = self.embed_windows(x).float()
        h = standardize_over_batch(h.flatten(0, 1)).reshape(h.shape)
        order = onsets[:, :n_sequence].argsort(dim=1, stable=True)
        sequence = h[:, :n_sequence].gather(1, order.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        _, last = self.context(sequence[:, :n_context])
        c_t = last[-1]  # (B, F): the GRU's state after the last context window
        predictions = torch.stack([w(c_t) for w in self.predictors], dim=1)
        logits = infonce_logits(sequence[:, n_context:], h[:, n_sequence:], predictions)
        target = torch.zeros(logits.shape[:2], dtype=torch.long, device=logits.device)
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten())
        with torch.no_grad():
            accuracy = (logits.argmax(-1) == 0).float().mean()
        return loss, {BASELINE_KEY: math.log(n_negatives + 1), "accuracy": accuracy}

    def memory_hint(self, batch_size: int) -> str | None:
        c = self.config
        return (
            f"lower train.batch_size (now {batch_size}; the encoder reads {c.n_context + c.n_predict + c.n_negatives} "
            f"windows per sample), pretext.n_negatives (now {c.n_negatives}) or pretext.n_context (now {c.n_context})"
        )


@hookimpl
def register_pretexts(register):
    register(ContrastivePredictiveCoding)

"""Self-distillation building blocks shared by several pretexts (public API).

DINO, PW-Self and SOVE are assembled from the same few parts, kept here with the DINO paper's
defaults in their signatures (as lightly's ``DINOProjectionHead``, ``DINOLoss`` and
``update_momentum`` are) so that a third-party pretext is assembled, not copied:

* schedules as pure functions of ``(step, total_steps)``: :func:`cosine_schedule`,
  :func:`teacher_momentum`, :func:`teacher_temperature`, :func:`weight_decay_schedule`. Nothing
  is counted inside a module, so a resumed run computes the same values as an uninterrupted one;
* the EMA teacher: :func:`make_teacher` and :func:`update_teacher` (parameters only, after the
  optimiser step);
* :class:`DINOHead`, the 3-layer projection head with a weight-normalised last layer;
* :class:`Centering`, the teacher's centre as a persistent (checkpointed) buffer, averaged across
  processes by :func:`relpos.distributed.all_reduce_mean` when training is distributed;
* :func:`distillation_cross_entropy`, ``H(P_t, P_s)`` of centred, sharpened teacher outputs and
  student outputs, per token; :func:`off_diagonal`, the pairs of different views of a cross-entropy table.

:mod:`relpos.student_teacher` puts them together: the student–teacher skeleton those pretexts extend.

``step`` always counts optimiser steps already taken (0 before the first one), as the training loop
reports it through :meth:`relpos.pretext.Pretext.set_progress`; ``total_steps`` is the run's length.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import all_reduce_mean  # re-exported: pretexts may import it from here
from .errors import ConfigError


#: The temperatures a pretext's config accepts for a softmax over cosine-like logits (DINO's and
#: PW-Self's teacher and student, SOVE's, DropPos's attentive weights): the papers use 0.04 to 0.1.
#: Logits of L2-normalised embeddings lie in [-1, 1], so 1e-3 already spreads them over ±1000 (a
#: one-hot softmax); far smaller values overflow to inf and the loss is NaN at step 1 (1e-300),
#: and beyond 10 every softmax is within 20 % of uniform.
TEMPERATURE_RANGE = {"ge": 1e-3, "le": 10}
#: The fewest outputs or concepts a softmax may have: with one, every probability is 1 and the
#: cross-entropy is 0 whatever the model does (DINO's ``out_dim``, SOVE's anchors and memories).
MIN_CLASSES = 2


# -- schedules ------------------------------------------------------------------------------------
def cosine_schedule(step: int, total_steps: int, start: float, end: float) -> float:
    """Half a cosine from ``start`` (step 0) to ``end`` (step ``total_steps``).

    ``end + (start − end) · (1 + cos(π · step / total_steps)) / 2``, DINO's ``cosine_scheduler``
    evaluated at one step; steps past the end stay at ``end``.
    """
    if total_steps <= 0:
        return float(end)
    progress = min(max(step, 0), total_steps) / total_steps
    return float(end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def teacher_momentum(step: int, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """EMA momentum of the teacher: a cosine from 0.996 to 1 over the run (DINO)."""
    return cosine_schedule(step, total_steps, start, end)


def weight_decay_schedule(step: int, total_steps: int, start: float = 0.04, end: float = 0.4) -> float:
    """Weight decay on a cosine from 0.04 to 0.4 over the run (DINO)."""
    return cosine_schedule(step, total_steps, start, end)


def teacher_temperature(
    step: int, total_steps: int, start: float = 0.04, end: float = 0.07, warmup_fraction: float = 0.3
) -> float:
    """Teacher temperature: linear from ``start`` to ``end`` over the first ``warmup_fraction`` of the run.

    DINO warms up over 30 of 100 epochs (hence 0.3) and keeps ``end`` afterwards.
    """
    warmup_steps = warmup_fraction * total_steps
    if warmup_steps <= 0:
        return float(end)
    progress = min(max(step, 0) / warmup_steps, 1.0)
    return float(start + (end - start) * progress)


# -- EMA teacher -----------------------------------------------------------------------------------
def check_momentum(value: float, name: str) -> None:
    """Raise :class:`ConfigError` unless ``0 <= value <= 1``."""
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"Invalid value for '{name}': a teacher momentum must lie in [0, 1], got {value}.")


def make_teacher(student: nn.Module) -> nn.Module:
    """A copy of ``student`` that receives no gradient (its parameters have ``requires_grad=False``)."""
    teacher = copy.deepcopy(student)
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


@torch.no_grad()
def update_teacher(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """EMA of the parameters: ``θ_t ← m · θ_t + (1 − m) · θ_s`` (buffers are left alone).

    Call it after the optimiser step. ``student`` and ``teacher`` must have the same parameters in
    the same order (as :func:`make_teacher` gives).
    """
    teacher_params = list(teacher.parameters())
    student_params = [p.detach() for p in student.parameters()]
    if len(teacher_params) != len(student_params):
        raise ValueError("update_teacher needs a teacher with the student's parameters (see make_teacher).")
    torch._foreach_mul_(teacher_params, momentum)
    torch._foreach_add_(teacher_params, student_params, alpha=1.0 - momentum)


# -- projection head -------------------------------------------------------------------------------
class DINOHead(nn.Module):
    """DINO's projection head: an MLP, L2 normalisation and a weight-normalised last layer.

    ``in_dim → hidden_dim → hidden_dim → bottleneck_dim`` (GELU between, ``n_layers`` linear layers
    in all), then ``z / ‖z‖`` and a bias-free linear layer of ``out_dim`` outputs written as
    ``g · v / ‖v‖`` per output. With ``norm_last_layer`` the scale ``g`` is fixed at 1 (DINO's
    default, which stabilises training), so every output is a cosine and lies in [−1, 1].

    Parameters
    ----------
    in_dim, out_dim : int
    hidden_dim : int
        Width of the hidden layers (2048 in DINO).
    bottleneck_dim : int
        Width before the last layer (256 in DINO).
    n_layers : int
        Linear layers of the MLP (3 in DINO; 1 maps straight to the bottleneck).
    norm_last_layer : bool
        Fix the last layer's weight norm at 1.
    use_bn : bool
        Batch normalisation after each hidden linear layer (DINO's ``use_bn_in_head``, off by
        default for ViTs): statistics over every sample, view and token of the batch.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        n_layers: int = 3,
        norm_last_layer: bool = True,
        use_bn: bool = False,
    ):
        super().__init__()
        if n_layers < 1:
            raise ConfigError(f"Invalid value for 'head_layers': at least 1, got {n_layers}.")
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < n_layers - 1:
                if use_bn:
                    layers.append(_TokenBatchNorm(b))
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        scale = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            scale.fill_(1.0)
        scale.requires_grad_(not norm_last_layer)
        self.norm_last_layer = norm_last_layer
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor, freeze_last_layer: bool = False) -> torch.Tensor:
        """Project ``(..., in_dim)`` to ``(..., out_dim)``.

        With ``freeze_last_layer`` the last layer is applied with detached weights, so it receives
        no gradient and the optimiser leaves it untouched (DINO cancels its gradients during the
        first epoch).
        """
        z = F.normalize(self.mlp(x), dim=-1)
        weight = self.last_layer.weight
        if freeze_last_layer:
            weight = weight.detach()
        return F.linear(z, weight)


class _TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over every leading index of a ``(..., C)`` tensor (samples, views and tokens alike)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


# -- centring ----------------------------------------------------------------------------------------
class Centering(nn.Module):
    """The teacher's centre ``C``: an EMA of the mean teacher output (DINO's collapse guard).

    ``C ← m · C + (1 − m) · mean(teacher outputs)`` with ``m = 0.9``; the mean is taken over the
    batch (and over processes when distributed). ``C`` is a persistent buffer, so it is saved in
    checkpoints and a resumed run centres exactly as an uninterrupted one.
    """

    def __init__(self, out_dim: int, momentum: float = 0.9):
        super().__init__()
        check_momentum(momentum, "center_momentum")
        self.momentum = float(momentum)
        self.register_buffer("center", torch.zeros(1, out_dim))

    @torch.no_grad()
    def update(self, teacher_output: torch.Tensor) -> None:
        """Fold in ``(..., out_dim)`` teacher outputs (every leading index counts as one row)."""
        batch_center = teacher_output.detach().reshape(-1, teacher_output.shape[-1]).float().mean(0, keepdim=True)
        batch_center = all_reduce_mean(batch_center)
        self.center.mul_(self.momentum).add_(batch_center, alpha=1.0 - self.momentum)

    def forward(self, teacher_output: torch.Tensor) -> torch.Tensor:
        """``teacher_output − C``."""
        return teacher_output - self.center.to(teacher_output.dtype)


def distillation_cross_entropy(
    teacher_output: torch.Tensor,
    student_output: torch.Tensor,
    teacher_temp: float,
    student_temp: float = 0.1,
) -> torch.Tensor:
    """``H(P_t, P_s) = −Σ_k P_t,k · log P_s,k`` per row, with the teacher detached.

    Parameters
    ----------
    teacher_output : torch.Tensor
        ``(..., K)`` teacher outputs, already centred (see :class:`Centering`).
    student_output : torch.Tensor
        ``(..., K)`` student outputs.
    teacher_temp, student_temp : float
        ``P_t = softmax(t / τ_t)`` (sharpening), ``P_s = softmax(s / τ_s)``.

    Returns
    -------
    torch.Tensor
        ``(...)`` cross-entropies in nats.
    """
    teacher_probs = F.softmax(teacher_output.detach().float() / teacher_temp, dim=-1)
    student_log_probs = F.log_softmax(student_output.float() / student_temp, dim=-1)
    return -(teacher_probs * student_log_probs).sum(-1)


_OFF_DIAGONAL: dict[tuple[int, int, torch.device], torch.Tensor] = {}


def off_diagonal(values: torch.Tensor) -> torch.Tensor:
    """``values[..., i, j]`` for every ``i ≠ j`` of ``(..., n, m)`` values, flattened in row-major order.

    What ``values[..., ~torch.eye(n, m, dtype=torch.bool)]`` gives (so a mean over them is the same
    number), through an index built on the host once per shape and device: indexing by a boolean mask
    makes a GPU report the mask's count to the host, a wait in every step.
    """
    n, m = values.shape[-2:]
    key = (n, m, values.device)
    index = _OFF_DIAGONAL.get(key)
    if index is None:
        index = torch.tensor([i * m + j for i in range(n) for j in range(m) if i != j], dtype=torch.long)
        index = _OFF_DIAGONAL[key] = index.to(values.device)
    return values.flatten(-2)[..., index]

"""Self-distillation building blocks against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from relpos.blocks import (
    Centering,
    DINOHead,
    check_momentum,
    cosine_schedule,
    distillation_cross_entropy,
    make_teacher,
    teacher_momentum,
    teacher_temperature,
    update_teacher,
    weight_decay_schedule,
)
from relpos.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_teacher_momentum_follows_a_cosine_from_0996_to_1():
    assert teacher_momentum(0, 100) == pytest.approx(0.996)
    assert teacher_momentum(50, 100) == pytest.approx(0.998)  # half-way: the mean of the ends
    # a quarter of the way: 1 − 0.004 · (1 + cos(π/4)) / 2 = 1 − 0.004 · 0.853553 = 0.996585786
    assert teacher_momentum(25, 100) == pytest.approx(0.996585786, abs=1e-9)
    assert teacher_momentum(100, 100) == pytest.approx(1.0)
    assert teacher_momentum(150, 100) == pytest.approx(1.0)


def test_weight_decay_follows_a_cosine_from_004_to_04():
    assert weight_decay_schedule(0, 10) == pytest.approx(0.04)
    assert weight_decay_schedule(5, 10) == pytest.approx(0.22)
    assert weight_decay_schedule(10, 10) == pytest.approx(0.4)


def test_teacher_temperature_warms_up_linearly_then_stays():
    # warm-up over 30 % of 200 steps = 60 steps: 0.04 + 0.03 · 30 / 60 = 0.055 at step 30
    assert teacher_temperature(0, 200) == pytest.approx(0.04)
    assert teacher_temperature(30, 200) == pytest.approx(0.055)
    assert teacher_temperature(60, 200) == pytest.approx(0.07)
    assert teacher_temperature(199, 200) == pytest.approx(0.07)
    assert teacher_temperature(0, 200, warmup_fraction=0) == pytest.approx(0.07)


def test_schedules_depend_only_on_step_and_total():
    # no hidden counter: asking twice, or out of order, gives the same value
    assert cosine_schedule(7, 20, 1.0, 0.0) == cosine_schedule(7, 20, 1.0, 0.0)
    values = [teacher_momentum(s, 20) for s in (3, 9, 3)]
    assert values[0] == values[2]


def test_ema_update_by_hand():
    student = nn.Linear(2, 1)
    teacher = make_teacher(student)
    with torch.no_grad():
        student.weight.copy_(torch.tensor([[3.0, -1.0]]))
        student.bias.fill_(2.0)
        teacher.weight.copy_(torch.tensor([[1.0, 1.0]]))
        teacher.bias.fill_(0.0)
    update_teacher(student, teacher, momentum=0.75)
    # 0.75 · teacher + 0.25 · student
    assert teacher.weight.tolist() == [[1.5, 0.5]]
    assert teacher.bias.tolist() == [0.5]
    update_teacher(student, teacher, momentum=1.0)  # momentum 1 freezes the teacher
    assert teacher.weight.tolist() == [[1.5, 0.5]]


def test_ema_leaves_buffers_alone_and_the_teacher_gets_no_gradient():
    student = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    teacher = make_teacher(student)
    with torch.no_grad():
        student[1].running_mean.fill_(5.0)
    update_teacher(student, teacher, 0.5)
    assert teacher[1].running_mean.tolist() == [0.0, 0.0, 0.0]
    x = torch.randn(4, 3)
    (student(x).sum() + teacher(x).sum()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_momentum_outside_0_1_is_refused(value):
    with pytest.raises(ConfigError, match=r"\[0, 1\], got"):
        check_momentum(value, "pretext.teacher_momentum")


def test_centering_by_hand_and_checkpointed():
    center = Centering(2, momentum=0.9)
    center.update(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))  # batch mean (2, 3)
    torch.testing.assert_close(center.center, torch.tensor([[0.2, 0.3]]))
    center.update(torch.zeros(3, 2))
    torch.testing.assert_close(center.center, torch.tensor([[0.18, 0.27]]))
    torch.testing.assert_close(center(torch.tensor([[1.0, 1.0]])), torch.tensor([[0.82, 0.73]]))
    assert "center" in center.state_dict()
    restored = Centering(2)
    restored.load_state_dict(center.state_dict())
    torch.testing.assert_close(restored.center, center.center)


def test_cross_entropy_by_hand():
    # teacher uniform over 2 classes; student logits (0, ln 3 · 0.1) → P_s = (1/4, 3/4):
    # H = −(½ ln ¼ + ½ ln ¾) = 0.8369882
    teacher = torch.tensor([[0.0, 0.0]])
    student = torch.tensor([[0.0, math.log(3) * 0.1]])
    h = distillation_cross_entropy(teacher, student, teacher_temp=0.04, student_temp=0.1)
    assert h.item() == pytest.approx(0.8369882, abs=1e-6)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    distillation_cross_entropy(teacher, student, 0.04).sum().backward()
    assert teacher.grad is None and student.grad is not None


def test_dino_head_layers_and_normalised_outputs():
    head = DINOHead(32, out_dim=100, hidden_dim=64, bottleneck_dim=16)
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 64), (64, 64), (64, 16)]
    out = head(torch.randn(5, 32) * 10)
    assert out.shape == (5, 100)
    # unit-norm input times unit-norm rows: every output is a cosine
    assert out.abs().max() <= 1 + 1e-5
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(100))
    assert not head.last_layer.parametrizations.weight.original0.requires_grad
    free = DINOHead(32, out_dim=10, hidden_dim=8, bottleneck_dim=4, norm_last_layer=False)
    assert free.last_layer.parametrizations.weight.original0.requires_grad


def test_frozen_last_layer_gets_no_gradient():
    head = DINOHead(8, out_dim=10, hidden_dim=16, bottleneck_dim=4, norm_last_layer=False)
    head(torch.randn(3, 8), freeze_last_layer=True).square().sum().backward()
    assert all(p.grad is None for p in head.last_layer.parameters())
    assert all(p.grad is not None for p in head.mlp.parameters())
    head.zero_grad(set_to_none=True)
    head(torch.randn(3, 8)).square().sum().backward()
    assert all(p.grad is not None for p in head.last_layer.parameters())


def test_dino_head_batch_norm_normalises_over_every_token():
    head = DINOHead(8, out_dim=10, hidden_dim=16, bottleneck_dim=4, use_bn=True)
    norms = [m for m in head.mlp if isinstance(m, nn.BatchNorm1d)]
    assert len(norms) == 2  # after each hidden layer, not after the bottleneck
    x = torch.randn(3, 2, 5, 8) * 4 + 7  # (samples, views, tokens, dim)
    hidden = head.mlp[1](head.mlp[0](x))  # first linear layer, then its batch norm
    flat = hidden.reshape(-1, 16)
    torch.testing.assert_close(flat.mean(0), torch.zeros(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.std(0, unbiased=False), torch.ones(16), atol=1e-3, rtol=0)
    assert head(x).shape == (3, 2, 5, 10)
    assert "mlp.1.running_mean" in head.state_dict()
    assert not any(isinstance(m, nn.BatchNorm1d) for m in DINOHead(8, 10, 16, 4).mlp)

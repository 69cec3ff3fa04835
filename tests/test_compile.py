"""``train.compile``: the step's forward through ``torch.compile``, or one warning line and eager mode.

Where compiling fails, the step is run again in eager mode from the same random state, so the run's
losses are those of ``train.compile: false`` bit for bit.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from relpos import step_options
from relpos.step_options import StepForward, adamw

from conftest import read_metrics, train_tiny_part


def losses(run_dir) -> list[float]:
    _, rows = read_metrics(run_dir)
    return [float(row["loss"]) for row in rows]


def warnings_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if "train.compile" in line]


@pytest.fixture(scope="module")
def eager_losses(tmp_path_factory):
    return losses(train_tiny_part(tmp_path_factory.mktemp("eager") / "run"))


def test_compile_on_cpu_trains_like_eager_or_says_why_in_one_line(tmp_path, capsys, monkeypatch, eager_losses):
    # Dynamo's own backend: the tracing, guards and graph breaks of a compiled step in ~10 s; inductor's
    # C++ code generation adds ~100 s on 2 cores (measured in bench/README.md), too long for a test.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    compiled = losses(train_tiny_part(tmp_path / "run", extra=["train.compile=true"]))
    said = warnings_of(capsys.readouterr().err)
    assert len(compiled) == len(eager_losses) == 2
    if said:  # no compiler here: eager from the first step, so the very same losses
        assert len(said) == 1 and said[0].startswith("relpos: warning: train.compile is on but ")
        assert compiled == eager_losses
    else:  # compiled: the same losses up to the reordering of float32 sums
        assert all(math.isclose(a, b, rel_tol=1e-3) for a, b in zip(compiled, eager_losses))


class _BrokenCompiler:
    """A torch.compile whose compiled forward fails when first called, as a missing C++ compiler does."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model):
        def compiled(*args, **kwargs):
            self.calls += 1
            torch.rand(3, generator=args[1])  # what a forward drew before failing is drawn again in eager
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found in\n torch._inductor.config.cpp.cxx")

        return compiled


def test_a_failing_compile_falls_back_with_one_warning_line_and_the_eager_losses(tmp_path, capsys, monkeypatch, eager_losses):
    broken = _BrokenCompiler()
    monkeypatch.setattr(torch, "compile", broken)
    compiled = losses(train_tiny_part(tmp_path / "run", extra=["train.compile=true"]))
    said = warnings_of(capsys.readouterr().err)
    assert broken.calls == 1  # tried once, then eager for good
    assert said == [
        "relpos: warning: train.compile is on but torch.compile failed on the first step (RuntimeError: "
        "InvalidCxxCompiler: No working C++ compiler found in torch._inductor.config.cpp.cxx); training without "
        "it (eager, as with train.compile: false)."
    ]
    assert compiled == eager_losses  # bit for bit: the random stream was rewound


def test_compile_unavailable_is_said_before_the_first_step(monkeypatch, capsys):
    def unsupported(model):
        raise RuntimeError("Dynamo is not supported on Python 3.99+")

    monkeypatch.setattr(torch, "compile", unsupported)
    model = torch.nn.Linear(2, 2)
    forward = StepForward(lambda batch, generator: model(batch["x"]), enabled=True)
    assert not forward.active
    assert warnings_of(capsys.readouterr().err) == [
        "relpos: warning: train.compile is on but torch.compile is unavailable here (RuntimeError: Dynamo is not "
        "supported on Python 3.99+); training without it (eager, as with train.compile: false)."
    ]
    x = torch.ones(1, 2)
    assert torch.equal(forward({"x": x}, torch.Generator()), model(x))


def test_compile_off_calls_the_model_itself(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda model: pytest.fail("compiled although train.compile is off"))
    seen = []
    forward = StepForward(lambda batch, generator: seen.append(batch) or 1.0, enabled=False)
    assert forward({"x": 1}, torch.Generator()) == 1.0 and seen == [{"x": 1}] and not forward.active


def test_adamw_is_fused_on_a_cpu_and_cuda_and_takes_adamws_step():
    weight = torch.nn.Parameter(torch.ones(3))
    cpu = adamw([{"params": [weight]}], 1e-3, torch.device("cpu"))
    assert cpu.defaults["fused"] is True and cpu.defaults["betas"] == step_options.BETAS
    # one step by hand: decay 1 - lr * 0.01 (AdamW's default), then -lr * m̂ / (√v̂ + eps) = -lr for a
    # first step of any gradient: 1 · (1 - 1e-5) - 1e-3 = 0.99899
    weight.grad = torch.full((3,), 0.5)
    cpu.step()
    assert torch.allclose(weight.detach(), torch.full((3,), 0.99899), rtol=0, atol=1e-7)
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device for the fused AdamW (none on this machine)")
    gpu = torch.nn.Parameter(torch.ones(3, device="cuda"))
    assert adamw([{"params": [gpu]}], 1e-3, torch.device("cuda")).defaults["fused"] is True


class _FailingBackward(torch.autograd.Function):
    """The identity, whose backward fails as a compiled backward graph that does not compile does."""

    @staticmethod
    def forward(ctx, loss):
        return loss.view_as(loss)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("BackendCompilerFailed: backend='inductor' raised:\n CppCompileError: C++ compile error")


class _CompilerWithBrokenBackward:
    """A torch.compile whose compiled step runs forward (drawing from the generator, moving a buffer as
    BatchNorm statistics do) and fails in the first backward; the eager redo must undo all of it."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model):
        def compiled(batch, generator):
            self.calls += 1
            for buffer in model.buffers():
                buffer.add_(1.0)
            loss, logs = model(batch, generator)
            return _FailingBackward.apply(loss), logs

        return compiled


def test_a_failing_compiled_backward_falls_back_with_one_warning_line_and_the_eager_losses(
        tmp_path, capsys, monkeypatch, eager_losses):
    broken = _CompilerWithBrokenBackward()
    monkeypatch.setattr(torch, "compile", broken)
    compiled = losses(train_tiny_part(tmp_path / "run", extra=["train.compile=true"]))
    said = warnings_of(capsys.readouterr().err)
    assert broken.calls == 1  # one compiled forward, then eager for good
    assert said == [
        "relpos: warning: train.compile is on but torch.compile failed in the first step's backward (RuntimeError: "
        "BackendCompilerFailed: backend='inductor' raised: CppCompileError: C++ compile error); training without "
        "it (eager, as with train.compile: false)."
    ]
    assert compiled == eager_losses  # bit for bit: stream rewound, buffers restored, gradients zeroed


def test_the_eager_redo_of_a_failed_backward_restores_buffers_and_zeroes_gradients(monkeypatch, capsys):
    monkeypatch.setattr(torch, "compile", _CompilerWithBrokenBackward())

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.tensor([2.0]))
            self.register_buffer("seen", torch.zeros(1))

        def forward(self, batch, generator):
            noise = torch.rand(1, generator=generator)
            return (self.weight * batch["x"] * noise).sum(), {"noise": noise[0]}

    model = Model()
    model.weight.grad = torch.tensor([100.0])  # what a partial backward may leave behind
    forward = StepForward(model, enabled=True)
    generator = torch.Generator().manual_seed(0)
    loss, logs = forward.forward_backward({"x": torch.tensor([3.0])}, generator)
    noise = torch.rand(1, generator=torch.Generator().manual_seed(0))
    assert not forward.active and float(logs["noise"]) == float(noise)  # the same draw as eager
    assert float(model.seen) == 0.0  # the compiled forward's change undone
    assert float(model.weight.grad) == pytest.approx(3.0 * float(noise))  # d(w·3·noise)/dw, nothing left over
    assert len(warnings_of(capsys.readouterr().err)) == 1


def test_a_compiled_run_resumed_from_a_checkpoint_ends_as_the_uninterrupted_one(tmp_path, monkeypatch, capsys):
    import relpos
    from relpos import training
    from relpos.training import TrainingInterrupted

    # Dynamo's own backend (see above): the compiled step's guards and graph breaks, without a C++ compiler.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    extra = ["train.compile=true", "train.ckpt_every=3"]
    whole = read_metrics(train_tiny_part(tmp_path / "whole", steps=6, extra=extra))[1]
    save = training._Run.save

    def interrupted_after_step_3(run, step):  # Ctrl-C right after the checkpoint of step 3
        save(run, step)
        if step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(training._Run, "save", interrupted_after_step_3)
    with pytest.raises(TrainingInterrupted):
        train_tiny_part(tmp_path / "resumed", steps=6, extra=extra)
    monkeypatch.setattr(training._Run, "save", save)
    config = relpos.resume_config(tmp_path / "resumed")
    config.train.steps, config.train.progress = 6, False
    relpos.train(config, resume=True)
    resumed = read_metrics(tmp_path / "resumed")[1]
    assert [row["step"] for row in resumed] == [str(step) for step in range(1, 7)]
    strip = lambda rows: [{k: v for k, v in row.items() if k != "samples_per_s"} for row in rows]  # noqa: E731
    assert strip(resumed) == strip(whole)
    assert warnings_of(capsys.readouterr().err) == []  # compiled throughout (Dynamo runs on this machine)

"""The trivial-baseline contract: PART's baseline by hand, the loop's column, warning and final message."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import relpos
import relpos.plugins
from relpos.cli import main
from relpos.trivial_baseline import BASELINE_KEY, BaselineWatch

from conftest import read_metrics
from test_part import Spy, make

pytestmark = pytest.mark.usefixtures("one_thread")


# -- PART's baseline ---------------------------------------------------------------------------------------
def test_part_baseline_is_the_best_constant_by_hand():
    from relpos_plugins.part import constant_baseline

    # Two pairs of one sample, (Δt, size ratio): Δt ∈ {2, -4} has mean -1 and variance 9; the size
    # ratios {0.5, 2} have mean 1.25 and variance 0.5625. The best constant (-1, 1.25) scores
    # (9 + 0.5625) / 2; predicting 0 would score (4 + 16 + 0.25 + 4) / 4 = 6.0625.
    theta = torch.tensor([[[2.0, 0.5], [-4.0, 2.0]]])
    assert constant_baseline(theta).item() == pytest.approx(4.78125)
    # Only the first pair: a single target is predicted exactly by a constant.
    assert constant_baseline(theta, torch.tensor([[True, False]])).item() == 0.0
    assert constant_baseline(theta, torch.tensor([[False, False]])).item() == 0.0


def test_part_logs_the_baseline_of_its_own_batch(monkeypatch):
    pretext, x = make("eeg", "part", ["pretext.n_pairs=32"])
    spy = Spy(pretext, monkeypatch)
    _, logs = pretext({"x": x}, torch.Generator().manual_seed(3))
    ref, tgt = spy.pairs
    centre, size = spy.boxes.center[..., 0], spy.boxes.size[..., 0]
    # θ = (c_tgt − c_ref) / s_ref in patch lengths, one axis; the best constant is its mean.
    theta = (centre.gather(1, tgt) - centre.gather(1, ref)) / size.gather(1, ref)
    expected = ((theta - theta.mean()) ** 2).mean().item()
    assert logs[BASELINE_KEY] == pytest.approx(expected, rel=1e-5)
    assert expected > 1.0  # 1-s patches in 10-s windows: offsets of several patch lengths
    assert BASELINE_KEY in pretext.log_keys


# -- the watch ---------------------------------------------------------------------------------------------
def test_watch_warns_once_when_the_loss_stays_at_the_baseline():
    watch = BaselineWatch(total_steps=40)  # checks from step 30 (MIN_CHECK_STEPS), averaging 4 steps
    messages = [watch.update(step, 10.0 + (step % 2), 10.0) for step in range(1, 41)]
    warned = [step for step, message in zip(range(1, 41), messages) if message]
    assert warned == [30]
    # steps 27..30 have losses 11, 10, 11, 10
    assert "after 30 of 40 steps the loss (10.5, mean of the last 4 steps)" in messages[29]
    assert "trivial baseline (10" in messages[29]
    assert watch.summary() == (
        "mean loss of the last 4 steps 10.5, 105 % of the trivial baseline 10 (not clearly below it)"
    )


def test_watch_is_silent_for_a_run_that_learns():
    watch = BaselineWatch(total_steps=40)
    # Starts at the baseline, halves by step 10 and keeps falling.
    assert not any(watch.update(step, 10.0 * 0.93**step, 10.0) for step in range(1, 41))
    assert watch.summary().endswith("(clearly below it)")


def test_watch_does_nothing_without_a_baseline():
    watch = BaselineWatch(total_steps=4)
    assert not any(watch.update(step, 5.0, None) for step in range(1, 5))
    assert watch.summary() is None


# -- the loop, end to end ----------------------------------------------------------------------------------
@dataclass
class GuessConfig:
    target: float = 3.0


class GuessPretext(relpos.Pretext):
    """Learns one number; its trivial baseline is the loss of guessing 0, target²."""

    name = "guess"
    Config = GuessConfig
    log_keys = (BASELINE_KEY,)

    def __init__(self, *args):
        super().__init__(*args)
        self.guess = torch.nn.Parameter(torch.zeros(()))

    def forward(self, batch, generator):
        loss = (self.guess - self.config.target) ** 2 + 0 * batch["x"].sum()
        return loss, {BASELINE_KEY: self.config.target**2}


class GuessPlugin:
    @relpos.hookimpl
    def register_pretexts(self, register):
        register(GuessPretext)


@pytest.fixture
def guess_plugin():
    relpos.plugins.register_plugin(GuessPlugin(), "guess-plugin")
    try:
        yield
    finally:
        relpos.plugins.unregister_plugin("guess-plugin")


@pytest.fixture
def series(tmp_path):
    path = tmp_path / "series.npy"
    np.save(path, np.random.default_rng(0).standard_normal((4, 1, 200)).astype(np.float32))
    return path


def run_guess(series, out, lr: str, steps: int = 40, warmup: int = 0, resume: bool = False) -> int:
    return main([
        "train", "--modality", "timeseries", "--pretext", "guess", "--data", str(series),
        "--out", str(out), "--steps", str(steps), "--no-progress",
        "--set", "modality.sfreq=100", "--set", "modality.patch_s=0.1", "--set", "modality.window_s=1",
        "--set", "encoder.dim=8", "--set", "encoder.depth=1", "--set", "encoder.heads=1",
        "--set", "train.batch_size=2", "--set", f"train.lr={lr}", "--set", f"train.warmup_steps={warmup}",
        "--set", "train.log_every=1", "--set", "train.min_lr=0", "--set", "train.ckpt_every=20",
        *(["--resume"] if resume else []),
    ])


def test_a_run_stuck_at_its_baseline_warns_once_and_says_so_at_the_end(guess_plugin, series, tmp_path, capsys):
    out = tmp_path / "stuck"
    assert run_guess(series, out, lr="1e-9") == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("relpos: warning: after")]
    assert len(warnings) == 1
    assert "after 30 of 40 steps the loss (9, mean of the last 4 steps) is not clearly below" in warnings[0]
    assert "of the trivial baseline 9 (not clearly below it)" in captured.out
    header, rows = read_metrics(out)
    assert header[:3] == ["step", "loss", BASELINE_KEY]
    assert len(rows) == 40 and float(rows[-1][BASELINE_KEY]) == 9.0


def test_a_run_that_learns_does_not_warn(guess_plugin, series, tmp_path, capsys):
    out = tmp_path / "learns"
    assert run_guess(series, out, lr="0.3") == 0
    captured = capsys.readouterr()
    assert "not clearly below" not in captured.err + captured.out
    assert "% of the trivial baseline 9 (clearly below it)" in captured.out
    _, rows = read_metrics(out)
    assert float(rows[-1]["loss"]) < 0.5 * 9.0


def stuck_warnings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("relpos: warning: after")]


def test_watch_does_not_judge_during_warm_up():
    # 30 warm-up steps at the baseline, then learning: the check waits for warm-up plus a window of
    # 4 steps (step 34), by which time the loss is at 2 of 10.
    watch = BaselineWatch(total_steps=40, warmup_steps=30)
    assert watch.check_step == 34
    messages = [watch.update(step, 10.0 if step <= 30 else 2.0, 10.0) for step in range(1, 41)]
    assert not any(messages)
    assert watch.summary() == "mean loss of the last 4 steps 2, 20 % of the trivial baseline 10 (clearly below it)"


def test_a_run_too_short_to_judge_says_so_at_the_end():
    watch = BaselineWatch(total_steps=8)  # judged from step 30 on: never
    assert not any(watch.update(step, 10.0, 10.0) for step in range(1, 9))
    assert watch.summary() == (
        "mean loss of the last step 10, 100 % of the trivial baseline 10 (not clearly below it; a run is "
        "judged from step 30 on, so this one is too short to tell)"
    )


def test_a_warning_the_run_later_disproves_is_named_in_the_final_line():
    watch = BaselineWatch(total_steps=40)
    messages = [watch.update(step, 10.0 if step <= 30 else 1.0, 10.0) for step in range(1, 41)]
    assert [step for step, m in zip(range(1, 41), messages) if m] == [30]
    assert watch.summary().endswith(
        "10 % of the trivial baseline 10 (clearly below it by the end, though not at step 30 when the warning was given)"
    )


def test_a_short_run_with_warm_up_does_not_warn(guess_plugin, series, tmp_path, capsys):
    out = tmp_path / "warming"
    assert run_guess(series, out, lr="0.05", warmup=20) == 0
    captured = capsys.readouterr()
    _, rows = read_metrics(out)
    # At step 10, a quarter of the run where the watch used to judge, warm-up had moved the guess
    # by about 0.05 × 55 / 20 ≈ 0.14 of 3: the loss was still at the baseline.
    assert float(rows[9]["loss"]) > 0.9 * 9.0
    assert stuck_warnings(captured.err) == []
    assert "of the trivial baseline 9 (clearly below it)" in captured.out


def test_a_resumed_run_judges_on_the_run_steps_as_an_uninterrupted_one(guess_plugin, series, tmp_path, capsys):
    assert run_guess(series, tmp_path / "whole", lr="1e-9") == 0
    whole = capsys.readouterr()
    (warning,) = stuck_warnings(whole.err)
    assert warning.startswith("relpos: warning: after 30 of 40 steps the loss (9, mean of the last 4 steps)")
    # The same run in two parts: 20 steps (no check yet), then resumed to 40.
    out = tmp_path / "parts"
    assert run_guess(series, out, lr="1e-9", steps=20) == 0
    first = capsys.readouterr()
    assert stuck_warnings(first.err) == [] and "too short to tell" in first.out
    assert run_guess(series, out, lr="1e-9", steps=40, resume=True) == 0
    second = capsys.readouterr()
    assert stuck_warnings(second.err) == [warning]
    summary = whole.out.split(" (mean loss", 1)[1].split(";")[0]
    assert "(not clearly below it)" in summary and summary in second.out
    # Resumed again after the warning: it is not given twice.
    assert run_guess(series, out, lr="1e-9", steps=60, resume=True) == 0
    third = capsys.readouterr()
    assert stuck_warnings(third.err) == [] and "(not clearly below it)" in third.out


# -- DINO and PW-Self: a uniform student ------------------------------------------------------------------
def test_dino_baseline_is_the_uniform_cross_entropy():
    from test_dino import build, step_loss

    pretext, windows = build("dino")
    _, logs = step_loss(pretext, windows.x[:4])
    assert logs[BASELINE_KEY] == pytest.approx(math.log(64))  # pretext.out_dim = 64 classes


@pytest.mark.parametrize("loss", ["mean", "sum"])
def test_pw_self_baseline_is_a_uniform_student_on_every_term(loss):
    from test_dino import build, step_loss

    pretext, windows = build("pw-self", [f"pretext.loss={loss}"])
    _, logs = step_loss(pretext, windows.x[:4])
    # log K per CLS term and per matched patch term; 'mean' divides their sum by 1 + matches,
    # 'sum' does not, so its baseline grows with the mean number of matched patches.
    expected = math.log(64) * (1 if loss == "mean" else 1 + float(logs["matched"]))
    assert float(logs[BASELINE_KEY]) == pytest.approx(expected, rel=1e-5)

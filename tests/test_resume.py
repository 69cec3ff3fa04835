"""Checkpoints and exact resume: a run killed with SIGKILL and resumed reproduces the uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from conftest import read_metrics

import relpos
from relpos.cli import main

STEPS = 16
# Tiny. The killer freezes the process (SIGSTOP) while it looks at the run, so the run cannot finish
# behind its back however fast steps are; it kills (SIGKILL) once a checkpoint exists and later steps
# have been logged.


def resume_args(steps: int) -> list[str]:
    return [
        "train",
        "--set", "encoder.dim=32", "--set", "encoder.depth=1", "--set", "encoder.heads=2",
        "--set", "pretext.n_pairs=16", "--set", "train.batch_size=4",
        "--set", "train.ckpt_every=4", "--set", "train.log_every=1",
        "--steps", str(steps), "--no-progress",
    ]


RESUME_ARGS = resume_args(STEPS)
SHORT = resume_args(2)


def ckpt_step(run_dir: Path) -> int:
    return int(torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["step"])


def n_rows(run_dir: Path) -> int:
    try:
        return len((run_dir / "metrics.csv").read_text().splitlines()) - 1
    except FileNotFoundError:
        return 0


def kill_mid_run(out: Path, timeout: float = 300) -> tuple[int, int]:
    """Start the run in a real process and SIGKILL it once it has a checkpoint and has logged steps
    *after* that checkpoint (which resume must drop and replay). Returns (checkpoint step, rows)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "relpos.cli", *RESUME_ARGS, "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the run ended by itself (exit {proc.returncode}) before it could be killed: "
                            f"{proc.stderr.read().decode(errors='replace')}")
            if time.monotonic() > deadline:
                pytest.fail("the run made no checkpoint in time")
            if (out / "checkpoints" / "last.pt").exists() and n_rows(out) >= 5:
                # Freeze it, look, and either kill it there or let it go on.
                os.kill(proc.pid, signal.SIGSTOP)
                step, rows = ckpt_step(out), n_rows(out)
                if rows > step >= 4:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return step, rows


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "A"
    assert main([*RESUME_ARGS, "--out", str(out)]) == 0
    return out


def test_killed_and_resumed_run_reproduces_the_uninterrupted_one(uninterrupted, tmp_path, monkeypatch):
    out = tmp_path / "B"
    step, rows = kill_mid_run(out)
    assert 4 <= step < rows < STEPS  # killed between checkpoints, with rows to replay
    assert step % 4 == 0  # ckpt_every=4

    # Count the training steps the resumed run executes.
    part = relpos.get_pretext("part")
    calls = []
    original = part.forward
    monkeypatch.setattr(part, "forward", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*RESUME_ARGS, "--out", str(out), "--resume"]) == 0
    assert len(calls) == STEPS - step  # it continued from the checkpoint, it did not start over

    header_a, rows_a = read_metrics(uninterrupted)
    header_b, rows_b = read_metrics(out)
    assert header_b == header_a
    # Every step exactly once: the rows the killed run logged after its checkpoint were replaced.
    assert [int(r["step"]) for r in rows_b] == list(range(1, STEPS + 1))
    # Bit-for-bit on CPU: the CSV holds repr(float), so equal strings are equal floats.
    for key in ("loss", "lr", "center_l2"):
        assert [r[key] for r in rows_b] == [r[key] for r in rows_a], key
    # ...and it ends at the same weights.
    final_a = torch.load(uninterrupted / "checkpoints" / "last.pt", weights_only=False)
    final_b = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert final_a["step"] == final_b["step"] == STEPS
    assert final_a["model"].keys() == final_b["model"].keys()
    for name, tensor in final_a["model"].items():
        assert torch.equal(tensor, final_b["model"][name]), name


def test_no_temporary_files_are_left_after_a_run(uninterrupted):
    # Checkpoints are written to a temporary file and renamed; nothing of that may remain.
    assert os.listdir(uninterrupted / "checkpoints") == ["last.pt"]
    assert not [n for n in os.listdir(uninterrupted) if "tmp" in n]


def test_ctrl_c_keeps_the_checkpoint_and_says_how_to_resume(uninterrupted, tmp_path):
    out = tmp_path / "C"
    proc = subprocess.Popen(
        [sys.executable, "-m", "relpos.cli", *RESUME_ARGS, "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    try:
        while True:
            assert proc.poll() is None, "the run ended before it could be interrupted"
            assert time.monotonic() < deadline, "the run made no checkpoint in time"
            if (out / "checkpoints" / "last.pt").exists():
                os.kill(proc.pid, signal.SIGSTOP)
                step = ckpt_step(out)
                os.kill(proc.pid, signal.SIGINT)  # delivered when it continues, mid-run
                os.kill(proc.pid, signal.SIGCONT)
                break
            time.sleep(0.002)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert step < STEPS
    assert proc.returncode == 130
    assert b"Traceback" not in stderr
    assert stderr.decode().strip().splitlines() == [
        "relpos: interrupted; the last checkpoint is kept (continue with --resume)."
    ]
    assert stdout == b""
    assert ckpt_step(out) >= step
    # ...and --resume finishes it.
    assert main([*RESUME_ARGS, "--out", str(out), "--resume"]) == 0
    _, rows = read_metrics(out)
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in rows] == [r["loss"] for r in read_metrics(uninterrupted)[1]]


# -- refusals ---------------------------------------------------------------------------------------
def _err_line(capfd) -> str:
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("relpos: error:")
    return err[0]


def test_resume_without_a_checkpoint_is_refused(tmp_path, capfd):
    out = tmp_path / "never-trained"
    assert main([*SHORT, "--out", str(out), "--resume"]) == 2
    line = _err_line(capfd)
    assert f"no checkpoint at '{out / 'checkpoints' / 'last.pt'}'" in line
    assert "without --resume" in line
    assert not out.exists()


def test_new_run_into_a_dir_with_a_checkpoint_is_refused(tmp_path, capfd):
    out = tmp_path / "run"
    assert main([*SHORT, "--out", str(out)]) == 0
    ckpt = out / "checkpoints" / "last.pt"
    before = (ckpt.read_bytes(), (out / "metrics.csv").read_text())
    capfd.readouterr()
    assert main([*SHORT, "--out", str(out)]) == 2
    line = _err_line(capfd)
    assert str(out) in line and "pass --resume" in line
    assert (ckpt.read_bytes(), (out / "metrics.csv").read_text()) == before  # the old run is untouched


def test_resume_extends_a_finished_run_with_more_steps(tmp_path, capfd):
    out = tmp_path / "run"
    assert main([*SHORT, "--out", str(out)]) == 0
    _, first = read_metrics(out)
    capfd.readouterr()

    # Resuming at the same step count: nothing to do, said in one line.
    assert main([*SHORT, "--out", str(out), "--resume"]) == 2
    line = _err_line(capfd)
    assert "already finished 2 steps" in line and "--steps" in line

    # With --steps 4 it trains steps 3 and 4; the run's own settings (lr) are kept, not the new --set.
    assert main([*SHORT, "--out", str(out), "--resume", "--steps", "4", "--set", "train.lr=0.1"]) == 0
    _, rows = read_metrics(out)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert rows[:2] == first
    assert ckpt_step(out) == 4
    saved = relpos.resolve_config(out / "config.yaml")
    assert saved.train.steps == 4 and saved.train.lr == 5e-4

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
from conftest import kill_after_a_checkpoint, read_metrics

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


def same_threads_env() -> dict[str, str]:
    """The environment for a run compared bit for bit with an in-process one: the same thread count."""
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}


def ckpt_step(run_dir: Path) -> int:
    return int(torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["step"])


def kill_mid_run(out: Path) -> tuple[int, int]:
    """SIGKILL the run once it has a checkpoint at step 4 or later and has logged steps after it."""
    return kill_after_a_checkpoint([*RESUME_ARGS, "--out", str(out)], out, min_step=4)


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
    final_a = torch.load(uninterrupted / "checkpoints" / "last.pt", weights_only=True)
    final_b = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
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
        [sys.executable, "-m", "relpos.cli", *RESUME_ARGS, "--out", str(out)], env=same_threads_env(),
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
    kept = ckpt_step(out)
    assert kept >= step
    said = ("relpos: warning:", "relpos: modality.normalize = auto:")  # what the run says before it is interrupted
    assert [line for line in stderr.decode().strip().splitlines() if not line.startswith(said)] == [
        f"relpos: interrupted; the last checkpoint (step {kept}) is kept in {out / 'checkpoints' / 'last.pt'} "
        f"(continue with --resume)."
    ]
    assert stdout == b""
    # ...and --resume finishes it.
    assert main([*RESUME_ARGS, "--out", str(out), "--resume"]) == 0
    _, rows = read_metrics(out)
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in rows] == [r["loss"] for r in read_metrics(uninterrupted)[1]]


# -- refusals ---------------------------------------------------------------------------------------
def _err_line(capfd) -> str:
    err = [line for line in capfd.readouterr().err.strip().splitlines() if not line.startswith("relpos: warning:")]
    assert len(err) == 1, err
    assert err[0].startswith("relpos: error:")
    return err[0]


def test_resume_without_a_checkpoint_is_refused(tmp_path, capfd):
    out = tmp_path / "never-trained"
    assert main([*SHORT, "--out", str(out), "--resume"]) == 2
    line = _err_line(capfd)
    assert f"Cannot resume: run directory '{out}' does not exist" in line
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

    # A different setting is refused, naming it with both values, and the run is left as it was.
    before = (out / "checkpoints" / "last.pt").read_bytes()
    assert main([*SHORT, "--out", str(out), "--resume", "--steps", "4", "--set", "train.lr=0.1"]) == 2
    line = _err_line(capfd)
    assert "train.lr is 0.0005 in the run but 0.1 was asked for" in line
    assert (out / "checkpoints" / "last.pt").read_bytes() == before

    # With --steps 4 it trains steps 3 and 4 with the run's own settings.
    assert main([*SHORT, "--out", str(out), "--resume", "--steps", "4"]) == 0
    _, rows = read_metrics(out)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert rows[:2] == first
    assert ckpt_step(out) == 4
    saved = relpos.resolve_config(out / "config.yaml")
    assert saved.train.steps == 4 and saved.train.lr == 5e-4


# -- resuming with other settings ----------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_short_run(tmp_path_factory):
    """A 2-step run (kept read-only by the tests that use it: refusals change nothing)."""
    out = tmp_path_factory.mktemp("short") / "run"
    assert main([*SHORT, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--modality", "image"], "modality.name is 'eeg' in the run but 'image' was asked for"),
        (["--pretext", "part-grid"], "pretext.name is 'part' in the run but 'part-grid' was asked for"),
        (["--set", "pretext.n_pairs=8"], "pretext.n_pairs is 16 in the run but 8 was asked for"),
        (["--set", "modality.window_s=10"], "modality.window_s is 30.0 in the run but 10.0 was asked for"),
        (["--set", "encoder.depth=2"], "encoder.depth is 1 in the run but 2 was asked for"),
        (["--seed", "3"], "train.seed is 0 in the run but 3 was asked for"),
        (["--set", "train.amp=false"], "train.amp is True in the run but False was asked for"),
        (["--data", "elsewhere.edf"],
         "data is unset (the modality's bundled sample) in the run but 'elsewhere.edf' was asked for"),
    ],
)
def test_resume_with_a_different_setting_names_it_and_changes_nothing(finished_short_run, capfd, extra, expected):
    out = finished_short_run
    before = {p.name: p.read_bytes() for p in [out / "config.yaml", out / "metrics.csv", out / "checkpoints" / "last.pt"]}
    capfd.readouterr()
    assert main([*SHORT, "--out", str(out), "--resume", "--steps", "4", *extra]) == 2
    line = _err_line(capfd)
    assert expected in line, line
    assert "only --steps, --device and --no-progress may change" in line
    after = {p.name: p.read_bytes() for p in [out / "config.yaml", out / "metrics.csv", out / "checkpoints" / "last.pt"]}
    assert after == before


def test_every_different_setting_is_named_at_once(finished_short_run, capfd, tmp_path):
    config_file = tmp_path / "other.yaml"
    config_file.write_text("train:\n  lr: 0.01\n  warmup_steps: 5\n")
    capfd.readouterr()
    assert main([*SHORT, "--out", str(finished_short_run), "--resume", "--steps", "4",
                 "--config", str(config_file), "--set", "encoder.dim=64"]) == 2
    line = _err_line(capfd)
    for part in ("encoder.dim is 32 in the run but 64", "train.lr is 0.0005 in the run but 0.01",
                 "train.warmup_steps is 20 in the run but 5"):
        assert part in line, line


def test_resume_takes_what_the_command_line_leaves_out_from_the_run(tmp_path, capfd):
    out = tmp_path / "run"
    assert main([*SHORT, "--out", str(out)]) == 0
    # Neither the tiny encoder nor the batch size is repeated: they come from the checkpoint. Settings
    # repeated with their run values (from a config file too) are not differences.
    same = tmp_path / "same.yaml"
    same.write_text("encoder:\n  dim: 32\ntrain:\n  lr: 5.0e-4\n")
    assert main(["train", "--out", str(out), "--resume", "--steps", "3", "--no-progress",
                 "--config", str(same), "--set", "pretext.n_pairs=16", "--device", "cpu"]) == 0
    assert ckpt_step(out) == 3
    saved = relpos.resolve_config(out / "config.yaml")
    assert (saved.encoder.dim, saved.train.batch_size, saved.train.steps, saved.train.device) == (32, 4, 3, "cpu")


def test_the_python_api_refuses_other_settings_too(finished_short_run):
    from relpos.errors import ConfigError
    from relpos.training import resume_config

    config = resume_config(finished_short_run)
    assert config.to_dict() | {"out": None} == relpos.resolve_config(finished_short_run / "config.yaml").to_dict() | {"out": None}
    config.train.batch_size = 8
    config.train.steps = 4
    with pytest.raises(ConfigError, match=r"train\.batch_size is 4 in the run but 8 was asked for"):
        relpos.train(config, resume=True)
    assert ckpt_step(finished_short_run) == 2


def test_the_same_data_spelled_another_way_is_not_a_difference(tmp_path, make_image_folder, monkeypatch, capfd):
    images = make_image_folder()
    out = tmp_path / "run"
    tiny = ["--set", "encoder.dim=32", "--set", "encoder.depth=1", "--set", "encoder.heads=2",
            "--set", "pretext.n_pairs=16", "--set", "train.batch_size=2", "--no-progress"]
    assert main(["train", "--modality", "image", *tiny, "--steps", "1", "--data", str(images), "--out", str(out)]) == 0
    monkeypatch.chdir(images.parent)
    assert main(["train", "--out", str(out), "--resume", "--steps", "2", "--data", f"./{images.name}/"]) == 0
    assert ckpt_step(out) == 2
    other = make_image_folder("other")
    capfd.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--steps", "3", "--data", str(other)]) == 2
    assert f"data is {str(images)!r} in the run but {str(other)!r} was asked for" in _err_line(capfd)

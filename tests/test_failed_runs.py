"""A run that fails leaves nothing behind, and nothing makes a run hang or run away.

A new run that dies before its first checkpoint (non-finite loss, out of memory, a plugin's forward
raising, Ctrl-C) removes what it created; after a checkpoint, or when resuming, everything is kept
and the message names the checkpoint. Temporary files of killed writers are removed on the next
start; pipes and devices are refused as data; ``relpos eval --repeats`` is bounded.
"""

from __future__ import annotations

import datetime
import fractions
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_OVERRIDES, read_metrics

import relpos
from relpos.cli import main
from relpos.training import TrainingError

TINY = [arg for override in TINY_OVERRIDES for arg in ("--set", override)]


def image_args(out: Path, steps: int = 4, ckpt_every: int = 2) -> list[str]:
    return ["train", "--modality", "image", *TINY, "--set", f"train.ckpt_every={ckpt_every}",
            "--set", "train.log_every=1", "--steps", str(steps), "--no-progress", "--out", str(out)]


@pytest.fixture
def images(make_image_folder) -> Path:
    return make_image_folder()


@pytest.fixture
def fail_at(monkeypatch):
    """``fail_at(step, exc)``: the part pretext's forward raises ``exc`` (or returns a NaN loss when
    ``exc`` is None) at that call."""
    part = relpos.get_pretext("part")
    original = part.forward

    def install(step: int, exc: BaseException | None):
        calls = []

        def forward(self, *args, **kwargs):
            calls.append(1)
            loss, logs = original(self, *args, **kwargs)
            if len(calls) == step:
                if exc is not None:
                    raise exc
                return loss * float("nan"), logs
            return loss, logs

        monkeypatch.setattr(part, "forward", forward)
        return calls

    return install


@pytest.fixture
def no_hang():
    """Fail the test, instead of hanging it, when something blocks for 60 s (e.g. opening a pipe)."""

    def alarm(signum, frame):
        raise TimeoutError("blocked for 60 s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def error_lines(capfd) -> list[str]:
    """stderr's lines, less warnings (e.g. about the pretext's learning) that are not about failing."""
    err = capfd.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line for line in err), err
    return [line for line in err if not line.startswith("relpos: warning:")]


# -- before the first checkpoint: nothing is kept ---------------------------------------------------
def test_nan_at_step_2_before_any_checkpoint_leaves_no_run_directory(tmp_path, images, capfd, fail_at):
    fail_at(2, None)
    out = tmp_path / "run"
    assert main([*image_args(out), "--data", str(images)]) == 1
    (line,) = error_lines(capfd)
    assert line == (
        "relpos: error: The loss became nan at step 2, so training stopped and no checkpoint had been "
        "written, so nothing of this run was kept (try a lower train.lr, now 0.0005, or check the data "
        "for NaN values)."
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "exc, expected",
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), TrainingError),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 GB"), TrainingError),
        (MemoryError(), TrainingError),
        (ValueError("a bug in a plugin's forward"), ValueError),
    ],
    ids=["cuda-oom", "cpu-oom", "memory-error", "plugin-bug"],
)
def test_a_failure_before_the_first_checkpoint_removes_what_the_run_created(tmp_path, images, fail_at, exc, expected):
    fail_at(2, exc)
    out = tmp_path / "deep" / "er" / "run"  # the folders above it are the run's own making too
    config = relpos.resolve_config(
        modality="image", overrides=[*TINY_OVERRIDES, "train.steps=4", "train.ckpt_every=2",
                                     "train.progress=false", f"out={out}", f"data={images}"])
    with pytest.raises(expected) as info:
        relpos.train(config)
    if expected is TrainingError:
        assert str(info.value).startswith("Out of memory at step 2 on cpu, so training stopped and no checkpoint")
        assert "train.batch_size, now 2" in str(info.value)
    assert not (tmp_path / "deep").exists()


def test_a_failing_run_in_an_existing_folder_removes_only_its_own_files(tmp_path, images, capfd, fail_at):
    out = tmp_path / "project"
    (out / "tensorboard").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "tensorboard" / "my_plot.png").write_bytes(b"png")
    fail_at(1, None)
    assert main([*image_args(out), "--data", str(images)]) == 1
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["notes.txt", "tensorboard", "tensorboard/my_plot.png"]


def test_ctrl_c_before_the_first_checkpoint_keeps_nothing_and_says_so(tmp_path, images, capfd, fail_at):
    fail_at(1, KeyboardInterrupt())
    out = tmp_path / "run"
    assert main([*image_args(out), "--data", str(images)]) == 130
    assert error_lines(capfd) == ["relpos: interrupted before the first checkpoint; nothing of this run was kept."]
    assert not out.exists()


def test_ctrl_c_right_after_the_first_checkpoint_is_renamed_keeps_it(tmp_path, images, capfd, monkeypatch):
    # The interrupt lands after the rename but before the loop has noted the checkpoint.
    import relpos.training as training

    original = training.atomic_torch_save

    def save_then_interrupt(obj, path):
        original(obj, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "atomic_torch_save", save_then_interrupt)
    out = tmp_path / "run"
    assert main([*image_args(out), "--data", str(images)]) == 130
    ckpt = out / "checkpoints" / "last.pt"
    assert error_lines(capfd) == [f"relpos: interrupted; the last checkpoint (step 2) is kept in {ckpt} (continue with --resume)."]
    assert torch.load(ckpt, weights_only=True)["step"] == 2


@pytest.mark.parametrize("errno_, words", [(28, "No space left on device"), (30, "Read-only file system")])
def test_a_checkpoint_that_cannot_be_written_is_one_sentence(tmp_path, images, capfd, monkeypatch, errno_, words):
    import relpos.training as training

    original = training.atomic_torch_save
    calls = []

    def save_fails_the_second_time(obj, path):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno_, os.strerror(errno_), str(path))
        original(obj, path)

    monkeypatch.setattr(training, "atomic_torch_save", save_fails_the_second_time)
    out = tmp_path / "run"
    assert main([*image_args(out, steps=4, ckpt_every=2), "--data", str(images)]) == 1
    (line,) = error_lines(capfd)
    ckpt = out / "checkpoints" / "last.pt"
    assert line == (
        f"relpos: error: Cannot write the checkpoint {str(ckpt)!r} at step 4: {words}, so training stopped and "
        f"the last good checkpoint (step 2) is {str(ckpt)!r} (free some space, or train into another --out)."
    )
    assert torch.load(ckpt, weights_only=True)["step"] == 2


def test_a_run_directory_that_cannot_be_written_is_one_sentence(tmp_path, images, capfd, monkeypatch):
    import relpos.training as training

    def refuse(text, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(training, "atomic_write_text", refuse)
    out = tmp_path / "run"
    assert main([*image_args(out), "--data", str(images)]) == 2
    assert error_lines(capfd) == [
        f"relpos: error: Cannot write to the run directory {str(out)!r}: Permission denied; choose another --out."
    ]
    assert not out.exists()


@pytest.mark.parametrize("kept", [lambda: fractions.Fraction(1, 3), lambda: {"since": datetime.date(2026, 1, 1)},
                                  lambda: [np.float64(0.5)]], ids=["Fraction", "date", "numpy-scalar"])
def test_a_pretext_that_keeps_objects_no_checkpoint_can_hold_is_told_at_its_first_checkpoint(
        tmp_path, images, capfd, monkeypatch, kept):
    # A third-party pretext's extra state goes into the checkpoint; if it is not plain data the
    # checkpoint could never be loaded back, so the author hears it at the first save, not at eval.
    part = relpos.get_pretext("part")
    monkeypatch.setattr(part, "get_extra_state", lambda self: kept(), raising=False)
    monkeypatch.setattr(part, "set_extra_state", lambda self, state: None, raising=False)
    out = tmp_path / "run"
    assert main([*image_args(out), "--data", str(images)]) == 2
    (line,) = error_lines(capfd)
    assert line.startswith("relpos: error: Pretext 'part' keeps '") and "in its state, which a checkpoint cannot hold" in line
    assert not out.exists()


# -- after a checkpoint, or when resuming: everything is kept ---------------------------------------
def test_a_failure_after_a_checkpoint_keeps_the_run_and_names_the_checkpoint(tmp_path, images, capfd, fail_at):
    fail_at(3, None)
    out = tmp_path / "run"
    assert main([*image_args(out), "--data", str(images)]) == 1
    (line,) = error_lines(capfd)
    ckpt = out / "checkpoints" / "last.pt"
    assert f"the last good checkpoint (step 2) is {str(ckpt)!r}" in line
    assert torch.load(ckpt, weights_only=True)["step"] == 2
    assert [r["step"] for r in read_metrics(out)[1]] == ["1", "2"]


def test_a_nan_between_two_flushes_names_its_step_and_keeps_the_checkpoint_before_it(tmp_path, images, capfd, fail_at):
    # The losses are read every 10 steps and before each checkpoint (steps 1, 4, 8, 10 here), so the NaN of
    # step 6 is seen at step 8, before step 8's backward and save: step 4's checkpoint stays, untouched.
    fail_at(6, None)
    out = tmp_path / "run"
    args = [*image_args(out, steps=10, ckpt_every=4), "--set", "train.log_every=10", "--data", str(images)]
    assert main(args) == 1
    (line,) = error_lines(capfd)
    ckpt = out / "checkpoints" / "last.pt"
    assert line.startswith("relpos: error: The loss became nan at step 6, so training stopped and the last good "
                           f"checkpoint (step 4) is {str(ckpt)!r}")
    assert torch.load(ckpt, weights_only=True)["step"] == 4
    assert read_metrics(out)[1] == []  # the first row would have been step 10's


def test_a_failure_after_an_unread_nan_is_said_as_the_nan(tmp_path, images, capfd, monkeypatch):
    # Step 5's NaN is not read until the next flush; step 6 fails first (what a NaN often leads to), and
    # the message names the NaN that caused it rather than its consequence.
    part = relpos.get_pretext("part")
    original, calls = part.forward, []

    def forward(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise RuntimeError("probability tensor contains either inf, nan or element < 0")
        loss, logs = original(self, *args, **kwargs)
        return (loss * float("nan"), logs) if len(calls) == 5 else (loss, logs)

    monkeypatch.setattr(part, "forward", forward)
    out = tmp_path / "run"
    assert main([*image_args(out, steps=10, ckpt_every=4), "--set", "train.log_every=10", "--data", str(images)]) == 1
    (line,) = error_lines(capfd)
    assert line.startswith("relpos: error: The loss became nan at step 5, so training stopped and the last good "
                           "checkpoint (step 4)")


def test_a_resumed_run_that_fails_keeps_the_run(tmp_path, images, capfd, fail_at):
    out = tmp_path / "run"
    assert main([*image_args(out, steps=2), "--data", str(images)]) == 0
    ckpt = out / "checkpoints" / "last.pt"
    before = ckpt.read_bytes()
    capfd.readouterr()
    for exc, code in ((None, 1), (RuntimeError("plugin bug"), None), (KeyboardInterrupt(), 130)):
        fail_at(1, exc)
        args = [*image_args(out, steps=4), "--data", str(images), "--resume"]
        if code is None:
            with pytest.raises(RuntimeError, match="plugin bug"):
                main(args)
        else:
            assert main(args) == code
        assert ckpt.read_bytes() == before
        assert (out / "config.yaml").is_file() and (out / "metrics.csv").is_file()
        assert [r["step"] for r in read_metrics(out)[1]] == ["1", "2"]
    err = capfd.readouterr().err
    assert f"the last good checkpoint (step 2) is {str(ckpt)!r}" in err
    assert f"relpos: interrupted; the last checkpoint (step 2) is kept in {ckpt} (continue with --resume)." in err


# -- leftovers of killed processes ------------------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporary_files_of_killed_writers_are_removed_on_the_next_start(tmp_path, images):
    out = tmp_path / "run"
    assert main([*image_args(out, steps=2), "--data", str(images)]) == 0
    ckpts = out / "checkpoints"
    dead = _dead_pid()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [ckpts / f".last.pt.tmp-{dead}", ckpts / f".last.pt.tmp-{os.getpid()}", out / f".config.yaml.tmp-{dead}"]
        others = [ckpts / ".last.pt.tmp-abc", ckpts / f"last.pt.tmp-{dead}", ckpts / f".best.pt.tmp-{dead}",
                  ckpts / f".last.pt.tmp-{dead}.bak", out / f".notes.tmp-{dead}", ckpts / f".last.pt.tmp-{alive.pid}"]
        for path in stale + others:
            path.write_bytes(b"half a checkpoint")
        assert main([*image_args(out, steps=3), "--data", str(images), "--resume"]) == 0
        assert not [p for p in stale if p.exists()]
        assert all(p.exists() for p in others)  # not our pattern, or a writer still alive
    finally:
        alive.kill()
        alive.wait()


def test_a_fresh_start_drops_tensorboard_events_of_a_run_that_never_checkpointed(tmp_path, images, fail_at):
    out = tmp_path / "run"
    events = out / "tensorboard" / "events.out.tfevents.1700000000.host.123.0"
    events.parent.mkdir(parents=True)
    events.write_bytes(b"killed before its first checkpoint")
    keep = out / "tensorboard" / "readme.txt"
    keep.write_text("mine")
    assert main([*image_args(out, steps=2), "--data", str(images)]) == 0
    assert not events.exists() and keep.exists()
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1  # this run's own


# -- inputs that never end ----------------------------------------------------------------------------
def test_a_named_pipe_as_data_is_refused_without_waiting(tmp_path, capfd, no_hang):
    fifo = tmp_path / "signals.npy"
    os.mkfifo(fifo)
    out = tmp_path / "run"
    for modality in ("eeg", "image", "timeseries"):
        assert main(["train", "--modality", modality, "--data", str(fifo), "--out", str(out), "--no-progress"]) == 2
        assert error_lines(capfd) == [
            f"relpos: error: Data path {str(fifo)!r} is a named pipe (FIFO), not a file or folder; relpos "
            f"reads data from regular files and folders only."
        ]
        assert not out.exists()


def test_devices_and_sockets_as_data_are_refused(tmp_path, capfd):
    sock_path = tmp_path / "data.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    try:
        for path, kind in (("/dev/zero", "a character device"), (str(sock_path), "a socket")):
            assert main(["train", "--modality", "image", "--data", path, "--out", str(tmp_path / "run"),
                         "--no-progress"]) == 2
            (line,) = error_lines(capfd)
            assert f"Data path {path!r} is {kind}, not a file or folder" in line
    finally:
        server.close()


def test_a_named_pipe_inside_a_data_folder_is_skipped(tmp_path, images, no_hang):
    os.mkfifo(images / "stream.png")
    assert main([*image_args(tmp_path / "run", steps=1), "--data", str(images)]) == 0


@pytest.mark.parametrize("modality, name", [("eeg", "night.edf"), ("timeseries", "signals.npy")])
def test_a_named_pipe_named_in_a_list_file_is_refused_without_waiting(tmp_path, capfd, no_hang, modality, name):
    os.mkfifo(tmp_path / name)
    listing = tmp_path / "files.txt"
    listing.write_text(f"# recordings\n{name}\n")
    assert main(["train", "--modality", modality, "--data", str(listing), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    assert error_lines(capfd) == [
        f"relpos: error: Data path {str(tmp_path / name)!r} (line 2 of list file {str(listing)!r}) is a named "
        f"pipe (FIFO), not a file or folder; relpos reads data from regular files and folders only."
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("modality", ["eeg", "image", "timeseries"])
def test_data_inspect_refuses_a_named_pipe_without_waiting(tmp_path, capfd, no_hang, modality):
    fifo = tmp_path / "data.npy"
    os.mkfifo(fifo)
    assert main(["data", "inspect", "--modality", modality, str(fifo)]) == 2
    assert error_lines(capfd) == [
        f"relpos: error: Data path {str(fifo)!r} is a named pipe (FIFO), not a file or folder; relpos reads "
        f"data from regular files and folders only."
    ]


def test_eval_refuses_a_named_pipe_as_data(tmp_path, capfd, no_hang):
    fifo = tmp_path / "labels.npz"
    os.mkfifo(fifo)
    assert main(["eval", str(tmp_path / "no-run"), "--data", str(fifo), "--no-progress"]) == 2
    (line,) = error_lines(capfd)
    assert f"Data path {str(fifo)!r} is a named pipe (FIFO)" in line


@pytest.mark.parametrize("repeats", ["101", "1000000000", "0", "-3"])
def test_eval_repeats_beyond_reason_are_refused_before_anything_is_read(tmp_path, capfd, repeats):
    assert main(["eval", str(tmp_path / "no-run"), "--repeats", repeats]) == 2
    (line,) = error_lines(capfd)
    assert line == (
        f"relpos: error: Invalid value for 'repeats': expected an integer from 1 to 100 (each repeat runs "
        f"the whole protocol again), got {int(repeats)}."
    )

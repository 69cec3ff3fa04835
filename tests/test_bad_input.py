"""Every user mistake ends in one readable line, exit status 2, and no run directory.

Every case runs ``relpos.cli.main`` in-process (fast), capturing stderr at the file-descriptor level
and adding any Python warning as the line a real process would print. Two cases (one failing while
resolving the config, one while reading data with MNE) also run as a real ``python -m relpos.cli``
process, to check what a user sees there: exit status, no traceback, no stray warning lines.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import run_cli, tiny_args

import relpos
from relpos.cli import main


def assert_one_line_error(code: int, stderr: str, facts: list[str]) -> str:
    """Exit 2, a single ``relpos: error:`` line naming every fact, no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    line = lines[0]
    assert line.startswith("relpos: error:"), line
    for fact in facts:
        assert fact in line, f"{fact!r} missing from: {line}"
    assert code == 2, f"exit status {code}, expected 2; stderr: {stderr}"
    return line


# Each case: (id, extra CLI args, facts the message must contain). "{tmp}" is the test's tmp_path.
def _cases():
    return [
        ("unknown-modality", ["--modality", "eg"], ["'eg'", "Did you mean 'eeg'"]),
        ("unknown-pretext", ["--pretext", "prat"], ["'prat'", "Did you mean 'part'"]),
        ("misspelled-key", ["--set", "train.stpes=3"], ["'train.stpes'", "Did you mean 'steps'"]),
        ("mistyped-value", ["--set", "train.steps=abc"], ["'train.steps'", "'abc'", "integer"]),
        ("missing-data", ["--data", "{tmp}/no_such_recording.edf"],
         ["{tmp}/no_such_recording.edf", "does not exist"]),
        ("random-bytes-edf", ["--data", "{tmp}/x.edf"], ["{tmp}/x.edf", "Cannot read"]),
        # The sample cut to 12 s: 12 s * 160 Hz = 1920 samples -> 1200 at 100 Hz = 12.0 s < 30.0 s.
        ("short-recording", ["--data", "{tmp}/short_raw.fif"],
         ["{tmp}/short_raw.fif", "12.0 s", "30.0 s"]),
        ("image-below-patch", ["--modality", "image", "--data", "{tmp}/tiny/dot.png",
                               "--set", "modality.patch_size=4"],
         ["{tmp}/tiny/dot.png", "3×3 px", "4 px"]),
        ("empty-image-folder", ["--modality", "image", "--data", "{tmp}/empty"],
         ["{tmp}/empty", "No images found"]),
        ("empty-eeg-folder", ["--data", "{tmp}/empty"], ["{tmp}/empty", "No recordings found"]),
        ("resume-without-checkpoint", ["--resume"], ["Cannot resume", "does not exist", "without --resume"]),
        ("unknown-yaml-key", ["--config", "{tmp}/bad.yaml"], ["'trian'", "Did you mean 'train'"]),
        ("missing-config-file", ["--config", "{tmp}/nope.yaml"], ["{tmp}/nope.yaml", "does not exist"]),
        ("cuda-without-gpu", ["--device", "cuda:0"], ["'cuda:0'", "no CUDA GPU"]),
        ("npz-without-images", ["--modality", "image", "--data", "{tmp}/labels_only.npz"],
         ["{tmp}/labels_only.npz", "['y']", "npz_key"]),
    ]


@pytest.fixture
def bad_inputs(tmp_path, make_recording, make_image_folder):
    """Write every bad input the cases refer to."""
    (tmp_path / "x.edf").write_bytes(np.random.default_rng(0).bytes(4096))
    make_recording(12.0, "short_raw.fif")
    make_image_folder("tiny", [("dot.png", "RGB", (3, 3))])
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.yaml").write_text("trian:\n  steps: 3\n")
    np.savez(tmp_path / "labels_only.npz", y=np.arange(4))
    return tmp_path


def _run_in_process(args, capfd):
    """``relpos.cli.main(args)`` -> (code, stdout, stderr), with Python warnings shown on stderr as a
    real process would show them (DeprecationWarnings are hidden there by default)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main([str(a) for a in args])
    captured = capfd.readouterr()
    shown = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    stderr = captured.err + "".join(f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}\n" for w in shown)
    return code, captured.out, stderr


CASES = _cases()
CASE_IDS = [c[0] for c in CASES]
CASE_PARAMS = [c[1:] for c in CASES]
#: Cases also run as a real process: one that fails while resolving the config and one
#: while reading data (after MNE is imported), to check the process shows no traceback or warning.
SUBPROCESS_CASES = {"unknown-modality", "random-bytes-edf"}


@pytest.mark.parametrize("args, facts", CASE_PARAMS, ids=CASE_IDS)
def test_bad_input_is_one_line_exit_2_and_no_run_dir(bad_inputs, args, facts, capfd, monkeypatch):
    tmp = str(bad_inputs)
    monkeypatch.chdir(bad_inputs)
    out = bad_inputs / "run"
    args = [a.replace("{tmp}", tmp) for a in args]
    code, stdout, stderr = _run_in_process(["train", *args, *tiny_args(2), "--out", out], capfd)
    assert_one_line_error(code, stderr, [f.replace("{tmp}", tmp) for f in facts])
    assert not out.exists(), "a failed run must not leave a run directory"
    assert "trained" not in stdout


@pytest.mark.parametrize(
    "args, facts",
    [p for i, p in zip(CASE_IDS, CASE_PARAMS) if i in SUBPROCESS_CASES],
    ids=[i for i in CASE_IDS if i in SUBPROCESS_CASES],
)
def test_bad_input_in_a_real_process(bad_inputs, args, facts):
    tmp = str(bad_inputs)
    out = bad_inputs / "run"
    args = [a.replace("{tmp}", tmp) for a in args]
    code, stdout, stderr = run_cli("train", *args, *tiny_args(2), "--out", out, cwd=bad_inputs)
    assert_one_line_error(code, stderr, [f.replace("{tmp}", tmp) for f in facts])
    assert not out.exists()
    assert stdout == ""


@dataclass
class _ImageOnlyConfig:
    strength: float = 1.0


class _ImageOnlyPretext(relpos.Pretext):
    """Test pretext that declares support for the image modality only."""

    name = "image-only-test"
    Config = _ImageOnlyConfig
    modalities = ("image",)

    def forward(self, batch, generator):  # registration requires it; these tests never train
        raise NotImplementedError("image-only-test only resolves configurations")


class _ImageOnlyPlugin:
    @relpos.hookimpl
    def register_pretexts(self, register):
        register(_ImageOnlyPretext)


@pytest.fixture
def image_only_pretext():
    from relpos.plugins import register_plugin, unregister_plugin

    register_plugin(_ImageOnlyPlugin(), "image-only-test-plugin")
    try:
        yield _ImageOnlyPretext.name
    finally:
        unregister_plugin("image-only-test-plugin")


def test_pretext_that_does_not_support_the_modality(image_only_pretext, tmp_path, capfd):
    out = tmp_path / "run"
    code, _, stderr = _run_in_process(
        ["train", "--modality", "eeg", "--pretext", image_only_pretext, *tiny_args(2), "--out", out], capfd
    )
    assert_one_line_error(
        code, stderr, ["'image-only-test'", "does not support modality 'eeg'", "supports 'image'"]
    )
    assert not out.exists()


def test_the_same_pretext_is_accepted_for_its_modality(image_only_pretext):
    # The registration itself works: the image modality resolves (no training: the pretext is a stub).
    config = relpos.resolve_config(modality="image", pretext=image_only_pretext)
    assert (config.modality, config.pretext) == ("image", "image-only-test")


def test_out_that_is_a_file(tmp_path, capfd):
    not_a_dir = tmp_path / "results.txt"
    not_a_dir.write_text("keep me\n")
    code, _, stderr = _run_in_process(["train", *tiny_args(1), "--out", not_a_dir], capfd)
    assert_one_line_error(code, stderr, [str(not_a_dir)])
    assert not_a_dir.read_text() == "keep me\n"

"""``relpos`` end to end: what a run leaves on disk, and each kind of data the CLI trains on."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import CONFIGS, read_metrics, run_cli, tiny_args

import relpos
from relpos.cli import main

METRICS_HEADER = ["step", "loss", "loss_baseline", "lr", "samples_per_s", "center_l2", "rankme"]
CHECKPOINT_KEYS = {"step", "model", "optimizer", "rng", "config", "encoder"}


def run_main(args) -> tuple[int, str]:
    """``relpos.cli.main`` in-process; returns (exit code, stdout)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main([str(a) for a in args])
    return code, buf.getvalue()


def load_ckpt(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)


def assert_trained(run_dir: Path, steps: int) -> dict:
    """The run finished ``steps`` steps: metrics rows 1..steps with finite losses, checkpoint at ``steps``."""
    header, rows = read_metrics(run_dir)
    assert header[:4] == METRICS_HEADER[:4]
    assert [int(r["step"]) for r in rows][-1] == steps
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    ckpt = load_ckpt(run_dir)
    assert ckpt["step"] == steps
    return ckpt


# -- the default run: the embedded EEG recording, no --data, no --out -------------------------------
@pytest.fixture(scope="module")
def eeg_run(tmp_path_factory):
    """``relpos train`` with no --data and no --out, from an empty working directory, 3 steps."""
    cwd = tmp_path_factory.mktemp("eeg_cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        code, stdout = run_main(["train", *tiny_args(3), "--set", "train.log_every=1"])
    return {"cwd": cwd, "code": code, "stdout": stdout, "run_dir": cwd / "runs" / "eeg-part"}


def test_default_run_goes_to_runs_modality_pretext(eeg_run):
    assert eeg_run["code"] == 0
    run_dir = eeg_run["run_dir"]
    assert run_dir.is_dir()
    assert os.listdir(eeg_run["cwd"]) == ["runs"]
    assert "relpos: trained 3 steps" in eeg_run["stdout"]
    assert str(Path("runs") / "eeg-part") in eeg_run["stdout"]


def test_run_dir_has_config_metrics_checkpoint_and_tensorboard(eeg_run):
    run_dir = eeg_run["run_dir"]
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "config.yaml", "metrics.csv", "plots", "tensorboard"]
    assert [p.name for p in (run_dir / "plots").iterdir()] == ["loss.png"]  # drawn at the end of every run
    assert any(p.name.startswith("events.out.tfevents") for p in (run_dir / "tensorboard").iterdir())


def test_config_yaml_re_resolves_to_the_same_config(eeg_run):
    path = eeg_run["run_dir"] / "config.yaml"
    saved = yaml.safe_load(path.read_text())
    assert saved["modality"]["name"] == "eeg" and saved["pretext"]["name"] == "part"
    assert saved["data"] is None  # the bundled sample
    assert saved["encoder"]["dim"] == 32 and saved["train"]["steps"] == 3
    assert relpos.resolve_config(path).to_dict() == saved
    # ...and it is what the command line asked for.
    expected = relpos.resolve_config(
        overrides=["encoder.dim=32", "encoder.depth=1", "encoder.heads=2", "pretext.n_pairs=16",
                   "train.batch_size=2", "train.steps=3", "train.log_every=1", "train.progress=false"]
    )
    assert saved == expected.to_dict()


def test_metrics_csv_has_one_row_per_logged_step(eeg_run):
    header, rows = read_metrics(eeg_run["run_dir"])
    assert header == METRICS_HEADER
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert [bool(r["rankme"]) for r in rows] == [False, False, True]  # the monitors: every 100 steps and the last
    # Warm-up is min(warmup_steps=20, steps=3) = 3 steps, so lr_k = 5e-4 * k / 3.
    assert [float(r["lr"]) for r in rows] == pytest.approx([5e-4 / 3, 2 * 5e-4 / 3, 5e-4], rel=1e-12)
    for r in rows:
        assert math.isfinite(float(r["loss"])) and float(r["loss"]) > 0
        assert float(r["samples_per_s"]) > 0
        assert float(r["center_l2"]) >= 0
    # The printed final loss is the last logged loss.
    assert f"final loss {float(rows[-1]['loss']):.4f}" in eeg_run["stdout"]


def test_checkpoint_holds_what_resume_and_load_encoder_need(eeg_run):
    run_dir = eeg_run["run_dir"]
    ckpt = load_ckpt(run_dir)
    assert CHECKPOINT_KEYS <= set(ckpt)
    assert ckpt["step"] == 3
    assert ckpt["config"] == yaml.safe_load((run_dir / "config.yaml").read_text())
    # 64 EEG channels; 1-s patches at 100 Hz are 100 samples long.
    assert ckpt["encoder"]["in_channels"] == 64
    assert ckpt["encoder"]["patch_shape"] == [100]
    assert ckpt["encoder"]["config"]["dim"] == 32
    # The 30-s windows at 100 Hz are 3000 samples.
    assert ckpt["data_info"]["extent"] == [3000]
    assert ckpt["data_info"]["channels"] == 64
    assert not [n for n in os.listdir(run_dir / "checkpoints") if "tmp" in n]


def test_real_process_prints_the_summary_and_exits_0(tmp_path):
    out = tmp_path / "run"
    code, stdout, stderr = run_cli("train", *tiny_args(2), "--out", out, cwd=tmp_path)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    _, rows = read_metrics(out)
    # PART reports its trivial baseline, so the line says where the run ended relative to it.
    last = rows[-1]
    percent = 100 * float(last["loss"]) / float(last["loss_baseline"])
    assert stdout.strip() == (
        f"relpos: trained 2 steps, final loss {float(last['loss']):.4f} (mean loss of the last step "
        f"{float(last['loss']):.4g}, {percent:.0f} % of the trivial baseline {float(last['loss_baseline']):.4g} "
        f"(not clearly below it; a run is judged from step 30 on, so this one is too short to tell)); "
        f"run directory: {out}"
    )


def test_console_script_reports_its_version():
    script = Path(sys.executable).parent / "relpos"
    if not script.exists():
        script = shutil.which("relpos")
    if not script:
        pytest.skip("the relpos console script is not installed next to this Python")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"relpos {relpos.__version__}"


# -- images ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("pretext", ["part", "part-grid"])
def test_image_folder_of_mixed_sizes_and_modes_trains(make_image_folder, tmp_path, pretext):
    folder = make_image_folder()  # 40x30 RGB, 33x50 L, 36x36 RGBA PNGs and a 45x38 JPEG
    out = tmp_path / f"run-{pretext}"
    code, _ = run_main(["train", "--modality", "image", "--pretext", pretext, "--data", folder,
                        *tiny_args(2), "--out", out])
    assert code == 0
    ckpt = assert_trained(out, 2)
    assert ckpt["config"]["modality"]["name"] == "image"
    assert ckpt["config"]["pretext"]["name"] == pretext
    assert ckpt["config"]["data"] == str(folder)
    # One image is colour, so all become RGB; every image is resized/cropped to 32x32 (the default).
    assert ckpt["data_info"]["extent"] == [32, 32]
    assert ckpt["data_info"]["channels"] == 3
    assert ckpt["encoder"]["in_channels"] == 3 and ckpt["encoder"]["patch_shape"] == [4, 4]


def test_image_folder_opens_one_window_per_image(make_image_folder):
    folder = make_image_folder()
    windows = relpos.get_modality("image")().load(folder)
    assert tuple(windows.x.shape) == (4, 3, 32, 32)
    # Pixels are scaled to [-1, 1].
    assert windows.x.min() >= -1 and windows.x.max() <= 1


def test_npz_of_uint8_images_trains(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(8, 20, 20), dtype=np.uint8)
    path = tmp_path / "digits.npz"
    np.savez(path, x=images)
    out = tmp_path / "run"
    code, _ = run_main(["train", "--modality", "image", "--data", path, *tiny_args(2), "--out", out])
    assert code == 0
    ckpt = assert_trained(out, 2)
    # (8, 20, 20) greyscale -> 8 single-channel windows, upsampled to 32x32.
    assert ckpt["data_info"]["channels"] == 1
    assert ckpt["data_info"]["extent"] == [32, 32]
    assert ckpt["data_info"]["source"] == f"{path}:x"


def test_mnist_from_shared_data_trains(shared_data, tmp_path):
    mnist = shared_data / "images" / "mnist.npz"
    if not mnist.is_file():
        pytest.skip(f"{mnist} not found")
    out = tmp_path / "run"
    code, _ = run_main(["train", "--modality", "image", "--data", mnist, "--set", "modality.max_images=64",
                        *tiny_args(2), "--out", out])
    assert code == 0
    ckpt = assert_trained(out, 2)
    assert ckpt["data_info"]["source"] == f"{mnist}:x_train"
    assert ckpt["data_info"]["channels"] == 1  # MNIST digits are grey
    assert ckpt["data_info"]["extent"] == [32, 32]  # 28x28 resized to image_size 32


# -- config files and --print-config ---------------------------------------------------------------
def test_config_file_with_set_overrides(tmp_path):
    out = tmp_path / "run"
    code, _ = run_main([
        "train", "--config", CONFIGS / "eeg_part.yaml", "--set", "train.steps=2", "--set", "pretext.n_pairs=64",
        "--set", "encoder.dim=32", "--set", "encoder.depth=1", "--set", "encoder.heads=2",
        "--set", "train.batch_size=2", "--no-progress", "--out", out,
    ])
    assert code == 0
    assert_trained(out, 2)
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["pretext"]["n_pairs"] == 64  # --set beats the file's 512
    assert resolved["train"]["steps"] == 2  # --set beats the file's 300
    # Values only the file sets survive; the file's "lr: 5e-4" (a string to YAML) is a float.
    assert resolved["modality"]["stride_s"] == 5.0
    assert resolved["pretext"]["head"] == "cross_attention"
    assert resolved["train"]["lr"] == 0.0005 and isinstance(resolved["train"]["lr"], float)


def test_print_config_prints_yaml_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout = run_main([
        "train", "--print-config", "--modality", "image", "--data", "my images",
        "--steps", "5", "--set", "train.steps=7", "--set", "encoder.dim=48", "--set", "modality.patch_size=8",
    ])
    assert code == 0
    config = yaml.safe_load(stdout)
    assert config["modality"]["name"] == "image"
    assert config["modality"]["patch_size"] == 8
    assert config["encoder"]["dim"] == 48
    assert config["train"]["steps"] == 7  # --set is applied after --steps
    assert config["data"] == "my images"  # paths go in verbatim
    assert config["out"] is None
    assert os.listdir(tmp_path) == []


def test_steps_flag_sets_train_steps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout = run_main(["train", "--print-config", "--steps", "5", "--seed", "3"])
    assert code == 0
    config = yaml.safe_load(stdout)
    assert (config["train"]["steps"], config["train"]["seed"]) == (5, 3)
    assert os.listdir(tmp_path) == []


# -- plugins ---------------------------------------------------------------------------------------
def test_plugins_lists_builtin_modalities_and_pretexts(capsys):
    assert main(["plugins"]) == 0
    text = capsys.readouterr().out
    modalities, pretexts = text.split("Pretexts:")
    for name in ("eeg", "image"):
        assert f"  {name} " in modalities
    for name in ("part", "part-grid"):
        assert f"  {name} " in pretexts
    assert "Failed to load" not in text


def test_plugins_json(capsys):
    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = {(p["kind"], p["name"]) for p in data["plugins"]}
    assert {("modality", "eeg"), ("modality", "image"), ("pretext", "part"), ("pretext", "part-grid")} <= names
    part = next(p for p in data["plugins"] if p["name"] == "part")
    assert {"eeg", "image"} <= set(part["modalities"])
    assert data["failed"] == []


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "train" in capsys.readouterr().out

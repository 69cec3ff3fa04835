"""Shared fixtures for the relpos test-suite.

Every training run here is tiny (32-dim, one block, 16 pairs, batch 2) so the whole suite runs on two
CPU cores in a few minutes. Runs write only under pytest's ``tmp_path``.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
#: The real EEG recording shipped inside the package (64 EEG channels, 160 Hz, 61.0 s).
EEG_SAMPLE = REPO / "modalities" / "data" / "eegmmidb_S001R02.edf"
#: Real data sets shared beside the repository (may be absent on other machines).
SHARED_DATA = REPO.parent / "shared" / "data"

#: ``--set`` values that make any run tiny.
TINY_OVERRIDES = [
    "encoder.dim=32",
    "encoder.depth=1",
    "encoder.heads=2",
    "pretext.n_pairs=16",
    "train.batch_size=2",
]


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """Point the window cache at a per-session temporary folder, never the user's ~/.cache."""
    import os

    previous = os.environ.get("RELPOS_CACHE_DIR")
    os.environ["RELPOS_CACHE_DIR"] = str(tmp_path_factory.mktemp("relpos-cache"))
    yield
    if previous is None:
        os.environ.pop("RELPOS_CACHE_DIR", None)
    else:
        os.environ["RELPOS_CACHE_DIR"] = previous


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, and far slower with two when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_tiny_part(out: str | Path, modality: str = "eeg", data=None, extra=(), steps: int = 2) -> Path:
    """A tiny PART run of ``steps`` steps (every step logged) in ``out``, from Python."""
    import relpos

    config = relpos.resolve_config(
        modality=modality, pretext="part",
        overrides=[*TINY_OVERRIDES, f"train.steps={steps}", "train.progress=false", "train.log_every=1", *extra],
    )
    config.out = str(out)
    config.data = None if data is None else str(data)
    relpos.train(config)
    return Path(out)


def tiny_args(steps: int = 2) -> list[str]:
    """CLI arguments for a tiny run of ``steps`` steps without a progress bar."""
    args: list[str] = []
    for override in TINY_OVERRIDES:
        args += ["--set", override]
    return [*args, "--steps", str(steps), "--no-progress"]


@pytest.fixture
def tiny() -> list[str]:
    """The tiny ``key=value`` overrides (for :func:`relpos.resolve_config`)."""
    return list(TINY_OVERRIDES)


def run_cli(*args: str, cwd: str | Path | None = None, timeout: float = 300) -> tuple[int, str, str]:
    """Run ``relpos ARGS`` as a real process (``python -m relpos.cli``); return (code, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "relpos.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        timeout=timeout,
    )
    return (
        proc.returncode,
        proc.stdout.decode("utf-8", errors="replace"),
        proc.stderr.decode("utf-8", errors="replace"),
    )


@pytest.fixture
def cli():
    """The :func:`run_cli` helper as a fixture."""
    return run_cli


def read_metrics(run_dir: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a run's metrics.csv."""
    with open(Path(run_dir) / "metrics.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


# -- data factories ----------------------------------------------------------------------------
#: (file name, PIL mode, (width, height)) of a small, deliberately mixed image folder.
DEFAULT_IMAGES = [
    ("rgb_40x30.png", "RGB", (40, 30)),
    ("grey_33x50.png", "L", (33, 50)),
    ("alpha_36x36.png", "RGBA", (36, 36)),
    ("photo_45x38.jpg", "RGB", (45, 38)),
]


@pytest.fixture
def make_image_folder(tmp_path):
    """Factory: ``make_image_folder(name="images", specs=DEFAULT_IMAGES)`` writes images, returns the folder."""
    from PIL import Image

    def make(name: str = "images", specs=DEFAULT_IMAGES, seed: int = 0) -> Path:
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        for filename, mode, (width, height) in specs:
            bands = len(Image.new(mode, (1, 1)).getbands())
            pixels = rng.integers(0, 256, size=(height, width, bands), dtype=np.uint8)
            img = Image.fromarray(pixels[..., 0] if bands == 1 else pixels, mode=mode)
            path = folder / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path)
        return folder

    return make


@pytest.fixture
def make_recording(tmp_path):
    """Factory: ``make_recording(seconds, name="short_raw.fif")`` cuts the real EEG sample to
    ``seconds`` and saves it as FIF (160 Hz, 64 channels); returns the file path."""

    def make(seconds: float, name: str = "short_raw.fif") -> Path:
        import mne

        raw = mne.io.read_raw_edf(EEG_SAMPLE, preload=True, verbose="error")
        raw.crop(0.0, seconds, include_tmax=False, verbose="error")
        path = tmp_path / name
        raw.save(path, overwrite=True, verbose="error")
        return path

    return make


@pytest.fixture
def shared_data() -> Path:
    """``/work/shared/data`` beside the repository, or a skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared real data not found at {SHARED_DATA} (it lives beside the repository)")
    return SHARED_DATA


def kill_after_a_checkpoint(argv: list[str], out: str | Path, min_step: int = 1, before_step: int | None = None,
                            timeout: float = 300) -> tuple[int, int]:
    """Run ``relpos ARGV`` in a real process and SIGKILL it once it has a checkpoint at step ``min_step`` or
    later (and before ``before_step``) *and* has logged steps after it, which resume must drop and replay.

    The process is frozen (SIGSTOP) while it is looked at, so it cannot run on behind the test's back
    however fast its steps are, and runs on the same number of torch threads as this process (whose
    in-process run it is compared with bit for bit). Returns (the checkpoint's step, rows logged).
    """
    import os
    import signal
    import time

    out = Path(out)
    ckpt, metrics = out / "checkpoints" / "last.pt", out / "metrics.csv"
    proc = subprocess.Popen([sys.executable, "-m", "relpos.cli", *map(str, argv)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the run ended by itself (exit {proc.returncode}) before it could be killed: "
                            f"{proc.stderr.read().decode(errors='replace')}")
            if time.monotonic() > deadline:
                pytest.fail("the run made no checkpoint in time")
            if ckpt.exists() and metrics.exists():
                os.kill(proc.pid, signal.SIGSTOP)
                step = int(torch.load(ckpt, map_location="cpu", weights_only=True)["step"])
                rows = len(metrics.read_text().splitlines()) - 1
                if rows > step >= min_step and (before_step is None or step < before_step):
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

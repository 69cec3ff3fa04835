"""``relpos eval`` end to end on tiny runs: every protocol and baseline, the files it writes, bad input.

Tiny runs (2 steps, 32-dim, one block) are trained once per module: PART on BasicMotions (real
data, skipped when the shared data is absent), on a generated labelled image archive, on a generated
timeseries archive with subjects but no test split, and on the bundled EEG sample (no labels).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
import shutil

import numpy as np
import pytest
from conftest import CONFIGS, SHARED_DATA, TINY_OVERRIDES

import relpos
from relpos.cli import main
from relpos.checkpoint import atomic_torch_save, checkpoint_path, load_checkpoint
from relpos.evaluation import METRICS

BASICMOTIONS = SHARED_DATA / "sensor" / "basicmotions.npz"


def _train(config, out: Path, extra=(), data=None) -> Path:
    overrides = [*TINY_OVERRIDES, "train.steps=2", "train.progress=false", "train.tensorboard=false",
                 f"out={out}", *extra]
    config = relpos.resolve_config(config, overrides=overrides)
    if data is not None:
        config.data = str(data)
    return relpos.train(config).run_dir


@pytest.fixture(scope="module")
def image_npz(tmp_path_factory) -> Path:
    """24 training and 12 test 8×8 images: class 'dark' near 0, class 'bright' near 255."""
    rng = np.random.default_rng(0)

    def images(n):
        y = np.tile([0, 1], n // 2)
        x = np.where(y[:, None, None] == 1, 200, 30) + rng.integers(0, 40, size=(n, 8, 8))
        return x.astype(np.uint8), y.astype(np.int64)

    x_train, y_train = images(24)
    x_test, y_test = images(12)
    path = tmp_path_factory.mktemp("eval-data") / "shades.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             class_names=np.array(["dark", "bright"]))
    return path


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, image_npz) -> Path:
    out = tmp_path_factory.mktemp("eval-image") / "run"
    return _train({"modality": {"name": "image", "image_size": 8, "patch_size": 4}}, out, data=image_npz)


@pytest.fixture(scope="module")
def bm_run(tmp_path_factory) -> Path:
    if not BASICMOTIONS.is_file():
        pytest.skip(f"shared real data not found at {BASICMOTIONS}")
    out = tmp_path_factory.mktemp("eval-bm") / "run"
    return _train(CONFIGS / "basicmotions_part.yaml", out, data=BASICMOTIONS)


@pytest.fixture(scope="module")
def subjects_run(tmp_path_factory) -> Path:
    """Timeseries cases of 6 subjects (5 each, 2 channels, 4 s at 10 Hz) with no test split."""
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("eval-ts") / "cases.npz"
    np.savez(path, X=rng.standard_normal((30, 2, 40)).astype(np.float32), y=np.tile([0, 1, 2], 10),
             subjects=np.repeat([f"s{i}" for i in range(6)], 5), sfreq=np.array(10.0))
    out = path.parent / "run"
    return _train({"modality": {"name": "timeseries", "patch_s": 1.0}}, out, data=path)


@pytest.fixture(scope="module")
def eeg_run(tmp_path_factory) -> Path:
    """The bundled EEG sample, which has no labels."""
    return _train(None, tmp_path_factory.mktemp("eval-eeg") / "run")


def run_eval(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["eval", *map(str, args), "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_json(run: Path, name: str) -> dict:
    return json.loads((run / "eval" / f"{name}.json").read_text())


def read_csv(run: Path) -> list[dict]:
    with open(run / "eval" / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# -- protocols end to end ---------------------------------------------------------------------------
def test_linear_probe_writes_json_csv_and_prints_a_table(capsys, image_run):
    before = len(read_csv(image_run)) if (image_run / "eval" / "results.csv").exists() else 0
    code, out, err = run_eval(capsys, image_run, "--protocol", "linear")
    assert code == 0, err
    for metric in METRICS:
        assert metric in out
    assert "linear probe" in out and "train 24 windows · test 12 windows" in out
    result = read_json(image_run, "linear-pretrained-cls")
    assert set(result["mean"]) == set(METRICS) and result["repeats"] == 1
    assert result["split"] == "the data set's own train/test split"
    assert result["n_train"] == [24] and result["n_test"] == 12
    assert result["class_names"] == ["dark", "bright"]
    assert result["chosen"][0]["C"] in result["options"]["cs"]
    # Dark and bright images (normalised to about -0.6 and +0.7) are linearly separable even for a
    # barely trained encoder.
    assert result["mean"]["accuracy"] == 1.0 and result["mean"]["cohen_kappa"] == 1.0
    rows = read_csv(image_run)
    assert len(rows) == before + 2  # the evaluation card scores random init beside it, with the same seed
    assert rows[-2]["protocol"] == "linear" and float(rows[-2]["accuracy"]) == 1.0
    assert rows[-1]["init"] == "random"
    assert "results written to" in err


def test_knn_on_basicmotions(capsys, bm_run):
    code, out, err = run_eval(capsys, bm_run, "--protocol", "knn")
    assert code == 0, err
    result = read_json(bm_run, "knn-pretrained-cls")
    # BasicMotions: 40 training and 40 test cases (10 per class each); 4 classes.
    assert result["n_train"] == [40] and result["n_test"] == 40
    assert result["class_names"] == ["Standing", "Running", "Walking", "Badminton"]
    # k is swept over {10, 20, 100, 200} capped at the 32 cases left for fitting (8 validate).
    assert result["chosen"][0]["k"] in (10, 20, 32)
    assert 0.0 <= result["mean"]["accuracy"] <= 1.0


@pytest.mark.parametrize("fixture", ["image_run", "bm_run"])
def test_finetune_two_steps(capsys, request, fixture):
    run = request.getfixturevalue(fixture)
    code, out, err = run_eval(capsys, run, "--protocol", "finetune", "--set", "eval.steps=2")
    assert code == 0, err
    assert "fine-tuning" in out
    chosen = read_json(run, "finetune-pretrained-cls")["chosen"][0]
    # PART encoders see no positions, so fine-tuning adds learnable ones.
    assert chosen["steps"] == 2 and chosen["pos_embed"] == "learned"


def test_repeats_report_mean_and_sample_std(capsys, image_run):
    code, out, err = run_eval(capsys, image_run, "--protocol", "knn", "--features", "mean",
                              "--label-fraction", "0.5", "--repeats", "2")
    assert code == 0, err
    result = read_json(image_run, "knn-pretrained-mean-fraction0.5")
    assert len(result["metrics"]) == 2 and result["n_train"] == [12, 12]  # 0.5 × 12 per class × 2 classes
    for metric in METRICS:
        a, b = (r[metric] for r in result["metrics"])
        assert result["mean"][metric] == pytest.approx((a + b) / 2)
        # Sample std of two values: |a - b| / sqrt(2).
        assert result["std"][metric] == pytest.approx(abs(a - b) / 2**0.5)
    assert "±" in out and "2 repeat(s)" in out


@pytest.mark.parametrize("init", ["random", "supervised"])
def test_baselines(capsys, image_run, init):
    code, out, err = run_eval(capsys, image_run, "--init", init, "--set", "eval.steps=2")
    assert code == 0, err
    # --init supervised implies fine-tuning; random defaults to the linear probe.
    name = "finetune-supervised-cls" if init == "supervised" else "linear-random-cls"
    result = read_json(image_run, name)
    assert result["init"] == init and result["step"] == 0


def test_without_a_test_split_the_data_is_held_out_by_subject(subjects_run):
    result = relpos.evaluate(subjects_run, protocol="knn", progress=False, write=False)
    # 6 subjects of 5 cases: round(0.2 × 6) = 1 subject (5 cases) is held out, 25 cases train.
    assert result.split == "by subject (1 of 6 subjects held out)"
    assert result.n_test == 5 and result.n_train == [25]
    assert not (subjects_run / "eval").exists()


def test_python_api_returns_an_eval_result(image_run):
    result = relpos.evaluate(image_run, protocol="knn", progress=False, write=False)
    assert isinstance(result, relpos.EvalResult)
    assert result.protocol == "knn" and result.path is None
    assert set(result.mean) == set(METRICS)


# -- bad input -------------------------------------------------------------------------------------
def assert_one_line_error(code: int, err: str, *facts: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("relpos: error:")
    for fact in facts:
        assert fact in lines[0], lines[0]
    assert code == 2


def test_run_dir_without_checkpoint(capsys, tmp_path):
    code, _, err = run_eval(capsys, tmp_path)
    assert_one_line_error(code, err, "has no checkpoint", str(tmp_path))


def test_data_without_labels(capsys, eeg_run):
    code, _, err = run_eval(capsys, eeg_run)
    assert_one_line_error(code, err, "eegmmidb_S001R02.edf", "has no labels")


def test_label_fraction_leaving_a_class_empty(capsys, image_run):
    code, _, err = run_eval(capsys, image_run, "--label-fraction", "0.01")
    # 12 'dark' training images × 0.01 = 0.12 rounds to 0.
    assert_one_line_error(code, err, "class 'dark'", "0.01")


def test_data_of_another_modality(capsys, eeg_run, make_image_folder):
    folder = make_image_folder()
    code, _, err = run_eval(capsys, eeg_run, "--data", folder)
    assert_one_line_error(code, err, str(folder), "run's modality 'eeg'")


def test_supervised_with_a_frozen_protocol_is_refused(capsys, image_run):
    code, _, err = run_eval(capsys, image_run, "--init", "supervised", "--protocol", "knn")
    assert_one_line_error(code, err, "supervised", "'knn'", "finetune")


def test_unknown_eval_setting_suggests_the_nearest(capsys, image_run):
    code, _, err = run_eval(capsys, image_run, "--set", "eval.stpes=2")
    assert_one_line_error(code, err, "'eval.stpes'", "Did you mean 'steps'")


@pytest.mark.parametrize("protocol", ["linear", "finetune"])
def test_tokens_features_on_the_image_grid(capsys, image_run, protocol):
    # 8-px images with 4-px patches: a 2 x 2 grid, so 4 tokens x 32 dims = 128 features per image.
    code, out, err = run_eval(capsys, image_run, "--protocol", protocol, "--features", "tokens",
                              "--set", "eval.steps=2")
    assert code == 0, err
    assert "tokens features" in out
    result = read_json(image_run, f"{protocol}-pretrained-tokens")
    assert result["features"] == "tokens" and result["n_test"] == 12
    encoder = relpos.load_encoder(image_run)
    windows = encoder.open(str(result["data"]))
    assert tuple(encoder.embed(windows.x[:3], features="tokens").shape) == (3, 4 * 32)


# -- the data must match the run (issue 9, section 4) -----------------------------------------------
def test_sensor_archive_on_an_image_run_is_refused(capsys, image_run, tmp_path):
    # The UEA layout (X_train (n, channels, samples) + sfreq) once opened as 6 x 100 "images", every
    # standardised value clipped into [0, 1], and was scored.
    rng = np.random.default_rng(0)
    path = tmp_path / "sensors.npz"
    np.savez(path, X_train=rng.standard_normal((8, 6, 100)).astype(np.float32), y_train=np.tile([0, 1], 4),
             sfreq=np.array(10.0))
    code, _, err = run_eval(capsys, image_run, "--data", path)
    assert_one_line_error(code, err, str(path), "holds signal data, not images", "'sfreq'")


def test_standardised_floats_are_not_pixels(capsys, image_run, tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "floats.npz"
    x = rng.standard_normal((12, 8, 8)).astype(np.float32)  # values around -3..3, no sampling rate
    np.savez(path, x_train=x, y_train=np.tile([0, 1], 6), x_test=x, y_test=np.tile([0, 1], 6))
    code, _, err = run_eval(capsys, image_run, "--data", path)
    assert_one_line_error(code, err, "float32 values from", f"{x.min():g} to {x.max():g}", "not pixels")


def _cases(path, names, sfreq=10.0, seconds=4):
    rng = np.random.default_rng(2)
    np.savez(path, X=rng.standard_normal((30, len(names), int(seconds * sfreq))).astype(np.float32),
             y=np.tile([0, 1, 2], 10), subjects=np.repeat([f"s{i}" for i in range(6)], 5),
             sfreq=np.array(sfreq), ch_names=np.array(names))
    return path


def test_signals_with_other_channels_or_rate_are_refused(capsys, subjects_run, tmp_path):
    trained = relpos.load_encoder(subjects_run)
    trained_names = list(trained.open(str(trained.config.data)).info["ch_names"])
    assert len(trained_names) == 2
    other = _cases(tmp_path / "other.npz", ["acc_x", "acc_y"])
    code, _, err = run_eval(capsys, subjects_run, "--data", other)
    assert_one_line_error(code, err, "other channels", "only in the data: acc_x, acc_y")
    swapped = _cases(tmp_path / "swapped.npz", trained_names[::-1])
    code, _, err = run_eval(capsys, subjects_run, "--data", swapped)
    assert_one_line_error(code, err, "the same channels in another order")
    faster = _cases(tmp_path / "faster.npz", trained_names, sfreq=20.0, seconds=2)  # 40 samples, as trained
    code, _, err = run_eval(capsys, subjects_run, "--data", faster)
    assert_one_line_error(code, err, "opens at 20 Hz", "trained at 10 Hz")


# -- one recording of one subject: folds of blocks of time ------------------------------------------
def _one_night(path):
    """40 windows of one subject in time order (2 channels, 4 s at 10 Hz), three classes."""
    rng = np.random.default_rng(3)
    np.savez(path, X=rng.standard_normal((40, 2, 40)).astype(np.float32), y=np.tile([0, 1, 2, 0], 10),
             subjects=np.repeat(["s0"], 40), groups=np.repeat(["night"], 40), sfreq=np.array(10.0))
    return path


def test_repeats_on_one_recording_are_folds_that_cover_it(capsys, subjects_run, tmp_path):
    night = _one_night(tmp_path / "night.npz")
    code, out, _ = run_eval(capsys, subjects_run, "--data", night, "--protocol", "knn", "--repeats", 5,
                            "--set", "eval.ks=[1]", "--set", "eval.time_blocks=10")
    assert code == 0
    # 10 blocks of 4 windows dealt into round(1 / 0.2) = 5 folds: fold i holds out blocks i and i + 5
    for fold in range(5):
        assert f"repeat {fold}: fold {fold + 1} of 5 (blocks {fold}, {fold + 5} of 0-9 held out, 8 test windows" in out
    assert "test 40 windows" in out  # every window tested once over the five folds
    saved = read_json(subjects_run, "knn-pretrained-cls")
    assert len(saved["folds"]) == 5 and saved["n_test"] == 40
    # with 2 blocks and seed 1 the one repeat is fold 2 of 5: block 1
    code, out, _ = run_eval(capsys, subjects_run, "--data", night, "--protocol", "knn", "--seed", 1,
                            "--set", "eval.ks=[1]", "--set", "eval.time_blocks=5")
    assert code == 0 and "repeat 0: fold 2 of 5 (blocks 1 of 0-4 held out, 8 test windows" in out


def test_more_time_blocks_than_the_recording_holds_is_refused(capsys, subjects_run, tmp_path):
    night = _one_night(tmp_path / "night.npz")
    rows = len(read_csv(subjects_run)) if (subjects_run / "eval" / "results.csv").exists() else 0
    code, _, err = run_eval(capsys, subjects_run, "--data", night, "--set", "eval.time_blocks=21")
    assert_one_line_error(code, err, "21", "40 windows", "from 2 to 20")
    code, _, err = run_eval(capsys, subjects_run, "--data", night, "--set", "eval.test_fraction=0.05")
    assert_one_line_error(code, err, "20 folds", "at least 20 blocks")
    code, _, err = run_eval(capsys, subjects_run, "--data", night, "--set", "eval.time_blocks=1")
    assert_one_line_error(code, err, "time_blocks")
    assert (len(read_csv(subjects_run)) if (subjects_run / "eval" / "results.csv").exists() else 0) == rows


def test_label_fraction_on_one_recording_takes_whole_blocks(capsys, subjects_run, tmp_path):
    night = _one_night(tmp_path / "night.npz")
    # fold 1 of 5 holds out blocks 0 and 5 (windows 0-3, 20-23) and leaves out 4, 19 and 24:
    # 8 training blocks, 0.25 of them = 2 whole blocks; blocks 1, 4 and 6 lost a window to the gap
    code, out, _ = run_eval(capsys, subjects_run, "--data", night, "--protocol", "knn", "--label-fraction", 0.25,
                            "--set", "eval.ks=[1]")
    assert code == 0
    line = next(part for part in out.splitlines() if part.startswith("  repeat 0: fold 1 of 5"))
    labelled = [int(b) for b in line.split("labels from blocks ")[1].split(", ")]
    assert len(labelled) == 2 and not {0, 5} & set(labelled)
    windows_per_block = {1: 3, 4: 3, 6: 3, 2: 4, 3: 4, 7: 4, 8: 4, 9: 4}
    assert f"train {sum(windows_per_block[b] for b in labelled)} windows" in out


def test_eval_positions_none_probes_every_encoder_as_one_built_without_position_embeddings(tmp_path):
    """`eval.positions=none` (for a composed run whose PART trained without positions): the run's
    encoder, and the random init beside it, run without their sin-cos positions, which is exactly the
    same encoder built with `pos_embed: none` (sin-cos positions have no weights)."""
    rng = np.random.default_rng(3)
    path = tmp_path / "cases.npz"
    np.savez(path, X=rng.standard_normal((30, 2, 40)).astype(np.float32), y=np.tile([0, 1, 2], 10),
             subjects=np.repeat([f"s{i}" for i in range(6)], 5), sfreq=np.array(10.0))
    config = relpos.resolve_config(
        {"modality": {"name": "timeseries", "patch_s": 1.0}, "pretext": {"name": "dino", "n_local": 2}},
        overrides=["encoder.dim=32", "encoder.depth=1", "encoder.heads=2", "train.batch_size=4", "train.steps=2",
                   "train.progress=false", "train.tensorboard=false", f"out={tmp_path / 'dino'}"],
    )
    config.data = str(path)
    run = relpos.train(config).run_dir
    # the same weights, with an encoder built without position embeddings
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    ckpt = checkpoint_path(twin)
    state = load_checkpoint(ckpt, resume=True)
    assert state["encoder"]["config"]["pos_embed"] == "sincos"
    state["encoder"]["config"]["pos_embed"] = "none"
    atomic_torch_save(state, ckpt)

    def scores(run_dir, **options):
        return {init: relpos.evaluate(run_dir, protocol="knn", data=path, init=init, progress=False, write=False,
                                      **options).mean for init in ("pretrained", "random")}

    dropped = scores(run, positions="none")
    assert dropped == scores(twin)
    assert dropped == scores(twin, positions="none")  # no positions to drop: unchanged
    assert scores(run) != dropped  # with its positions the run's encoder gives other features

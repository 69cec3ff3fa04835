"""The evaluation card: intervals checked by hand, the files it writes, leakage, --compare, the curve, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_OVERRIDES

import relpos
from relpos.cli import main
from relpos.evaluation import METRICS, classification_metrics
from relpos.evaluation.bootstrap import interval, metrics_from_confusion, paired_bootstrap
from relpos.evaluation.leakage import count_overlap
from relpos.evaluation.metrics import confusion_matrix


# -- the interval by hand -------------------------------------------------------------------------
def test_metrics_from_a_confusion_matrix_by_hand_and_as_sklearn_computes_them():
    # truth 0 0 1 1, predicted 0 1 1 1: accuracy 3/4; recalls 1/2 and 1, so balanced 3/4; F1 2/3 and 4/5,
    # so macro-F1 11/15; chance agreement (2·1 + 2·3) / 16 = 1/2, so κ = (3/4 − 1/2) / (1/2) = 1/2.
    values = metrics_from_confusion(confusion_matrix([0, 0, 1, 1], [0, 1, 1, 1], 2))
    expected = {"accuracy": 0.75, "balanced_accuracy": 0.75, "macro_f1": 11 / 15, "cohen_kappa": 0.5}
    assert {m: float(values[m]) for m in METRICS} == pytest.approx(expected)
    rng = np.random.default_rng(0)
    for n_classes, size in ((2, 7), (4, 50), (5, 9)):  # classes absent from one side included
        y, p = rng.integers(0, n_classes, size), rng.integers(0, n_classes, size)
        ours = metrics_from_confusion(confusion_matrix(y, p, n_classes))
        assert {m: float(ours[m]) for m in METRICS} == pytest.approx(classification_metrics(y, p, n_classes))
    single = metrics_from_confusion(confusion_matrix([1, 1], [1, 1], 3))
    assert float(single["cohen_kappa"]) == 1.0  # one class on both sides: they agree


def test_the_paired_interval_of_a_perfect_against_a_wrong_encoder_is_exactly_one():
    truth = np.tile([0, 1], 50)
    boot = paired_bootstrap([truth, truth], [truth, truth], [1 - truth, 1 - truth], 2, n_boot=200)
    assert np.all(boot["difference"]["accuracy"] == 1.0)
    same = paired_bootstrap([truth], [truth], [truth], 2, n_boot=200)
    assert interval(same["difference"]["cohen_kappa"]) == [0.0, 0.0]  # paired by window: no spread at all


def test_the_interval_of_one_accuracy_has_the_binomial_width():
    # 400 windows, half right: the standard error is sqrt(0.25 / 400) = 0.025, so the 95 % interval is about
    # 0.5 ± 0.049 (width 0.098).
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 400)
    predicted = np.where(np.arange(400) % 2 == 0, truth, 1 - truth)
    low, high = interval(paired_bootstrap([truth], [predicted], None, 2, n_boot=2000)["first"]["accuracy"])
    assert low < 0.5 < high and 0.085 < high - low < 0.11


# -- leakage by hand ------------------------------------------------------------------------------
def _windows(groups, onsets=None, x=None):
    n = len(groups)
    x = torch.arange(n * 4, dtype=torch.float32).reshape(n, 1, 4) if x is None else x
    return relpos.Windows(x=x, groups=np.array(groups), onsets=onsets,
                          durations=None if onsets is None else np.full(n, 30.0))


def test_overlap_is_the_same_recording_and_time_span():
    seen = _windows(["A", "A"], np.array([0.0, 30.0]))
    # A [45, 75) overlaps A [30, 60); A [60, 90) only touches it; B [0, 30) is another recording.
    test = _windows(["A", "A", "B"], np.array([45.0, 60.0, 0.0]))
    assert count_overlap([test], seen) == (1, 3, "same recording and overlapping time span")
    blocks = _windows(["A/block3", "A/block4"], np.array([10.0, 100.0]))  # a split within one recording
    assert count_overlap([blocks], seen, by_blocks=True)[0] == 1


def test_overlap_of_trials_is_the_same_trial():
    seen = _windows(["0", "1", "2"])
    # a test split's trials are named by their index too: only their values say which were seen
    test = _windows(["0", "1", "2"], x=torch.stack([seen.x[2], seen.x[0] + 1.0, seen.x[1]]))
    assert count_overlap([test], seen) == (2, 3, "same trial (identical values)")
    images = _windows(["0", "1"], np.zeros(2), x=torch.stack([seen.x[0] + 1.0, seen.x[1]]))
    images.info = {"time_unit": "window"}  # images: onsets in windows, one item each
    assert count_overlap([images], _windows(["0", "1"], np.zeros(2), x=seen.x[:2]))[:2] == (1, 2)


# -- end to end ----------------------------------------------------------------------------------
def _train(out: Path, data: Path, modality: dict) -> Path:
    config = relpos.resolve_config({"modality": modality}, overrides=[
        *TINY_OVERRIDES, "train.steps=2", "train.progress=false", "train.tensorboard=false", f"out={out}"])
    config.data = str(data)
    return relpos.train(config).run_dir


@pytest.fixture(scope="module")
def shades(tmp_path_factory) -> Path:
    """24 training and 12 test 8×8 images: 'dark' near 0, 'bright' near 255."""
    rng = np.random.default_rng(0)

    def images(n):
        y = np.tile([0, 1], n // 2)
        return (np.where(y[:, None, None] == 1, 200, 30) + rng.integers(0, 40, size=(n, 8, 8))).astype(np.uint8), y

    (x_train, y_train), (x_test, y_test) = images(24), images(12)
    path = tmp_path_factory.mktemp("card-data") / "shades.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, class_names=np.array(["dark", "bright"]))
    return path


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, shades) -> Path:
    return _train(tmp_path_factory.mktemp("card-image") / "run", shades, {"name": "image", "image_size": 8, "patch_size": 4})


@pytest.fixture(scope="module")
def cases_run(tmp_path_factory) -> Path:
    """Timeseries cases of 6 subjects (5 each) with no test split of their own, pretrained on all of them."""
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("card-ts") / "cases.npz"
    y = np.tile([0, 1, 2], 10)
    np.savez(path, X=(rng.standard_normal((30, 2, 40)) + y[:, None, None]).astype(np.float32), y=y,
             subjects=np.repeat([f"s{i}" for i in range(6)], 5), sfreq=np.array(10.0))
    return _train(path.parent / "run", path, {"name": "timeseries", "patch_s": 1.0})


def run_eval(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["eval", *map(str, args), "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_sentence(code: int, err: str, *facts: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("relpos: error:")
    for fact in facts:
        assert fact in lines[0], lines[0]
    return lines[0]


def test_a_card_with_a_label_efficiency_curve(capsys, image_run):
    code, out, err = run_eval(capsys, image_run, "--label-fraction", "0.5,1.0", "--repeats", "2")
    assert code == 0, err
    cards = sorted((image_run / "eval").glob("linear-shades-*.json"))
    assert len(cards) == 1 and cards[0].with_suffix(".md").is_file()
    card = json.loads(cards[0].read_text())
    assert card["kind"] == "relpos evaluation card" and card["protocol"] == "linear" and card["seeds"] == [0, 1]
    assert card["step"] == 2 and card["relpos_version"] == relpos.__version__
    assert len(card["weights_hash"]) == 64 and len(card["data_hash"]) == 64
    assert card["data"] == f"shades-{card['data_hash'][:6]}" and cards[0].stem == f"linear-{card['data']}"
    split = card["split"]
    assert split["kind"] == "the data set's own train/test split" and split["test_windows"] == 12
    assert split["parts"][0]["train_classes"] == {"dark": 12, "bright": 12}
    assert split["parts"][0]["test_classes"] == {"dark": 6, "bright": 6}
    assert [p["label_fraction"] for p in card["curve"]] == [0.5, 1.0]
    for point in card["curve"]:
        for which in ("pretrained", "random"):
            assert len(point[which]["per_seed"]) == 2
            for m in METRICS:
                low, high = point[which]["ci"][m]
                assert low <= point[which]["mean"][m] + 1e-9 and point[which]["mean"][m] <= high + 1e-9
        kappa = point["difference"]["cohen_kappa"]
        by_seed = [a["cohen_kappa"] - b["cohen_kappa"]
                   for a, b in zip(point["pretrained"]["per_seed"], point["random"]["per_seed"])]
        assert kappa["per_seed"] == pytest.approx(by_seed) and kappa["mean"] == pytest.approx(np.mean(by_seed))
        assert kappa["seed_std"] == pytest.approx(np.std(by_seed, ddof=1))
    assert card["curve"][0]["n_train"] == [12, 12]  # half of the 12 windows of each class
    assert card["leakage"]["checked"] is True
    # the run pretrained on the archive's 24 training images; its 12 test images are other images
    assert (card["leakage"]["overlapping"], card["leakage"]["test_windows"]) == (0, 12)
    assert card["leakage"]["overlap_means"] == "same trial (identical values)"
    assert "# Evaluation card: linear probe of" in out and "pretrained − random" in out
    assert "results written to" in err and "(the evaluation card)" in err
    # the same weights give the same hash; the per-encoder results are still written beside it
    again = relpos.evaluation.card.write_card(image_run, "linear", write=False, progress=False)
    assert again.weights_hash == card["weights_hash"] and again.data_hash == card["data_hash"]
    assert (image_run / "eval" / "linear-random-cls-fraction0.5.json").is_file()


def test_pretraining_on_the_evaluated_windows_is_counted_and_warned(capsys, cases_run):
    code, out, err = run_eval(capsys, cases_run, "--protocol", "knn")
    assert code == 0, err
    card = json.loads(next((cases_run / "eval").glob("knn-cases-*.json")).read_text())
    leakage = card["leakage"]
    # 6 subjects, 1 held out (5 cases); the run pretrained on every case of the same file
    assert (leakage["overlapping"], leakage["test_windows"]) == (5, 5)
    assert leakage["pretrained_on_what"] == "the same data with the same settings: every window of it"
    assert "relpos: warning: 5 of 5 test windows overlap the pretraining data" in err


def test_compare_prints_two_cards_side_by_side_and_refuses_other_data(capsys, image_run, cases_run, tmp_path):
    assert run_eval(capsys, image_run)[0] == 0
    assert run_eval(capsys, cases_run)[0] == 0
    code, out, err = run_eval(capsys, "--compare", image_run, image_run)
    assert code == 0, err
    assert "| labels | A pretrained | A − random | B pretrained | B − random |" in out and out.count(str(image_run)) >= 2
    code, _, err = run_eval(capsys, "--compare", image_run, cases_run)
    one_sentence(code, err, "have no cards on the same data", "linear on shades-", "linear on cases-")
    code, _, err = run_eval(capsys, "--compare", image_run, tmp_path)
    one_sentence(code, err, "has no evaluation card to compare")


def test_show_draws_the_label_efficiency_curve(capsys, image_run, tmp_path):
    code, _, err = run_eval(capsys, image_run, "--label-fraction", "0.5,1.0")
    assert code == 0, err
    assert main(["show", str(image_run), "eval", "--out", str(tmp_path)]) == 0
    path = tmp_path / "eval.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("fractions, says", [
    ("0.01,1.5", "Invalid label fraction 1.5: a fraction must be in (0, 1]"),
    ("0", "Invalid label fraction 0: a fraction must be in (0, 1]"),
    ("-0.1", "Invalid label fraction -0.1: a fraction must be in (0, 1]"),
    ("0.1,,1", "has an empty entry"),
    ("half", "Invalid value for '--label-fraction'"),
])
def test_a_bad_label_fraction_is_one_sentence_before_anything_is_read(capsys, tmp_path, fractions, says):
    missing = tmp_path / "no-run"  # neither the run nor the data exists: the fraction is refused first
    code, _, err = run_eval(capsys, missing, "--data", tmp_path / "no-data.npz", "--label-fraction", fractions)
    one_sentence(code, err, says)


def test_a_card_for_data_without_labels_is_one_sentence(capsys, tmp_path):
    out = tmp_path / "run"
    config = relpos.resolve_config(modality="eeg", pretext="part", overrides=[
        *TINY_OVERRIDES, "train.steps=1", "train.progress=false", "train.tensorboard=false", f"out={out}"])
    relpos.train(config)
    code, _, err = run_eval(capsys, out)
    one_sentence(code, err, "has no labels")
    assert not list((out / "eval").glob("*.json")) if (out / "eval").exists() else True

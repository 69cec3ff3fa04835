"""Collapse monitors during training: RankMe by hand, the online kNN, the columns they add, the warning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import TINY_OVERRIDES, read_metrics

import relpos
from relpos.cli import main
from relpos.monitors import Monitors, collapse_threshold, rankme


# -- RankMe by hand -------------------------------------------------------------------------------
def test_rankme_of_rank_one_embeddings_is_one():
    rng = np.random.default_rng(0)
    x = torch.as_tensor(np.outer(rng.standard_normal(50), rng.standard_normal(8)))  # every row on one line
    assert rankme(x) == pytest.approx(1.0, abs=1e-4)


def test_rankme_of_isotropic_embeddings_is_their_width():
    x = torch.cat([torch.eye(8), -torch.eye(8)])  # 16 x 8, singular values all sqrt(2)
    assert rankme(x) == pytest.approx(8.0, rel=1e-5)


def test_rankme_of_a_known_spectrum():
    # Singular values 3 and 1: p = (0.75, 0.25), entropy 0.5623 nats, RankMe = exp(0.5623) = 1.7548.
    x = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert rankme(x) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))), rel=1e-5)
    assert rankme(x) == pytest.approx(1.7548, abs=1e-4)
    assert rankme(torch.zeros(4, 3)) == 0.0


def test_the_collapse_threshold_is_two_or_one_percent_of_the_rank_bound():
    assert collapse_threshold(256, 192) == 2.0  # 1 % of 192 is 1.92
    assert collapse_threshold(1000, 768) == pytest.approx(7.68)
    assert collapse_threshold(300, 768) == pytest.approx(3.0)  # 300 windows bound the rank


# -- in training ----------------------------------------------------------------------------------
def _labelled_cases(tmp_path):
    rng = np.random.default_rng(1)
    y = np.tile([0, 1], 15)
    t = np.arange(40) / 10.0  # 4 s at 10 Hz: class 0 a 0.5-Hz wave, class 1 a 3-Hz wave (shapes, kept by normalising)
    waves = np.where(y[:, None] == 1, np.sin(2 * np.pi * 3.0 * t), np.sin(2 * np.pi * 0.5 * t))
    x = (waves[:, None, :] + 0.1 * rng.standard_normal((30, 2, 40))).astype(np.float32)
    path = tmp_path / "cases.npz"
    np.savez(path, X=x, y=y, subjects=np.repeat([f"s{i}" for i in range(6)], 5), sfreq=np.array(10.0))
    return path


def _train(tmp_path, data, *extra):
    config = relpos.resolve_config({"modality": {"name": "timeseries", "patch_s": 1.0}}, overrides=[
        *TINY_OVERRIDES, "train.steps=4", "train.log_every=1", "train.progress=false", "train.tensorboard=false",
        f"out={tmp_path / 'run'}", *extra])
    config.data = str(data)
    return relpos.train(config).run_dir


def test_rankme_and_knn_are_logged_every_n_steps(tmp_path, capsys):
    run = _train(tmp_path, _labelled_cases(tmp_path), "train.monitor_every=2", "train.monitor_knn=true",
                 "train.monitor_windows=30")
    header, rows = read_metrics(run)
    assert header[-2:] == ["rankme", "knn"]
    assert [bool(r["rankme"]) for r in rows] == [False, True, False, True]  # steps 2 and 4
    for row in rows[1::2]:
        assert 1.0 <= float(row["rankme"]) <= 20  # min(20 windows, encoder width)
        assert 0.0 <= float(row["knn"]) <= 1.0
    # two waves of different frequency: even an encoder of 4 steps tells them apart
    assert float(rows[-1]["knn"]) >= 0.8


def test_monitors_are_on_by_default_at_the_last_step_and_off_with_zero(tmp_path):
    data = _labelled_cases(tmp_path)
    header, rows = read_metrics(_train(tmp_path / "a", data))
    assert header[-1] == "rankme" and [bool(r["rankme"]) for r in rows] == [False, False, False, True]
    header, _ = read_metrics(_train(tmp_path / "b", data, "train.monitor_every=0"))
    assert "rankme" not in header


def test_knn_monitor_on_data_without_labels_is_one_sentence_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--modality", "eeg", "--out", str(out), "--steps", "2", "--no-progress",
                 *[a for o in TINY_OVERRIDES for a in ("--set", o)], "--set", "train.monitor_knn=true",
                 "--set", "modality.normalize=recording"])  # pinned: no note on what auto chose
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith("relpos: error: train.monitor_knn is true, but the training data has no labels")
    assert not (out / "checkpoints").exists()


def test_a_collapse_is_warned_once(tmp_path):
    windows = relpos.Windows(x=torch.randn(10, 1, 8))

    class Flat:
        def patch_size(self):
            return (4.0,)

    monitors = Monitors(windows, Flat(), 10, knn=False, seed=0)
    monitors.dim = 192
    said = monitors.collapse_warning(100, 1.3)
    assert said.startswith("the embeddings collapsed at step 100: RankMe 1.30 on 10 windows of width 192, below 2")
    assert monitors.collapse_warning(200, 1.1) is None  # once per run
    fresh = Monitors(windows, Flat(), 10, knn=False, seed=0)
    fresh.dim = 192
    assert fresh.collapse_warning(100, 2.5) is None


def test_the_progress_bar_shows_the_last_rankme(tmp_path, capsys):
    _train(tmp_path, _labelled_cases(tmp_path), "train.monitor_every=2", "train.progress=true")
    err = capsys.readouterr().err
    assert "rankme=" in err and "loss=" in err

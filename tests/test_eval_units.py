"""Evaluation building blocks against values worked out by hand: metrics, splits, kNN, linear probe."""

from __future__ import annotations

import math

import numpy as np
import pytest

from relpos.errors import ConfigError, DataError
from relpos.evaluation import (
    classification_metrics,
    confusion_matrix,
    group_split,
    knn_predict,
    knn_probe,
    label_fraction_subset,
    linear_probe,
    parse_label_fraction,
)


# -- metrics ------------------------------------------------------------------------------------
def test_binary_metrics_match_hand_computation():
    m = classification_metrics([0, 0, 1, 1], [0, 1, 1, 1], n_classes=2)
    assert m["accuracy"] == pytest.approx(0.75)  # 3 of 4 right
    # Recalls: class 0 1/2, class 1 2/2 -> (0.5 + 1) / 2 = 0.75.
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    # F1: class 0 P=1, R=1/2 -> 2/3; class 1 P=2/3, R=1 -> 0.8; mean (2/3 + 0.8) / 2 = 0.7333.
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    # kappa: p_o = 0.75; p_e = (2*1 + 2*3) / 16 = 0.5; (0.75 - 0.5) / (1 - 0.5) = 0.5.
    assert m["cohen_kappa"] == pytest.approx(0.5)


def test_three_class_confusion_matrix_by_hand():
    # Rows = true, columns = predicted:
    #   [[2, 1, 0],
    #    [0, 2, 1],
    #    [1, 0, 3]]
    y_true = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 0, 1, 1, 1, 2, 2, 2, 2, 0]
    assert confusion_matrix(y_true, y_pred, 3).tolist() == [[2, 1, 0], [0, 2, 1], [1, 0, 3]]
    m = classification_metrics(y_true, y_pred, n_classes=3)
    assert m["accuracy"] == pytest.approx(0.7)  # diagonal 2 + 2 + 3 = 7 of 10
    # Recalls 2/3, 2/3, 3/4 -> mean 0.69444.
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 2 / 3 + 3 / 4) / 3)
    # Column sums 3, 3, 4 give precisions 2/3, 2/3, 3/4 = the recalls, so F1 = recall per class.
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 3 / 4) / 3)
    # p_o = 0.7; p_e = (3*3 + 3*3 + 4*4) / 100 = 0.34; kappa = 0.36 / 0.66 = 0.5454.
    assert m["cohen_kappa"] == pytest.approx(0.36 / 0.66)


def test_perfect_and_chance_kappa():
    assert classification_metrics([0, 1, 2], [0, 1, 2])["cohen_kappa"] == pytest.approx(1.0)
    # Always predicting class 0: p_o = 0.5, p_e = (2*4 + 2*0) / 16 = 0.5 -> kappa 0.
    assert classification_metrics([0, 0, 1, 1], [0, 0, 0, 0])["cohen_kappa"] == pytest.approx(0.0)


# -- splits -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(25))
def test_group_split_never_shares_a_group(seed):
    rng = np.random.default_rng(seed)
    groups = np.array([f"subject{g}" for g in rng.integers(0, 7, size=60)])
    train, test = group_split(groups, 0.3, seed)
    assert set(groups[train]).isdisjoint(groups[test])
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(60))
    # round(0.3 * n_groups) groups are held out, at least one, never all.
    n = len(set(groups))
    assert len(set(groups[test])) == max(1, min(n - 1, math.floor(0.3 * n + 0.5)))


def test_group_split_of_one_group_is_an_error():
    with pytest.raises(DataError, match="one group"):
        group_split(np.array(["rec"] * 5), 0.2, 0)


def test_label_fraction_is_stratified_per_class():
    labels = np.array([0] * 10 + [1] * 20)
    groups = np.array([str(i) for i in range(30)])
    keep = label_fraction_subset(labels, groups, 0.3, seed=0)
    # 0.3 * 10 = 3 of class 0, 0.3 * 20 = 6 of class 1.
    assert np.bincount(labels[keep]).tolist() == [3, 6]
    assert len(set(keep.tolist())) == 9


def test_label_fraction_by_number_of_subjects_keeps_whole_subjects():
    # 5 subjects, each with 2 windows of class 0 and 2 of class 1.
    groups = np.repeat([f"s{i}" for i in range(5)], 4)
    labels = np.tile([0, 0, 1, 1], 5)
    keep = label_fraction_subset(labels, groups, 2, seed=3)
    assert len(set(groups[keep])) == 2
    assert len(keep) == 8  # 2 subjects x 4 windows
    chosen = set(groups[keep])
    assert all(g not in chosen for g in np.delete(groups, keep))


def test_label_fraction_that_empties_a_class_names_it():
    labels = np.array([0] * 10 + [1] * 3)
    groups = np.array([str(i) for i in range(13)])
    # Class 'rare' has 3 windows: 3 * 0.1 = 0.3 rounds to 0.
    with pytest.raises(DataError, match="'rare'.*3 windows"):
        label_fraction_subset(labels, groups, 0.1, seed=0, class_names=["common", "rare"])


def test_subject_count_that_cannot_cover_a_class_names_it():
    groups = np.array(["a", "a", "b", "b", "c"])
    labels = np.array([0, 1, 0, 1, 2])  # only subject c has class 2
    # One subject never covers all three classes; a or b miss only 'up', c misses two, so 'up' is named.
    with pytest.raises(DataError, match="class 'up'"):
        label_fraction_subset(labels, groups, 1, seed=0, class_names=["down", "left", "up"])
    with pytest.raises(ConfigError, match="from 1 to the 3"):
        label_fraction_subset(labels, groups, 4, seed=0)


def test_label_fraction_text_is_a_fraction_or_a_subject_count():
    assert parse_label_fraction("0.25") == 0.25 and isinstance(parse_label_fraction("1.0"), float)
    assert parse_label_fraction("5") == 5 and isinstance(parse_label_fraction("5"), int)
    with pytest.raises(ConfigError, match="'half'"):
        parse_label_fraction("half")


# -- kNN ----------------------------------------------------------------------------------------
def _clusters(n_per_class: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    x = np.concatenate([c + 0.3 * rng.standard_normal((n_per_class, 3)) for c in centres])
    y = np.repeat([0, 1, 2], n_per_class)
    return x.astype(np.float32), y


def test_knn_on_separable_features_is_perfect():
    x_train, y_train = _clusters(20, seed=0)
    x_test, y_test = _clusters(10, seed=1)
    result = knn_probe(x_train, y_train, x_test, y_test, seed=0)
    assert result.metrics["accuracy"] == 1.0
    assert result.chosen["k"] in (10, 20, 48)  # the sweep is capped at the 48 windows left for fitting


def test_knn_k_is_capped_by_the_training_size():
    x_train = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]], dtype=np.float32)
    y_train = np.array([0, 1, 0])
    result = knn_probe(x_train, y_train, x_train, y_train, seed=0, ks=[10, 200])
    # Both candidates cap at n_train = 3, so k = 3 without a validation split.
    assert result.chosen["k"] == 3


def test_weighted_vote_by_hand():
    bank = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]])  # unit vectors
    bank_y = np.array([0, 1, 1])
    query = np.array([[1.0, 0.0]])  # cosine similarities 1.0, 0.8, 0.6
    # T = 0.07: class 0 gets e^(1/0.07) = e^14.29 = 1.6e6; class 1 e^11.43 + e^8.57 = 9.7e4 -> class 0.
    assert knn_predict(bank, bank_y, query, k=3, temperature=0.07).tolist() == [0]
    # T = 1: class 0 gets e^1 = 2.72; class 1 e^0.8 + e^0.6 = 2.23 + 1.82 = 4.05 -> class 1.
    assert knn_predict(bank, bank_y, query, k=3, temperature=1.0).tolist() == [1]
    # k = 1: only the nearest neighbour votes.
    assert knn_predict(bank, bank_y, query, k=1, temperature=1.0).tolist() == [0]


# -- linear probe --------------------------------------------------------------------------------
def test_linear_probe_chooses_c_on_validation_never_on_test():
    rng = np.random.default_rng(0)
    x_train = rng.standard_normal((80, 6)).astype(np.float32)
    y_train = (x_train[:, 0] + 0.8 * rng.standard_normal(80) > 0).astype(int)
    groups = np.repeat([f"s{i}" for i in range(16)], 5)
    x_test = rng.standard_normal((40, 6)).astype(np.float32)
    y_test = (x_test[:, 0] > 0).astype(int)
    cs = [1e-3, 1e-1, 10.0]
    honest = linear_probe(x_train, y_train, x_test, y_test, seed=0, groups=groups, cs=cs)
    assert honest.chosen["C"] in cs
    assert honest.chosen["validation"] == "by group"
    assert set(honest.validation) == {"0.001", "0.1", "10"}
    # Adversarial test labels (every one flipped) change the score but not the choice.
    flipped = linear_probe(x_train, y_train, x_test, 1 - y_test, seed=0, groups=groups, cs=cs)
    assert flipped.chosen == honest.chosen
    assert flipped.validation == honest.validation
    assert flipped.predictions.tolist() == honest.predictions.tolist()
    assert flipped.metrics["accuracy"] == pytest.approx(1 - honest.metrics["accuracy"])
    assert honest.metrics["accuracy"] > 0.8

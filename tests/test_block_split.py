"""One recording of one subject (a single night) is held out by contiguous blocks of time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from relpos.errors import DataError
from relpos.evaluation.evaluate import held_out_split
from relpos.evaluation.splits import block_split, time_blocks
from relpos.modality import Windows


def test_blocks_are_contiguous_and_within_one_window_of_each_other_in_size():
    # 25 windows in 10 blocks: i · 10 // 25 gives sizes 3, 2, 3, 2, ...
    blocks = time_blocks(25)
    assert np.bincount(blocks).tolist() == [3, 2] * 5
    assert (np.diff(blocks) >= 0).all()
    assert time_blocks(6).tolist() == [0, 0, 1, 1, 2, 2]  # fewer blocks than 10: two windows each
    with pytest.raises(DataError, match="at least 4 are needed"):
        time_blocks(3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_held_out_blocks_are_whole_and_their_neighbours_are_left_out(seed):
    train, test, blocks = block_split(40, 0.2, seed)  # 10 blocks of 4; 2 held out
    held = np.unique(blocks[test])
    assert len(held) == 2
    assert sorted(test.tolist()) == np.flatnonzero(np.isin(blocks, held)).tolist()
    left_out = set(range(40)) - set(train.tolist()) - set(test.tolist())
    # exactly the windows right beside a held-out block (not themselves held out)
    beside = {i + d for i in test.tolist() for d in (-1, 1) if 0 <= i + d < 40} - set(test.tolist())
    assert left_out == beside
    assert not set(train.tolist()) & set(test.tolist())


def test_a_single_night_is_split_by_blocks_and_the_probes_see_blocks_as_groups():
    n = 30
    windows = Windows(
        x=torch.zeros(n, 1, 10),
        labels=torch.as_tensor(np.arange(n) % 3),
        groups=np.array(["night"] * n),
        subjects=np.array(["s1"] * n),
    )
    train, test, how = held_out_split(_Opened(windows), "night.edf", 0.2, seed=0)
    assert how.startswith("by contiguous blocks of time within the one recording (2 of 10 blocks held out")
    assert len(test) == 6 and len(train) <= 24 - 2
    assert set(np.unique(train.groups)).isdisjoint(np.unique(test.groups))
    assert all(g.startswith("night/block") for g in train.groups)


class _Opened:
    """A stand-in modality that opens to the given windows."""

    def __init__(self, windows):
        self.windows = windows

    def eval_splits(self, data):
        return None

    def load(self, data):
        return self.windows


def test_held_out_blocks_are_drawn_so_that_both_sides_hold_every_class():
    # A "night": 100 windows, wake (0) except for the two classes in windows 40-59. Blocks of 10;
    # 2 of 10 are held out, so a single draw misses classes 1 and 2 on one side most of the time.
    labels = np.zeros(100, dtype=int)
    labels[40:50], labels[50:60] = 1, 2
    labels[45], labels[55] = 2, 1
    for seed in range(5):
        train, test, _ = block_split(100, 0.2, seed, labels=labels)
        assert set(labels[test]) == set(labels[train]) == {0, 1, 2}


def test_the_probes_validation_blocks_hold_every_class_when_some_split_can():
    from relpos.evaluation.probes import validation_split

    # Ten blocks of a night: eight of wake only, two holding all three classes.
    labels = np.zeros(100, dtype=int)
    labels[40:60] = np.tile([0, 1, 2, 1, 2], 4)
    groups = np.array([f"night/block{i // 10}" for i in range(100)])
    for seed in range(5):
        fit, val, how = validation_split(labels, groups, 0.2, seed)
        assert how == "by group"
        assert set(labels[val]) == set(labels[fit]) == {0, 1, 2}


def test_without_a_complete_validation_part_the_one_with_most_classes_is_used():
    from relpos.evaluation.probes import validation_split

    # Class 2 lives in one block only, so no validation part can hold it and leave it for fitting;
    # a validation part of wake alone would reward predicting wake, so one with classes 0 and 1 is used.
    labels = np.zeros(100, dtype=int)
    labels[40:50] = np.tile([0, 1], 5)
    labels[50:60] = np.tile([1, 2], 5)
    groups = np.array([f"night/block{i // 10}" for i in range(100)])
    fit, val, _ = validation_split(labels, groups, 0.2, 0)
    assert set(labels[fit]) == {0, 1, 2}
    assert set(labels[val]) == {0, 1}

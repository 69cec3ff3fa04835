"""One recording of one subject (a single night) is held out by contiguous blocks of time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from relpos.errors import ConfigError, DataError
from relpos.evaluation.evaluate import held_out_split
from relpos.evaluation.splits import block_split, fold_count, time_blocks
from relpos.modality import Windows


def test_blocks_are_contiguous_and_within_one_window_of_each_other_in_size():
    # 25 windows in 10 blocks: i · 10 // 25 gives sizes 3, 2, 3, 2, ...
    blocks = time_blocks(25)
    assert np.bincount(blocks).tolist() == [3, 2] * 5
    assert (np.diff(blocks) >= 0).all()
    assert time_blocks(6, 3).tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("n_windows, n_blocks, largest", [(19, 10, 9), (6, 4, 3), (40, 41, 20), (40, 1, 20)])
def test_more_blocks_than_the_recording_holds_is_one_sentence_naming_the_largest(n_windows, n_blocks, largest):
    with pytest.raises(ConfigError) as info:
        time_blocks(n_windows, n_blocks)
    message = str(info.value)
    assert f"{n_blocks}" in message and f"{n_windows} windows" in message and f"from 2 to {largest}" in message
    assert message.count(". ") == 0 and message.endswith(".")


def test_a_recording_too_short_for_two_blocks_is_refused():
    with pytest.raises(ConfigError, match="at least 4 windows are needed"):
        time_blocks(3, 2)


def test_folds_are_dealt_blocks_and_cover_every_block_exactly_once():
    # 10 blocks of 4 windows, test fraction 0.2: round(1 / 0.2) = 5 folds, fold i = blocks i, i + 5.
    assert fold_count(0.2, 10) == 5 and fold_count(0.3, 10) == 3 and fold_count(0.9, 10) == 2
    tested = []
    for fold in range(5):
        _, test, blocks = block_split(40, 0.2, fold)
        assert np.unique(blocks[test]).tolist() == [fold, fold + 5]
        tested += test.tolist()
    assert sorted(tested) == list(range(40))  # every window tested exactly once
    assert block_split(40, 0.2, 7)[1].tolist() == block_split(40, 0.2, 2)[1].tolist()  # fold 7 mod 5
    # 3 folds of 10 blocks: 0, 3, 6, 9 / 1, 4, 7 / 2, 5, 8
    assert np.unique(block_split(40, 0.3, 0)[2][block_split(40, 0.3, 0)[1]]).tolist() == [0, 3, 6, 9]
    with pytest.raises(ConfigError, match="makes 20 folds of blocks, so at least 20 blocks are needed"):
        fold_count(0.05, 10)


@pytest.mark.parametrize("fold", [0, 1, 4])
@pytest.mark.parametrize("gap", [1, 2])
def test_held_out_blocks_are_whole_and_no_training_window_is_within_the_gap(fold, gap):
    train, test, blocks = block_split(40, 0.2, fold, gap=gap)  # 10 blocks of 4; blocks fold, fold + 5
    assert test.tolist() == np.flatnonzero(np.isin(blocks, [fold, fold + 5])).tolist()
    left_out = set(range(40)) - set(train.tolist()) - set(test.tolist())
    within_gap = {i + d for i in test.tolist() for d in range(-gap, gap + 1) if 0 <= i + d < 40} - set(test.tolist())
    assert left_out == within_gap
    # fold 1, gap 1: blocks 1 (windows 4-7) and 6 (24-27) tested; windows 3, 8, 23, 28 left out
    if fold == 1 and gap == 1:
        assert sorted(left_out) == [3, 8, 23, 28]
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
    assert how.startswith("by contiguous blocks of time within the one recording: fold 1 of 5 (blocks 0, 5 of "
                          "0-9 held out, 6 test windows")
    # blocks of 3: block 0 is windows 0-2, block 5 is 15-17; windows 3, 14 and 18 are beside them
    assert len(test) == 6 and len(train) == 30 - 6 - 3
    assert set(np.unique(train.groups)).isdisjoint(np.unique(test.groups))
    assert all(g.startswith("night/block") for g in train.groups)
    _, test, how = held_out_split(_Opened(windows), "night.edf", 0.2, seed=3, n_blocks=5)
    assert how.startswith("by contiguous blocks of time within the one recording: fold 4 of 5 (blocks 3 of 0-4")
    assert sorted(set(test.groups)) == ["night/block3"] and len(test) == 6


def test_a_fold_lacking_a_class_says_so():
    labels = np.zeros(40, dtype=int)
    labels[20:24] = 1  # class 1 only in block 5 (windows 20-23), which fold 0 holds out
    windows = Windows(x=torch.zeros(40, 1, 10), labels=torch.as_tensor(labels),
                      groups=np.array(["night"] * 40), subjects=np.array(["s1"] * 40), class_names=["W", "N1"])
    _, _, how = held_out_split(_Opened(windows), "night.edf", 0.2, seed=0)
    assert how.endswith("; no N1 in the train part")
    _, _, how = held_out_split(_Opened(windows), "night.edf", 0.2, seed=1)
    assert how.endswith("; no N1 in the test part")


class _Opened:
    """A stand-in modality that opens to the given windows."""

    def __init__(self, windows):
        self.windows = windows

    def eval_splits(self, data):
        return None

    def load(self, data):
        return self.windows


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


def test_labels_from_a_few_whole_blocks():
    from relpos.evaluation.splits import label_block_subset

    # 8 training blocks of 5 windows; class 1 only in block 6, class 2 only in blocks 2 and 6.
    blocks = np.repeat([f"night/block{b}" for b in range(8)], 5)
    labels = np.zeros(40, dtype=int)
    labels[30:35] = [1, 1, 2, 0, 0]
    labels[10] = 2
    for seed in range(5):
        # 0.25 of 8 blocks = 2 whole blocks, one of them block 6 (the only one with class 1)
        keep = label_block_subset(labels, blocks, 0.25, seed)
        kept_blocks = sorted(set(blocks[keep]))
        assert len(kept_blocks) == 2 and "night/block6" in kept_blocks
        assert keep.tolist() == np.flatnonzero(np.isin(blocks, kept_blocks)).tolist()  # whole blocks
        # 0.1 of 8 rounds to 1 block: block 6 alone holds all three classes
        assert sorted(set(blocks[label_block_subset(labels, blocks, 0.1, seed)])) == ["night/block6"]
    labels[30:33] = 0  # now class 1 is in block 6 only and class 2 in block 2 only: 1 block cannot do
    labels[31], labels[11] = 1, 2
    keep = label_block_subset(labels, blocks, 0.1, 0)  # grows to the fewest blocks holding every class
    assert sorted(set(blocks[keep])) == ["night/block2", "night/block6"]
    with pytest.raises(DataError, match=r"No choice of 1 block\(s\) of time gives class 'N[12]' a training example"):
        label_block_subset(labels, blocks, 1, 0, class_names=["W", "N1", "N2"])
    with pytest.raises(ConfigError, match="from 1 to the 8 in the training part"):
        label_block_subset(labels, blocks, 9, 0)

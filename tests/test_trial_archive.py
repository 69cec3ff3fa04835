"""The trial-archive layout (``X_train``/``X_test``, ``y_*``, ``sfreq``, ``ch_names``): one reader,
``modalities/common/trial_archive.py``, for the eeg and timeseries modalities alike."""

from __future__ import annotations

import numpy as np
import pytest

import relpos
from relpos.errors import DataError
from relpos.training import build_modality
from relpos_modalities.common.trial_archive import has_both_splits, has_splits, split_arrays

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_split_asked_for_names_its_array():
    keys = ["X_train", "y_train", "x_test", "y_test", "sfreq"]
    assert split_arrays(keys, "all", "'a.npz'") == [("train", "X_train"), ("test", "x_test")]
    assert split_arrays(keys, "test", "'a.npz'") == [("test", "x_test")]
    assert has_splits(keys) and has_both_splits(keys)
    assert has_splits(["X_test"]) and not has_both_splits(["X_test", "y_test"])
    assert not has_splits(["X", "y", "sfreq"])
    with pytest.raises(DataError, match=r"^'b.npz' has no 'X_test' array for modality.split='all'; it holds "
                                        r"X_train, sfreq \(allowed splits: train, test, all\)\.$"):
        split_arrays(["X_train", "sfreq"], "all", "'b.npz'")


def one_second_windows(modality: str, split: str = "train"):
    overrides = [f"modality.split={split}", "modality.window_s=1", "modality.stride_s=1"]
    if modality == "eeg":
        overrides += ["modality.patch_s=0.25", "modality.l_freq=0"]
    return build_modality(relpos.resolve_config(modality=modality, overrides=overrides))


def load(modality: str, path, split: str) -> relpos.Windows:
    return one_second_windows(modality, split).load(str(path))


@pytest.mark.parametrize("data_key", ["X", "x"])
def test_eeg_and_timeseries_read_the_same_trials_of_each_split(tmp_path, data_key):
    # Three training trials and one test trial of 2 s at 100 Hz: two 1-s windows per trial, labelled
    # with their trial's class, in trial order.
    rng = np.random.default_rng(0)
    path = tmp_path / "trials.npz"
    np.savez(path, **{f"{data_key}_train": (20 * rng.standard_normal((3, 2, 200))).astype(np.float32),
                      f"{data_key}_test": (20 * rng.standard_normal((1, 2, 200))).astype(np.float32)},
             y_train=np.array([1, 0, 1]), y_test=np.array([0]), sfreq=np.array(100.0),
             ch_names=np.array(["Cz", "Pz"]), class_names=np.array(["rest", "move"]))
    for modality in ("eeg", "timeseries"):
        train, test, both = (load(modality, path, split) for split in ("train", "test", "all"))
        assert train.labels.tolist() == [1, 1, 0, 0, 1, 1], modality
        assert test.labels.tolist() == [0, 0], modality
        assert both.labels.tolist() == [1, 1, 0, 0, 1, 1, 0, 0], modality
        assert train.class_names == ["rest", "move"] and train.info["ch_names"] == ["Cz", "Pz"], modality
        assert len({str(g) for g in both.groups}) == 4, modality  # each trial its own recording
        evaluation = one_second_windows(modality).eval_splits(str(path))
        assert [len(w) for w in evaluation] == [6, 2], modality


@pytest.mark.parametrize("modality", ["eeg", "timeseries"])
def test_a_missing_split_is_the_same_sentence_for_both(tmp_path, modality):
    path = tmp_path / "only_train.npz"
    np.savez(path, X_train=np.zeros((1, 1, 300), dtype=np.float32), sfreq=np.array(100.0))
    with pytest.raises(DataError, match=r"has no 'X_test' array for modality.split='test'; it holds "
                                        r"X_train, sfreq \(allowed splits: train, test, all\)\."):
        load(modality, path, "test")
    assert one_second_windows(modality).eval_splits(str(path)) is None

"""Honest splits: held-out parts never share a group (subject or recording), and label subsets."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError, DataError

#: Random draws tried to find a set of subjects in which every class has an example.
SUBJECT_DRAWS = 200
#: Contiguous blocks of time one recording is cut into when it is all the data there is.
TIME_BLOCKS = 10


def group_split(groups, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split windows into train and test parts so that no group is on both sides.

    Parameters
    ----------
    groups : array-like of str
        ``(N,)`` the group (subject or recording) of each window.
    test_fraction : float
        Fraction of the *groups* held out, in (0, 1); at least one group goes to each side.
    seed : int
        Seed of the random group assignment.

    Returns
    -------
    train_idx, test_idx : numpy.ndarray
        Sorted window indices.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"The test fraction must be in (0, 1), got {test_fraction}.")
    groups = np.asarray(groups, dtype=str)
    unique = np.unique(groups)
    if len(unique) < 2:
        raise DataError(
            f"Cannot hold out data by group: all {len(groups)} windows come from one group "
            f"({unique[0] if len(unique) else 'none'!r}); use data with several subjects or recordings."
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(unique)
    n_test = min(len(unique) - 1, max(1, int(math.floor(test_fraction * len(unique) + 0.5))))
    test_groups = order[:n_test]
    is_test = np.isin(groups, test_groups)
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def time_blocks(n_windows: int, n_blocks: int = TIME_BLOCKS) -> np.ndarray:
    """Block of each of ``n_windows`` windows in time order: ``n_blocks`` contiguous runs, sizes within one.

    Fewer blocks when there are fewer than two windows per block. Raises
    :class:`~relpos.errors.DataError` below 4 windows (two blocks of two).
    """
    n_blocks = min(int(n_blocks), n_windows // 2)
    if n_blocks < 2:
        raise DataError(
            f"Cannot hold out blocks of time from one recording of {n_windows} windows; at least 4 are "
            f"needed (two blocks of two)."
        )
    return (np.arange(n_windows) * n_blocks) // n_windows


def block_split(n_windows: int, test_fraction: float, seed: int, n_blocks: int = TIME_BLOCKS,
                gap: int = 1, labels=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split one recording's windows (in time order) by contiguous blocks of time.

    The windows are cut into :func:`time_blocks`; a random ``test_fraction`` of the blocks (at
    least one, never all) is held out, as :func:`group_split` holds out groups. Windows beside a
    held-out block share time with it (overlapping windows, slow drifts of state), so ``gap``
    training windows on each side of every held-out block are left out of both parts.

    With ``labels``, up to :data:`SUBJECT_DRAWS` draws (seeds ``seed, seed + 1, ...``) look for
    held-out blocks such that both parts hold every class: states are not spread evenly over a
    recording (a sleep night's deep sleep sits in a few hours, its first and last hours are wake),
    so one draw often puts a whole class on one side. Without such a split, the draw whose poorer
    side has the most classes is used.

    Returns
    -------
    train_idx, test_idx : numpy.ndarray
        Sorted window indices.
    blocks : numpy.ndarray
        ``(n_windows,)`` the block of each window (to split the training part by block again).
    """
    blocks = time_blocks(n_windows, n_blocks)
    labels = None if labels is None else np.asarray(labels)
    best, best_classes = None, -1
    for attempt in range(SUBJECT_DRAWS if labels is not None else 1):
        _, test_idx = group_split(blocks.astype(str), test_fraction, seed + attempt)
        is_test = np.zeros(n_windows, dtype=bool)
        is_test[test_idx] = True
        beside = np.zeros(n_windows, dtype=bool)
        for shift in range(1, int(gap) + 1):
            beside[:-shift] |= is_test[shift:]
            beside[shift:] |= is_test[:-shift]
        train_idx = np.flatnonzero(~is_test & ~beside)
        if labels is None:
            return train_idx, test_idx, blocks
        classes = min(len(np.unique(labels[train_idx])), len(np.unique(labels[test_idx])))
        if classes > best_classes:
            best, best_classes = (train_idx, test_idx), classes
        if classes == len(np.unique(labels)):
            break
    return best[0], best[1], blocks


def _class_name(index: int, class_names: Sequence[str] | None) -> str:
    if class_names and 0 <= index < len(class_names):
        return repr(str(class_names[index]))
    return str(index)


def label_fraction_subset(
    labels,
    groups,
    fraction_or_count: float | int,
    seed: int,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """The labelled training windows kept for a sample-efficiency experiment.

    Parameters
    ----------
    labels : array-like of int
        ``(N,)`` class indices of the training windows.
    groups : array-like of str
        ``(N,)`` the subject (or recording) of each window.
    fraction_or_count : float or int
        A float in (0, 1]: that fraction of the windows of *each class* (stratified; a class with
        ``n`` windows keeps ``round(fraction · n)``, halves rounded up). An int ≥ 1: every window
        of that many randomly chosen subjects.
    seed : int
        Seed of the random choice.
    class_names : sequence of str, optional
        Names used in error messages.

    Returns
    -------
    numpy.ndarray
        Sorted indices of the windows kept.

    Raises
    ------
    DataError
        When the subset would leave a class of the training data without an example (the
        message names the class).
    """
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(groups, dtype=str)
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    if isinstance(fraction_or_count, bool) or not isinstance(fraction_or_count, (int, float, np.number)):
        raise ConfigError(
            f"Invalid label fraction {fraction_or_count!r}: use a fraction in (0, 1] or a number of subjects."
        )
    if isinstance(fraction_or_count, (float, np.floating)):
        fraction = float(fraction_or_count)
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(
                f"Invalid label fraction {fraction}: a fraction must be in (0, 1] (or give an integer "
                f"number of subjects)."
            )
        keep = []
        for c in classes:
            members = np.flatnonzero(labels == c)
            k = int(math.floor(fraction * len(members) + 0.5))
            if k == 0:
                raise DataError(
                    f"Label fraction {fraction:g} leaves class {_class_name(int(c), class_names)} without a "
                    f"training example ({len(members)} windows × {fraction:g} rounds to 0); use a fraction of "
                    f"at least {0.5 / len(members):.3g}."
                )
            keep.append(rng.choice(members, size=k, replace=False))
        return np.sort(np.concatenate(keep))
    count = int(fraction_or_count)
    subjects = np.unique(groups)
    if not 1 <= count <= len(subjects):
        raise ConfigError(
            f"Invalid label fraction {count}: an integer is a number of subjects, from 1 to the "
            f"{len(subjects)} in the training data."
        )
    best_missing: list[int] = []
    for _ in range(SUBJECT_DRAWS):
        chosen = rng.choice(subjects, size=count, replace=False)
        keep = np.flatnonzero(np.isin(groups, chosen))
        missing = np.setdiff1d(classes, labels[keep]).tolist()
        if not missing:
            return keep
        if not best_missing or len(missing) < len(best_missing):
            best_missing = missing
    raise DataError(
        f"No choice of {count} subject(s) gives class {_class_name(best_missing[0], class_names)} a training "
        f"example ({SUBJECT_DRAWS} random draws tried); use more subjects or a fraction."
    )


def parse_label_fraction(text: str | float | int) -> float | int:
    """``"0.1"`` → 0.1 (a fraction), ``"5"`` → 5 (a number of subjects); numbers pass through."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return text
    value = str(text).strip()
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        raise ConfigError(
            f"Invalid value for '--label-fraction': expected a fraction in (0, 1] such as 0.1 or a number "
            f"of subjects such as 5, got {text!r}."
        ) from None

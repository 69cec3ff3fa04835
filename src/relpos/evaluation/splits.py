"""Honest splits: held-out parts never share a group (subject or recording), and label subsets."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError, DataError

#: Random draws tried to find a set of subjects in which every class has an example.
SUBJECT_DRAWS = 200
#: Contiguous blocks of time one recording is cut into when it is all the data there is
#: (``eval.time_blocks``).
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

    Parameters
    ----------
    n_windows : int
        Windows of the recording, in time order.
    n_blocks : int
        Blocks to cut it into, from 2 to ``n_windows // 2`` (every block holds at least two windows,
        so that a held-out block is more than the one window a gap would leave out beside it).

    Raises
    ------
    ConfigError
        When the recording cannot hold ``n_blocks`` blocks (the message names the value received,
        the number of windows and the largest number of blocks allowed).
    """
    largest = n_windows // 2
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, (int, np.integer)) or not 2 <= n_blocks <= largest:
        allowed = (f"an integer from 2 to {largest} (at least two windows per block)" if largest >= 2
                   else "none, as at least 4 windows are needed (two blocks of two)")
        raise ConfigError(
            f"Invalid number of time blocks {n_blocks!r} for one recording of {n_windows} windows: "
            f"allowed {allowed}."
        )
    return (np.arange(n_windows) * int(n_blocks)) // n_windows


def fold_count(test_fraction: float, n_blocks: int) -> int:
    """Folds over ``n_blocks`` blocks that hold out about ``test_fraction`` of them each: ``round(1 / f)``, at least 2.

    Raises :class:`~relpos.errors.ConfigError` when there are fewer blocks than folds (a fold
    without a block would test nothing).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"The test fraction must be in (0, 1), got {test_fraction}.")
    n_folds = max(2, int(math.floor(1.0 / test_fraction + 0.5)))
    if n_folds > n_blocks:
        raise ConfigError(
            f"Invalid test fraction {test_fraction:g} for {n_blocks} time blocks: it makes {n_folds} folds "
            f"of blocks, so at least {n_folds} blocks are needed (raise eval.time_blocks to {n_folds} or "
            f"the test fraction to at least {1.0 / (n_blocks + 0.5):.3g})."
        )
    return n_folds


def block_split(n_windows: int, test_fraction: float, fold: int, n_blocks: int = TIME_BLOCKS,
                gap: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split one recording's windows (in time order) into train and test parts by blocks of time.

    The windows are cut into ``n_blocks`` contiguous :func:`time_blocks`, dealt into
    ``F = fold_count(test_fraction, n_blocks)`` folds like cards: fold ``i`` holds blocks
    ``i, i + F, i + 2F, ...``. Fold ``fold % F`` is held out, so folds ``0 .. F - 1`` test every
    block exactly once. Dealing (rather than consecutive groups of blocks) spreads every fold over
    the whole recording: states are not spread evenly over a night (deep sleep sits in its first
    hours, its first and last hours are wake), so a fold of consecutive blocks would often test one
    state only. Windows beside a held-out block share time with it (overlapping windows, slow
    drifts of state), so ``gap`` training windows on each side of every held-out block are left out
    of both parts. Nothing is redrawn when a fold lacks a class: see :func:`missing_classes`.

    Returns
    -------
    train_idx, test_idx : numpy.ndarray
        Sorted window indices.
    blocks : numpy.ndarray
        ``(n_windows,)`` the block of each window (to split the training part by block again).
    """
    blocks = time_blocks(n_windows, n_blocks)
    n_folds = fold_count(test_fraction, int(blocks.max()) + 1)
    is_test = blocks % n_folds == int(fold) % n_folds
    beside = np.zeros(n_windows, dtype=bool)
    for shift in range(1, int(gap) + 1):
        beside[:-shift] |= is_test[shift:]
        beside[shift:] |= is_test[:-shift]
    return np.flatnonzero(~is_test & ~beside), np.flatnonzero(is_test), blocks


def missing_classes(labels, train_idx: np.ndarray, test_idx: np.ndarray) -> dict[str, list[int]]:
    """Classes of ``labels`` absent from the training or the test part (empty lists when both hold all)."""
    labels = np.asarray(labels)
    present = np.unique(labels)
    return {side: np.setdiff1d(present, labels[idx]).tolist() for side, idx in (("train", train_idx), ("test", test_idx))}


def _class_name(index: int, class_names: Sequence[str] | None) -> str:
    if class_names and 0 <= index < len(class_names):
        return repr(str(class_names[index]))
    return str(index)


def _is_fraction(fraction_or_count, unit: str) -> bool:
    """Whether a label fraction is a fraction (checked to lie in (0, 1]) rather than a number of ``unit``."""
    if isinstance(fraction_or_count, bool) or not isinstance(fraction_or_count, (int, float, np.number)):
        raise ConfigError(
            f"Invalid label fraction {fraction_or_count!r}: use a fraction in (0, 1] or a number of {unit}."
        )
    if not isinstance(fraction_or_count, (float, np.floating)):
        return False
    if not 0.0 < float(fraction_or_count) <= 1.0:
        raise ConfigError(
            f"Invalid label fraction {float(fraction_or_count)}: a fraction must be in (0, 1] (or give an "
            f"integer number of {unit})."
        )
    return True


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
    if _is_fraction(fraction_or_count, "subjects"):
        fraction = float(fraction_or_count)
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


def label_block_subset(
    labels,
    blocks,
    fraction_or_count: float | int,
    seed: int,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """The labelled training windows of one recording: every window of a few whole blocks of time.

    Labels from a few stretches of a recording (an expert scoring a few hours of one night) rather
    than windows scattered over all of it, whose neighbours would carry nearly the same information.

    Parameters
    ----------
    labels : array-like of int
        ``(N,)`` class indices of the training windows.
    blocks : array-like of str
        ``(N,)`` the block of time of each training window.
    fraction_or_count : float or int
        A float in (0, 1]: ``round(fraction · B)`` of the ``B`` training blocks (at least one), or, when
        no draw of that many blocks holds every class of the training part, the fewest more that do.
        An int ≥ 1: exactly that many blocks.
    seed : int
        Seed of the random choice (:data:`SUBJECT_DRAWS` draws per number of blocks).
    class_names : sequence of str, optional
        Names used in error messages.

    Returns
    -------
    numpy.ndarray
        Sorted indices of the windows kept.

    Raises
    ------
    DataError
        When no choice of the requested number of blocks gives every class an example.
    """
    labels = np.asarray(labels, dtype=np.int64)
    blocks = np.asarray(blocks, dtype=str)
    classes = np.unique(labels)
    unique = np.unique(blocks)
    rng = np.random.default_rng(seed)
    if _is_fraction(fraction_or_count, "blocks"):
        fraction = float(fraction_or_count)
        sizes = range(max(1, int(math.floor(fraction * len(unique) + 0.5))), len(unique) + 1)
    else:
        count = int(fraction_or_count)
        if not 1 <= count <= len(unique):
            raise ConfigError(
                f"Invalid label fraction {count}: on one recording an integer is a number of blocks of "
                f"time, from 1 to the {len(unique)} in the training part."
            )
        sizes = range(count, count + 1)
    best_missing: list[int] = []
    for size in sizes:
        for _ in range(SUBJECT_DRAWS):
            chosen = rng.choice(unique, size=size, replace=False)
            keep = np.flatnonzero(np.isin(blocks, chosen))
            missing = np.setdiff1d(classes, labels[keep]).tolist()
            if not missing:
                return keep
            if not best_missing or len(missing) < len(best_missing):
                best_missing = missing
    raise DataError(
        f"No choice of {sizes[0]} block(s) of time gives class {_class_name(best_missing[0], class_names)} a "
        f"training example ({SUBJECT_DRAWS} random draws tried); use more blocks or a fraction."
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

"""Confidence intervals of the evaluation card: a paired bootstrap over test windows, per seed.

Every seed's predictions on its test windows are resampled with replacement (the same resample for
the pretrained and the random encoder of that seed, so the difference is paired by window; one
resample shared by every seed when they test the same windows), each seed's metric is computed on
the resample, and the mean over the seeds is taken. The 2.5th and 97.5th percentiles of that mean
over ``n_boot`` resamples are the 95 % interval. It covers the uncertainty of a finite test set
and averages over the seeds' own randomness (probe, random weights, folds); it does not resample
the seeds (three are too few for a bootstrap over them): their spread is reported beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .metrics import METRICS

#: Resamples of the test windows (the percentiles of 1000 resamples vary by about 0.005 κ).
N_BOOT = 1000
CONFIDENCE = 0.95


def metrics_from_confusion(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """The four metrics of :func:`~relpos.evaluation.metrics.classification_metrics` from ``(..., K, K)`` counts.

    Rows are true classes and columns predictions; the same conventions as scikit-learn's: the
    balanced accuracy averages the recall of the classes present in the truth, the macro-F1 the F1
    of the classes present in the truth or the predictions, and κ is 1 when a single class is
    present on both sides.
    """
    m = np.asarray(matrices, dtype=np.float64)
    n = m.sum(axis=(-2, -1))
    true = m.sum(axis=-1)
    pred = m.sum(axis=-2)
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    accuracy = tp.sum(axis=-1) / n
    in_truth = true > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(in_truth, tp / np.where(in_truth, true, 1), 0.0)
        balanced = recall.sum(axis=-1) / in_truth.sum(axis=-1)
        present = in_truth | (pred > 0)
        denominator = true + pred
        f1 = np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 0.0)
        macro_f1 = (f1 * present).sum(axis=-1) / present.sum(axis=-1)
        chance = (true * pred).sum(axis=-1) / n**2
        kappa = (accuracy - chance) / (1 - chance)
    kappa = np.where(present.sum(axis=-1) <= 1, 1.0, kappa)
    kappa = np.where(np.isfinite(kappa), kappa, 0.0)
    return {"accuracy": accuracy, "balanced_accuracy": balanced, "macro_f1": macro_f1, "cohen_kappa": kappa}


def _confusions(truth: np.ndarray, predicted: np.ndarray, index: np.ndarray, n_classes: int) -> np.ndarray:
    """``(B, K, K)`` confusion matrices of the resamples ``index`` ``(B, n)``."""
    codes = truth[index] * n_classes + predicted[index]
    codes = codes + (np.arange(len(index)) * n_classes * n_classes)[:, None]
    counts = np.bincount(codes.reshape(-1), minlength=len(index) * n_classes * n_classes)
    return counts.reshape(len(index), n_classes, n_classes)


def paired_bootstrap(truths: Sequence[np.ndarray], first: Sequence[np.ndarray], second: Sequence[np.ndarray] | None,
                     n_classes: int, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Bootstrap replicates of the mean over seeds of each metric, for ``first``, ``second`` and their difference.

    Parameters
    ----------
    truths : sequence of numpy.ndarray
        Per seed, the test labels ``(n_s,)``.
    first, second : sequence of numpy.ndarray
        Per seed, the predictions of two encoders on the same windows (``second`` may be None).
    n_classes : int
        Classes of the labels.

    Returns
    -------
    dict
        ``{"first": {metric: (n_boot,)}, "second": ..., "difference": ...}`` (only ``first`` without ``second``).
    """
    rng = np.random.default_rng(seed)
    shared = all(len(t) == len(truths[0]) and np.array_equal(t, truths[0]) for t in truths)
    index = rng.integers(0, len(truths[0]), size=(n_boot, len(truths[0]))) if shared else None
    sums = {side: {m: np.zeros(n_boot) for m in METRICS} for side in ("first", "second")}
    for s, truth in enumerate(truths):
        resample = index if shared else rng.integers(0, len(truth), size=(n_boot, len(truth)))
        for side, predictions in (("first", first), ("second", second)):
            if predictions is None:
                continue
            values = metrics_from_confusion(_confusions(np.asarray(truth), np.asarray(predictions[s]), resample, n_classes))
            for m in METRICS:
                sums[side][m] += values[m]
    out = {side: {m: v / len(truths) for m, v in sums[side].items()} for side in sums}
    if second is None:
        return {"first": out["first"]}
    out["difference"] = {m: out["first"][m] - out["second"][m] for m in METRICS}
    return out


def interval(replicates: np.ndarray, confidence: float = CONFIDENCE) -> list[float]:
    """The percentile interval ``[low, high]`` of bootstrap replicates."""
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(np.asarray(replicates), [tail, 100 - tail])
    return [float(low), float(high)]

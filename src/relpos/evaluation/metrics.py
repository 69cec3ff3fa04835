"""Classification metrics reported by every evaluation protocol."""

from __future__ import annotations

import numpy as np

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "cohen_kappa")


def classification_metrics(y_true, y_pred, n_classes: int | None = None) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro-F1 and Cohen's κ of predicted class indices.

    Parameters
    ----------
    y_true, y_pred : array-like of int
        ``(N,)`` true and predicted class indices.
    n_classes : int, optional
        Number of classes (default: inferred from both arrays). Classes absent from ``y_true``
        are left out of the balanced accuracy and the macro-F1, as in scikit-learn.

    Returns
    -------
    dict
        ``accuracy``, ``balanced_accuracy`` (mean recall over the classes present in ``y_true``),
        ``macro_f1`` (mean F1 over the classes present in ``y_true`` or ``y_pred``) and
        ``cohen_kappa`` ((p_o − p_e) / (1 − p_e)), each a float.
    """
    import warnings

    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, f1_score

    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if len(y_true) != len(y_pred) or len(y_true) == 0:
        raise ValueError(
            f"y_true and y_pred must be non-empty and of equal length, got {len(y_true)} and {len(y_pred)}."
        )
    present = np.union1d(y_true, y_pred)
    if n_classes is not None and (present.min() < 0 or present.max() >= n_classes):
        raise ValueError(f"Class indices must lie in [0, {n_classes}), got {present.tolist()}.")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # one class only: sklearn warns, the values are still right
        # κ is undefined when both raters always say the same single class (p_e = 1); they agree.
        kappa = float(cohen_kappa_score(y_true, y_pred)) if len(present) > 1 else 1.0
        return {
            "accuracy": float(np.mean(y_true == y_pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", labels=present, zero_division=0)),
            "cohen_kappa": kappa if np.isfinite(kappa) else 0.0,
        }


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` counts: row = true class, column = predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix

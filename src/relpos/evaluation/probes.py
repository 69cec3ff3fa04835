"""Protocols on frozen features: a linear probe (logistic regression) and a weighted kNN.

Both choose their one hyper-parameter (the inverse regularisation ``C``, or ``k``) on a validation
split carved from the *training* part, by group when the training windows come from several groups,
then refit on the whole training part and predict the test part once. Test labels are used only to
score those predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .metrics import classification_metrics
from .splits import group_split

#: Inverse L2 regularisation strengths swept by the linear probe.
DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
#: Neighbour counts swept by the kNN probe (DINO, InstDisc), capped at the training size.
DEFAULT_KS = (10, 20, 100, 200)
#: Softmax temperature of the kNN votes (DINO, InstDisc).
DEFAULT_TEMPERATURE = 0.07
#: Metric that chooses hyper-parameters on the validation split.
SELECT_METRIC = "balanced_accuracy"
#: Validation splits tried until the part left for fitting holds every training class.
VALIDATION_TRIES = 20


@dataclass
class ProbeResult:
    """What a protocol returns.

    Attributes
    ----------
    metrics : dict
        :func:`~relpos.evaluation.metrics.classification_metrics` on the test part.
    predictions : numpy.ndarray
        ``(N_test,)`` predicted class indices.
    chosen : dict
        The hyper-parameters used (e.g. ``{"C": 0.1}``), and how they were chosen.
    validation : dict
        The validation score of each candidate (``{candidate: score}``), empty when none was tried.
    """

    metrics: dict[str, float]
    predictions: np.ndarray
    chosen: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)


def validation_split(
    labels, groups=None, val_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Carve a validation part from training windows: ``(fit_idx, val_idx, how)`` or None.

    By group when there are at least two groups, else by window (stratified); the part left for
    fitting must keep an example of every class, and of the group splits that do, the one whose
    validation part holds the most classes is used (the first that holds all of them). None when the data are too few for that.
    """
    labels = np.asarray(labels, dtype=np.int64)
    classes = np.unique(labels)
    n = len(labels)
    if groups is not None and len(np.unique(np.asarray(groups, dtype=str))) >= 2:
        # Prefer a validation part that holds every class too: groups can hold one class only (the
        # wake hours of a night's blocks), and such a part rewards predicting that class alone.
        fallback, fallback_classes = None, 0
        for attempt in range(VALIDATION_TRIES):
            fit, val = group_split(groups, val_fraction, seed + attempt)
            if len(np.unique(labels[fit])) == len(classes):
                val_classes = len(np.unique(labels[val]))
                if val_classes == len(classes):
                    return fit, val, "by group"
                if val_classes > fallback_classes:
                    fallback, fallback_classes = (fit, val, "by group"), val_classes
        if fallback is not None:
            return fallback
    rng = np.random.default_rng(seed)
    val_parts = []
    for c in classes:
        members = rng.permutation(np.flatnonzero(labels == c))
        k = min(len(members) - 1, int(np.floor(val_fraction * len(members) + 0.5)))
        val_parts.append(members[:k])
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.array([], dtype=np.int64)
    if len(val) == 0:
        return None
    fit = np.setdiff1d(np.arange(n), val)
    return fit, val, "by window"


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _fit_logistic(x: np.ndarray, y: np.ndarray, c: float, max_iter: int, seed: int):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from threadpoolctl import threadpool_limits

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
    # One BLAS thread: L-BFGS on a few hundred features gains nothing from more, and next to torch's
    # OpenMP threads on a small machine extra BLAS threads made one fit 25× slower (measured).
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model


def linear_probe(
    train_feats,
    train_y,
    test_feats,
    test_y,
    seed: int = 0,
    groups=None,
    cs: Sequence[float] = DEFAULT_CS,
    val_fraction: float = 0.2,
    max_iter: int = 1000,
    n_classes: int | None = None,
) -> ProbeResult:
    """Logistic regression on frozen (standardised) features, ``C`` chosen on a validation split.

    Parameters
    ----------
    train_feats, test_feats : array-like
        ``(N_train, D)`` and ``(N_test, D)`` features.
    train_y, test_y : array-like of int
        Class indices; ``test_y`` only scores the final predictions.
    seed : int
        Seed of the validation split and of the solver.
    groups : array-like of str, optional
        ``(N_train,)`` subject or recording of each training window (the validation split is by
        group when there are several).
    cs : sequence of float
        Candidate inverse regularisation strengths.
    val_fraction : float
        Fraction of the training groups (or windows) held out for choosing ``C``.
    max_iter : int
        L-BFGS iterations.
    n_classes : int, optional
        Number of classes, for the metrics.

    Returns
    -------
    ProbeResult
        ``chosen`` holds ``C`` and ``validation`` (``by group``, ``by window`` or ``none``).
    """
    x_train, y_train = _as_numpy(train_feats).astype(np.float64), _as_numpy(train_y).astype(np.int64)
    x_test, y_test = _as_numpy(test_feats).astype(np.float64), _as_numpy(test_y).astype(np.int64)
    cs = [float(c) for c in cs]
    scores: dict[str, float] = {}
    split = validation_split(y_train, groups, val_fraction, seed) if len(cs) > 1 else None
    if len(np.unique(y_train)) < 2:
        best, how = cs[0], "none (one class)"
    elif split is None:
        best, how = (1.0 if 1.0 in cs else cs[len(cs) // 2]), "none (too few examples)"
    else:
        fit, val, how = split
        for c in cs:
            model = _fit_logistic(x_train[fit], y_train[fit], c, max_iter, seed)
            scores[f"{c:g}"] = classification_metrics(y_train[val], model.predict(x_train[val]))[SELECT_METRIC]
        best = cs[int(np.argmax([scores[f"{c:g}"] for c in cs]))]  # ties: the stronger regularisation
    if len(np.unique(y_train)) < 2:
        predictions = np.full(len(x_test), y_train[0], dtype=np.int64)
    else:
        predictions = _fit_logistic(x_train, y_train, best, max_iter, seed).predict(x_test).astype(np.int64)
    return ProbeResult(
        metrics=classification_metrics(y_test, predictions, n_classes),
        predictions=predictions,
        chosen={"C": best, "validation": how},
        validation=scores,
    )


def knn_predict(
    bank, bank_y, queries, k: int, temperature: float = DEFAULT_TEMPERATURE,
    n_classes: int | None = None, chunk: int = 1024,
) -> np.ndarray:
    """Weighted kNN votes on cosine similarity (DINO's ``knn_classifier``).

    Each of the ``k`` most similar bank entries votes for its class with weight ``exp(s / T)``,
    ``s`` its cosine similarity to the query; the class with the largest total wins.

    Returns
    -------
    numpy.ndarray
        ``(N_queries,)`` predicted class indices.
    """
    bank = torch.nn.functional.normalize(torch.as_tensor(_as_numpy(bank), dtype=torch.float32), dim=1)
    queries = torch.nn.functional.normalize(torch.as_tensor(_as_numpy(queries), dtype=torch.float32), dim=1)
    bank_y = torch.as_tensor(_as_numpy(bank_y), dtype=torch.long)
    n_classes = int(n_classes or int(bank_y.max()) + 1)
    k = max(1, min(int(k), len(bank)))
    out = []
    for q in queries.split(chunk):
        sims, index = (q @ bank.T).topk(k, dim=1)
        weights = (sims / temperature).exp()
        votes = torch.zeros(len(q), n_classes).scatter_add_(1, bank_y[index], weights)
        out.append(votes.argmax(1))
    return torch.cat(out).numpy().astype(np.int64)


def knn_probe(
    train_feats,
    train_y,
    test_feats,
    test_y,
    seed: int = 0,
    groups=None,
    ks: Sequence[int] = DEFAULT_KS,
    temperature: float = DEFAULT_TEMPERATURE,
    val_fraction: float = 0.2,
    n_classes: int | None = None,
) -> ProbeResult:
    """Weighted kNN on cosine similarity, ``k`` chosen on a validation split (capped at its size).

    Parameters are those of :func:`linear_probe`, with ``ks`` (candidate neighbour counts, each
    capped at the number of training windows) and ``temperature`` (of the vote weights).

    Returns
    -------
    ProbeResult
        ``chosen`` holds ``k``, ``temperature`` and ``validation``.
    """
    x_train, y_train = _as_numpy(train_feats), _as_numpy(train_y).astype(np.int64)
    x_test, y_test = _as_numpy(test_feats), _as_numpy(test_y).astype(np.int64)
    n_classes = n_classes or int(max(y_train.max(), y_test.max())) + 1
    candidates = sorted({max(1, min(int(k), len(x_train))) for k in ks})
    scores: dict[str, float] = {}
    split = validation_split(y_train, groups, val_fraction, seed) if len(candidates) > 1 else None
    if split is None:
        best, how = candidates[0], "none (too few examples)" if len(candidates) > 1 else "none (one candidate)"
    else:
        fit, val, how = split
        capped = sorted({min(k, len(fit)) for k in candidates})
        for k in capped:
            pred = knn_predict(x_train[fit], y_train[fit], x_train[val], k, temperature, n_classes)
            scores[str(k)] = classification_metrics(y_train[val], pred)[SELECT_METRIC]
        best = capped[int(np.argmax([scores[str(k)] for k in capped]))]  # ties: the smaller k
    predictions = knn_predict(x_train, y_train, x_test, best, temperature, n_classes)
    return ProbeResult(
        metrics=classification_metrics(y_test, predictions, n_classes),
        predictions=predictions,
        chosen={"k": best, "temperature": temperature, "validation": how},
        validation=scores,
    )

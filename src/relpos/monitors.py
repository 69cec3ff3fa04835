"""Cheap collapse and progress monitors logged during training: RankMe and an online kNN.

RankMe (Garrido et al., ICML 2023, "RankMe: Assessing the downstream performance of pretrained
self-supervised representations by their rank") is the effective rank of a set of embeddings:
``exp(-sum_k p_k log p_k)`` with ``p_k = sigma_k / ||sigma||_1 + eps`` over the singular values
``sigma`` of the ``(N, D)`` embedding matrix. It is 1 for embeddings on one line and ``min(N, D)``
for embeddings spread evenly over every direction; a representation that collapses (every input
mapped to nearly the same vector) drives it towards 1, without a label.

Every ``train.monitor_every`` steps the loop embeds a fixed set of ``train.monitor_windows``
training windows (chosen once from ``train.seed``, never augmented, the encoder in eval mode and
no gradient), logs ``rankme`` and, with ``train.monitor_knn`` on labelled data, ``knn``: the
accuracy of a weighted kNN (k = 20, DINO's vote) fitted on the monitor windows of some recordings
and scored on those of others (a group split, so no recording is on both sides). Nothing here
draws from the run's random streams, so a resumed run stays bit-exact.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .errors import ConfigError

#: Added to every normalised singular value, as in the RankMe paper (keeps log finite).
RANKME_EPS = 1e-7
#: RankMe below max(COLLAPSE_MIN_RANK, COLLAPSE_SHARE * min(N, D)) warns that the embeddings collapsed.
COLLAPSE_MIN_RANK = 2.0
COLLAPSE_SHARE = 0.01
#: Neighbours of the online kNN and the temperature of its vote weights (DINO's kNN evaluation).
KNN_K = 20
KNN_TEMPERATURE = 0.07
#: Share of the monitor windows' recordings (or subjects) the online kNN is scored on.
KNN_VALIDATION_FRACTION = 0.3


def rankme(embeddings: torch.Tensor, eps: float = RANKME_EPS) -> float:
    """RankMe, the effective rank of ``(N, D)`` embeddings (Garrido et al. 2023), from 1 to ``min(N, D)``.

    Parameters
    ----------
    embeddings : torch.Tensor
        ``(N, D)`` one embedding per input (not centred, as in the paper).
    eps : float
        Added to every normalised singular value.

    Returns
    -------
    float
        ``exp(H(p))`` with ``p_k = sigma_k / sum(sigma) + eps``; 0 for embeddings that are all zero.
    """
    singular = torch.linalg.svdvals(embeddings.detach().double().cpu())
    total = singular.sum()
    if not bool(total > 0):
        return 0.0
    p = singular / total + eps
    return float(torch.exp(-(p * p.log()).sum()))


def collapse_threshold(n: int, dim: int) -> float:
    """The RankMe below which :class:`Monitors` warns: ``max(2, 0.01 * min(n, dim))``."""
    return max(COLLAPSE_MIN_RANK, COLLAPSE_SHARE * min(int(n), int(dim)))


class Monitors:
    """RankMe (and the online kNN) of the training encoder on a fixed set of training windows.

    Parameters
    ----------
    windows : relpos.Windows
        The run's training windows.
    modality : relpos.Modality
        The run's modality (the patch grid the windows are embedded on).
    n_windows : int
        Windows monitored (all of them when the data has fewer).
    knn : bool
        Also score the online kNN; the windows must carry labels of at least two classes in at
        least two recordings (or subjects), else :class:`~relpos.errors.ConfigError` before training.
    seed : int
        Seed of the choice of windows (a NumPy generator of its own).
    """

    def __init__(self, windows, modality, n_windows: int, knn: bool, seed: int):
        self.modality, self.knn = modality, bool(knn)
        rng = np.random.default_rng(seed)
        labels = windows.labels.numpy() if windows.labels is not None else None
        if self.knn:
            pool = np.flatnonzero(labels >= 0) if labels is not None else np.array([], dtype=np.int64)
            self._check_labels(windows, labels, pool)
        else:
            pool = np.arange(len(windows))
        chosen = np.sort(rng.choice(pool, size=min(int(n_windows), len(pool)), replace=False))
        self.x = windows.x[torch.as_tensor(chosen)]
        # channels with positions (modality.space) are embedded as channel tokens (relpos.space)
        self.positions = windows.positions[torch.as_tensor(chosen)] if windows.positions is not None else None
        self.warned, self.dim = False, 0
        if self.knn:
            from .evaluation.splits import group_split

            self.y = labels[chosen].astype(np.int64)
            self.n_classes = int(labels[pool].max()) + 1
            groups = self._groups(windows)[chosen]
            self.fit, self.val = group_split(groups, KNN_VALIDATION_FRACTION, seed)

    @staticmethod
    def _groups(windows) -> np.ndarray:
        subjects = np.asarray(windows.subjects, dtype=str)
        return subjects if len(np.unique(subjects)) >= 2 else np.asarray(windows.groups, dtype=str)

    def _check_labels(self, windows, labels, pool: np.ndarray) -> None:
        if labels is None or len(np.unique(labels[pool])) < 2:
            found = "no labels" if labels is None or not len(pool) else "labels of one class only"
            raise ConfigError(
                f"train.monitor_knn is true, but the training data has {found}; the online kNN needs labels of "
                f"at least two classes (set train.monitor_knn=false, or train on labelled data)."
            )
        if len(np.unique(self._groups(windows)[pool])) < 2:
            raise ConfigError(
                "train.monitor_knn is true, but the labelled training windows come from one recording of one "
                "subject, so the online kNN has no recording to hold out (set train.monitor_knn=false)."
            )

    @torch.no_grad()
    def measure(self, encoder: torch.nn.Module, config: Any, batch_size: int = 256) -> dict[str, float]:
        """``{"rankme": ..., "knn": ...}`` of ``encoder`` now; its train/eval mode is left as it was."""
        from .api import PretrainedEncoder

        was_training = encoder.training
        try:
            embedded = PretrainedEncoder(encoder, self.modality, config, 0).embed(self.x, "cls", batch_size, positions=self.positions)
        finally:
            encoder.train(was_training)
        self.dim = int(embedded.shape[1])
        values = {"rankme": rankme(embedded)}
        if self.knn:
            from .evaluation.probes import knn_predict

            predicted = knn_predict(embedded[self.fit], self.y[self.fit], embedded[self.val], KNN_K, KNN_TEMPERATURE,
                                    self.n_classes)
            values["knn"] = float(np.mean(predicted == self.y[self.val]))
        return values

    def collapse_warning(self, step: int, value: float) -> str | None:
        """One sentence the first time RankMe (of the last :meth:`measure`) falls below :func:`collapse_threshold`."""
        dim = self.dim
        threshold = collapse_threshold(len(self.x), dim)
        if self.warned or not math.isfinite(value) or value >= threshold:
            return None
        self.warned = True
        return (f"the embeddings collapsed at step {step}: RankMe {value:.2f} on {len(self.x)} windows of width {dim}, "
                f"below {threshold:g} (nearly every window maps to one direction); lower train.lr or check the "
                f"pretext's settings.")

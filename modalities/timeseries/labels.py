"""Labels of timeseries samples: their shape, their class names, and one label per window.

Labels are one per sample (each window takes its sample's label) or one per time step (each window
takes the label at its centre, or the majority with ``label_at: majority``). Integer labels are
class indices (named by ``class_names``, else ``"0"``, ``"1"``...); string labels become classes in
sorted order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from relpos.errors import DataError

from .sources import Source, as_strings

LABEL_NAMES = ("label", "labels", "y")
LABEL_AT = ("center", "majority")


def label_names(cfg) -> tuple[str, ...]:
    """The names labels are looked for under: ``modality.label_variable``, else :data:`LABEL_NAMES`."""
    return (cfg.label_variable,) if cfg.label_variable else LABEL_NAMES


def class_names_attr(attrs: Mapping[str, Any]) -> list[str] | None:
    """Class names from a labels variable's attrs: ``class_names``, or CF ``flag_meanings``."""
    names = attrs.get("class_names")
    if names is None and "flag_meanings" in attrs and "flag_values" not in attrs:
        names = attrs["flag_meanings"]
    if names is None:
        return None
    if isinstance(names, str):
        parts = names.split(",") if "," in names else names.split()
        return [p.strip() for p in parts if p.strip()]
    return as_strings(names)


def check_labels(labels: np.ndarray, n: int, n_times: int, has_sample_dim: bool, name: str) -> np.ndarray:
    """``labels`` as ``(n,)`` (one per sample) or ``(n, n_times)`` (one per time step).

    Raises
    ------
    DataError
        When the shape is neither.
    """
    per_sample = (n,) if has_sample_dim else (1,)
    per_time = (n, n_times) if has_sample_dim else (n_times,)
    if labels.shape == () or labels.shape == per_sample:
        return labels.reshape(n)
    if labels.shape == per_time:
        return labels.reshape(n, n_times)
    raise DataError(
        f"{name} has labels of shape {list(labels.shape)}; expected one per sample {list(per_sample)} or "
        f"one per time step {list(per_time)}."
    )


def label_mapping(sources: Sequence[Source]):
    """How the raw labels of ``sources`` become class indices.

    Returns
    -------
    tuple
        (``"int"`` or {raw string: class index} or None when nothing is labelled, class names,
        {source name: ``"per window"`` | ``"per time step"``}).
    """
    labelled = [s for s in sources if s.labels is not None]
    kinds = {s.name: ("per window" if s.labels.ndim == 1 else "per time step") for s in labelled}
    if not labelled:
        return None, [], kinds
    if len(labelled) != len(sources):
        missing = next(s.name for s in sources if s.labels is None)
        raise DataError(
            f"{missing} has no labels but {labelled[0].name} has; label every source or none."
        )
    values = [np.asarray(s.labels) for s in labelled]
    if any(v.dtype.kind in "USO" for v in values):
        strings = sorted({x for v in values for x in as_strings(v)})
        return {x: i for i, x in enumerate(strings)}, strings, kinds
    numbers = np.concatenate([v.reshape(-1) for v in values]).astype(np.float64)
    if not np.all(np.isfinite(numbers)) or not np.all(numbers == np.round(numbers)):
        raise DataError(
            f"The labels of {labelled[0].name} are not integers or strings (found {numbers.dtype} values such "
            f"as {numbers[~(numbers == np.round(numbers))][:1].tolist() or numbers[:1].tolist()})."
        )
    names = next((s.class_names for s in labelled if s.class_names), None)
    top = int(numbers.max()) if numbers.size else -1
    if names is None:
        names = [str(i) for i in range(top + 1)]
    elif top >= len(names):
        raise DataError(
            f"The labels of {labelled[0].name} go up to {top} but only {len(names)} class names are given "
            f"({', '.join(names)})."
        )
    return "int", list(names), kinds


def encode(raw: np.ndarray, mapping) -> np.ndarray:
    """Raw labels as class indices (``mapping`` from :func:`label_mapping`)."""
    if mapping == "int":
        return np.asarray(raw).astype(np.int64)
    flat = [mapping[x] for x in as_strings(raw)]
    return np.asarray(flat, dtype=np.int64).reshape(np.shape(raw))


def resampled_length(n_times: int, up: int, down: int) -> int:
    """``scipy.signal.resample_poly``'s output length: ``ceil(n_times * up / down)``."""
    return -(-n_times * up // down)


def window_labels(raw, mapping, starts, window, up, down, n_times, label_at) -> np.ndarray:
    """One label per window, windows ordered sample by sample.

    Parameters
    ----------
    raw : numpy.ndarray
        The raw labels of a block of samples: ``(m,)`` or ``(m, n_times)``.
    mapping : see :func:`label_mapping`
    starts : numpy.ndarray
        Window starts, in samples at the windows' rate.
    window : int
        Window length, samples.
    up, down : int
        The resampling ratio from the source's rate to the windows' rate.
    n_times : int
        Time steps per sample at the source's rate.
    label_at : str
        ``center`` or ``majority`` (per-time-step labels only; ties go to the smallest label).
    """
    codes = encode(raw, mapping)
    n_win = len(starts)
    if codes.ndim == 1:  # one label per sample
        return np.repeat(codes, n_win)
    # One label per time step: map each resampled step back to the original step it came from.
    if (up, down) != (1, 1):
        new_len = resampled_length(n_times, up, down)
        source_index = np.minimum((np.arange(new_len) * down) // up, n_times - 1)
        codes = codes[:, source_index]
    if label_at == "center":
        return codes[:, starts + window // 2].reshape(-1)
    low = int(codes.min())
    onehot = np.eye(int(codes.max()) - low + 1, dtype=np.int64)[codes - low]  # (m, T, K)
    cumulative = np.concatenate([np.zeros_like(onehot[:, :1]), onehot.cumsum(axis=1)], axis=1)
    counts = cumulative[:, starts + window] - cumulative[:, starts]  # (m, n_win, K)
    return (counts.argmax(axis=-1) + low).reshape(-1)  # ties: the smallest label

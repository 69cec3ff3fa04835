"""The trial-archive layout, read by the eeg and timeseries modalities alike.

An ``.npz`` (or, for timeseries, a mapping of arrays) holding ``X_train`` / ``X_test``
``(n, channels, samples)`` with ``y_train`` / ``y_test`` class indices, ``class_names``, ``sfreq``
(Hz) and ``ch_names``: the layout of the UEA-archive copies in the shared data (``scp1.npz``,
``blink.npz``, ``basicmotions.npz``). ``x_train`` / ``x_test`` are read too. ``modality.split``
chooses what is read: ``train``, ``test`` or ``all`` (both, train first); an evaluation reads
``train`` and ``test`` as its own splits when the archive has both.
"""

from __future__ import annotations

from collections.abc import Iterable

from relpos.errors import DataError

#: The values of ``modality.split``.
SPLITS = ("train", "test", "all")


def data_keys(split: str) -> tuple[str, str]:
    """The names the data array of ``split`` (``train`` or ``test``) goes by, in order of preference."""
    return (f"X_{split}", f"x_{split}")


def has_splits(keys: Iterable[str]) -> bool:
    """Whether an archive with these array names is in the trial-archive layout (either split)."""
    keys = set(keys)
    return any(k in keys for split in ("train", "test") for k in data_keys(split))


def has_both_splits(keys: Iterable[str]) -> bool:
    """Whether the archive holds a train and a test split (an evaluation can then use them)."""
    keys = set(keys)
    return all(any(k in keys for k in data_keys(split)) for split in ("train", "test"))


def split_arrays(keys: Iterable[str], split: str, where: str) -> list[tuple[str, str]]:
    """``[(split, name of its data array)]`` for ``modality.split`` (``all``: train, then test).

    Raises
    ------
    relpos.errors.DataError
        When the archive lacks the split asked for; one sentence naming ``where`` and what it holds.
    """
    keys = list(keys)
    out = []
    for one in ("train", "test") if split == "all" else (split,):
        key = next((k for k in data_keys(one) if k in keys), None)
        if key is None:
            raise DataError(
                f"{where} has no 'X_{one}' array for modality.split={split!r}; it holds "
                f"{', '.join(keys)} (allowed splits: {', '.join(SPLITS)})."
            )
        out.append((one, key))
    return out

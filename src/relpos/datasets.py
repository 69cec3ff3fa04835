"""Public data sets that relpos can download: ``relpos data fetch NAME``.

A plugin subclasses :class:`Dataset`, gives it a ``name``, a one-line ``description`` and the
``modality`` that opens its files, implements :meth:`Dataset.fetch`, and registers the class through
the ``register_datasets(register)`` hook.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, ClassVar

from .contracts import class_description, declare_contract


def data_root() -> Path:
    """Where ``relpos data fetch`` puts data sets by default: ``$RELPOS_DATA_DIR`` or ``~/relpos_data``."""
    env = os.environ.get("RELPOS_DATA_DIR", "").strip()
    return Path(env).expanduser() if env else Path.home() / "relpos_data"


class Dataset:
    """Base class of downloadable data sets.

    Attributes
    ----------
    name : str
        Registry name, used as ``relpos data fetch NAME``.
    description : str
        One line for ``relpos plugins``.
    modality : str
        The modality that opens the fetched files (``relpos train --modality ...``).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    modality: ClassVar[str] = ""

    def fetch(self, dest: Path, subjects: list[int] | None = None, **options: Any) -> list[Path]:
        """Download (or reuse) the data set's files under ``dest``.

        Parameters
        ----------
        dest : pathlib.Path
            Folder to download into; created if needed.
        subjects : list of int, optional
            Subject indices to fetch (None: the data set's default selection).
        **options
            Data-set specific options (``relpos data fetch NAME --option KEY=VALUE``).

        Returns
        -------
        list of pathlib.Path
            The files on disk, ready for ``--data``.

        Raises :class:`relpos.errors.DataError` with one sentence when the download fails.
        """
        raise NotImplementedError(f"Dataset {self.name!r} does not implement fetch().")

    @classmethod
    def describe(cls) -> str:
        """The line ``relpos plugins`` shows: :attr:`description`, else the docstring's first line."""
        return class_description(cls)


def check_dataset_class(cls: type[Dataset]) -> None:
    """Raise ``TypeError`` with one sentence when a registered data-set class breaks the contract of
    :class:`Dataset`."""
    if not isinstance(cls.modality, str):
        raise TypeError(f"{cls.__qualname__}.modality must be a modality name (a string), got {cls.modality!r}.")
    if cls.fetch is Dataset.fetch:
        raise TypeError(f"{cls.__qualname__} does not implement fetch(dest, subjects=None, **options).")
    try:
        inspect.signature(cls.fetch).bind("self", "dest", subjects=None)
    except TypeError:
        raise TypeError(
            f"{cls.__qualname__}.fetch must accept (self, dest, subjects=None, **options), "
            f"got fetch{inspect.signature(cls.fetch)}."
        ) from None


declare_contract("dataset", Dataset, check_dataset_class)

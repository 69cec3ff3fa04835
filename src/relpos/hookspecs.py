"""The plugin hooks. A plugin module implements any of them with ``@relpos.hookimpl``."""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("relpos")
hookimpl = pluggy.HookimplMarker("relpos")


@hookspec
def register_modalities(register: Callable[[type], None]) -> None:
    """Register modality classes by calling ``register(ModalityClass)`` once for each."""


@hookspec
def register_pretexts(register: Callable[[type], None]) -> None:
    """Register pretext classes by calling ``register(PretextClass)`` once for each."""


@hookspec
def register_datasets(register: Callable[[type], None]) -> None:
    """Register downloadable data sets by calling ``register(DatasetClass)`` once for each."""


@hookspec
def register_encoders(register: Callable[[type], None]) -> None:
    """Register encoder classes (subclasses of ``relpos.encoders.Encoder``) by calling ``register(EncoderClass)``."""

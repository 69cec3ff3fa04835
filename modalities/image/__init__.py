"""The ``image`` modality: 2 axes (row, col), from image files, folders or NumPy archives.

Modules: :mod:`.modality` (the options and the Modality class) and :mod:`.photometric` (the
photometric view augmentation, with kornia). The pluggy hook that registers it is here.
"""

from __future__ import annotations

from relpos import hookimpl

from .modality import ImageConfig, ImageModality

__all__ = ["ImageConfig", "ImageModality"]


@hookimpl
def register_modalities(register):
    register(ImageModality)

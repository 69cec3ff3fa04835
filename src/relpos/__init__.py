"""relpos: self-supervised pretraining with relative-position pretext tasks.

The public API (imported lazily, so ``relpos --help`` stays instant)::

    import relpos
    config = relpos.resolve_config(modality="eeg", pretext="part", overrides=["train.steps=50"])
    result = relpos.train(config)                      # leaves a run directory
    encoder = relpos.load_encoder(result.run_dir)      # the pretrained encoder
    embeddings = encoder.embed_data("recording.edf")   # (n_windows, dim)

Plugins implement the hooks in :mod:`relpos.hookspecs` with :data:`relpos.hookimpl`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY = {
    "Boxes": "geometry",
    "BoxLayout": "geometry",
    "relative_transform": "geometry",
    "sample_offgrid": "sampling",
    "grid_boxes": "sampling",
    "sample_pairs": "sampling",
    "extract_patches": "extraction",
    "layout_of": "extraction",
    "Views": "views",
    "TokenMatch": "views",
    "sample_views": "views",
    "extract_view_tokens": "views",
    "match_tokens": "views",
    "DINOHead": "blocks",
    "Centering": "blocks",
    "make_teacher": "blocks",
    "update_teacher": "blocks",
    "distillation_cross_entropy": "blocks",
    "cosine_schedule": "blocks",
    "teacher_momentum": "blocks",
    "teacher_temperature": "blocks",
    "weight_decay_schedule": "blocks",
    "EncoderConfig": "encoders.vit",
    "PatchEncoder": "encoders.vit",
    "Modality": "modality",
    "Axis": "modality",
    "Windows": "modality",
    "Pretext": "pretext",
    "RecordingIndex": "neighbours",
    "WithinSpan": "neighbours",
    "Consecutive": "neighbours",
    "PairsBySeparation": "neighbours",
    "RunConfig": "config",
    "TrainConfig": "config",
    "resolve_config": "config",
    "train": "training",
    "resume_config": "training",
    "TrainResult": "training",
    "load_encoder": "api",
    "PretrainedEncoder": "api",
    "load_weights": "weights",
    "LoadReport": "weights",
    "get_modality": "plugins",
    "get_pretext": "compose",
    "list_modalities": "plugins",
    "list_pretexts": "plugins",
    "RelposError": "errors",
    "Dataset": "datasets",
    "get_dataset": "plugins",
    "list_datasets": "plugins",
    "cached_windows": "cache",
    "evaluate": "evaluation",
    "EvalResult": "evaluation",
}

__all__ = ["hookimpl", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'relpos' has no attribute {name!r}")

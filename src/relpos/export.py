"""Take a pretrained encoder out of a run: ``relpos export RUN --format safetensors|timm``.

Two formats, both safetensors files (tensors and a JSON header, nothing that can run code when it
is opened, unlike a pickle):

``safetensors``
    The encoder's weights under their relpos names, plus the metadata entry ``"relpos"``: a JSON
    object with the encoder's registry name (``encoder.arch``) and arguments, the modality and its
    settings, the patch geometry, channels, sampling rate, the relpos version and the run's whole
    configuration. :func:`relpos.load_encoder` loads it back (:func:`relpos.api.load_exported`) into the same
    encoder, whose outputs equal the original's exactly.

``timm``
    For a 2-D ``vit`` encoder, the state dict of a timm ``VisionTransformer`` of the same shape,
    loaded with ``timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=FILE),
    **kwargs)``; the metadata entry ``"timm"`` holds NAME and the keyword arguments (also printed
    by ``relpos export``). Every key maps; two are converted:

    * ``patch_embed.weight`` (relpos: a linear layer over the flattened ``C × P × P`` patch, which on
      the regular grid with patches at native resolution is exactly a strided convolution) →
      ``patch_embed.proj.weight`` reshaped to ``(dim, C, P, P)``; the bias is copied.
    * ``pos_embed``: timm adds a learned ``(1, 1 + N, dim)`` table; relpos's encoder has none
      (``pos_embed: none``, written as zeros) or sin-cos embeddings of the grid's box centres (written
      as that table, 0 for the CLS token, as relpos gives the CLS token no position).

    The blocks are timm ``Block``s already, so their keys are unchanged and no key is left
    unmapped. One setting differs and is not a weight: relpos's final LayerNorm uses PyTorch's
    ε = 1e-5 where timm's ViT uses 1e-6 (the blocks' norms agree), so set ``model.norm.eps = 1e-5``
    after ``create_model`` (printed with the call); then ``forward_features`` equals relpos's
    tokens on the same preprocessed input (checked on MNIST in tests/test_export.py). Preprocess as
    the run's modality does (:meth:`relpos.PretrainedEncoder.open`): timm's transforms are not part
    of the state dict.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .api import METADATA_KEY, check_weights, restore_modality
from .errors import ConfigError, RelposError
from .weights import load_weights

FORMATS = ("safetensors", "timm")
#: Version of the metadata layout, so a later relpos can read older files.
METADATA_VERSION = 1
#: relpos's final LayerNorm ε (PyTorch's default); timm's ViT builds its own with 1e-6.
FINAL_NORM_EPS = 1e-5
#: timm's ViT names by width (depth and heads are passed as keyword arguments anyway).
TIMM_NAMES = {192: "vit_tiny_patch16_224", 384: "vit_small_patch16_224", 768: "vit_base_patch16_224",
              1024: "vit_large_patch16_224"}


@dataclass
class ExportResult:
    """What :func:`export` wrote.

    Attributes
    ----------
    path : Path
        The file written.
    format : str
    timm_model : str or None
        For ``timm``: the name to pass to ``timm.create_model``.
    timm_kwargs : dict
        For ``timm``: the keyword arguments that build the matching model.
    converted : list of str
        For ``timm``: each key that was converted rather than copied, and how.
    """

    path: Path
    format: str
    timm_model: str | None = None
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    converted: list[str] = field(default_factory=list)

    @property
    def input_size(self) -> tuple[int, ...]:
        """``(C, H, W)`` for timm's ``pretrained_cfg`` (so it does not adapt the first layer)."""
        size = self.timm_kwargs.get("img_size", ())
        return (self.timm_kwargs.get("in_chans", 3), *size)

    def create_model_call(self) -> str:
        """The Python line that loads a timm export."""
        args = "".join(f", {k}={v!r}" for k, v in self.timm_kwargs.items())
        return (f"model = timm.create_model({self.timm_model!r}, pretrained=True, "
                f"pretrained_cfg_overlay=dict(file={str(self.path)!r}, input_size={self.input_size!r}){args}); "
                f"model.norm.eps = {FINAL_NORM_EPS:g}")


def default_path(run_dir: str | Path, format: str) -> Path:
    """``RUN/export/encoder.safetensors`` or ``RUN/export/encoder-timm.safetensors``."""
    name = "encoder.safetensors" if format == "safetensors" else "encoder-timm.safetensors"
    return Path(run_dir) / "export" / name


#: What a message about an export that cannot be written suggests.
_WRITE_HINT = "pass --out with a file in a writable folder"


def check_destination(path: Path, force: bool, default: bool) -> None:
    """Refuse a destination that cannot or must not be written, before anything is read."""
    from .paths import check_output_file, check_output_folder, path_kind

    kind = path_kind(path)
    if kind == "a folder":
        raise RelposError(f"--out {str(path)!r} is a folder; pass a file name, e.g. {str(path / 'encoder.safetensors')!r}.")
    if kind not in (None, "a file"):
        raise RelposError(f"--out {str(path)!r} is {kind}, not a file; pass the name of a .safetensors file to write.")
    if path.suffix != ".safetensors":  # relpos.load_encoder tells an export from a run by this suffix
        raise RelposError(
            f"--out {str(path)!r} must end in .safetensors (the format written, and how "
            f"relpos.load_encoder recognises an exported encoder), got suffix {path.suffix or 'none'!r}."
        )
    if path.exists() and not force:
        raise RelposError(f"--out {str(path)!r} already exists; pass --force to overwrite it, or choose another file.")
    parent = path.parent
    if not default and path_kind(parent) is None:
        raise RelposError(
            f"Cannot write {str(path)!r}: its folder {str(parent)!r} does not exist; create it first or "
            f"choose another --out."
        )
    # A file where the folder should be (RUN/export), or no permission: said now, not by the writer.
    check_output_folder(parent, "the exported encoder", _WRITE_HINT)
    check_output_file(path, "the exported encoder", _WRITE_HINT)


def _encoder_state(state: dict[str, Any], weights: str, ckpt_file: Path) -> dict[str, torch.Tensor]:
    prefix = "encoder." if weights == "student" else "teacher_encoder."
    tensors = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    if not tensors:
        raise RelposError(
            f"The run in {str(ckpt_file)!r} has no {'EMA teacher' if weights == 'teacher' else 'encoder'} "
            f"weights to export ('{prefix}*' entries)."
        )
    return tensors


def _metadata(state: dict[str, Any], config, encoder_args: dict, weights: str) -> dict[str, Any]:
    from .plugins import get_modality

    data_info = dict(state.get("data_info") or {})
    modality_cls = get_modality(config.modality)
    modality = modality_cls(config.modality_config)
    try:
        modality.restore(data_info)
        patch_size = [float(p) for p in modality.patch_size()]
    except Exception:  # noqa: BLE001 - the geometry is informative; the encoder args are what load needs
        patch_size = None
    return {
        "format_version": METADATA_VERSION,
        "encoder": {"arch": encoder_args.get("config", {}).get("arch", "vit"), "args": encoder_args},
        "weights": weights,
        "modality": {"name": config.modality, "axes": list(modality_cls.axes), "config": config.to_dict().get("modality")},
        "patch": {"size": patch_size, "shape": list(encoder_args.get("patch_shape", []))},
        "channels": encoder_args.get("in_channels"),
        "sfreq": data_info.get("sfreq"),
        "data_info": data_info,
        "pretext": config.pretext,
        "step": int(state["step"]),
        "relpos_version": __version__,
        "config": config.to_dict(),
    }


def _write_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    """Write through a temporary file and a rename, so no half-written file is ever left."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from .checkpoint import temporary_path
    from .paths import new_file_mode, write_failure

    tmp = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.chmod(tmp, new_file_mode())  # safetensors creates 0600 files; others must read an export too
        tmp.replace(path)
    except (OSError, SafetensorError) as exc:
        raise write_failure(exc, "the exported encoder", path, _WRITE_HINT) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def timm_state_dict(encoder_state: dict[str, torch.Tensor], encoder_args: dict, extent) -> tuple[dict, dict, list[str]]:
    """Convert a 2-D relpos ViT's weights to a timm ``VisionTransformer`` state dict.

    Parameters
    ----------
    encoder_state : dict
        The encoder's ``state_dict`` (relpos names).
    encoder_args : dict
        Its ``init_args()``: ``config``, ``in_channels``, ``patch_shape``.
    extent : sequence of int
        The training images' ``(H, W)`` in pixels (timm's ``img_size``).

    Returns
    -------
    state : dict
        timm names to tensors.
    kwargs : dict
        What ``timm.create_model`` needs to build the matching model.
    converted : list of str
        One line per converted key.
    """
    from .encoders.vit import sincos_embedding
    from .sampling import grid_boxes

    cfg = encoder_args["config"]
    channels = int(encoder_args["in_channels"])
    patch = [int(p) for p in encoder_args["patch_shape"]]
    dim = int(cfg["dim"])
    state = {}
    for key, value in encoder_state.items():
        if key == "patch_embed.weight":
            state["patch_embed.proj.weight"] = value.reshape(dim, channels, *patch).clone()
        elif key == "patch_embed.bias":
            state["patch_embed.proj.bias"] = value.clone()
        else:
            state[key] = value.clone()
    grid = grid_boxes(tuple(extent), [float(p) for p in patch])
    n_tokens = grid.center.shape[0]
    pos = torch.zeros(1, 1 + n_tokens, dim)
    if cfg.get("pos_embed", "none") == "sincos":
        pos[0, 1:] = sincos_embedding(grid.center, dim)
    state["pos_embed"] = pos
    converted = [
        f"patch_embed.weight {list(encoder_state['patch_embed.weight'].shape)} -> patch_embed.proj.weight "
        f"{[dim, channels, *patch]} (linear layer over flattened patches = stride-{patch[0]} convolution)",
        "patch_embed.bias -> patch_embed.proj.bias",
        f"pos_embed [1, {1 + n_tokens}, {dim}] written: "
        + ("sin-cos of the grid's box centres, 0 for CLS" if cfg.get("pos_embed") == "sincos"
           else "zeros (the relpos encoder has no position embedding)"),
    ]
    kwargs = {
        "img_size": [int(e) for e in extent], "patch_size": patch[0] if patch[0] == patch[1] else patch,
        "in_chans": channels, "embed_dim": dim, "depth": int(cfg["depth"]), "num_heads": int(cfg["heads"]),
        "mlp_ratio": float(cfg["mlp_ratio"]), "qkv_bias": True, "num_classes": 0, "global_pool": "token",
    }
    return state, kwargs, converted


def _check_timm_exportable(encoder_args: dict, data_info: dict, run_dir: Path) -> tuple[int, ...]:
    """Refuse, in one sentence, an encoder timm's 2-D ViT cannot represent; return the image extent."""
    arch = str(encoder_args.get("config", {}).get("arch", "vit"))
    patch = list(encoder_args.get("patch_shape", []))
    if arch != "vit":
        raise ConfigError(
            f"--format timm exports a 2-D image ViT ('vit'), but run {str(run_dir)!r} trained encoder "
            f"{arch!r}; use --format safetensors."
        )
    if len(patch) != 2:
        raise ConfigError(
            f"--format timm exports a 2-D image ViT, but run {str(run_dir)!r} has a {len(patch)}-D encoder "
            f"(patch shape {patch}); use --format safetensors, which any relpos encoder exports to."
        )
    extent = tuple(int(e) for e in data_info.get("extent", ()))
    if len(extent) != 2:
        raise RelposError(
            f"Run {str(run_dir)!r} does not record its images' size ('data_info' extent {list(extent)}), "
            f"which timm's img_size needs; use --format safetensors."
        )
    return extent


def export(
    run_dir: str | Path,
    format: str = "safetensors",
    out: str | Path | None = None,
    force: bool = False,
    weights: str = "student",
) -> ExportResult:
    """Export a run's encoder to a safetensors file.

    Parameters
    ----------
    run_dir : str or Path
        A run directory (or its checkpoint file).
    format : {"safetensors", "timm"}
        relpos's own format (loadable by :func:`relpos.load_encoder`), or a timm ViT state dict.
    out : str or Path, optional
        The file to write (default ``RUN/export/encoder.safetensors`` or ``encoder-timm.safetensors``).
        Its folder must exist; an existing file is refused unless ``force``.
    force : bool
        Overwrite ``out`` if it exists.
    weights : {"student", "teacher"}
        The trained encoder, or the EMA teacher's of a pretext that has one (dino, pw-self, sove).

    Returns
    -------
    ExportResult
    """
    from .checkpoint import checkpoint_config, find_checkpoint, load_checkpoint

    if format not in FORMATS:
        raise ConfigError(f"Invalid value for '--format': allowed {', '.join(map(repr, FORMATS))}, got {format!r}.")
    if weights not in ("student", "teacher"):
        raise ConfigError(f"Invalid value for 'weights': allowed 'student' or 'teacher', got {weights!r}.")
    run_dir = Path(run_dir)
    ckpt_file = find_checkpoint(run_dir, hint="train a run there first (relpos train --out DIR writes one)")
    is_file = ckpt_file == run_dir  # a checkpoint file given directly: its run is two folders up
    path = Path(out) if out is not None else default_path(run_dir if not is_file else run_dir.parent.parent, format)
    check_destination(path, force, default=out is None)
    state = load_checkpoint(ckpt_file, map_location="cpu")
    config = checkpoint_config(state, ckpt_file)
    encoder_args = dict(state["encoder"])
    data_info = state.get("data_info") or {}
    if format == "timm":
        extent = _check_timm_exportable(encoder_args, dict(data_info), run_dir)
    tensors = _encoder_state(state, weights, ckpt_file)
    _check_loadable(encoder_args, tensors, config, data_info, ckpt_file)
    metadata = _metadata(state, config, encoder_args, weights)
    result = ExportResult(path=path, format=format)
    if format == "safetensors":
        _write_safetensors(tensors, {METADATA_KEY: json.dumps(metadata), "format": "pt"}, path)
        return result
    timm_tensors, kwargs, converted = timm_state_dict(tensors, encoder_args, extent)
    result.timm_model = TIMM_NAMES.get(int(encoder_args["config"]["dim"]), "vit_tiny_patch16_224")
    result.timm_kwargs = kwargs
    result.converted = converted
    timm_meta = {"model": result.timm_model, "kwargs": kwargs, "converted": converted,
                 "set_after_create": {"norm.eps": FINAL_NORM_EPS}}
    _write_safetensors(timm_tensors, {"timm": json.dumps(timm_meta), METADATA_KEY: json.dumps(metadata), "format": "pt"}, path)
    return result


def _check_loadable(encoder_args: dict, tensors: dict, config, data_info: Any, ckpt_file: Path) -> None:
    """Refuse, before writing, a checkpoint whose export :func:`load_exported` would refuse: an
    encoder that cannot be built from its arguments, weights that do not fit it, are not floating
    point or not finite, or a ``data_info`` the modality cannot use."""
    from .encoders import rebuild_encoder

    where = f"Cannot export: checkpoint {str(ckpt_file)!r}"
    try:
        with torch.random.fork_rng(devices=[]):  # the initial weights are replaced: leave the caller's stream be
            encoder = rebuild_encoder(dict(encoder_args))
    except (RelposError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise RelposError(
            f"{where} describes an encoder that cannot be built ({' '.join(str(exc).split()).rstrip('.')[:300]}), "
            f"so its export would not load."
        ) from None
    check_weights(encoder, tensors, where)
    load_weights(encoder, tensors, where)  # strict: an export that would not load is not written
    restore_modality(config, data_info, where)

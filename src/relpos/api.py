"""Use a finished run: load its pretrained encoder and embed data with it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import checkpoint_config, checkpoint_path, load_checkpoint
from .config import RunConfig
from .encoder import PatchEncoder, build_encoder
from .errors import DataError, RelposError
from .extraction import extract_patches
from .geometry import Boxes
from .modality import Modality, Windows
from .plugins import get_modality
from .sampling import grid_boxes

FEATURES = ("cls", "mean", "both", "tokens")


def pool_tokens(tokens: torch.Tensor, features: str) -> torch.Tensor:
    """Turn encoder output ``(B, 1 + N, dim)`` (CLS first) into one feature vector per window.

    ``cls``: the CLS token. ``mean``: the mean of the N patch tokens. ``both``: the two concatenated
    (``2 * dim``). ``tokens``: the N patch tokens concatenated in grid order (``N * dim``). An encoder
    without position embeddings (PART's) gives CLS and mean features that are functions of an
    unordered set of patches; ``tokens`` keeps the patches' order, for tasks whose labels depend on
    it (e.g. a slow drift across an EEG trial).
    """
    if features == "cls":
        return tokens[:, 0]
    if features == "mean":
        return tokens[:, 1:].mean(1)
    if features == "both":
        return torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], -1)
    if features == "tokens":
        return tokens[:, 1:].flatten(1)
    raise ValueError(f"Invalid value for 'features': allowed {', '.join(FEATURES)}, got {features!r}.")


def feature_width(dim: int, n_patches: int, features: str) -> int:
    """Length of the feature vector :func:`pool_tokens` returns."""
    return {"cls": dim, "mean": dim, "both": 2 * dim, "tokens": n_patches * dim}[features]


@dataclass
class PretrainedEncoder:
    """A pretrained encoder with the modality it was trained on.

    Attributes
    ----------
    encoder : PatchEncoder
        The transformer (in eval mode).
    modality : Modality
        The run's modality, configured as in training (to open new data the same way).
    config : RunConfig
        The run's resolved configuration.
    step : int
        Training step of the checkpoint.
    """

    encoder: PatchEncoder
    modality: Modality
    config: RunConfig
    step: int

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @torch.no_grad()
    def embed(self, x: torch.Tensor, features: str = "cls", batch_size: int = 256) -> torch.Tensor:
        """Embed windows ``(N, C, *extent)`` on the regular patch grid (the fine-tuning tokenisation).

        Parameters
        ----------
        features : {"cls", "mean", "both", "tokens"}
            The CLS token, the mean of the patch tokens, both concatenated, or the patch tokens
            concatenated in grid order (see :func:`pool_tokens`).

        Returns
        -------
        torch.Tensor
            ``(N, dim)`` (``(N, 2 * dim)`` for ``"both"``, ``(N, n_patches * dim)`` for ``"tokens"``),
            on the CPU.
        """
        if features not in FEATURES:
            raise ValueError(f"Invalid value for 'features': allowed {', '.join(FEATURES)}, got {features!r}.")
        if x.shape[1] != self.encoder.in_channels:
            raise DataError(
                f"The encoder was trained on {self.encoder.in_channels} channels, but the data has {x.shape[1]}."
            )
        device = next(self.encoder.parameters()).device
        grid = grid_boxes(tuple(x.shape[2:]), self.modality.patch_size(), device=device)
        outputs = []
        self.encoder.eval()
        for chunk in x.split(batch_size):
            chunk = chunk.to(device)
            center = grid.center.expand(len(chunk), -1, -1)
            size = grid.size.expand(len(chunk), -1, -1)
            patches = extract_patches(chunk, Boxes(center, size), self.encoder.patch_shape)
            tokens = self.encoder(patches, center)
            outputs.append(pool_tokens(tokens, features).float().cpu())
        return torch.cat(outputs)

    def open(self, data: Any) -> Windows:
        """Open data with the run's modality settings."""
        return self.modality.load(data)

    def embed_data(self, data: Any, features: str = "cls") -> torch.Tensor:
        """Open ``data`` with the run's modality and embed every window."""
        return self.embed(self.open(data).x, features=features)


def load_encoder(
    run_dir: str | Path, device: str | torch.device = "cpu", weights: str = "student"
) -> PretrainedEncoder:
    """Load the pretrained encoder of a run directory (or a checkpoint file).

    ``weights="teacher"`` loads the EMA teacher's encoder of a pretext that has one (``dino``,
    ``pw-self``: the checkpoint's ``teacher_encoder.*``) instead of the trained (student) encoder.

    The checkpoint is read safely (tensors and plain data only, see :mod:`relpos.checkpoint`); a
    file that is not a relpos checkpoint, or one whose entries do not fit together, raises
    :class:`~relpos.errors.RelposError` with one sentence.

    A ``.safetensors`` file written by ``relpos export`` loads the same way (tensors and JSON only;
    see :func:`relpos.export.load_exported`).
    """
    path = Path(run_dir)
    if path.suffix == ".safetensors":
        from .export import load_exported

        return load_exported(path, device)
    ckpt_file = path if path.suffix == ".pt" else checkpoint_path(path)
    state = load_checkpoint(ckpt_file, map_location="cpu")
    config = checkpoint_config(state, ckpt_file)
    try:
        encoder = build_encoder(dict(state["encoder"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise RelposError(
            f"Checkpoint {str(ckpt_file)!r} describes an encoder that cannot be built "
            f"({' '.join(str(exc).split()) or type(exc).__name__})."
        ) from None
    if weights not in ("student", "teacher"):
        raise ValueError(f"Invalid value for 'weights': allowed 'student' or 'teacher', got {weights!r}.")
    prefix = "encoder." if weights == "student" else "teacher_encoder."
    tensors = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    if weights == "teacher" and not tensors:
        raise RelposError(
            f"The run in {str(ckpt_file)!r} has no EMA teacher (pretext {config.pretext!r}); evaluate its "
            f"encoder with --init pretrained, or train a pretext with a teacher (dino, pw-self)."
        )
    try:
        encoder.load_state_dict(tensors)
    except RuntimeError as exc:
        text = " ".join(str(exc).split())
        raise RelposError(
            f"Checkpoint {str(ckpt_file)!r} holds encoder weights that do not fit the encoder it "
            f"describes ({text[:300] + '...' if len(text) > 300 else text})."
        ) from None
    encoder.to(device).eval()
    modality = get_modality(config.modality)(config.modality_config)
    try:
        modality.restore(dict(state.get("data_info", {})))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RelposError(
            f"Checkpoint {str(ckpt_file)!r} holds a description of its training data ('data_info') that "
            f"modality {config.modality!r} cannot use ({' '.join(str(exc).split()) or type(exc).__name__})."
        ) from None
    return PretrainedEncoder(encoder=encoder, modality=modality, config=config, step=int(state["step"]))

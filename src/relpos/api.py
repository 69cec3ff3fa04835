"""Use a finished run: open it (a run directory, a checkpoint or a ``relpos export`` file), load its
pretrained encoder and embed data with it.

Opening a run and opening an export are one room: both rebuild the encoder from its arguments
(:func:`relpos.encoders.rebuild_encoder`), refuse weights that cannot be the trained ones
(:func:`check_weights`) and restore the run's modality (:func:`restore_modality`). Writing an export
is :mod:`relpos.export`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import checkpoint_config, find_checkpoint, load_checkpoint
from .config import RunConfig, config_from_dict
from .encoders import Encoder, rebuild_encoder
from .errors import DataError, RelposError
from .extraction import extract_patches
from .geometry import Boxes
from .modality import Modality, Windows
from .paths import path_kind
from .plugins import get_modality
from .sampling import grid_boxes
from .weights import LoadReport, load_weights

FEATURES = ("cls", "mean", "both", "tokens", "grid")
#: The features that read per-token outputs (an encoder giving one vector per input has none).
TOKEN_FEATURES = ("mean", "both", "tokens")
#: Patches per axis of ``features="grid"`` unless told otherwise (the Spatial Reasoning paper's 3 × 3).
DEFAULT_GRID = 3
#: The metadata entry of a ``relpos export`` file that holds relpos's description of its encoder.
METADATA_KEY = "relpos"


def grid_patch_boxes(extent, n_per_axis: int, patch_fraction: float) -> Boxes:
    """``n_per_axis`` patches per axis covering an input, each ``patch_fraction`` of every axis.

    The patches' starts are spread evenly from 0 to ``extent - size``, so the first touches the
    near edge, the last the far edge, and patches larger than ``1 / n_per_axis`` overlap slightly
    (the Spatial Reasoning paper's 3 × 3 grid of 24-px patches on 64-px images: starts 0, 20, 40).
    One patch per axis is centred. Row-major order.

    Returns
    -------
    Boxes
        ``(n_per_axis ** D, D)`` in the input's native units.
    """
    sizes = [float(e) * float(patch_fraction) for e in extent]
    axes = []
    for e, size in zip(extent, sizes):
        if n_per_axis == 1:
            starts = torch.tensor([(float(e) - size) / 2])
        else:
            starts = torch.linspace(0.0, float(e) - size, n_per_axis)
        axes.append(starts + size / 2)
    centers = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(extent))
    return Boxes(centers, torch.tensor(sizes).expand_as(centers).clone())


def grid_features(encoder: Encoder, x: torch.Tensor, n_per_axis: int, patch_fraction: float) -> torch.Tensor:
    """The Spatial Reasoning paper's evaluation features (§3.3): the whole input's vector followed by
    the vectors of an ``n_per_axis`` grid of patches (:func:`grid_patch_boxes`), each patch resized to
    the input's size as in training.

    Returns
    -------
    torch.Tensor
        ``(B, (1 + n_per_axis ** D) · F)``.
    """
    extent = tuple(x.shape[2:])
    boxes = grid_patch_boxes(extent, n_per_axis, patch_fraction).to(x.device)
    n_patches = len(boxes.center)
    batch_boxes = Boxes(boxes.center.expand(len(x), -1, -1), boxes.size.expand(len(x), -1, -1))
    patches = extract_patches(x, batch_boxes, extent)  # (B, P, C, *extent)
    whole = encoder.embed_inputs(x)
    parts = encoder.embed_inputs(patches.reshape(len(x) * n_patches, *patches.shape[2:]))
    return torch.cat([whole, parts.reshape(len(x), -1)], dim=1)


def pool_tokens(tokens: torch.Tensor, features: str) -> torch.Tensor:
    """Turn encoder output ``(B, 1 + N, dim)`` (CLS first) into one feature vector per window.

    ``cls``: the CLS token (for an encoder without tokens, :func:`PretrainedEncoder.embed` gives its one
    vector per input instead). ``mean``: the mean of the N patch tokens. ``both``: the two concatenated
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
    raise ValueError(f"Invalid value for 'features': allowed {', '.join(FEATURES[:4])}, got {features!r}.")


def feature_width(dim: int, n_patches: int, features: str) -> int:
    """Length of the feature vector :func:`pool_tokens` returns."""
    return {"cls": dim, "mean": dim, "both": 2 * dim, "tokens": n_patches * dim}[features]


@dataclass
class PretrainedEncoder:
    """A pretrained encoder with the modality it was trained on.

    Attributes
    ----------
    encoder : relpos.encoders.Encoder
        The encoder (in eval mode): a :class:`relpos.PatchEncoder` or any registered encoder.
    modality : Modality
        The run's modality, configured as in training (to open new data the same way).
    config : RunConfig
        The run's resolved configuration.
    step : int
        Training step of the checkpoint.
    grid_patch_fraction : float or None
        Patch size of ``features="grid"`` as a fraction of every axis: the run's pretext's training
        patch size (:meth:`relpos.Pretext.grid_patch_fraction`), None for ``1 / grid``.
    load_report : relpos.weights.LoadReport or None
        Which of the encoder's weights were loaded (matched, missing, unexpected); None for an
        encoder built here (random init).
    """

    encoder: Encoder
    modality: Modality
    config: RunConfig
    step: int
    grid_patch_fraction: float | None = None
    load_report: LoadReport | None = None
    #: The run's description of its training data (the checkpoint's ``data_info``: its channel contract).
    data_info: dict | None = None

    @property
    def dim(self) -> int:
        """Width F of one vector of the encoder."""
        return int(self.encoder.feature_dim)

    def check_features(self, features: str) -> None:
        """Raise :class:`RelposError` unless this encoder can give ``features``."""
        if features not in FEATURES:
            raise ValueError(f"Invalid value for 'features': allowed {', '.join(FEATURES)}, got {features!r}.")
        if features in TOKEN_FEATURES and not self.encoder.per_token_outputs:
            raise RelposError(
                f"Features {features!r} read per-token outputs, but encoder {self.encoder.config.arch!r} gives "
                f"one vector per input; use features 'cls' (its vector) or 'grid'."
            )

    @torch.no_grad()
    def embed(
        self, x: torch.Tensor, features: str = "cls", batch_size: int = 256, grid: int = DEFAULT_GRID,
        grid_patch_fraction: float | None = None, positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed windows ``(N, C, *extent)`` on the regular patch grid (the fine-tuning tokenisation).

        Parameters
        ----------
        features : {"cls", "mean", "both", "tokens", "grid"}
            The CLS token (an encoder without tokens: its vector of the whole input), the mean of
            the patch tokens, both concatenated, the patch tokens concatenated in grid order (see
            :func:`pool_tokens`), or ``grid``: the whole input's vector followed by those of a
            ``grid`` × ``grid`` grid of patches (:func:`grid_features`, the Spatial Reasoning
            paper's evaluation; ``grid`` patches along time for one axis).
        grid : int
            Patches per axis for ``"grid"``.
        grid_patch_fraction : float, optional
            Their size as a fraction of every axis; default :attr:`grid_patch_fraction`, else
            ``1 / grid``.

        positions : torch.Tensor, optional
            ``(N, C, S)`` channel positions (``Windows.positions``, NaN for absent channels) of a run
            trained with channel tokens (``modality.space``): each present channel is read on the patch
            grid as its own tokens (padded channels are no keys), and ``"mean"`` averages the present
            tokens; ``"cls"``, ``"mean"`` and ``"both"`` only (:mod:`relpos.space`).

        Returns
        -------
        torch.Tensor
            ``(N, dim)`` (``(N, 2 * dim)`` for ``"both"``, ``(N, n_patches * dim)`` for ``"tokens"``,
            ``(N, (1 + grid ** D) * dim)`` for ``"grid"``), on the CPU.
        """
        self.check_features(features)
        if features == "grid" or not self.encoder.per_token_outputs:
            fraction = grid_patch_fraction or self.grid_patch_fraction or 1.0 / grid
            device = next(self.encoder.parameters()).device
            self.encoder.eval()
            outputs = []
            for chunk in x.split(batch_size):
                chunk = chunk.to(device)
                if features == "grid":
                    out = grid_features(self.encoder, chunk, int(grid), float(fraction))
                else:
                    out = self.encoder.embed_inputs(chunk)
                outputs.append(out.float().cpu())
            return torch.cat(outputs)
        if positions is not None:
            return self._embed_channel_tokens(x, positions, features, batch_size)
        if x.shape[1] != self.encoder.in_channels and self.encoder.in_channels == 1 and x.shape[1] > 1:
            raise DataError(
                f"The encoder reads one channel per token, placed by its position (modality.space), but the "
                f"{x.shape[1]} channels came without positions; pass positions=windows.positions, or use "
                f"embed_data(data)."
            )
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

    def _embed_channel_tokens(self, x: Any, positions: torch.Tensor, features: str, batch_size: int) -> torch.Tensor:
        """:meth:`embed` of windows whose channels have positions: every present channel on the grid."""
        from .space import encode_channel_windows, masked_mean

        if features not in ("cls", "mean", "both"):
            raise RelposError(
                f"Windows read as channel tokens (modality.space) have no fixed token order, so features "
                f"{features!r} is not available; use 'cls', 'mean' or 'both'."
            )
        if tuple(positions.shape[:2]) != tuple(x.shape[:2]):
            raise DataError(
                f"'positions' must be (N, C, S) for windows of shape {tuple(x.shape)}, got {tuple(positions.shape)}."
            )
        device = next(self.encoder.parameters()).device
        self.encoder.eval()
        outputs = []
        for start in range(0, len(x), batch_size):
            chunk = x[start:start + batch_size].to(device)
            place = positions[start:start + batch_size].to(device)
            tokens, present = encode_channel_windows(
                self.encoder, chunk, place, self.modality.patch_size(), self.encoder.patch_shape
            )
            cls, mean = tokens[:, 0], masked_mean(tokens[:, 1:], present)
            out = cls if features == "cls" else mean if features == "mean" else torch.cat([cls, mean], dim=-1)
            outputs.append(out.float().cpu())
        return torch.cat(outputs)

    def open(self, data: Any) -> Windows:
        """Open data with the run's modality settings (refused when it shares no channel with the run's contract)."""
        from .space import check_common_channels

        windows = self.modality.load(data)
        where = f"The data {str(data)!r}" if isinstance(data, (str, Path)) else "The data"
        check_common_channels(self.data_info or {}, windows.info or {}, where)
        return windows

    def embed_data(self, data: Any, features: str = "cls") -> torch.Tensor:
        """Open ``data`` with the run's modality and embed every window."""
        windows = self.open(data)
        return self.embed(windows.x, features=features, positions=windows.positions)


def load_encoder(
    run_dir: str | Path, device: str | torch.device = "cpu", weights: str = "student", strict: bool = True
) -> PretrainedEncoder:
    """Load the pretrained encoder of a run directory (or a checkpoint file).

    Loading is strict (:func:`relpos.weights.load_weights`): weights that fill the encoder only in
    part are refused in one sentence with the matched, missing and unexpected counts, unless
    ``strict=False``, which loads those that match and warns; :attr:`PretrainedEncoder.load_report`
    says what was loaded.

    ``weights="teacher"`` loads the EMA teacher's encoder of a pretext that has one (``dino``,
    ``pw-self``: the checkpoint's ``teacher_encoder.*``) instead of the trained (student) encoder.

    The checkpoint is read safely (tensors and plain data only, see :mod:`relpos.checkpoint`); a
    file that is not a relpos checkpoint, or one whose entries do not fit together, raises
    :class:`~relpos.errors.RelposError` with one sentence.

    A ``.safetensors`` file written by ``relpos export`` loads the same way (tensors and JSON only;
    see :func:`load_exported`).
    """
    path = Path(run_dir)
    if path.suffix == ".safetensors" and path_kind(path) in (None, "a file"):
        return load_exported(path, device, strict=strict)
    ckpt_file = find_checkpoint(path)
    state = load_checkpoint(ckpt_file, map_location="cpu")
    config = checkpoint_config(state, ckpt_file)
    try:
        encoder = rebuild_encoder(dict(state["encoder"]))
    except RelposError as exc:
        raise RelposError(f"Checkpoint {str(ckpt_file)!r} describes an encoder that cannot be built: {exc}") from None
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
            f"encoder with --init pretrained, or train a pretext with a teacher (dino, pw-self, sove)."
        )
    where = f"Checkpoint {str(ckpt_file)!r}"
    check_weights(encoder, tensors, where)
    report = load_weights(encoder, tensors, where, strict=strict)
    encoder.to(device).eval()
    modality = restore_modality(config, state.get("data_info", {}), where)
    return PretrainedEncoder(
        encoder=encoder, modality=modality, config=config, step=int(state["step"]),
        grid_patch_fraction=_grid_patch_fraction(config), load_report=report,
        data_info=dict(state.get("data_info") or {}),
    )


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The relpos metadata of an exported file (JSON only; no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    kind = path_kind(path)
    if kind is None:
        raise RelposError(f"No exported encoder at {str(path)!r}; write one with `relpos export RUN`.")
    if kind != "a file":
        raise RelposError(f"{str(path)!r} is {kind}, not an exported encoder file; write one with `relpos export RUN`.")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise RelposError(
            f"{str(path)!r} is not a safetensors file ({' '.join(str(exc).split())[:200]})."
        ) from None
    if "timm" in metadata:
        raise RelposError(
            f"{str(path)!r} is a timm export (timm's parameter names); load it with timm.create_model, or "
            f"export the run with --format safetensors for relpos.load_encoder."
        )
    try:
        meta = json.loads(metadata[METADATA_KEY])
        meta["encoder"]["args"]
    except (KeyError, TypeError, ValueError):
        raise RelposError(
            f"{str(path)!r} is a safetensors file without relpos's description of the encoder (its "
            f"{METADATA_KEY!r} metadata); only files written by `relpos export` load with relpos.load_encoder."
        ) from None
    return meta


def load_exported(path: str | Path, device: str | torch.device = "cpu", strict: bool = True) -> PretrainedEncoder:
    """Load a ``relpos export --format safetensors`` file as a :class:`relpos.PretrainedEncoder`.

    ``strict`` as in :func:`load_encoder`.

    Only tensors and JSON are read (safetensors), so opening a file never runs code from it.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_metadata(path)
    try:
        encoder = rebuild_encoder(dict(meta["encoder"]["args"]))
        config = config_from_dict(meta["config"])
    except (KeyError, TypeError, ValueError, RelposError) as exc:
        raise RelposError(
            f"{str(path)!r} describes an encoder this relpos cannot build ({' '.join(str(exc).split())[:300]})."
        ) from None
    step = meta.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise RelposError(
            f"{str(path)!r} describes its training step as {step!r} (its {METADATA_KEY!r} metadata), expected "
            f"an integer >= 0; only files written by `relpos export` load with relpos.load_encoder."
        )
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RelposError(f"{str(path)!r} holds tensors that cannot be read ({' '.join(str(exc).split())[:200]}).") from None
    check_weights(encoder, tensors, repr(str(path)))
    report = load_weights(encoder, tensors, repr(str(path)), strict=strict)
    encoder.to(device).eval()
    modality = restore_modality(config, meta.get("data_info") or {}, repr(str(path)))
    return PretrainedEncoder(
        encoder=encoder, modality=modality, config=config, step=step,
        grid_patch_fraction=_grid_patch_fraction(config),  # --features grid reads the training patch size
        load_report=report,
        data_info=dict(meta.get("data_info") or {}),  # the channel contract travels with the export
    )


def check_weights(encoder: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Refuse, in one sentence, weights ``load_state_dict`` would take without a word but that
    cannot be the trained encoder: integers or booleans for floating-point parameters (they would
    be cast silently), and NaN or infinite values (every embedding would be NaN).

    ``where`` starts the sentence (``"Checkpoint 'runs/x/checkpoints/last.pt'"``). Names and shapes
    are left to ``load_state_dict``, which reports them itself.
    """
    own = encoder.state_dict()
    for name, value in tensors.items():
        target = own.get(name)
        if target is None or not isinstance(value, torch.Tensor):
            continue
        wrong_kind = (value.dtype != target.dtype) if not target.is_floating_point() else not value.is_floating_point()
        if wrong_kind:
            raise RelposError(
                f"{where} holds the encoder weight {name!r} as {str(value.dtype).replace('torch.', '')} values, "
                f"but the encoder's are {str(target.dtype).replace('torch.', '')}; relpos loads only weights of "
                f"the encoder's kind (floating point), since casting would change them silently."
            )
        if value.is_floating_point() and value.numel():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise RelposError(
                    f"{where} holds {bad} NaN or infinite value{'s' if bad != 1 else ''} in the encoder weight "
                    f"{name!r} ({value.numel()} values), so every embedding would be NaN; use the weights of "
                    f"a run that trained without a non-finite loss."
                )


def restore_modality(config: RunConfig, data_info: Any, where: str) -> Modality:
    """The run's modality with what it learned from its training data (``data_info``) restored.

    ``data_info`` that is not a mapping, that the modality cannot read, or from which it cannot tell
    its patch geometry is refused in one sentence naming ``data_info`` (not a setting the user
    never touched, such as a sampling rate the modality then asks for).
    """
    from collections.abc import Mapping

    modality = get_modality(config.modality)(config.modality_config)
    start = f"{where} holds a description of its training data ('data_info')"
    if not isinstance(data_info, Mapping):
        raise RelposError(
            f"{start} that is a {type(data_info).__name__} ({' '.join(repr(data_info).split())[:80]}), "
            f"expected a mapping such as {{'sfreq': 160.0}}."
        )
    try:
        modality.restore(dict(data_info))
        modality.patch_size()  # what every embedding needs; fails here on a rate that is not a rate
    except (RelposError, KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError, OverflowError) as exc:
        raise RelposError(
            f"{start} that modality {config.modality!r} cannot use "
            f"({' '.join(str(exc).split()).rstrip('.') or type(exc).__name__})."
        ) from None
    return modality


def _grid_patch_fraction(config: RunConfig) -> float | None:
    """The training patch size the run's pretext evaluates ``features="grid"`` with, if it says."""
    from .compose import get_pretext

    try:
        pretext_cls = get_pretext(config.pretext)
    except RelposError:  # the plugin that trained the run is not installed: embed all the same
        return None
    return pretext_cls.grid_patch_fraction(config.pretext_config)

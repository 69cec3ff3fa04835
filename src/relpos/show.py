"""Pictures of what a run learned: ``relpos show RUN [WHAT]``.

The loss curves (``loss``) are drawn here from the run's ``metrics.csv`` for every pretext, and
the CLS token's attention (``attention``) for every ViT encoder. Every other picture belongs to the
method that can draw it: a pretext lists the names in
:attr:`relpos.Pretext.figures` and draws them in :meth:`relpos.Pretext.draw_figure` (PART's
reconstruction, uncertainty and symmetry figures live in ``relpos_plugins.part_figures``), so the
core knows no method. Figures are drawn on a :class:`matplotlib.figure.Figure` without pyplot, so
no display is needed and no global backend state is touched.

The same functions serve notebooks::

    from relpos.show import show, plot_loss
    result = show("runs/eeg-part", "symmetry")      # ShowResult(paths=[...], numbers={...})
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, DataError, RelposError
from .space import CONTRACT_KEY, contract_positions

#: The picture every run has (drawn from metrics.csv, not from the model).
CORE_FIGURES = ("loss",)
#: The picture of a run's evaluation cards (label-efficiency curves), drawn from RUN/eval, not from the model.
EVAL_FIGURE = "eval"
#: Resolution of every PNG written.
DPI = 100
#: Samples a model figure is drawn from unless told otherwise.
DEFAULT_SAMPLES = 3
#: The encoder whose attention ``relpos show RUN attention`` reads (a transformer of timm blocks).
ATTENTION_ARCH = "vit"


@dataclass
class ShowResult:
    """What :func:`show` wrote.

    Attributes
    ----------
    paths : list of Path
        The PNG files, in the order drawn.
    numbers : dict
        ``{figure name: {measure: value}}``: what each figure measured (e.g. PART's antisymmetry
        error), for printing and for notebooks.
    """

    paths: list[Path] = field(default_factory=list)
    numbers: dict[str, dict[str, float]] = field(default_factory=dict)


def _matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError:  # matplotlib is a dependency; this only fires in a broken environment
        raise RelposError(
            "Drawing pictures needs matplotlib, which is not installed; install it with "
            "`pip install matplotlib`."
        ) from None
    return Figure


def new_figure(width_in: float, height_in: float, layout: str | None = "constrained"):
    """A :class:`matplotlib.figure.Figure` of the given size in inches, with no display attached.

    ``layout=None`` skips matplotlib's constrained layout (half the drawing time), for the loss
    plot drawn at the end of every training run.
    """
    Figure = _matplotlib()
    return Figure(figsize=(width_in, height_in), dpi=DPI, layout=layout)


def save_figure(figure, path: str | Path) -> Path:
    """Write ``figure`` to ``path`` as PNG through a temporary file, so no half-written file is left."""
    from .checkpoint import temporary_path
    from .paths import write_failure

    path = Path(path)
    tmp = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(tmp, format="png", dpi=DPI)
        tmp.replace(path)
    except OSError as exc:
        raise write_failure(exc, "the picture", path, _WRITE_HINT) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


#: What a message about pictures that cannot be written suggests.
_WRITE_HINT = "pass --out with a writable folder"


# -- loss curves --------------------------------------------------------------------------------
def read_metrics(run_dir: str | Path) -> dict[str, list[float]]:
    """``metrics.csv`` of a run as ``{column: values}`` (empty cells become NaN).

    Raises
    ------
    RelposError
        When the run has no metrics.csv or it holds no row.
    """
    from .paths import path_kind

    path = Path(run_dir) / "metrics.csv"
    kind = path_kind(path)
    if kind is None:
        raise RelposError(
            f"No training log at {str(path)!r}: {str(run_dir)!r} is not a run directory written by "
            f"`relpos train`."
        )
    if kind != "a file":
        raise RelposError(f"The training log {str(path)!r} is {kind}, not a file written by `relpos train`.")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except UnicodeDecodeError as exc:
        raise RelposError(
            f"The training log {str(path)!r} is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at "
            f"offset {exc.start}), so it is not the metrics.csv `relpos train` writes; restore it from the run."
        ) from None
    except (OSError, csv.Error) as exc:
        raise RelposError(
            f"The training log {str(path)!r} cannot be read as CSV "
            f"({' '.join(str(getattr(exc, 'strerror', None) or exc).split())})."
        ) from None
    if not rows:
        raise RelposError(f"The training log {str(path)!r} holds no logged step yet; train longer than train.log_every.")
    columns: dict[str, list[float]] = {}
    for key in rows[0]:
        values = []
        for row in rows:
            try:
                values.append(float(row[key]))
            except (TypeError, ValueError):
                values.append(math.nan)
        columns[key] = values
    return columns


def _wants_log_scale(values: list[float]) -> bool:
    """Log scale where it helps: positive values spanning more than a factor of 20."""
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 20


def plot_loss(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """Draw every logged column of a run's metrics.csv against the step.

    The loss and the pretext's trivial baseline (``loss_baseline``) share the first panel; each
    other column gets its own. A panel uses a log scale when its positive values span more than a
    factor of 20.

    Parameters
    ----------
    run_dir : str or Path
        The run directory.
    path : str or Path, optional
        Where to write the PNG (default ``RUN/plots/loss.png``).

    Returns
    -------
    Path
        The PNG written.
    """
    from .trivial_baseline import BASELINE_KEY

    columns = read_metrics(run_dir)
    steps = columns.pop("step", None) or list(range(1, len(next(iter(columns.values()), [])) + 1))
    panels: list[list[str]] = [["loss"] + ([BASELINE_KEY] if BASELINE_KEY in columns else [])]
    panels += [[key] for key in columns if key not in ("loss", BASELINE_KEY)]
    panels = [[k for k in keys if k in columns] for keys in panels]
    panels = [keys for keys in panels if keys]
    n_cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    figure = new_figure(4.0 * n_cols, 2.8 * n_rows + 0.4, layout=None)
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    top = 1 - 0.45 / (2.8 * n_rows + 0.4)  # room for the title, in figure fractions
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.5 / (2.8 * n_rows), top=top - 0.05, wspace=0.3, hspace=0.55)
    for ax, keys in zip(axes.flat, panels):
        for key in keys:
            style = {"linestyle": "--", "color": "grey"} if key == BASELINE_KEY else {}
            logged = [(s, v) for s, v in zip(steps, columns[key]) if math.isfinite(v)]
            if len(logged) < len(steps):  # a column logged every few rows (the monitors' rankme, knn): points joined
                style["marker"] = "o"
            ax.plot([s for s, _ in logged], [v for _, v in logged], label=key, **style)
        if _wants_log_scale([v for key in keys for v in columns[key]]):
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(keys[0] if len(keys) == 1 else " and ".join(keys))
        if len(keys) > 1:
            ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    figure.suptitle(f"Training curves of {Path(run_dir).name}")
    return save_figure(figure, path if path is not None else Path(run_dir) / "plots" / "loss.png")


# -- a run's model ------------------------------------------------------------------------------
@dataclass
class LoadedRun:
    """A run's pretext (encoder and heads) rebuilt from its checkpoint, in eval mode."""

    pretext: Any
    modality: Any
    config: Any
    data_info: dict[str, Any]
    step: int


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild a run's whole pretext (encoder and heads) from its checkpoint, without its data.

    Only the windows' channel count and extent (stored in the checkpoint) are needed to build the
    pretext; the checkpoint is read safely (:func:`relpos.checkpoint.load_checkpoint`).
    """
    from .checkpoint import checkpoint_config, find_checkpoint, load_checkpoint
    from .modality import Windows
    from .compose import get_pretext
    from .plugins import get_modality
    from .pretext import construct_pretext

    run_dir = Path(run_dir)
    ckpt_file = find_checkpoint(run_dir)
    state = load_checkpoint(ckpt_file, map_location="cpu")
    config = checkpoint_config(state, ckpt_file)
    data_info = dict(state.get("data_info") or {})
    try:
        channels = int(data_info["channels"])
        extent = tuple(int(e) for e in data_info["extent"])
    except (KeyError, TypeError, ValueError):
        raise RelposError(
            f"Checkpoint {str(ckpt_file)!r} does not record its data's channels and extent ('data_info'), "
            f"which drawing its figures needs; train the run again with this relpos."
        ) from None
    modality = get_modality(config.modality)(config.modality_config)
    modality.restore(data_info)
    positions = contract_positions(data_info)  # a run of channel tokens (relpos.space): its channels' places
    if positions is not None:
        channels = positions.shape[1]
    # as many windows as the run trained on (a memory bank is sized by them, SOVE's and DINO's need two),
    # all one zero window expanded in place: no memory for them
    n_windows = max(1, int(data_info.get("windows", 1)))
    shape_only = Windows(x=torch.zeros((1, channels, *extent)).expand(n_windows, channels, *extent),
                         info=dict(data_info), positions=None if positions is None else positions.expand(n_windows, *positions.shape[1:]))
    with torch.random.fork_rng(devices=[]):  # the initial weights are replaced: leave the caller's stream be
        pretext = construct_pretext(
            get_pretext(config.pretext), config.pretext_config, modality, config.encoder, shape_only
        )
    try:
        pretext.load_state_dict(state["model"])
    except RuntimeError as exc:
        text = " ".join(str(exc).split())
        raise RelposError(
            f"Checkpoint {str(ckpt_file)!r} holds weights that do not fit pretext {config.pretext!r} "
            f"({text[:300]})."
        ) from None
    pretext.to(device).eval()
    return LoadedRun(pretext, modality, config, data_info, int(state["step"]))


def available_figures(pretext_cls: type, encoder_arch: str = "") -> tuple[str, ...]:
    """The pictures ``relpos show`` can draw for a run of this pretext class and encoder.

    ``loss`` always; ``attention`` for a ``vit`` encoder (:data:`ATTENTION_ARCH`); then the
    pretext's own :attr:`~relpos.Pretext.figures`.
    """
    encoder_figures = ("attention",) if str(encoder_arch).partition(":")[0] == ATTENTION_ARCH else ()
    return CORE_FIGURES + encoder_figures + tuple(getattr(pretext_cls, "figures", ()))


def _check_what(what: str, pretext_name: str, pretext_cls: type, encoder_arch: str = "") -> None:
    from .errors import did_you_mean

    allowed = available_figures(pretext_cls, encoder_arch)
    if what not in allowed:
        raise ConfigError(
            f"Pretext {pretext_name!r} cannot draw {what!r}; the pictures it can draw are "
            f"{', '.join(repr(a) for a in allowed)}.{did_you_mean(what, allowed)}"
        )


def open_show_data(loaded: LoadedRun, data: str | Path | None) -> torch.Tensor:
    """The windows a model figure is drawn from: ``data`` opened with the run's modality settings.

    Without ``data``, the run's own training data (or the modality's bundled sample) is used. Data
    that the run's modality cannot open, or whose channels or extent differ from the training
    data's, is refused with one sentence.
    """
    modality, config = loaded.modality, loaded.config
    source = data if data is not None else (config.data or modality.default_data())
    if source is None:
        raise DataError(f"Run's modality {modality.name!r} ships no default data; pass --data PATH.")
    from .paths import refuse_special_file

    refuse_special_file(source)
    try:
        windows = modality.load(source)
    except DataError as exc:
        if data is None:
            raise
        raise DataError(
            f"--data {str(data)!r} cannot be opened as {modality.name!r} data, the modality run "
            f"{config.run_dir().name!r} was trained on ({str(exc).rstrip('.')})."
        ) from None
    channels = int(loaded.data_info.get("channels", windows.channels))
    extent = tuple(int(e) for e in loaded.data_info.get("extent", windows.extent))
    if windows.channels != channels or tuple(windows.extent) != extent:
        def channel_count(n: int) -> str:
            return f"{n} channel" + ("" if n == 1 else "s")

        raise DataError(
            f"--data {str(source)!r} gives windows of {channel_count(windows.channels)} × "
            f"{list(windows.extent)}, but the run was trained on {channel_count(channels)} × {list(extent)} "
            f"({modality.name} data opened with the run's settings)."
        )
    return windows.x


def run_contract(run_dir: str | Path) -> dict[str, Any] | None:
    """The channel contract a run's checkpoint records (:mod:`relpos.space`), or None."""
    from .checkpoint import find_checkpoint, load_checkpoint

    state = load_checkpoint(find_checkpoint(Path(run_dir)), mmap=True)
    contract = (state.get("data_info") or {}).get(CONTRACT_KEY)
    return contract if isinstance(contract, dict) else None


def show(
    run_dir: str | Path,
    what: str | None = None,
    data: str | Path | None = None,
    out_dir: str | Path | None = None,
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> ShowResult:
    """Draw pictures of a run as PNG files.

    Parameters
    ----------
    run_dir : str or Path
        A run directory written by ``relpos train``.
    what : str, optional
        One picture: ``"loss"``, ``"attention"`` (a ``vit`` encoder's) or one of the run's pretext's
        :attr:`~relpos.Pretext.figures` (PART: ``"reconstruction"``, ``"uncertainty"``,
        ``"symmetry"``). Default: every one.
    data : str or Path, optional
        Data to draw model figures from, opened with the run's modality settings (default: the
        data the run was trained on).
    out_dir : str or Path, optional
        Folder for the PNG files (default ``RUN/plots``), named ``WHAT.png``.
    n_samples : int
        Samples a model figure draws (the first ones of the data, in order).
    seed : int
        Seed of the patches a figure samples.

    Returns
    -------
    ShowResult

    Raises
    ------
    RelposError
        One sentence for a folder that is not a run, a run without a checkpoint, a picture the
        run's pretext cannot draw, or data of another modality or shape; all checked before any
        data is read.
    """
    from .checkpoint import checkpoint_config, find_checkpoint, load_checkpoint
    from .paths import check_output_file
    from .compose import get_pretext

    run_dir = Path(run_dir)
    ckpt_file = find_checkpoint(run_dir, hint=f"train it first (relpos train --out {run_dir})")
    if ckpt_file == run_dir:  # a file: show reads metrics.csv and the checkpoint of a run directory
        raise RelposError(
            f"{str(run_dir)!r} is a file, not a run directory; `relpos show` draws from the folder "
            f"`relpos train` wrote (its metrics.csv and checkpoint)."
        )
    if not (isinstance(n_samples, int) and 1 <= n_samples <= 64):
        raise ConfigError(f"Invalid value for 'n_samples': expected an integer from 1 to 64, got {n_samples!r}.")

    state = load_checkpoint(ckpt_file, mmap=True)  # the configuration only, before anything heavy
    run_config = checkpoint_config(state, ckpt_file)
    del state
    pretext_name = run_config.pretext
    encoder_arch = getattr(run_config.encoder, "arch", ATTENTION_ARCH)
    pretext_cls = get_pretext(pretext_name)
    names = available_figures(pretext_cls, encoder_arch)
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    if what == EVAL_FIGURE:  # the evaluation cards' label-efficiency curves (relpos.evaluation.card)
        check_output_file(out / f"{EVAL_FIGURE}.png", "the pictures", _WRITE_HINT)
        return ShowResult(paths=[plot_cards(run_dir, out / f"{EVAL_FIGURE}.png")])
    if what is not None:
        _check_what(what, pretext_name, pretext_cls, encoder_arch)
        names = (what,)
    for name in names:  # before anything is drawn: a file in place of the folder, no permission
        check_output_file(out / f"{name}.png", "the pictures", _WRITE_HINT)
    result = ShowResult()
    model_names = [n for n in names if n not in CORE_FIGURES]
    if model_names and run_contract(run_dir):
        # channel tokens have no figure of the window's patches yet: docs/eeg_space.md draws them on the scalp
        if what is not None:
            raise RelposError(
                f"The run reads channel tokens placed by their electrodes (modality.space), and figure {what!r} "
                f"draws whole windows' patches; `relpos show RUN loss` draws its losses."
            )
        model_names = []
    if "loss" in names:
        result.paths.append(plot_loss(run_dir, out / "loss.png"))
    if what is None:
        from .evaluation.card import read_cards

        if read_cards(run_dir):
            check_output_file(out / f"{EVAL_FIGURE}.png", "the pictures", _WRITE_HINT)
            result.paths.append(plot_cards(run_dir, out / f"{EVAL_FIGURE}.png"))
    if model_names:
        loaded = load_run(run_dir)
        x = open_show_data(loaded, data)[:n_samples]
        generator = torch.Generator().manual_seed(seed)
        for name in model_names:
            with torch.no_grad():
                if name == "attention":
                    figure, numbers = draw_attention(loaded, x)
                else:
                    figure, numbers = loaded.pretext.draw_figure(name, x, generator)
            result.paths.append(save_figure(figure, out / f"{name}.png"))
            result.numbers[name] = {k: float(v) for k, v in (numbers or {}).items()}
    return result


# -- attention (any ViT encoder) -------------------------------------------------------------------
def cls_attention(encoder, x: torch.Tensor, patch_size) -> torch.Tensor:
    """How much the CLS token attends to each patch in the encoder's last block (mean over heads).

    The input is read as :meth:`relpos.PretrainedEncoder.embed` reads it (the regular patch grid,
    positions from the box centres when the encoder has them); the last block's input is captured
    and its attention weights softmax(q·kᵀ/√d) recomputed from its own layers, since the fused
    attention kernel never forms them.

    Returns
    -------
    torch.Tensor
        ``(S, N)``: the CLS row's weights on the N grid patches (the rest went to the CLS token
        itself), in grid order.
    """
    from .extraction import extract_patches
    from .geometry import Boxes
    from .sampling import grid_boxes

    grid = grid_boxes(tuple(x.shape[2:]), patch_size, device=x.device)
    center = grid.center.expand(len(x), -1, -1)
    patches = extract_patches(x, Boxes(center, grid.size.expand(len(x), -1, -1)), encoder.patch_shape)
    block = encoder.blocks[-1]
    captured = {}
    handle = block.register_forward_pre_hook(lambda module, args: captured.__setitem__("x", args[0]))
    try:
        encoder(patches, center)
    finally:
        handle.remove()
    attn = block.attn
    tokens = block.norm1(captured["x"])
    batch, n_tokens, _ = tokens.shape
    qkv = attn.qkv(tokens).reshape(batch, n_tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    weights = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (S, heads, 1 + N, 1 + N)
    return weights[:, :, 0, 1:].mean(dim=1)


def figure_axes(modality: Any) -> tuple[Any, ...]:
    """The modality's axes as figures label them: :class:`relpos.modality.Axis` es with the unit and
    the scale from native samples (:meth:`relpos.Modality.axis_units`), e.g. ``time (s)``, ``col (pixels)``.

    A figure shows a position of ``p`` native samples at ``axis.shown(p)`` and labels the axis
    ``axis.label()`` (``axis.label("patch centre")`` for another quantity in the same unit).
    """
    from .modality import as_axis

    return tuple(as_axis(a) for a in modality.axis_units())


def draw_attention(loaded: LoadedRun, x: torch.Tensor):
    """The CLS token's attention to each patch: a heat map over images, a curve along time."""
    from .errors import ConfigError
    from .sampling import grid_boxes

    modality = loaded.modality
    n_axes = len(modality.axes)
    if n_axes > 2:
        raise ConfigError(
            f"'attention' is drawn for data with 1 or 2 axes, but modality {modality.name!r} has {n_axes} "
            f"({', '.join(modality.axes)})."
        )
    encoder = loaded.pretext.encoder
    x = x.to(next(encoder.parameters()).device)
    patch_size = modality.patch_size()
    weights = cls_attention(encoder, x, patch_size).cpu()  # (S, N)
    n_patches = weights.shape[1]
    shares = weights.sum(dim=1)
    distribution = weights / shares.unsqueeze(1)
    entropy = -(distribution * distribution.clamp(min=1e-12).log()).sum(dim=1)
    numbers = {
        "patch_share": float(shares.mean()),  # the rest of the CLS row went to CLS itself
        "entropy_ratio": float((entropy / math.log(n_patches)).mean()) if n_patches > 1 else 1.0,
    }
    n_samples = x.shape[0]
    figure = new_figure(9, 3.0 * n_samples)
    axes = figure.subplots(n_samples, 2, squeeze=False)
    grid = grid_boxes(tuple(x.shape[2:]), patch_size)
    if n_axes == 2:
        row, col = figure_axes(modality)
    else:
        (axis,) = figure_axes(modality)
    for s in range(n_samples):
        if n_axes == 2:
            rows = len(torch.unique(grid.center[:, 0]))
            cols = n_patches // rows
            low, high = float(x[s].min()), float(x[s].max())
            image = ((x[s, :3] - low) / ((high - low) or 1.0)).clamp(0, 1).cpu()
            image = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
            axes[s, 0].imshow(image, cmap="gray" if image.ndim == 2 else None)
            heat = axes[s, 1].imshow(weights[s].reshape(rows, cols).numpy(), cmap="magma")
            figure.colorbar(heat, ax=axes[s, 1], label="CLS attention")
            for ax in axes[s]:
                ax.set_xticks([]), ax.set_yticks([])
            axes[s, 0].set_ylabel(row.label()), axes[s, 0].set_xlabel(col.label())
        else:
            times = axis.shown(torch.arange(x.shape[-1]) + 0.5)
            axes[s, 0].plot(times.numpy(), x[s, 0].cpu().numpy(), color="black", linewidth=0.6)
            axes[s, 0].set_xlabel(axis.label()), axes[s, 0].set_yticks([])
            axes[s, 1].plot(axis.shown(grid.center[:, 0]).numpy(), weights[s].numpy(), marker="o")
            axes[s, 1].set_xlabel(axis.label("patch centre")), axes[s, 1].set_ylabel("CLS attention")
            for ax in axes[s]:
                ax.set_xlim(0, axis.shown(x.shape[-1]))
    axes[0, 0].set_title("input (first channel)" if n_axes == 1 else "input")
    axes[0, 1].set_title("CLS attention to each patch, last block")
    figure.suptitle(
        f"Attention: {numbers['patch_share']:.2f} of the CLS token's attention on patches, entropy "
        f"{numbers['entropy_ratio']:.2f} of uniform"
    )
    return figure, numbers


def plot_loss_quietly(run_dir: str | Path) -> Path | None:
    """:func:`plot_loss` for the end of ``relpos train``: a failure warns, never stops the run."""
    from .errors import warn

    try:
        return plot_loss(run_dir)
    except Exception as exc:  # noqa: BLE001 - a picture is never worth losing a finished run
        warn(f"the loss plot could not be drawn ({' '.join(str(exc).split())[:200] or type(exc).__name__}).")
        return None


def plot_cards(run: str | Path, path: str | Path) -> Path:
    """Draw the label-efficiency curve of every card of ``run`` (κ against the label fraction, pretrained and
    random init with their 95 % intervals), one panel per card; raise :class:`ConfigError` when there is none."""
    import numpy as np

    from .evaluation.card import HEADLINE, _fraction_text, read_cards

    cards = read_cards(run)
    if not cards:
        raise ConfigError(
            f"Run {str(run)!r} has no evaluation card to draw; write one with `relpos eval {run} "
            f"--label-fraction 0.01,0.1,1.0`."
        )
    figure = new_figure(4.2 * min(3, len(cards)), 3.2 * ((len(cards) + 2) // 3))
    axes = figure.subplots((len(cards) + 2) // 3, min(3, len(cards)), squeeze=False)
    for ax, card in zip(axes.flat, cards):
        points = [p for p in card["curve"]]
        xs = np.arange(len(points))
        for offset, (key, label) in enumerate(((card["init"], card["init"]), ("random", "random init"))):
            means = np.array([p[key]["mean"][HEADLINE] for p in points])
            cis = np.array([p[key]["ci"][HEADLINE] for p in points])
            ax.errorbar(xs + (offset - 0.5) * 0.08, means, yerr=[means - cis[:, 0], cis[:, 1] - means], marker="o",
                        capsize=3, label=label)
        ax.set_xticks(xs, [_fraction_text(p["label_fraction"]) for p in points])
        ax.set_xlabel("training labels kept")
        ax.set_ylabel("Cohen's κ (95 % interval)")
        ax.set_title(f"{card['protocol']} · {card['features']} · {card['data']}", fontsize="small")
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(cards):]:
        ax.set_visible(False)
    figure.suptitle(f"Label efficiency of {Path(run).name}")
    return save_figure(figure, path)

"""PART's pictures (``relpos show RUN reconstruction|uncertainty|symmetry``).

The figures of the PART paper, for any modality with 1 or 2 axes, all computed from the model's
predictions θ̂(r→t) for *every* ordered pair of a sample's N patches:

* ``reconstruction`` (the paper's Fig. 4): fix one reference patch r (the one nearest the sample's
  centre) and place every other patch t at the centre the model predicts for it,
  ĉ_t = c_r + θ̂(r→t)·s_r (inverting eq. 1); input, true placement and prediction side by side.
  Images are pasted on a canvas; a time series is drawn on the time axis, channels stacked.
* ``uncertainty`` (Fig. 5): for one target patch t, the centres predicted for it from every other
  reference, ĉ_{r,t} = c_r + θ̂(r→t)·s_r, as a scatter around the true centre; and, for every
  patch, the spread of those predictions (:func:`spread_scores`) as a heat map (images) or a curve
  along time (time series).
* ``symmetry`` (Fig. 6): the N × N matrices of θ̂ per axis, in patch order and shuffled, beside
  the ground truth, with the antisymmetry error ‖θ̂(i→j) + θ̂(j→i)‖ (:func:`antisymmetry_error`;
  0 for the true offsets of equal-sized patches, since θ(j→i) = −θ(i→j)).

``uncertainty`` and ``symmetry`` use the regular patch grid (so the matrices have an order and the
heat map has cells) whenever the head accepts that many patches (the ``mlp`` head is built for
exactly ``n_patches``, so it gets the training sampler's patches, sorted by centre).
``reconstruction`` samples patches as training does (off-grid for ``part``).

With position-masked PART (``encoder.pos_embed: sincos``) every position is hidden from the
encoder while drawing: a visible pair of positions gives its offset away, and the pictures are meant
to show what the patches' content tells the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from relpos.extraction import extract_patches
from relpos.geometry import Boxes, relative_transform
from relpos.sampling import grid_boxes, grid_count
from relpos.show import figure_axes, new_figure

FIGURES = ("reconstruction", "uncertainty", "symmetry")
#: Channels a time-series figure stacks at most (more would be unreadable at this size).
MAX_CHANNELS_SHOWN = 4


# -- the numbers ---------------------------------------------------------------------------------
def all_pairs(n_patches: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference and target indices of every ordered pair (r, t), r-major: pair r·N + t."""
    index = torch.arange(n_patches, device=device)
    return index.repeat_interleave(n_patches), index.repeat(n_patches)


def predict_all_pairs(pretext, x: torch.Tensor, boxes: Boxes) -> tuple[torch.Tensor, torch.Tensor]:
    """θ̂(r→t) and the true θ(r→t) for every ordered pair of the boxes of each sample.

    Returns
    -------
    predicted, true : torch.Tensor
        ``(S, N, N, |θ|)``, indexed ``[sample, reference, target]``.
    """
    n_samples, n_patches = boxes.center.shape[:2]
    patches = extract_patches(x, boxes, pretext.patch_shape)
    pos_masked = None
    if pretext.masks_positions:  # hide every position: content alone must place the patches
        pos_masked = torch.ones(n_samples, n_patches, dtype=torch.bool, device=x.device)
    tokens = pretext.encoder(patches, boxes.center, pos_masked=pos_masked)[:, 1:]
    ref, tgt = all_pairs(n_patches, x.device)
    ref, tgt = ref.expand(n_samples, -1), tgt.expand(n_samples, -1)
    predicted = pretext.decoded_offsets(pretext.head(tokens, ref, tgt).float())  # in reference sizes
    true = relative_transform(boxes.gather(ref), boxes.gather(tgt), pretext.config.predict_size)
    shape = (n_samples, n_patches, n_patches, -1)
    return predicted.reshape(shape), true.reshape(shape)


def antisymmetry_error(theta: torch.Tensor, n_axes: int) -> torch.Tensor:
    """Mean over ordered pairs i ≠ j of ‖θ(i→j) + θ(j→i)‖₂ on the centre offsets, per sample.

    Parameters
    ----------
    theta : torch.Tensor
        ``(S, N, N, |θ|)`` predictions (or targets), ``[sample, reference, target]``.
    n_axes : int
        The first ``n_axes`` components are the centre offsets (size ratios are not antisymmetric).

    Returns
    -------
    torch.Tensor
        ``(S,)``, in units of the reference patch size.
    """
    offsets = theta[..., :n_axes].float()
    n_patches = offsets.shape[1]
    norms = (offsets + offsets.transpose(1, 2)).norm(dim=-1)
    off_diagonal = ~torch.eye(n_patches, dtype=torch.bool, device=offsets.device)
    return norms[:, off_diagonal].mean(dim=1)


def predicted_centers(theta: torch.Tensor, boxes: Boxes, n_axes: int) -> torch.Tensor:
    """Where each reference r places each target t: ĉ_{r,t} = c_r + θ(r→t)·s_r (eq. 1 inverted).

    Returns
    -------
    torch.Tensor
        ``(S, N_ref, N_tgt, D)`` in native units.
    """
    center = boxes.center.unsqueeze(2)  # (S, N, 1, D): the reference's
    size = boxes.size.unsqueeze(2)
    return center + theta[..., :n_axes] * size


def spread_scores(centers: torch.Tensor, patch_size) -> torch.Tensor:
    """How much the references disagree about each target: the RMS distance of the centres
    predicted for it by the other references from their mean, in patch sizes.

    Parameters
    ----------
    centers : torch.Tensor
        ``(S, N_ref, N_tgt, D)`` from :func:`predicted_centers`.
    patch_size : sequence of float
        The patch size per axis (native units) each axis is divided by.

    Returns
    -------
    torch.Tensor
        ``(S, N_tgt)``: sqrt(mean_{r≠t} ‖(ĉ_{r,t} − mean_{r'≠t} ĉ_{r',t}) / patch_size‖²).
    """
    scale = torch.as_tensor(patch_size, dtype=centers.dtype, device=centers.device)
    scaled = centers / scale
    n_patches = scaled.shape[1]
    others = (~torch.eye(n_patches, dtype=torch.bool, device=scaled.device)).to(scaled.dtype)
    weights = others.unsqueeze(0).unsqueeze(-1)  # (1, N_ref, N_tgt, 1): 0 where r == t
    count = others.sum(dim=0).view(1, 1, n_patches, 1)
    mean = (scaled * weights).sum(dim=1, keepdim=True) / count
    squared = ((scaled - mean).pow(2) * weights).sum(dim=(1, 3)) / count.view(1, n_patches)
    return squared.sqrt()


# -- which patches a figure uses -------------------------------------------------------------------
def _sorted_by_center(boxes: Boxes) -> Boxes:
    """Boxes ordered by centre, first axis slowest (row-major for images, time for series)."""
    center = boxes.center
    key = torch.zeros(center.shape[:2], dtype=torch.float64, device=center.device)
    for d in range(center.shape[-1]):  # lexicographic: earlier axes dominate
        key = key * 1e6 + center[..., d].double().round()
    order = key.argsort(dim=1)
    return boxes.gather(order)


def figure_boxes(pretext, n_samples: int, generator: torch.Generator, device, on_grid: bool) -> Boxes:
    """The patches a figure is drawn from (see the module docstring)."""
    grid_fits = pretext.config.head != "mlp" or grid_count(pretext.extent, pretext.patch_size) == pretext.n_patches
    if on_grid and grid_fits and grid_count(pretext.extent, pretext.patch_size) >= 2:
        grid = grid_boxes(pretext.extent, pretext.patch_size, device=device)
        return Boxes(grid.center.expand(n_samples, -1, -1), grid.size.expand(n_samples, -1, -1))
    return _sorted_by_center(pretext.sample_boxes(n_samples, generator, device))


def _central_patch(boxes: Boxes, extent) -> torch.Tensor:
    """Per sample, the index of the patch whose centre is nearest the sample's centre."""
    middle = torch.as_tensor(extent, dtype=boxes.center.dtype, device=boxes.center.device) / 2
    return (boxes.center - middle).norm(dim=-1).argmin(dim=1)


def _check_axes(pretext, name: str) -> None:
    from relpos.errors import ConfigError

    if pretext.n_axes > 2:
        raise ConfigError(
            f"Pretext {pretext.name!r} draws {name!r} for data with 1 or 2 axes, but modality "
            f"{pretext.modality.name!r} has {pretext.n_axes} ({', '.join(pretext.modality.axes)}); "
            f"the picture it can draw for it is 'loss'."
        )


# -- drawing helpers ------------------------------------------------------------------------------
def _display_range(x: torch.Tensor) -> tuple[float, float]:
    low, high = float(x.min()), float(x.max())
    return low, high if high > low else low + 1.0


def _to_image(canvas: torch.Tensor, low: float, high: float):
    """``(C, H, W)`` → an array imshow draws (grey for 1 channel, RGB of the first 3 otherwise)."""
    scaled = ((canvas - low) / (high - low)).clamp(0, 1)
    if scaled.shape[0] == 1:
        return scaled[0].cpu().numpy(), "gray"
    return scaled[:3].permute(1, 2, 0).cpu().numpy(), None


def paste_patches(patches: torch.Tensor, boxes: Boxes, extent, background: float) -> torch.Tensor:
    """Paste ``(N, C, *patch_shape)`` image patches resized to their boxes on a canvas (mean where
    they overlap, ``background`` where none lands); parts outside the canvas are cut off."""
    channels = patches.shape[1]
    height, width = int(extent[0]), int(extent[1])
    total = torch.zeros(channels, height, width)
    count = torch.zeros(1, height, width)
    for patch, center, size in zip(patches.cpu(), boxes.center.cpu(), boxes.size.cpu()):
        rows, cols = max(1, int(round(float(size[0])))), max(1, int(round(float(size[1]))))
        resized = F.interpolate(patch.unsqueeze(0).float(), size=(rows, cols), mode="bilinear", align_corners=False)[0]
        top = int(round(float(center[0]) - rows / 2))
        left = int(round(float(center[1]) - cols / 2))
        r0, c0 = max(top, 0), max(left, 0)
        r1, c1 = min(top + rows, height), min(left + cols, width)
        if r1 <= r0 or c1 <= c0:
            continue
        total[:, r0:r1, c0:c1] += resized[:, r0 - top:r1 - top, c0 - left:c1 - left]
        count[:, r0:r1, c0:c1] += 1
    canvas = total / count.clamp(min=1)
    return torch.where(count > 0, canvas, torch.full_like(canvas, background))


def _rectangle(ax, center, size, color: str) -> None:
    from matplotlib.patches import Rectangle

    (row, col), (rows, cols) = (float(c) for c in center), (float(s) for s in size)
    ax.add_patch(Rectangle((col - cols / 2 - 0.5, row - rows / 2 - 0.5), cols, rows, fill=False, edgecolor=color, linewidth=1.5))


def _plot_series_patches(ax, patches: torch.Tensor, boxes: Boxes, axis, channel_step: float,
                         colors, reference: int) -> None:
    """Each patch's signal drawn over its box on the time axis (``axis``: its unit), channels stacked."""
    n_channels = min(patches.shape[1], MAX_CHANNELS_SHOWN)
    length = patches.shape[-1]
    for j, (patch, center, size) in enumerate(zip(patches.cpu(), boxes.center.cpu(), boxes.size.cpu())):
        times = (float(center[0]) - float(size[0]) / 2 + (torch.arange(length) + 0.5) * float(size[0]) / length)
        for c in range(n_channels):
            ax.plot(axis.shown(times).numpy(), (patch[c] - c * channel_step).numpy(),
                    color="black" if j == reference else colors(j % colors.N), linewidth=1.6 if j == reference else 0.8)


# -- the figures ----------------------------------------------------------------------------------
def draw_reconstruction(pretext, x: torch.Tensor, generator: torch.Generator):
    """The paper's Fig. 4: input, true placement and predicted placement per sample."""
    _check_axes(pretext, "reconstruction")
    import matplotlib

    n_samples = x.shape[0]
    d = pretext.n_axes
    boxes = figure_boxes(pretext, n_samples, generator, x.device, on_grid=pretext.sampling == "grid")
    predicted, true = predict_all_pairs(pretext, x, boxes)
    reference = _central_patch(boxes, pretext.extent)
    centers = predicted_centers(predicted, boxes, d)  # (S, N_ref, N_tgt, D)
    sample_index = torch.arange(n_samples, device=x.device)
    placed_center = centers[sample_index, reference]  # (S, N, D): every patch as the reference places it
    placed_size = boxes.size.clone()
    if pretext.config.predict_size:  # Δw/Δh: the reference also predicts each patch's size
        ref_size = boxes.size[sample_index, reference].unsqueeze(1)
        placed_size = predicted[sample_index, reference][..., d:].clamp(min=0.05) * ref_size
    placed_center[sample_index, reference] = boxes.center[sample_index, reference]
    placed_size[sample_index, reference] = boxes.size[sample_index, reference]
    placement = Boxes(placed_center, placed_size)
    error = (placed_center - boxes.center).norm(dim=-1)  # (S, N)
    others = torch.ones_like(error, dtype=torch.bool)
    others[sample_index, reference] = False
    patches = extract_patches(x, boxes, pretext.patch_shape)
    figure = new_figure(11, 3.0 * n_samples if d == 2 else 2.4 * n_samples)
    axes = figure.subplots(n_samples, 3, squeeze=False)
    titles = ("input", "true placement", f"predicted from the black/red reference")
    if d == 2:
        for s in range(n_samples):
            low, high = _display_range(x[s])
            image, cmap = _to_image(x[s], low, high)
            axes[s, 0].imshow(image, cmap=cmap, vmin=0, vmax=1)
            for col, where in ((1, boxes), (2, placement)):
                sample_boxes = Boxes(where.center[s], where.size[s])
                canvas = paste_patches(patches[s], sample_boxes, pretext.extent, background=(low + high) / 2)
                image, cmap = _to_image(canvas, low, high)
                axes[s, col].imshow(image, cmap=cmap, vmin=0, vmax=1)
                r = int(reference[s])
                _rectangle(axes[s, col], where.center[s, r], where.size[s, r], "red")
            for ax in axes[s]:
                ax.set_xticks([]), ax.set_yticks([])
    else:
        colors = matplotlib.colormaps["tab20"]
        (axis,) = figure_axes(pretext.modality)  # the time axis in its unit (seconds for EEG)
        for s in range(n_samples):
            shown = x[s, :MAX_CHANNELS_SHOWN]
            step = float(2.5 * shown.std()) or 1.0
            times = axis.shown(torch.arange(x.shape[-1]) + 0.5)
            for c in range(shown.shape[0]):
                axes[s, 0].plot(times.numpy(), (shown[c].cpu() - c * step).numpy(), color="black", linewidth=0.6)
            for col, where in ((1, boxes), (2, placement)):
                sample_boxes = Boxes(where.center[s], where.size[s])
                _plot_series_patches(axes[s, col], patches[s], sample_boxes, axis, step, colors, int(reference[s]))
            for ax in axes[s]:
                ax.set_xlim(0, axis.shown(pretext.extent[0]))
                ax.set_yticks([])
                ax.set_xlabel(axis.label())
    for col, title in enumerate(titles):
        axes[0, col].set_title(title)
    mean_error = (error * others).sum() / others.sum().clamp(min=1)
    patch_scale = float(torch.tensor(pretext.patch_size).float().norm())
    figure.suptitle(f"PART reconstruction: mean placement error {float(mean_error) / patch_scale:.3f} patch sizes")
    return figure, {"placement_error_patches": float(mean_error) / patch_scale}


def draw_uncertainty(pretext, x: torch.Tensor, generator: torch.Generator):
    """The paper's Fig. 5: one target's predicted positions from every reference, and the spread
    of those predictions for every patch of the sample."""
    _check_axes(pretext, "uncertainty")
    n_samples = x.shape[0]
    d = pretext.n_axes
    boxes = figure_boxes(pretext, n_samples, generator, x.device, on_grid=True)
    predicted, _ = predict_all_pairs(pretext, x, boxes)
    centers = predicted_centers(predicted, boxes, d)
    scores = spread_scores(centers, pretext.patch_size)  # (S, N)
    target = _central_patch(boxes, pretext.extent)
    n_patches = boxes.center.shape[1]
    figure = new_figure(9, 3.2 * n_samples)
    axes = figure.subplots(n_samples, 2, squeeze=False)
    units = figure_axes(pretext.modality)  # each axis in its unit (seconds for EEG, pixels for images)
    for s in range(n_samples):
        t = int(target[s])
        from_refs = torch.cat([centers[s, :t, t], centers[s, t + 1:, t]]).cpu()  # (N-1, D)
        true_center = boxes.center[s, t].cpu()
        if d == 2:
            low, high = _display_range(x[s])
            image, cmap = _to_image(x[s], low, high)
            for ax in axes[s]:
                ax.imshow(image, cmap=cmap, vmin=0, vmax=1, alpha=0.6)
                ax.set_xticks([]), ax.set_yticks([])
            axes[s, 0].scatter(from_refs[:, 1], from_refs[:, 0] - 0.5, s=10, c="tab:blue", label="predicted from each reference")
            axes[s, 0].scatter([true_center[1] - 0.5], [true_center[0] - 0.5], marker="*", s=120, c="red", label="true centre")
            axes[s, 0].set_xlim(-0.5, pretext.extent[1] - 0.5), axes[s, 0].set_ylim(pretext.extent[0] - 0.5, -0.5)
            axes[s, 0].set_ylabel(units[0].label()), axes[s, 0].set_xlabel(units[1].label())
            heat = _score_map(scores[s].cpu(), boxes.center[s].cpu(), boxes.size[s].cpu(), pretext.extent)
            shown = axes[s, 1].imshow(heat, cmap="magma", alpha=0.75)
            figure.colorbar(shown, ax=axes[s, 1], label="spread (patch sizes)")
        else:
            (axis,) = units
            references = torch.arange(n_patches - 1)
            axes[s, 0].scatter(axis.shown(from_refs[:, 0]).numpy(), references.numpy(), s=10, c="tab:blue",
                               label="predicted from each reference")
            axes[s, 0].axvline(axis.shown(float(true_center[0])), color="red", label="true centre")
            axes[s, 0].set_xlim(0, axis.shown(pretext.extent[0]))
            axes[s, 0].set_xlabel(axis.label()), axes[s, 0].set_ylabel("reference patch")
            order = boxes.center[s, :, 0].cpu().argsort()
            axes[s, 1].plot(axis.shown(boxes.center[s, order, 0].cpu()).numpy(), scores[s, order].cpu().numpy(), marker="o")
            axes[s, 1].set_xlabel(axis.label("patch centre")), axes[s, 1].set_ylabel("spread (patch sizes)")
            axes[s, 1].set_xlim(0, axis.shown(pretext.extent[0]))
    axes[0, 0].set_title("one target patch, placed by every other patch")
    axes[0, 1].set_title("per-patch spread of the predicted position")
    axes[0, 0].legend(fontsize="small", loc="lower right")
    numbers = {"mean_spread_patches": float(scores.mean()),
               "target_spread_patches": float(scores[torch.arange(n_samples), target].mean())}
    figure.suptitle(f"PART uncertainty: mean spread {numbers['mean_spread_patches']:.3f} patch sizes")
    return figure, numbers


def _score_map(scores: torch.Tensor, center: torch.Tensor, size: torch.Tensor, extent):
    """Per pixel, the mean score of the boxes that cover it (NaN where none does)."""
    height, width = int(extent[0]), int(extent[1])
    total = torch.zeros(height, width)
    count = torch.zeros(height, width)
    rows = torch.arange(height).float() + 0.5
    cols = torch.arange(width).float() + 0.5
    for score, c, s in zip(scores, center, size):
        inside = ((rows - c[0]).abs() <= s[0] / 2).unsqueeze(1) & ((cols - c[1]).abs() <= s[1] / 2).unsqueeze(0)
        total += inside * score
        count += inside
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan"))).numpy()


def draw_symmetry(pretext, x: torch.Tensor, generator: torch.Generator):
    """The paper's Fig. 6: θ̂ per axis as N × N matrices, ordered and shuffled, beside the truth."""
    _check_axes(pretext, "symmetry")
    n_samples = x.shape[0]
    d = pretext.n_axes
    boxes = figure_boxes(pretext, n_samples, generator, x.device, on_grid=True)
    predicted, true = predict_all_pairs(pretext, x, boxes)
    errors = antisymmetry_error(predicted, d)
    n_patches = boxes.center.shape[1]
    shuffle = torch.randperm(n_patches, generator=generator).to(x.device)
    axis_names = list(pretext.modality.axes)
    figure = new_figure(13, 3.2 * d)
    axes = figure.subplots(d, 4, squeeze=False)
    columns = (("predicted, in patch order", predicted[0]), ("true, in patch order", true[0]),
               ("predicted, shuffled", predicted[0][shuffle][:, shuffle]), ("true, shuffled", true[0][shuffle][:, shuffle]))
    for a in range(d):
        limit = float(true[0][..., a].abs().max()) or 1.0
        for col, (title, matrix) in enumerate(columns):
            shown = axes[a, col].imshow(matrix[..., a].cpu().numpy(), cmap="coolwarm", vmin=-limit, vmax=limit)
            axes[a, col].set_title(f"Δ{axis_names[a]}: {title}", fontsize="small")
            axes[a, col].set_xlabel("target"), axes[a, col].set_ylabel("reference")
        figure.colorbar(shown, ax=axes[a, -1], label="reference sizes")
    off_diagonal = ~torch.eye(n_patches, dtype=torch.bool, device=x.device)
    numbers = {
        "antisymmetry_error": float(errors.mean()),
        "prediction_norm": float(predicted[..., :d].norm(dim=-1)[:, off_diagonal].mean()),
        "target_norm": float(true[..., :d].norm(dim=-1)[:, off_diagonal].mean()),
    }
    figure.suptitle(
        f"PART prediction matrices: antisymmetry error ‖θ̂(i→j) + θ̂(j→i)‖ = {numbers['antisymmetry_error']:.4f} "
        f"(mean ‖θ̂‖ {numbers['prediction_norm']:.3f}, true {numbers['target_norm']:.3f})"
    )
    return figure, numbers


DRAWERS = {"reconstruction": draw_reconstruction, "uncertainty": draw_uncertainty, "symmetry": draw_symmetry}

"""Views: crops of a sample as boxes, their tokens, and which tokens of two views match.

A *view* of a batch is, per sample, a crop box in the sample's native units (pixels, samples), the
resolution the crop is resampled to (per axis, in view units) and a flip flag per axis. A view is
cut into a grid of tokens of the modality's patch shape; every token is mapped back to a box in
*sample* coordinates, so one :func:`relpos.extraction.extract_patches` call crops, resizes and
patchifies every view of the batch at once (:func:`extract_view_tokens`): no intermediate crop
image, one resampling.

Conventions
-----------
* A batch of ``V`` views of one kind (same resolution) is a :class:`Views` with ``(B, V, D)``
  crops: multi-crop is one :class:`Views` for the global views and one for the local views.
* Tokens are ordered row-major over the view's own grid, as a ViT reads the view. A view flipped
  along an axis reverses its token order along that axis and mirrors every patch, exactly as if the
  crop had been flipped before patchifying.
* The grid holds ``floor(resolution / patch)`` tokens per axis; a remainder at the far edge of the
  view is left out, as a ViT patch embedding does.
* The positions the encoder sees (:meth:`Views.token_positions`) are the tokens' centres in the
  view's own frame, scaled so that every view spans the sample's extent: a ViT interpolates its
  position embeddings in the same way when it reads a smaller crop.

:func:`match_tokens` is PW-Self's patch matching (§3.4 of Javidani et al.) on these token boxes,
per sample and vectorised: no Python loop over samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import ConfigError
from .extraction import extract_patches, layout_of
from .transfer import to_device
from .geometry import Boxes


@dataclass(frozen=True)
class Views:
    """``V`` views of each of ``B`` samples, all resampled to the same resolution.

    Attributes
    ----------
    crop : Boxes
        ``(B, V, D)`` crop boxes in the sample's native units.
    flip : torch.Tensor
        ``(B, V, D)`` bool: whether the view is mirrored along each axis.
    resolution : tuple of int
        Size of the view per axis, in view units (pixels or samples after resampling).
    patch_shape : tuple of int
        Token size per axis in view units (the modality's patch shape).
    extent : tuple of int
        The sample's extent per axis (the range every view's positions are scaled to).
    """

    crop: Boxes
    flip: torch.Tensor
    resolution: tuple[int, ...]
    patch_shape: tuple[int, ...]
    extent: tuple[int, ...]

    def __post_init__(self) -> None:
        check_resolution(self.resolution, self.patch_shape)

    @property
    def batch_size(self) -> int:
        return int(self.crop.center.shape[0])

    @property
    def n_views(self) -> int:
        return int(self.crop.center.shape[1])

    @property
    def n_axes(self) -> int:
        return len(self.resolution)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Tokens per axis: ``floor(resolution / patch)``."""
        return tuple(r // p for r, p in zip(self.resolution, self.patch_shape))

    @property
    def n_tokens(self) -> int:
        return math.prod(self.grid_shape)

    def cell_size(self) -> torch.Tensor:
        """``(B, V, D)`` size of one token in sample units."""
        scale = torch.tensor(
            [p / r for p, r in zip(self.patch_shape, self.resolution)],
            dtype=self.crop.size.dtype, device=self.crop.size.device,
        )
        return self.crop.size * scale

    def _grid_index(self) -> torch.Tensor:
        """``(N, D)`` grid index of each token in the view's row-major order."""
        axes = [torch.arange(g, device=self.crop.center.device) for g in self.grid_shape]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, self.n_axes)

    def token_boxes(self) -> Boxes:
        """Every token of every view as a box in sample coordinates.

        Returns
        -------
        Boxes
            ``(B, V, N, D)``, tokens in the view's row-major order. Along a flipped axis token
            ``i`` of the view covers the mirrored cell, counted from the crop's far edge.
        """
        cell = self.cell_size().unsqueeze(2)  # (B, V, 1, D)
        offset = (self._grid_index().to(cell.dtype) + 0.5) * cell  # from the crop's near edge
        start = self.crop.start.unsqueeze(2)
        end = self.crop.end.unsqueeze(2)
        flipped = self.flip.unsqueeze(2)
        center = torch.where(flipped, end - offset, start + offset)
        return Boxes(center, cell.expand_as(center).clone())

    def token_positions(self) -> torch.Tensor:
        """``(B, V, N, D)`` positions for the encoder: centres in the view's frame, scaled to the extent.

        Token ``i`` along an axis sits at ``(i + 0.5) · patch / resolution · extent``, the same for
        every sample and whatever the crop; a view covering the whole sample at its own resolution
        gets the centres of the sample's own grid patches.
        """
        index = self._grid_index().to(torch.float32)
        scale = torch.tensor(
            [p / r * e for p, r, e in zip(self.patch_shape, self.resolution, self.extent)],
            device=index.device,
        )
        pos = (index + 0.5) * scale
        return pos.expand(self.batch_size, self.n_views, -1, -1)

    def select(self, view: int) -> "Views":
        """The single view ``view`` of every sample, as a :class:`Views` with ``V = 1``."""
        sl = slice(view, view + 1)
        return Views(
            Boxes(self.crop.center[:, sl], self.crop.size[:, sl]), self.flip[:, sl],
            self.resolution, self.patch_shape, self.extent,
        )


def check_resolution(resolution: Sequence[int], patch_shape: Sequence[int], name: str = "view resolution") -> None:
    """Raise :class:`ConfigError` unless ``resolution`` holds at least one whole patch per axis."""
    if len(resolution) != len(patch_shape) or any(int(r) < int(p) for r, p in zip(resolution, patch_shape)):
        raise ConfigError(
            f"The {name} {list(resolution)} holds no whole patch of {list(patch_shape)}; "
            f"each axis needs at least the patch size."
        )


def check_scale_range(scale_range: Sequence[float], name: str) -> tuple[float, float]:
    """Validate a crop scale range: ``0 < low <= high <= 1``."""
    values = tuple(float(v) for v in scale_range)
    if len(values) != 2 or not (0.0 < values[0] <= values[1] <= 1.0):
        raise ConfigError(
            f"Invalid value for '{name}': a crop scale range needs 0 < low <= high <= 1 (a fraction of "
            f"the sample's area or length), got {list(values)}."
        )
    return values  # type: ignore[return-value]


def flip_mask_for(axes: Sequence[str], flip_axes: Sequence[str]) -> tuple[bool, ...]:
    """Which of ``axes`` may be flipped."""
    return tuple(a in flip_axes for a in axes)


def sample_views(
    batch_size: int,
    n_views: int,
    extent: Sequence[int],
    patch_shape: Sequence[int],
    scale_range: Sequence[float],
    resolution: Sequence[int] | None,
    generator: torch.Generator | None = None,
    aspect_range: Sequence[float] = (3 / 4, 4 / 3),
    flippable: Sequence[bool] | None = None,
    device: torch.device | str | None = None,
) -> Views:
    """Draw ``n_views`` random crops of every sample (batched, seeded, per sample).

    Parameters
    ----------
    batch_size, n_views : int
        Samples B and views per sample V.
    extent : sequence of int
        The sample's extent per axis in native units.
    patch_shape : sequence of int
        Token size per axis in view units.
    scale_range : (low, high)
        Fraction of the sample's area (2+ axes) or length (1 axis) each crop covers, uniform in
        ``[low, high]`` with ``0 < low <= high <= 1``.
    resolution : sequence of int or None
        Resolution every crop is resampled to. ``None`` keeps the native resolution: the crop
        length is drawn once per call (shared by the call's samples and views, so that their
        tokens stack), rounded down to whole patches, and the crop is not resampled (a
        biosignal's frequencies stay put).
    aspect_range : (low, high)
        Width / height ratio, log-uniform, for 2+ axes (the last axis is the width); ignored for
        one axis and for native-resolution crops.
    flippable : sequence of bool, optional
        Per axis, whether the view may be flipped; flipped with probability 0.5 on those axes.
    device : optional
        Where the returned tensors live (randomness is drawn on the generator's device).

    Returns
    -------
    Views

    Notes
    -----
    With 2+ axes a crop of area fraction ``s`` and aspect ``a`` has size ``extent · s^(1/D)`` per
    axis with the last axis stretched by ``sqrt(a)`` and the one before shrunk by it; a size larger
    than the sample is clipped to the sample (torchvision's ``RandomResizedCrop`` redraws instead,
    which a batched sampler cannot do without a loop). Corners are uniform so that every crop lies
    inside the sample.
    """
    n_axes = len(extent)
    patch_shape = tuple(int(p) for p in patch_shape)
    low, high = check_scale_range(scale_range, "scale_range")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    ext = torch.tensor([float(e) for e in extent], device=gen_device)
    shape = (batch_size, n_views)
    if resolution is None:
        # One crop length for the whole call, in whole patches, so that every view has the same grid.
        fraction = low + (high - low) * torch.rand((), generator=generator, device=gen_device)
        lengths = []
        for d in range(n_axes):
            side = float(extent[d]) * float(fraction) ** (1.0 / n_axes)
            lengths.append(max(patch_shape[d], int(side // patch_shape[d]) * patch_shape[d]))
        resolution = tuple(min(length, int(e) // p * p) for length, e, p in zip(lengths, extent, patch_shape))
        check_resolution(resolution, patch_shape, "crop length")
        size = torch.tensor([float(r) for r in resolution], device=gen_device).expand(*shape, n_axes).clone()
    else:
        resolution = tuple(int(r) for r in resolution)
        if len(resolution) != n_axes:
            raise ConfigError(f"A view resolution needs one value per axis ({n_axes}), got {list(resolution)}.")
        check_resolution(resolution, patch_shape)
        fraction = low + (high - low) * torch.rand(shape, generator=generator, device=gen_device)
        size = ext * fraction.unsqueeze(-1) ** (1.0 / n_axes)
        if n_axes >= 2:
            lo_a, hi_a = (float(v) for v in aspect_range)
            if not 0 < lo_a <= hi_a:
                raise ConfigError(
                    f"Invalid value for 'aspect_range': expected [low, high] with 0 < low <= high, "
                    f"got {[lo_a, hi_a]}."
                )
            log_a = math.log(lo_a) + (math.log(hi_a) - math.log(lo_a)) * torch.rand(
                shape, generator=generator, device=gen_device
            )
            stretch = torch.exp(log_a / 2)
            size = size.clone()
            size[..., -1] = size[..., -1] * stretch
            size[..., -2] = size[..., -2] / stretch
        size = torch.minimum(size, ext)
    start = torch.rand((*shape, n_axes), generator=generator, device=gen_device) * (ext - size)
    flips = torch.zeros((*shape, n_axes), dtype=torch.bool, device=gen_device)
    if flippable is not None and any(flippable):
        allowed = torch.tensor([bool(f) for f in flippable], device=gen_device)
        flips = (torch.rand((*shape, n_axes), generator=generator, device=gen_device) < 0.5) & allowed
    crop = Boxes(start + size / 2, size)
    if device is not None:
        crop, flips = crop.to(device), to_device(flips, device)
    return Views(crop, flips, tuple(resolution), patch_shape, tuple(int(e) for e in extent))


def extract_view_tokens(x: torch.Tensor, views: Sequence[Views], mode: str = "bilinear") -> list[torch.Tensor]:
    """The patches of every token of every view, from one resampling of ``x``.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, *extent)`` samples.
    views : sequence of Views
        View groups of the batch (e.g. global and local views); all share the patch shape.

    Returns
    -------
    list of torch.Tensor
        Per group, ``(B, V, N, C, *patch_shape)`` patches, mirrored along the flipped axes.
    """
    if not views:
        return []
    patch_shape = views[0].patch_shape
    if any(v.patch_shape != patch_shape for v in views):
        raise ValueError("extract_view_tokens needs views of one patch shape.")
    batch = x.shape[0]
    boxes = [v.token_boxes() for v in views]
    counts = [v.n_views * v.n_tokens for v in views]
    center = torch.cat([b.center.reshape(batch, -1, b.n_axes) for b in boxes], dim=1)
    size = torch.cat([b.size.reshape(batch, -1, b.n_axes) for b in boxes], dim=1)
    tokens = Boxes(center, size)
    if center.device.type == "cpu" and mode == "bilinear":  # views drawn on the host (the step's generator):
        # extraction's road is read here, so it reads nothing back from an accelerator
        tokens = Boxes(center, size, layout_of(tokens, x.shape[2:], patch_shape, x.dtype))
    patches = extract_patches(x, tokens.to(x.device), patch_shape, mode=mode)
    out = []
    for v, chunk in zip(views, patches.split(counts, dim=1)):
        chunk = chunk.reshape(batch, v.n_views, v.n_tokens, *chunk.shape[2:])
        n_axes = v.n_axes
        for d in range(n_axes):
            flipped = v.flip[..., d]
            if bool(flipped.any()):  # the flags are drawn on the host (the step's generator): no wait
                mask = to_device(flipped, chunk.device).reshape(batch, v.n_views, *([1] * (chunk.dim() - 2)))
                chunk = torch.where(mask, chunk.flip(chunk.dim() - n_axes + d), chunk)
        out.append(chunk)
    return out


# -- patch matching (PW-Self §3.4) -------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenMatch:
    """Matched tokens of two views, padded to a fixed length per batch.

    Attributes
    ----------
    index_a, index_b : torch.Tensor
        ``(B, M)`` long: token indices (in each view's row-major order, CLS not counted) of the
        matched pairs; padding entries are 0.
    mask : torch.Tensor
        ``(B, M)`` bool: which entries are real matches.
    """

    index_a: torch.Tensor
    index_b: torch.Tensor
    mask: torch.Tensor

    @property
    def count(self) -> torch.Tensor:
        """``(B,)`` number of matched token pairs per sample (CLS not counted)."""
        return self.mask.sum(-1)

    def pairs(self, sample: int) -> list[tuple[int, int]]:
        """The matched ``(a, b)`` token pairs of one sample, in order (for inspection and tests)."""
        keep = self.mask[sample]
        return list(zip(self.index_a[sample][keep].tolist(), self.index_b[sample][keep].tolist()))


def _axis_cells(views: Views, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the start of spatial cell 0 and the cell size along axis ``d`` (``(B,)`` each).

    Spatial cells are the view's tokens along ``d`` sorted by position in the sample; along a
    flipped axis spatial cell ``j`` is view token ``g - 1 - j``.
    """
    g = views.grid_shape[d]
    cell = views.cell_size()[:, 0, d]
    start = views.crop.start[:, 0, d]
    end = views.crop.end[:, 0, d]
    flipped = views.flip[:, 0, d]
    origin = torch.where(flipped, end - g * cell, start)
    return origin, cell


def _axis_match(a: Views, b: Views, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Matched grid indices of two views along axis ``d`` (view order, ``(B, K)``) and their mask."""
    g_a, g_b = a.grid_shape[d], b.grid_shape[d]
    # Eq. 1: the intersection of the two crops.
    low = torch.maximum(a.crop.start[:, 0, d], b.crop.start[:, 0, d])
    high = torch.minimum(a.crop.end[:, 0, d], b.crop.end[:, 0, d])

    def inside(view: Views, g: int) -> tuple[torch.Tensor, torch.Tensor]:
        origin, cell = _axis_cells(view, d)
        j = torch.arange(g, device=origin.device, dtype=origin.dtype)
        cell_start = origin[:, None] + j * cell[:, None]
        overlap = torch.minimum(cell_start + cell[:, None], high[:, None]) - torch.maximum(cell_start, low[:, None])
        member = overlap > cell[:, None] / 2  # more than half of the token lies inside
        count = member.sum(-1)
        first = torch.where(count > 0, member.to(torch.int8).argmax(-1), torch.zeros_like(count))
        return first, count

    first_a, n_a = inside(a, g_a)
    first_b, n_b = inside(b, g_b)
    k = torch.arange(min(g_a, g_b), device=n_a.device)[None, :]
    n_small = torch.minimum(n_a, n_b)[:, None]
    n_large = torch.maximum(n_a, n_b)[:, None]
    # Eqs. 2–5: the view with more cells in the intersection is read at floor(i · interval) with
    # interval = (n_large − 1) / (n_small − 1), so that first and last cells match. Integer
    # arithmetic keeps the floor exact; a single cell (n_small = 1) matches the first one (i = 0).
    stepped = (k * (n_large - 1)) // (n_small - 1).clamp(min=1)
    a_is_large = (n_a >= n_b)[:, None]
    spatial_a = first_a[:, None] + torch.where(a_is_large, stepped, k)
    spatial_b = first_b[:, None] + torch.where(a_is_large, k, stepped)
    valid = k < n_small
    # Eq. 6: a flip reverses the token order along the axis.
    index_a = torch.where(a.flip[:, 0, d, None], g_a - 1 - spatial_a, spatial_a)
    index_b = torch.where(b.flip[:, 0, d, None], g_b - 1 - spatial_b, spatial_b)
    zero = torch.zeros_like(index_a)
    return torch.where(valid, index_a, zero), torch.where(valid, index_b, zero), valid


def match_tokens(a: Views, b: Views) -> TokenMatch:
    """PW-Self's patch matching between one view ``a`` and one view ``b`` of every sample.

    Along each axis, the tokens of a view that lie in the intersection of the two crops (Eq. 1)
    are those with more than half of their extent inside it; the view with more of them along
    that axis is subsampled at ``floor(i · (n_large − 1) / (n_small − 1))``, ``i = 0 … n_small − 1``
    (Eqs. 2–5), so that the first and the last match; flips reverse the order (Eq. 6). The matches
    of a 2-D view are the product of its row and column matches. When the crops do not overlap by
    half a token on some axis, no token matches (only CLS does, which the caller adds).

    Parameters
    ----------
    a, b : Views
        Single views (``V = 1``) of the same batch, e.g. ``teacher_views.select(0)``.

    Returns
    -------
    TokenMatch
        ``(B, M)`` with ``M = prod_d min(grid_a[d], grid_b[d])``; vectorised over the batch.

    Notes
    -----
    The paper writes the interval of Eqs. 2–3 as a count divided by a count minus one; its
    Figure 2 (4 → 3 rows selects rows 1, 2, 4; 6 → 4 columns selects 1, 2, 4, 6) and its rule that
    first and last rows match fix it as ``(n_large − 1) / (n_small − 1)``. Matching runs in sample
    coordinates before the flip is applied, so a flipped view matches the same regions as an
    unflipped one.
    """
    if a.n_views != 1 or b.n_views != 1:
        raise ValueError("match_tokens takes single views; use Views.select(i).")
    if a.n_axes != b.n_axes:
        raise ValueError("match_tokens needs views with the same number of axes.")
    per_axis = [_axis_match(a, b, d) for d in range(a.n_axes)]
    batch = a.batch_size
    index_a = torch.zeros((batch, 1), dtype=torch.long, device=a.crop.center.device)
    index_b = torch.zeros_like(index_a)
    mask = torch.ones((batch, 1), dtype=torch.bool, device=index_a.device)
    for d, (ia, ib, valid) in enumerate(per_axis):
        # Row-major flattening: the index so far times this axis' grid size, plus this axis' index.
        index_a = (index_a[:, :, None] * a.grid_shape[d] + ia[:, None, :]).flatten(1)
        index_b = (index_b[:, :, None] * b.grid_shape[d] + ib[:, None, :]).flatten(1)
        mask = (mask[:, :, None] & valid[:, None, :]).flatten(1)
    return TokenMatch(torch.where(mask, index_a, 0), torch.where(mask, index_b, 0), mask)


def match_tokens_loop(a: Views, b: Views) -> list[list[tuple[int, int]]]:
    """Reference implementation of :func:`match_tokens`: plain Python, one sample at a time.

    Written straight from the paper's description (for tests and the benchmark): per sample, per
    axis, list the cells inside the intersection, subsample the longer list, flip, and take the
    product of the axes.
    """
    results = []
    for s in range(a.batch_size):
        per_axis = []
        for d in range(a.n_axes):
            low = max(float(a.crop.start[s, 0, d]), float(b.crop.start[s, 0, d]))
            high = min(float(a.crop.end[s, 0, d]), float(b.crop.end[s, 0, d]))
            lists = []
            for view in (a, b):
                g = view.grid_shape[d]
                cell = float(view.cell_size()[s, 0, d])
                start, end = float(view.crop.start[s, 0, d]), float(view.crop.end[s, 0, d])
                flipped = bool(view.flip[s, 0, d])
                members = []
                for i in range(g):  # i is the view's own token index along d
                    lo = end - (i + 1) * cell if flipped else start + i * cell
                    if min(lo + cell, high) - max(lo, low) > cell / 2:
                        members.append(i)
                members.sort(key=lambda i: -i if flipped else i)  # spatial order in the sample
                lists.append(members)
            la, lb = lists
            if not la or not lb:
                per_axis.append([])
                continue
            small, large = (la, lb) if len(la) < len(lb) else (lb, la)
            picked = [large[(i * (len(large) - 1)) // max(len(small) - 1, 1)] for i in range(len(small))]
            pairs = list(zip(picked, small)) if large is la else list(zip(small, picked))
            per_axis.append(pairs)
        matches = [((), ())]
        for d, pairs in enumerate(per_axis):
            matches = [(ia + (pa,), ib + (pb,)) for ia, ib in matches for pa, pb in pairs]
        flat = []
        for ia, ib in matches:
            fa = fb = 0
            for d in range(a.n_axes):
                fa = fa * a.grid_shape[d] + ia[d]
                fb = fb * b.grid_shape[d] + ib[d]
            flat.append((fa, fb))
        results.append(flat)
    return results

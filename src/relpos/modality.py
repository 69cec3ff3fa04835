"""What a modality is: how to open data into windows, and its patch geometry.

A modality plugin subclasses :class:`Modality`, gives it a ``name``, an ``axes`` tuple and a
``Config`` dataclass, and implements :meth:`Modality.load`. Everything else (sampling, extraction,
encoders, training) is axis-generic and lives in the core.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .contracts import check_config, check_names_tuple, check_signature, class_description, declare_contract
from .sampling import grid_count


@dataclass
class Windows(torch.utils.data.Dataset):
    """Data opened by a modality: fixed-size windows, with optional labels and groups.

    Attributes
    ----------
    x : torch.Tensor
        ``(N, C, *extent)`` float32 windows, already normalised.
    labels : torch.Tensor or None
        ``(N,)`` int64 class indices, or None when the data carries no labels.
    groups : numpy.ndarray
        ``(N,)`` strings: the recording each window comes from (for honest splits).
    subjects : numpy.ndarray
        ``(N,)`` strings: the subject each window comes from (default: a copy of ``groups``).
    class_names : list of str
        Names of the label indices.
    info : dict
        Free-form facts about the data (sampling rate, channel names, sources); ``info["time_unit"]``
        names the unit of :attr:`onsets` and :attr:`durations` (``"s"``, or ``"window"`` for images).
    onsets : numpy.ndarray or None
        ``(N,)`` float64: where each window starts in its recording's own time (seconds for eeg and
        timeseries, from the recording's first kept sample), so two windows of one recording differ
        by their true time apart, also when windows between them were dropped. None when the data
        has no recording time (a trial archive: each window is its own trial).
    durations : numpy.ndarray or None
        ``(N,)`` float64: each window's length, in the unit of :attr:`onsets`; None with it.
    positions : torch.Tensor or None
        ``(N, C, S)`` float32: each channel's position on ``S`` spatial axes (EEG: electrode x, y, z),
        NaN for a channel the window's recording does not have (its samples in :attr:`x` are zeros),
        so windows of different channel sets stack; None (the default) when channels have no
        positions. With positions, tokens are one channel each (:mod:`relpos.space`).
    """

    x: torch.Tensor
    labels: torch.Tensor | None = None
    groups: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    subjects: np.ndarray | None = None
    onsets: np.ndarray | None = None
    durations: np.ndarray | None = None
    positions: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.positions is not None:
            self.positions = torch.as_tensor(self.positions, dtype=torch.float32)
            if self.positions.dim() != 3 or tuple(self.positions.shape[:2]) != tuple(self.x.shape[:2]):
                raise ValueError(
                    f"Windows' positions must be (N, C, S) for windows of shape {tuple(self.x.shape)}, got "
                    f"{tuple(self.positions.shape)}."
                )
        if self.groups is None:
            self.groups = np.array(["0"] * len(self.x))
        if self.subjects is None:
            self.subjects = np.array(self.groups, copy=True)
        if self.onsets is not None:
            self.onsets = np.asarray(self.onsets, dtype=np.float64).reshape(-1)
            if self.durations is None:
                raise ValueError("Windows with onsets need durations too (one length per window), got durations=None.")
            self.durations = np.asarray(self.durations, dtype=np.float64).reshape(-1)
            if len(self.onsets) != len(self.x) or len(self.durations) != len(self.x):
                raise ValueError(
                    f"Windows need one onset and one duration per window ({len(self.x)}), got "
                    f"{len(self.onsets)} onsets and {len(self.durations)} durations."
                )
        elif self.durations is not None:
            raise ValueError("Windows with durations need onsets too (where each window starts), got onsets=None.")

    @property
    def has_recording_time(self) -> bool:
        """Whether each window knows where it starts in its recording (:attr:`onsets` is set)."""
        return self.onsets is not None

    def subset(self, index: Any) -> "Windows":
        """The windows at ``index`` (integer positions or a boolean mask), every per-window field
        sliced alike (onsets stay the windows' true times); ``info`` and ``class_names`` shared."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        index = index.astype(np.int64, copy=False)
        index_t = torch.as_tensor(index, dtype=torch.long)
        return Windows(
            x=self.x.subset(index_t) if hasattr(self.x, "subset") else self.x[index_t],  # relpos.space.PaddedChannels
            labels=self.labels[index_t] if self.labels is not None else None,
            groups=np.asarray(self.groups)[index],
            class_names=list(self.class_names),
            info=self.info,
            subjects=np.asarray(self.subjects)[index],
            onsets=self.onsets[index] if self.onsets is not None else None,
            durations=self.durations[index] if self.durations is not None else None,
            positions=self.positions[index_t] if self.positions is not None else None,
        )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"x": self.x[index]}
        if self.positions is not None:
            item["positions"] = self.positions[index]
        if self.labels is not None:
            item["y"] = self.labels[index]
        return item

    @property
    def channels(self) -> int:
        return int(self.x.shape[1])

    @property
    def extent(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x.shape[2:])


class Axis(str):
    """A positional axis: its name, the unit positions along it are shown in, and the scale.

    An ``Axis`` *is* its name (a ``str``), so code that compares, joins or looks up axis names keeps
    working, and a modality may keep declaring plain strings (``axes = ("time",)``): those are in
    native samples. Declare the unit where one native sample has a known size::

        axes = (Axis("time", unit="ms", scale=0.5),)      # sampled at 2 kHz: 0.5 ms per sample
        axes = (Axis("row", unit="pixels"), Axis("col", unit="pixels"))

    Parameters
    ----------
    name : str
        The axis name (``"time"``, ``"row"``, ``"depth"``).
    unit : str
        What positions along it are measured in when shown (``"s"``, ``"ms"``, ``"pixels"``,
        ``"mm"``); default ``"samples"``.
    scale : float
        How many ``unit`` one native sample spans (``1 / sfreq`` for seconds); a position of ``p``
        native samples is shown as ``p · scale``. Default 1.
    """

    unit: str
    scale: float

    def __new__(cls, name: str, unit: str = "samples", scale: float = 1.0) -> "Axis":
        axis = super().__new__(cls, name)
        axis.unit = str(unit)
        axis.scale = float(scale)
        if not axis.unit.strip() or not math.isfinite(axis.scale) or axis.scale <= 0:
            raise ValueError(
                f"Axis {str(name)!r} needs a unit (e.g. 's', 'pixels') and a positive, finite scale (units per "
                f"native sample), got unit={unit!r} and scale={scale!r}."
            )
        return axis

    @property
    def name(self) -> str:
        return str.__str__(self)

    def label(self, what: str | None = None) -> str:
        """A figure's axis label: ``"time (s)"``, or ``what`` with the unit (``"patch centre (s)"``)."""
        return f"{what or self.name} ({self.unit})"

    def shown(self, positions: Any) -> Any:
        """``positions`` in native samples (a number, an array or a tensor) in :attr:`unit`."""
        return positions * self.scale


def as_axis(axis: str | Axis) -> Axis:
    """An :class:`Axis` for an entry of ``Modality.axes``: a plain name is in native samples."""
    return axis if isinstance(axis, Axis) else Axis(str(axis))


def npz_keys(data: Any) -> list[str]:
    """The array names in ``data`` when it is a path to a readable ``.npz`` archive, else ``[]``.

    Cheap (the arrays are not read): modalities use it in :meth:`Modality.eval_splits` to see
    whether an archive holds a test split.
    """
    if not isinstance(data, (str, Path)) or not str(data).lower().endswith(".npz") or not Path(data).is_file():
        return []
    try:
        with np.load(data, allow_pickle=False) as archive:
            return list(archive.files)
    except Exception:  # noqa: BLE001 - an unreadable file is reported when it is loaded
        return []


def natural_key(text: str) -> tuple:
    """Sort key that orders the numbers inside names by value: ``vol2`` before ``vol10``."""
    return tuple(
        (0, int(part), part) if part.isdigit() else (1, 0, part.lower())
        for part in re.split(r"(\d+)", str(text))
        if part
    )


def recording_time(windows: Windows) -> dict[str, Any]:
    """Where ``windows`` sit in their recordings, in brief (``relpos data inspect``).

    ``{"known": False, "unit": ...}`` when they have no onsets (a trial archive when the modality
    gives a ``Windows.info["time_unit"]``, else a modality that gives no onsets), else ``known``,
    ``recordings`` (how many), ``first_onset``/``last_onset`` and ``durations`` (the distinct window
    lengths, at most 4) in ``unit`` (``Windows.info["time_unit"]``, default ``"s"``); no window:
    only ``known``.
    """
    if len(windows) == 0:
        return {"known": True}  # nothing was kept: whether it has recording time is not the question
    if not windows.has_recording_time:
        return {"known": False, "unit": (windows.info or {}).get("time_unit")}
    durations = np.unique(windows.durations)
    return {
        "known": True,
        "recordings": int(len(np.unique(np.asarray(windows.groups, dtype=str)))),
        "first_onset": float(windows.onsets.min()),
        "last_onset": float(windows.onsets.max()),
        "durations": [float(d) for d in (durations if len(durations) <= 4 else durations[[0, -1]])],
        "unit": str((windows.info or {}).get("time_unit") or "s"),
    }


def _skipped_entry(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        # A modality may say more about a skipped file (e.g. its channels' status): keep it.
        return {**item, "path": str(item.get("path", "")), "reason": str(item.get("reason", ""))}
    return {"path": str(item), "reason": ""}


class Modality:
    """Base class of modality plugins.

    Subclasses set the class attributes and implement :meth:`load`.

    Attributes
    ----------
    name : str
        Registry name used on the command line (``--modality NAME``).
    axes : tuple of str or Axis
        Names of the positional axes in tensor order, e.g. ``("time",)`` or ``("row", "col")``;
        an :class:`Axis` also gives the unit figures show its positions in and the scale from
        native samples (:meth:`axis_units`).
    Config : type
        A dataclass with the modality's options; it must have a ``patch_size`` field (native units
        per axis, a number or one value per axis).
    description : str
        One line for ``relpos plugins``.
    """

    name: ClassVar[str] = ""
    axes: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type] = object
    description: ClassVar[str] = ""

    def __init__(self, config: Any | None = None):
        self.config = config if config is not None else self.Config()

    @property
    def n_axes(self) -> int:
        return len(self.axes)

    def axis_units(self) -> tuple[Axis, ...]:
        """The axes with the unit and scale positions are shown in, for these options and data.

        The base returns :attr:`axes` as declared (a plain name: native samples). A modality whose
        scale depends on its options or on the data (EEG: ``1 / sfreq`` seconds per sample) overrides
        it; it must not fail before data is loaded (fall back to samples then).
        """
        return tuple(as_axis(a) for a in self.axes)

    def gives_positions(self) -> bool:
        """Whether these options open windows whose channels carry positions (:attr:`Windows.positions`,
        :mod:`relpos.space`), known before any data is read, so that a pretext that cannot read them is
        refused first. The base says no; a modality with such an option (EEG's ``modality.space``)
        overrides it. A modality that leaves it unsaid is still checked once its windows are open."""
        return False

    # -- data ---------------------------------------------------------------------------------
    def default_data(self) -> str | None:
        """Data used when the user passes no ``--data`` (e.g. a sample shipped in the package)."""
        return None

    def load(self, data: Any) -> Windows:
        """Open ``data`` (a path, or an in-memory object the modality accepts) into windows.

        Raises :class:`relpos.errors.DataError` with a one-sentence message for unusable input.
        """
        raise NotImplementedError(f"Modality {self.name!r} does not implement load().")

    def inspect(self, data: Any) -> dict[str, Any]:
        """What relpos sees in ``data``: the report behind ``relpos data inspect``.

        The base implementation loads the data and summarises the windows. It also copies, when
        :meth:`load` put them in ``Windows.info`` (where the window cache keeps them too):
        ``info["files"]`` (one dict per file read: ``path``, ``channels`` (names), ``sfreq`` (Hz, as
        read), ``duration_s``, ``annotations`` ({description: count}), ``n_windows``),
        ``info["skipped"]`` (dicts ``{"path", "reason"}``) and ``info["dropped"]`` ({reason: number
        of windows}). Modalities may override it to report more; one that can describe data it cannot
        use (rather than raise) puts the sentence :meth:`load` would raise in ``problem``, and
        ``relpos data inspect`` prints the report, then that sentence, and exits with status 2.

        Returns
        -------
        dict
            ``modality``, ``source``, ``n_windows``, ``channels``, ``extent``, ``sfreq`` (after
            preprocessing, or None), ``ch_names``, ``label_counts`` ({class name: windows}),
            ``recordings`` ({group: windows}), ``n_subjects``, ``files``, ``skipped``, ``dropped``,
            ``cache`` (``{"hit", "path"}`` or None), ``recording_time`` (:func:`recording_time`).
        """
        if data is None:
            data = self.default_data()
            if data is None:
                from .errors import DataError

                raise DataError(f"Modality {self.name!r} ships no default data; pass a PATH to inspect.")
        windows = self.load(data)
        info = windows.info or {}
        label_counts: dict[str, int] = {}
        if windows.labels is not None:
            labels = windows.labels.numpy().astype(np.int64)
            counts = np.bincount(labels[labels >= 0], minlength=len(windows.class_names))
            for index, count in enumerate(counts.tolist()):
                name = windows.class_names[index] if index < len(windows.class_names) else str(index)
                label_counts[name] = int(count)
            if (labels < 0).any():
                label_counts["(unlabelled)"] = int((labels < 0).sum())
        groups, group_counts = np.unique(np.asarray(windows.groups, dtype=str), return_counts=True)
        files = info.get("files")
        skipped = info.get("skipped")
        dropped = info.get("dropped")
        return {
            "modality": self.name,
            "source": info.get("source", str(data) if isinstance(data, (str, Path)) else type(data).__name__),
            "n_windows": len(windows),
            "channels": windows.channels if windows.x.ndim >= 2 else 0,
            "extent": list(windows.extent),
            "sfreq": info.get("sfreq"),
            "ch_names": list(info.get("ch_names") or []),
            "label_counts": label_counts,
            "recordings": {
                str(g): int(c) for g, c in sorted(zip(groups, group_counts), key=lambda gc: natural_key(gc[0]))
            },
            "n_subjects": int(len(np.unique(np.asarray(windows.subjects, dtype=str)))),
            "files": [dict(f) for f in files if isinstance(f, dict)] if isinstance(files, list) else [],
            "skipped": [_skipped_entry(s) for s in skipped] if isinstance(skipped, list) else [],
            "dropped": {str(k): int(v) for k, v in dropped.items()} if isinstance(dropped, dict) else {},
            "cache": info.get("cache"),
            "recording_time": recording_time(windows),
        }

    def eval_splits(self, data: Any) -> tuple[Windows, Windows] | None:
        """The data set's own training and test windows, when ``data`` has a test split.

        :func:`relpos.evaluate` holds out this test split when there is one (e.g. an archive
        with ``X_train``/``X_test``), and splits by subject or recording otherwise. The base
        implementation returns None (no split of its own).
        """
        return None

    def load_with(self, data: Any, **changes: Any) -> Windows:
        """Load ``data`` with a copy of this modality whose config has ``changes`` applied.

        E.g. ``self.load_with(path, split="test")`` in :meth:`eval_splits`.
        """
        import copy
        from dataclasses import replace

        other = copy.copy(self)
        other.config = replace(self.config, **changes)
        return other.load(data)

    def restore(self, data_info: dict[str, Any]) -> None:
        """Take back what :meth:`load` learned from the training data (e.g. its sampling rate).

        A run's checkpoint stores ``Windows.info`` as ``data_info``; :func:`relpos.load_encoder`
        calls this so the modality knows its patch geometry before any new data is opened.
        """

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Sample-level augmentation applied to a training batch ``(B, C, *extent)``."""
        return x

    # -- views (multi-view pretexts; see relpos.views) ---------------------------------------------
    #: Axes a view may be mirrored along (images: ``("col",)``); none by default.
    flip_axes: ClassVar[tuple[str, ...]] = ()
    #: Whether views are resampled to a fixed resolution (images) or cut at native resolution
    #: (time series: stretching time would shift a signal's frequencies).
    resample_views: ClassVar[bool] = False

    def photometric(
        self, patches: torch.Tensor, generator: torch.Generator, view: str = "global-1", per_patch: bool = False
    ) -> torch.Tensor:
        """Photometric augmentation of views' patches, batched with per-sample parameters.

        Parameters
        ----------
        patches : torch.Tensor
            ``(R, N, C, *patch_shape)``: the N token patches of R views (one view of one sample per
            row), on the batch's device.
        generator : torch.Generator
            The run's random stream (parameters are drawn from it, so resume stays exact).
        view : {"global-1", "global-2", "local"}
            Which recipe to apply (DINO gives its two global views different blur and
            solarisation probabilities).
        per_patch : bool
            Draw parameters per patch instead of per view (PW-Self's patch-level augmentation).

        Returns
        -------
        torch.Tensor
            Same shape. The base implementation changes nothing.
        """
        return patches

    # -- patch geometry ----------------------------------------------------------------------
    def patch_size(self) -> tuple[float, ...]:
        """Patch size per axis at scale 1, in native units; also the patch resolution."""
        size = self.config.patch_size
        if isinstance(size, (int, float)):
            return (float(size),) * self.n_axes
        return tuple(float(s) for s in size)

    def patch_shape(self) -> tuple[int, ...]:
        """Resolution (per axis) every patch is resampled to."""
        return tuple(int(round(s)) for s in self.patch_size())

    def default_num_patches(self, extent: Sequence[int]) -> int:
        """Patches per sample when a pretext leaves it to the modality: the grid count."""
        return grid_count(extent, self.patch_size())

    @classmethod
    def describe(cls) -> str:
        """The line ``relpos plugins`` shows: :attr:`description`, else the docstring's first line."""
        return class_description(cls)


def check_modality_class(cls: type[Modality]) -> None:
    """Raise ``TypeError`` with one sentence when a registered modality class breaks the contract
    of :class:`Modality` (what the engine later reads from it)."""
    check_names_tuple(cls, "axes", "('time',)")
    axes = tuple(cls.axes)
    if not 1 <= len(axes) <= 3 or len(set(axes)) != len(axes):
        raise TypeError(
            f"{cls.__qualname__}.axes must name 1 to 3 distinct positional axes, got {cls.axes!r}."
        )
    check_config(cls, "modality")
    if cls.load is Modality.load:
        raise TypeError(f"{cls.__qualname__} does not implement load(data).")
    check_signature(cls, "load", ("data",))
    check_signature(cls, "augment", ("x", "generator"))
    check_signature(cls, "photometric", ("patches", "generator", "view", "per_patch"))
    flip_axes = getattr(cls, "flip_axes", ())
    if not isinstance(flip_axes, property):  # a property depends on the options: read per instance
        check_names_tuple(cls, "flip_axes", "('col',)")
        if not set(flip_axes) <= set(axes):
            raise TypeError(
                f"{cls.__qualname__}.flip_axes must name some of its axes ({', '.join(axes)}), got {flip_axes!r}."
            )
    if cls.patch_size is Modality.patch_size:
        fields = {f.name: f for f in dataclasses.fields(cls.Config)}
        if "patch_size" not in fields:
            raise TypeError(
                f"{cls.__qualname__}.Config has no 'patch_size' field and {cls.__qualname__} does not "
                f"override patch_size(); give it one of the two."
            )
        default = fields["patch_size"]
        value = default.default if default.default is not dataclasses.MISSING else default.default_factory()
        values = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        if (
            not isinstance(values, (list, tuple))
            or len(values) not in (1, len(axes))
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values)
        ):
            raise TypeError(
                f"{cls.__qualname__}.Config.patch_size must default to a positive number or one per "
                f"axis ({len(axes)}), got {value!r}."
            )


declare_contract("modality", Modality, check_modality_class)



def open_data(modality: Modality, source: Any) -> Windows:
    """Open training data with the modality, or its bundled sample when ``source`` is None."""
    from .errors import DataError
    from .paths import refuse_special_file

    if source is None:
        source = modality.default_data()
        if source is None:
            raise DataError(
                f"Modality {modality.name!r} ships no default data; pass --data PATH."
            )
    refuse_special_file(source)
    windows = source if isinstance(source, Windows) else modality.load(source)
    if len(windows) == 0:
        raise DataError(f"No windows could be made from {str(source)!r}.")
    patch = modality.patch_size()
    if any(e < p for e, p in zip(windows.extent, patch)):
        raise DataError(
            f"Samples of extent {list(windows.extent)} are smaller than the patch size "
            f"{[round(p, 3) for p in patch]} ({', '.join(modality.axes)})."
        )
    return windows

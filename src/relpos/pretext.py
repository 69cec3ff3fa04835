"""What a pretext task is.

A pretext plugin subclasses :class:`Pretext` (an ``nn.Module``). It owns everything specific to its
method: the encoder it trains (built by relpos and handed over, :func:`construct_pretext`), its heads,
teachers and memories. The training loop only calls :meth:`Pretext.forward` and
:meth:`Pretext.after_step`, so one loop trains every method. What a registered pretext class must
provide is checked by :func:`check_pretext_class`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import numbers
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from .contracts import check_config, check_names_tuple, check_signature, class_description, declare_contract
from .encoders import build_data_encoder
from .encoders.base import ENCODER_OUTPUTS, Encoder
from .encoders.vit import EncoderConfig
from .errors import ConfigError, PluginError
from .modality import Modality, Windows

#: The values of ``encoder.pos_embed`` (see :class:`relpos.EncoderConfig`).
POS_EMBEDS = ("none", "sincos")
#: What :meth:`Pretext.forward` returns, quoted by :func:`check_forward_output` when it returns anything else.
FORWARD_CONTRACT = (
    "forward must return (loss, logs): a scalar tensor and a dict of numbers (0-d tensors or floats) whose keys "
    "are in log_keys"
)


class Pretext(nn.Module):
    """Base class of pretext plugins.

    Attributes
    ----------
    name : str
        Registry name (``--pretext NAME``).
    Config : type
        Dataclass with the method's options.
    modalities : tuple of str or None
        Names of the modalities this pretext supports; None means every modality.
    min_axes : int
        Fewest positional axes the method needs.
    description : str
        One line for ``relpos plugins``.
    log_keys : tuple of str
        Names of the extra values :meth:`forward` returns, logged as metrics.csv columns.
    encoder_pos_embed : tuple of str
        The values of ``encoder.pos_embed`` this pretext trains with. ``("none",)`` (the default)
        for a method whose encoder must not see positions, or whose :meth:`forward` does not pass
        box centres to ``self.encoder``; add ``"sincos"`` only when :meth:`forward` passes them.
        :func:`relpos.resolve_config` rejects any other value before data is read.
    encoder_output : str
        ``"tokens"`` (the default) when :meth:`forward` reads per-token outputs, ``"vector"`` when it
        needs only one vector per input; :func:`relpos.resolve_config` refuses an ``encoder.arch``
        that does not give it, before data is read.
    encoder_defaults : dict
        ``encoder`` options this pretext trains with unless the user sets them, e.g.
        ``{"pos_embed": "sincos"}`` for a method whose views need positions.
    needs_recording_time : bool
        True for a method that relates windows of one recording by their time apart: data
        without onsets (a trial archive) is then refused in one sentence before any run
        directory exists (the loop calls :func:`check_recording_time`).
    window_request : object or None
        Set on the instance in ``__init__`` to have the training loop draw each sample as K
        windows of one recording (a request of :mod:`relpos.neighbours`, e.g.
        ``WithinSpan(k=4, span_s=300)``); ``forward`` then receives ``{"x": (B, K, C, *extent),
        "onsets": (B, K), "window_index": (B, K)}``. None (the default): independent windows.

    Parameters
    ----------
    config : Config instance
    modality : Modality
        The modality the data comes from (patch geometry, augmentations).
    encoder_config : EncoderConfig
        The resolved ``encoder`` options (those of the encoder ``encoder.arch`` names).
    data : Windows
        The training windows (to read channels and extent; the pretext must not keep them).

    The encoder is built by relpos, not by the pretext: :func:`construct_pretext` builds it from
    ``encoder_config`` and ``data`` (:func:`relpos.encoders.build_data_encoder`) and hands it over,
    and this constructor sets it as :attr:`encoder`. A pretext constructed directly builds it the
    same way.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    modalities: ClassVar[tuple[str, ...] | None] = None
    min_axes: ClassVar[int] = 1
    description: ClassVar[str] = ""
    log_keys: ClassVar[tuple[str, ...]] = ()
    encoder_pos_embed: ClassVar[tuple[str, ...]] = ("none",)
    encoder_defaults: ClassVar[dict[str, Any]] = {}
    #: What the pretext reads from its encoder: ``"tokens"`` (per-token outputs of patches cut from
    #: boxes) or ``"vector"`` (one vector per whole input, :meth:`relpos.encoders.Encoder.embed_inputs`).
    encoder_output: ClassVar[str] = "tokens"
    #: Pictures of a trained model this pretext draws in :meth:`draw_figure` (``relpos show``),
    #: besides the loss curves every run has.
    figures: ClassVar[tuple[str, ...]] = ()
    #: Whether the method relates windows of one recording by their time (refuses data without onsets).
    needs_recording_time: ClassVar[bool] = False
    #: What the loop draws per sample: None (independent windows) or a window request set in ``__init__``.
    window_request: Any = None

    def __init__(self, config: Any, modality: Modality, encoder_config: EncoderConfig, data: Windows):
        self.check_encoder(encoder_config)
        super().__init__()
        self.config = config
        self.modality = modality
        self.extent = data.extent
        encoder = _HANDED_ENCODER.get()
        if encoder is None:  # constructed directly rather than by construct_pretext: build it the same way
            encoder = build_data_encoder(encoder_config, modality, data)
        else:
            _HANDED_ENCODER.set(None)  # taken: a pretext built inside this one gets an encoder of its own
        self.encoder = encoder

    @classmethod
    def check_encoder(cls, encoder_config: EncoderConfig) -> None:
        """Raise :class:`relpos.errors.ConfigError` when this pretext cannot train ``encoder_config``.

        The base implementation checks ``encoder.pos_embed`` against :attr:`encoder_pos_embed`;
        a pretext with further needs extends it (and calls ``super().check_encoder``).
        """
        value = encoder_config.pos_embed
        allowed = tuple(cls.encoder_pos_embed)
        if value in allowed:
            return
        if allowed == ("none",):
            raise ConfigError(
                f"Pretext {cls.name!r} trains its encoder without position embeddings, so "
                f"'encoder.pos_embed' must be 'none', got {value!r}."
            )
        raise ConfigError(
            f"Invalid value for 'encoder.pos_embed' with pretext {cls.name!r}: allowed "
            f"{', '.join(map(repr, allowed))}, got {value!r}."
        )

    @classmethod
    def check_config(cls, config: Any, modality: type[Modality], encoder_config: EncoderConfig) -> None:
        """Raise :class:`relpos.errors.ConfigError` when ``config`` cannot work with the other sections.

        :func:`relpos.resolve_config` calls it with this pretext's resolved ``Config``, the
        modality's class (its ``name`` and ``axes``) and the resolved encoder options, before any
        data is read; each value has already been checked against the range its field declares.
        The base accepts everything; a pretext overrides it for rules that involve the modality or
        the encoder (a 2-D-only option, a head whose attention heads must divide ``encoder.dim``).
        """

    @classmethod
    def requests_windows(cls, config: Any) -> bool:
        """Whether a pretext built with options ``config`` sets a :attr:`window_request` (samples of
        several windows of one recording), known before any data is read, so that a composition of
        two such pretexts is refused first. The default says no; ``rp``, ``ts``, ``cpc`` and PART
        across windows say yes."""
        return False

    @classmethod
    def grid_patch_fraction(cls, config: Any) -> float | None:
        """The patch size, as a fraction of every axis, of ``relpos eval --features grid`` for runs of
        this pretext with options ``config``; None (the default) leaves it at ``1 / grid``.

        Spatial Reasoning returns its training patch size: the paper evaluates with patches of the
        size it trained on.
        """
        return None

    @classmethod
    def supports(cls, modality: Modality | type[Modality]) -> bool:
        """Whether this pretext can train on ``modality``."""
        if cls.modalities is not None and modality.name not in cls.modalities:
            return False
        return len(modality.axes) >= cls.min_axes

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """One training step's loss.

        Parameters
        ----------
        batch : dict
            ``{"x": (B, C, *extent), ...}`` on the training device; with a :attr:`window_request`,
            ``{"x": (B, K, C, *extent), "onsets": (B, K), "window_index": (B, K)}``.
        generator : torch.Generator
            The run's random stream for sampling (saved in checkpoints, so resume is exact).

        Returns
        -------
        loss : torch.Tensor
            Scalar (0-d) to minimise, with a gradient.
        logs : dict of str to float
            Extra values for the metrics log, keyed by names in :attr:`log_keys` (a 0-d tensor is
            logged as its float). The loop checks both at a run's first step
            (:func:`check_forward_output`).
        """
        raise NotImplementedError(f"Pretext {self.name!r} does not implement forward().")

    def after_step(self, step: int) -> None:
        """Called after each optimiser step (EMA teachers, memory banks); ``step`` counts from 1."""

    #: Optimiser steps already taken and the run's length, as the loop last reported them.
    progress_step: int = 0
    total_steps: int = 1

    def set_progress(self, step: int, total_steps: int) -> None:
        """Where the run is: called by the loop before each :meth:`forward`.

        ``step`` is the number of optimiser steps already taken (0 before the first) and
        ``total_steps`` the run's length (``train.steps``). A pretext computes its schedules
        (teacher temperature, momentum, frozen layers) as pure functions of these two numbers,
        never from counters of its own, so a resumed run computes the same values as an
        uninterrupted one. The base implementation stores them in :attr:`progress_step` and
        :attr:`total_steps`.
        """
        self.progress_step = int(step)
        self.total_steps = int(total_steps)

    def memory_hint(self, batch_size: int) -> str | None:
        """What to lower when a training step runs out of memory, as a clause for the loop's message.

        E.g. ``"lower train.batch_size (now 64; ...) or pretext.n_local (...)"``, naming this
        pretext's settings that drive memory and their current values. None (the default) gives
        the loop's generic advice (batch size, encoder size).
        """
        return None

    def weight_decay_at(self, step: int, total_steps: int) -> float | None:
        """The weight decay for the step after ``step`` steps, or None to keep ``train.weight_decay``.

        The loop applies it to the decayed parameters (not biases, norms and tokens) before each
        step; DINO's cosine from 0.04 to 0.4 is :func:`relpos.blocks.weight_decay_schedule`.
        """
        return None

    def draw_figure(self, name: str, x: torch.Tensor, generator: torch.Generator) -> tuple[Any, dict[str, float]]:
        """Draw the picture ``name`` (one of :attr:`figures`) of the trained model on samples ``x``.

        Called by :func:`relpos.show.show` in eval mode under ``torch.no_grad()``, with ``x`` the
        ``(S, C, *extent)`` windows to draw from (opened with the run's modality settings, on the
        model's device) and ``generator`` for any patches it samples. Draw on
        :func:`relpos.show.new_figure` (no display needed); the caller writes the PNG.

        Returns
        -------
        figure : matplotlib.figure.Figure
        numbers : dict of str to float
            What the picture measured (e.g. an error), printed by ``relpos show``.
        """
        raise NotImplementedError(f"Pretext {self.name!r} draws no figure {name!r}.")

    @classmethod
    def describe(cls) -> str:
        """The line ``relpos plugins`` shows: :attr:`description`, else the docstring's first line."""
        return class_description(cls)


def check_pretext_class(cls: type[Pretext]) -> None:
    """Raise ``TypeError`` with one sentence when a registered pretext class breaks the contract of
    :class:`Pretext` (what the engine later reads from it)."""
    check_config(cls, "pretext")
    if cls.forward is Pretext.forward:
        raise TypeError(f"{cls.__qualname__} does not implement forward(batch, generator).")
    check_signature(cls, "forward", ("batch", "generator"))
    check_signature(cls, "after_step", ("step",))
    check_signature(cls, "__init__", ("config", "modality", "encoder_config", "data"))
    check_names_tuple(cls, "modalities", "('eeg', 'timeseries')", allow_none=True)
    check_names_tuple(cls, "log_keys", "('accuracy',)")
    if not isinstance(getattr(cls, "needs_recording_time", False), bool):
        raise TypeError(f"{cls.__qualname__}.needs_recording_time must be True or False, got {cls.needs_recording_time!r}.")
    if not isinstance(cls.min_axes, int) or isinstance(cls.min_axes, bool) or cls.min_axes < 1:
        raise TypeError(f"{cls.__qualname__}.min_axes must be an integer of at least 1, got {cls.min_axes!r}.")
    allowed = cls.encoder_pos_embed
    if not isinstance(allowed, (tuple, list)) or not allowed or not set(allowed) <= set(POS_EMBEDS):
        raise TypeError(
            f"{cls.__qualname__}.encoder_pos_embed must be a non-empty tuple of "
            f"{', '.join(map(repr, POS_EMBEDS))}, got {allowed!r}."
        )
    if getattr(cls, "encoder_output", None) not in ENCODER_OUTPUTS:
        raise TypeError(
            f"{cls.__qualname__}.encoder_output must be one of {', '.join(map(repr, ENCODER_OUTPUTS))}, "
            f"got {getattr(cls, 'encoder_output', None)!r}."
        )
    defaults = getattr(cls, "encoder_defaults", {})
    options = [f.name for f in dataclasses.fields(EncoderConfig)]
    if not isinstance(defaults, dict) or not set(defaults) <= set(options):
        raise TypeError(
            f"{cls.__qualname__}.encoder_defaults must be a dict of encoder options "
            f"({', '.join(options)}), got {defaults!r}."
        )
    if defaults.get("pos_embed", allowed[0]) not in allowed:
        # Every run with the default settings would be refused.
        raise TypeError(
            f"{cls.__qualname__}.encoder_defaults sets pos_embed={defaults['pos_embed']!r}, which its "
            f"encoder_pos_embed {tuple(allowed)!r} does not allow."
        )


declare_contract("pretext", Pretext, check_pretext_class)


#: The encoder :func:`construct_pretext` built for the pretext under construction. Every pretext's
#: ``__init__`` keeps the documented signature ``(config, modality, encoder_config, data)`` and
#: passes it on to ``super().__init__``, so the built encoder reaches the base class beside those
#: arguments, and third-party pretexts written against that signature keep working unchanged.
_HANDED_ENCODER: contextvars.ContextVar[Encoder | None] = contextvars.ContextVar("relpos_handed_encoder", default=None)


@contextlib.contextmanager
def _handing(encoder: Encoder) -> Iterator[None]:
    token = _HANDED_ENCODER.set(encoder)
    try:
        yield
    finally:
        _HANDED_ENCODER.reset(token)


def construct_pretext(
    pretext_cls: type[Pretext], config: Any, modality: Modality, encoder_config: EncoderConfig, data: Windows,
    encoder: Encoder | None = None,
) -> Pretext:
    """Build a pretext around its encoder: ``encoder``, or the one relpos builds for ``data``.

    Parameters
    ----------
    pretext_cls : type
        A registered :class:`Pretext` class.
    config, modality, encoder_config, data
        What its constructor takes (see :class:`Pretext`).
    encoder : relpos.encoders.Encoder, optional
        An encoder built already (e.g. one shared by several pretexts). Default: the encoder
        ``encoder_config`` names, for ``data``'s channels and extent and the modality's patch shape
        (:func:`relpos.encoders.build_data_encoder`), after the pretext's
        :meth:`Pretext.check_encoder` accepted the options.

    Returns
    -------
    Pretext
        With ``encoder`` as its :attr:`Pretext.encoder`.
    """
    if encoder is None:
        pretext_cls.check_encoder(encoder_config)  # the pretext's sentence before any of the encoder's
        encoder = build_data_encoder(encoder_config, modality, data)
    with _handing(encoder):
        return pretext_cls(config, modality, encoder_config, data)


def check_recording_time(pretext_cls: type[Pretext], data: Windows) -> None:
    """Raise :class:`relpos.errors.DataError` when ``pretext_cls`` needs recording time
    (:attr:`Pretext.needs_recording_time`) and ``data`` has no onsets, naming the pretext and the data.

    The training loop calls it on the training windows before it builds the pretext; a pretext
    rebuilt from a checkpoint (``relpos show``) is built on the shape of the data alone and is not
    checked."""
    if getattr(pretext_cls, "needs_recording_time", False) and getattr(data, "onsets", None) is None:
        from .neighbours import no_recording_time

        raise no_recording_time(f"Pretext {pretext_cls.name!r} relates windows of one recording, so it", data)


def _received(value: Any) -> str:
    """A value as a sentence names it: ``a tensor of shape (4,)``, ``a 0-d tensor``, ``'text'``."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            return f"a 0-d {str(value.dtype).removeprefix('torch.')} tensor"
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} item{'s' if len(value) != 1 else ''}"
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


def _is_log_value(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and not value.is_complex()
    return isinstance(value, numbers.Real) and not isinstance(value, bool)  # NumPy's scalars too


def check_forward_output(pretext: Pretext, output: Any) -> None:
    """Raise :class:`relpos.errors.PluginError` when ``output``, what ``pretext.forward`` returned,
    breaks :data:`FORWARD_CONTRACT`.

    The training loop calls it on the first step of a run (what a pretext returns is of the same
    kinds at every step): ``output`` must be a pair ``(loss, logs)``, ``loss`` a 0-d floating-point
    tensor with a gradient, ``logs`` a dict whose keys are in ``pretext.log_keys`` and whose values
    are one-element tensors or numbers. Tensors are what a pretext should log: the loop keeps them on
    the device and reads every step's values in one transfer per metrics row, so a GPU never waits for
    the host inside a step; a Python float is accepted too (``.item()`` to make one is such a wait).
    """
    def refuse(what: str) -> PluginError:
        return PluginError(f"Pretext {pretext.name!r} {what}, but {FORWARD_CONTRACT}.")

    if not (isinstance(output, (tuple, list)) and len(output) == 2):
        raise refuse(f"returned {_received(output)} from forward")
    loss, logs = output
    if not (isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.is_floating_point()):
        raise refuse(f"returned {_received(loss)} as the loss from forward")
    if not loss.requires_grad:
        raise refuse(
            "returned a loss without a gradient from forward (computed under torch.no_grad(), or from "
            "detached values), so no parameter would train"
        )
    if not isinstance(logs, dict):
        raise refuse(f"returned {_received(logs)} as the logs from forward")
    declared = tuple(pretext.log_keys)
    undeclared = [key for key in logs if key not in declared]
    if undeclared:
        listed = ", ".join(map(repr, declared)) if declared else "none"
        raise refuse(
            f"logged {', '.join(map(repr, undeclared))}, not in its log_keys ({listed}; add the "
            f"{'key' if len(undeclared) == 1 else 'keys'} there to log {'it' if len(undeclared) == 1 else 'them'})"
        )
    for key, value in logs.items():
        if not _is_log_value(value):
            raise refuse(f"logged {key!r} as {_received(value)}")

"""Composed pretexts: several objectives over one shared encoder (``--pretext part+sove``).

A ``+``-joined name of registered pretexts names a :class:`ComposedPretext` class built on demand
(:func:`composed_pretext_class`, reached through :func:`relpos.get_pretext`). It is itself a
:class:`relpos.Pretext`, so the training loop, checkpoints, ``relpos eval``, ``show`` and ``export``
treat it as any other; its components are the registered classes, unchanged (a third-party pretext
composes with a built-in one). One encoder is built; every component is constructed around it
(:func:`relpos.pretext.construct_pretext`) and keeps its own heads, teachers, memories and views.

What the composition resolves, and what it refuses (before any data is read unless said):

- **Position embeddings.** The encoder adds sin-cos positions when any component trains with them
  by default (``encoder_defaults``) or needs them; a component whose default is ``"none"`` (PART,
  jigsaw) then runs its forward with the encoder's positions dropped
  (:meth:`relpos.encoders.Encoder.without_positions`) and is built and checked as with
  ``encoder.pos_embed: none``. ``encoder.pos_embed: none`` with a component that needs positions is
  refused by that component's own sentence.
- **Encoder outputs.** The composition reads tokens when any component does; an ``encoder.arch``
  that gives only vectors is then refused as for that component alone.
- **Batches.** A component with a ``window_request`` (``rp``, ``ts``, ``cpc``, PART across windows)
  sets the composition's; the others see the first window of each drawn sample. Two components with
  window requests are refused when the pretext is built (the request is set in ``__init__``).
- **Schedules.** ``set_progress`` and ``after_step`` reach every component in order; the weight
  decay is the largest any component asks for at that step (None when none asks).

The configuration section keeps each component's settings under its name and the loss weights
under ``weights``; the list form of YAML (``pretext: [{name: part, weight: 1.0, ...}, ...]``) is
the same thing (:func:`section_from_list`).

Checkpoints hold every tensor once: the shared encoder as ``encoder.*`` (so ``relpos.load_encoder``
and ``relpos eval`` read it as any run's), and the EMA teacher of the first component that has one as
``teacher_encoder.*`` (the composed run's teacher, for ``--init teacher`` and ``export --weights
teacher``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from .coercion import build_dataclass, check_override_path
from .encoders.base import Encoder
from .errors import ConfigError, RelposError
from .modality import Modality, Windows
from .pretext import Pretext, check_forward_output, construct_pretext
from .trivial_baseline import BASELINE_KEY

#: What joins the names of a composed pretext (``part+sove``).
SEPARATOR = "+"
#: The key of the loss weights in a composed pretext's section.
WEIGHTS_KEY = "weights"
#: The key of how each pretext's loss is scaled before it is weighted: ``none`` (as it is) or ``baseline``
#: (divided by its trivial baseline on the same batch, so every pretext starts near 1 whatever its units).
SCALE_KEY = "scale"
SCALES = ("none", "baseline")
#: Where an EMA teacher lives in a component's state (:class:`relpos.student_teacher.StudentTeacher`).
TEACHER_PREFIX = "teacher_encoder."


def is_composed_name(name: str) -> bool:
    """Whether a ``pretext.name`` names a composition (holds :data:`SEPARATOR`)."""
    return isinstance(name, str) and SEPARATOR in name


def split_name(name: str) -> list[str]:
    """The component names of ``"part+sove"``, checked: none blank, none twice."""
    names = [part.strip() for part in str(name).split(SEPARATOR)]
    if any(not part for part in names):
        raise ConfigError(
            f"Invalid pretext name {name!r}: join registered pretext names with '+', e.g. 'part+sove', "
            f"with no empty name between them."
        )
    for index, part in enumerate(names):
        if part in names[:index]:
            raise ConfigError(
                f"Invalid pretext name {name!r}: {part!r} is named twice, and a composed run holds each "
                f"pretext once (give it a larger weight under 'pretext.weights' instead)."
            )
    return names


def section_from_list(entries: Any) -> dict[str, Any]:
    """The mapping form of the YAML list form ``[{name: part, weight: 2, ...}, {name: sove}]``:
    ``{name: part+sove, weights: {part: 2}, part: {...}, sove: {...}}``."""
    if not entries:
        raise ConfigError("Config section 'pretext' is an empty list; list at least one pretext, e.g. [{name: part}].")
    names, weights, section = [], {}, {}
    for position, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise ConfigError(
                f"Entry {position} of the 'pretext' list must be a mapping with a 'name' (a registered "
                f"pretext) and its settings, got {entry!r}."
            )
        settings = dict(entry)
        name = settings.pop("name").strip()
        if name in names:
            raise ConfigError(
                f"Pretext {name!r} is listed twice in 'pretext', and a composed run holds each pretext once "
                f"(give it a larger weight instead)."
            )
        names.append(name)
        if "weight" in settings:
            weights[name] = settings.pop("weight")
        section[name] = settings
    if len(names) == 1:  # one pretext: its own section; a weight alone has nothing to weigh against
        check_weight(names[0], weights.get(names[0], 1.0), f"pretext[0].weight")
        return {"name": names[0], **section[names[0]]}
    return {"name": SEPARATOR.join(names), **({WEIGHTS_KEY: weights} if weights else {}), **section}


def check_weight(name: str, value: Any, key: str) -> float:
    """A loss weight as a float, or one sentence: a finite number above 0."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if isinstance(value, str):
        try:
            value, ok = float(value), True
        except ValueError:
            ok = False
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:
        raise ConfigError(
            f"Invalid value for {key!r}: the loss weight of pretext {name!r} must be a finite number "
            f"above 0, got {value!r}."
        )
    return float(value)


@dataclass
class ComposedConfig:
    """The settings of a composed pretext: each component's ``Config`` and its loss weight."""

    parts: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    scale: str = "none"

    def as_section(self) -> dict[str, Any]:
        """The YAML layout (without ``name``): ``{weights: {...}, scale: none, part: {...}, sove: {...}}``."""
        return {WEIGHTS_KEY: dict(self.weights), SCALE_KEY: self.scale,
                **{name: dataclasses.asdict(config) for name, config in self.parts.items()}}


def _in_component(text: str, name: str) -> str:
    """A component's sentence with its setting names as they are spelt in a composed config."""
    return re.sub(r"(?<![\w.])pretext\.", f"pretext.{name}.", text)


def _reword(exc: ConfigError, name: str) -> ConfigError:
    return type(exc)(_in_component(str(exc), name))


def _preferred_pos_embed(cls: type[Pretext]) -> str:
    """The position embedding ``cls`` trains with by default."""
    allowed = tuple(cls.encoder_pos_embed)
    return dict(cls.encoder_defaults).get("pos_embed") or ("none" if "none" in allowed else allowed[0])


class ComposedPretext(Pretext):
    """Several pretexts over one shared encoder; the loss is the weighted sum of theirs.

    Subclasses are made by :func:`composed_pretext_class`, one per list of components, with
    :attr:`components` set. Logs ``NAME/loss`` and ``NAME/KEY`` for each component's log keys
    (``part/loss_baseline``: the loop watches each component's baseline).
    """

    Config = ComposedConfig
    #: The component classes, in order (set on each subclass).
    components: ClassVar[tuple[type[Pretext], ...]] = ()

    # -- the class: what the components need, together -------------------------------------------
    @classmethod
    def component_names(cls) -> tuple[str, ...]:
        return tuple(c.name for c in cls.components)

    @classmethod
    def build_config(cls, values: Mapping[str, Any]) -> ComposedConfig:
        """The :class:`ComposedConfig` of a ``pretext`` section (``name`` taken out)."""
        names = cls.component_names()
        values = dict(values)
        unknown = [key for key in values if key not in names and key not in (WEIGHTS_KEY, SCALE_KEY)]
        if unknown:
            from .errors import did_you_mean

            valid = ", ".join((WEIGHTS_KEY, SCALE_KEY, *names))
            raise ConfigError(
                f"Unknown config key 'pretext.{unknown[0]}'.{did_you_mean(unknown[0], (WEIGHTS_KEY, SCALE_KEY, *names))} A "
                f"composed pretext keeps each pretext's settings under its name; valid keys in 'pretext': {valid}."
            )
        given_weights = values.get(WEIGHTS_KEY) or {}
        if not isinstance(given_weights, Mapping):
            raise ConfigError(
                f"Invalid value for 'pretext.{WEIGHTS_KEY}': expected a mapping of pretext names to loss weights "
                f"such as {{{names[0]}: 1.0}}, got {given_weights!r}."
            )
        for key in given_weights:
            if key not in names:
                raise ConfigError(
                    f"Unknown pretext {key!r} in 'pretext.{WEIGHTS_KEY}': the composition holds "
                    f"{', '.join(map(repr, names))}."
                )
        weights = {n: check_weight(n, given_weights.get(n, 1.0), f"pretext.{WEIGHTS_KEY}.{n}") for n in names}
        scale = values.get(SCALE_KEY, "none")
        if scale not in SCALES:
            raise ConfigError(
                f"Invalid value for 'pretext.{SCALE_KEY}': allowed {' or '.join(map(repr, SCALES))}, got {scale!r}."
            )
        parts = {}
        for component in cls.components:
            settings = values.get(component.name) or {}
            if not isinstance(settings, Mapping):
                raise ConfigError(
                    f"Config section 'pretext.{component.name}' must be a mapping of {component.name!r}'s "
                    f"settings, got {settings!r}."
                )
            parts[component.name] = build_dataclass(component.Config, dict(settings), f"pretext.{component.name}")
        return ComposedConfig(parts=parts, weights=weights, scale=scale)

    @classmethod
    def check_override(cls, path: Sequence[str]) -> None:
        """``--set pretext.NAME.key.sub=value``: checked against component ``NAME``'s fields."""
        if len(path) > 3:
            for component in cls.components:
                if component.name == path[1]:
                    check_override_path(component.Config, [f"{path[0]}.{path[1]}", *path[2:]])

    @classmethod
    def sees_positions(cls, component: type[Pretext], encoder_config: Any) -> bool:
        """Whether ``component`` reads the encoder's position embeddings in this composition."""
        return encoder_config.pos_embed == "sincos" and _preferred_pos_embed(component) == "sincos"

    @classmethod
    def component_encoder_config(cls, component: type[Pretext], encoder_config: Any) -> Any:
        """The encoder options ``component`` is built and checked with: ``pos_embed`` ``'none'``
        where it runs with the positions dropped."""
        if encoder_config.pos_embed == "sincos" and not cls.sees_positions(component, encoder_config):
            return dataclasses.replace(encoder_config, pos_embed="none")
        return encoder_config

    @classmethod
    def check_encoder(cls, encoder_config: Any) -> None:
        for component in cls.components:
            try:
                component.check_encoder(cls.component_encoder_config(component, encoder_config))
            except ConfigError as exc:
                raise _reword(exc, component.name) from None

    @classmethod
    def check_config(cls, config: ComposedConfig, modality: type[Modality], encoder_config: Any) -> None:
        for component in cls.components:
            try:
                component.check_config(config.parts[component.name], modality,
                                       cls.component_encoder_config(component, encoder_config))
            except ConfigError as exc:
                raise _reword(exc, component.name) from None
        requesting = [c.name for c in cls.components if c.requests_windows(config.parts[c.name])]
        if len(requesting) > 1:  # before any data is read; __init__ checks the built requests again
            raise two_window_requests(requesting)

    @classmethod
    def grid_patch_fraction(cls, config: ComposedConfig) -> float | None:
        for component in cls.components:
            fraction = component.grid_patch_fraction(config.parts[component.name])
            if fraction is not None:
                return fraction
        return None

    # -- the instance --------------------------------------------------------------------------------
    def __init__(self, config: ComposedConfig, modality: Modality, encoder_config: Any, data: Windows):
        super().__init__(config, modality, encoder_config, data)  # builds (or takes) the shared encoder
        self.weights = dict(config.weights)
        self.scale = config.scale
        self.parts = nn.ModuleDict()
        for component in self.components:
            own = self.component_encoder_config(component, encoder_config)
            try:
                part = construct_pretext(component, config.parts[component.name], modality, own, data,
                                         encoder=self.encoder)
            except ConfigError as exc:
                raise _reword(exc, component.name) from None
            self.parts[component.name] = part
        #: The components that run with the encoder's position embeddings dropped.
        self.position_free = tuple(
            c.name for c in self.components if encoder_config.pos_embed == "sincos" and not self.sees_positions(c, encoder_config)
        )
        requests = [(name, part.window_request) for name, part in self.parts.items() if part.window_request is not None]
        if len(requests) > 1:  # a plugin that sets a request without saying so in requests_windows
            raise two_window_requests([name for name, _ in requests])
        self.window_request = requests[0][1] if requests else None
        without = [name for name, part in self.parts.items() if BASELINE_KEY not in tuple(part.log_keys)]
        if self.scale == "baseline" and without:  # log_keys may depend on the settings: known once built
            raise ConfigError(
                f"'pretext.{SCALE_KEY}: baseline' divides each pretext's loss by its trivial baseline, and "
                f"{', '.join(map(repr, without))} reports none (no {BASELINE_KEY!r} in its log_keys); use "
                f"'pretext.{SCALE_KEY}: none' with 'pretext.{WEIGHTS_KEY}'."
            )
        self.log_keys = tuple(
            key for name, part in self.parts.items() for key in (f"{name}/loss", *(f"{name}/{k}" for k in part.log_keys))
        )
        self.teacher_owner = next((n for n, p in self.parts.items() if hasattr(p, "teacher_encoder")), None)
        self._outputs_checked = False

    @contextlib.contextmanager
    def _positions_for(self, name: str) -> Iterator[None]:
        """Run component ``name`` without position embeddings where it trains without them."""
        if name not in self.position_free:
            yield
            return
        encoders = {id(m): m for m in self.parts[name].modules() if isinstance(m, Encoder)}
        encoders[id(self.encoder)] = self.encoder
        with contextlib.ExitStack() as stack:
            for encoder in encoders.values():
                stack.enter_context(encoder.without_positions())
            yield

    def _batch_for(self, name: str, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.window_request is None or self.parts[name].window_request is not None:
            return batch
        return {"x": batch["x"][:, 0]}  # the first window of each drawn sample

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        total, logs = None, {}
        for name, part in self.parts.items():  # in a fixed order, so the random draws are too
            with self._positions_for(name):
                output = part(self._batch_for(name, batch), generator)
            if not self._outputs_checked:
                check_forward_output(part, output)
            loss, part_logs = output
            logs[f"{name}/loss"] = loss.detach()
            logs.update({f"{name}/{key}": value for key, value in part_logs.items()})
            if self.scale == "baseline":  # scale-free: each loss over its trivial baseline on this batch
                baseline = torch.as_tensor(part_logs[BASELINE_KEY], dtype=loss.dtype, device=loss.device)
                loss = loss / baseline.detach().clamp_min(torch.finfo(loss.dtype).tiny)
            weighted = loss * self.weights[name]
            total = weighted if total is None else total + weighted
        self._outputs_checked = True
        return total, logs

    def set_progress(self, step: int, total_steps: int) -> None:
        super().set_progress(step, total_steps)
        for part in self.parts.values():
            part.set_progress(step, total_steps)

    def after_step(self, step: int) -> None:
        for part in self.parts.values():
            part.after_step(step)

    def weight_decay_at(self, step: int, total_steps: int) -> float | None:
        asked = [d for d in (p.weight_decay_at(step, total_steps) for p in self.parts.values()) if d is not None]
        return max(asked) if asked else None

    def memory_hint(self, batch_size: int) -> str | None:
        hints = [f"{name}: {_in_component(hint, name)}" for name, part in self.parts.items()
                 if (hint := part.memory_hint(batch_size))]
        return "; ".join(hints) or None

    def draw_figure(self, name: str, x: torch.Tensor, generator: torch.Generator) -> tuple[Any, dict[str, float]]:
        owner, _, figure = name.partition(".")
        if owner not in self.parts or figure not in self.parts[owner].figures:
            raise RelposError(f"Pretext {self.name!r} draws no figure {name!r}; it draws {', '.join(self.figures)}.")
        with self._positions_for(owner):
            return self.parts[owner].draw_figure(figure, x, generator)

    # -- checkpoints: every tensor once --------------------------------------------------------------
    def _duplicate_prefixes(self) -> list[str]:
        return [f"parts.{name}.encoder." for name in self.parts]

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        state = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        for key in list(state):
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix):]
            if any(rest.startswith(dup) for dup in self._duplicate_prefixes()):
                del state[key]  # the shared encoder, kept once as encoder.*
            elif self.teacher_owner and rest.startswith(f"parts.{self.teacher_owner}.{TEACHER_PREFIX}"):
                state[prefix + rest[len(f"parts.{self.teacher_owner}."):]] = state.pop(key)
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        full = dict(state_dict)
        for key, value in state_dict.items():
            if key.startswith("encoder."):
                for dup in self._duplicate_prefixes():
                    full[dup + key[len("encoder."):]] = value
            elif self.teacher_owner and key.startswith(TEACHER_PREFIX):
                full[f"parts.{self.teacher_owner}.{key}"] = full.pop(key)
        return super().load_state_dict(full, strict=strict, assign=assign)


_CLASSES: dict[tuple[type[Pretext], ...], type[ComposedPretext]] = {}


def composed_pretext_class(name: str) -> type[ComposedPretext]:
    """The :class:`ComposedPretext` class of ``"part+sove"``: the registered classes of its names,
    in order (an unknown name is refused as for ``--pretext NAME``)."""
    from .plugins import get_pretext as registered_pretext

    names = split_name(name)
    components = tuple(registered_pretext(n) for n in names)
    cached = _CLASSES.get(components)
    if cached is not None:
        return cached
    modalities = None
    for component in components:
        if component.modalities is not None:
            allowed = tuple(component.modalities)
            modalities = allowed if modalities is None else tuple(m for m in modalities if m in allowed)
    needs_positions = [c.name for c in components if "none" not in tuple(c.encoder_pos_embed)]
    prefers_positions = any(_preferred_pos_embed(c) == "sincos" for c in components)
    defaults: dict[str, Any] = {}
    for component in components:  # other encoder defaults: the first component that sets one
        for key, value in dict(component.encoder_defaults).items():
            defaults.setdefault(key, value)
    defaults.pop("pos_embed", None)
    if prefers_positions:
        defaults["pos_embed"] = "sincos"
    attributes = {
        "name": SEPARATOR.join(names),
        "components": components,
        "modalities": modalities,
        "min_axes": max(c.min_axes for c in components),
        "description": f"{' + '.join(names)} over one shared encoder (relpos.compose)",
        "log_keys": tuple(f"{c.name}/{k}" for c in components for k in ("loss", *c.log_keys)),
        "encoder_pos_embed": ("sincos",) if needs_positions else ("none", "sincos"),
        "encoder_defaults": defaults,
        "encoder_output": "tokens" if any(c.encoder_output == "tokens" for c in components) else "vector",
        "figures": tuple(f"{c.name}.{f}" for c in components for f in c.figures),
        "needs_recording_time": any(c.needs_recording_time for c in components),
        "__module__": __name__,
    }
    cls = type(f"Composed[{SEPARATOR.join(names)}]", (ComposedPretext,), attributes)
    _CLASSES[components] = cls
    return cls


def two_window_requests(names: Sequence[str]) -> ConfigError:
    """The one sentence that refuses a composition of several pretexts with window requests."""
    return ConfigError(
        f"Pretexts {' and '.join(map(repr, names))} each ask for their own samples of several windows of a "
        f"recording, and a composed run draws one kind of sample per step; compose at most one pretext with a "
        f"window request (rp, ts, cpc, part with scope 'recording')."
    )


def get_pretext(name: str) -> type:
    """The pretext class ``name`` names: a registered pretext (:func:`relpos.plugins.get_pretext`,
    with a did-you-mean error otherwise), or for a ``+``-joined name (``part+sove``) their
    composition (:func:`composed_pretext_class`). What ``relpos.get_pretext`` is."""
    if is_composed_name(name):
        return composed_pretext_class(name)
    from .plugins import get_pretext as registered_pretext

    return registered_pretext(name)

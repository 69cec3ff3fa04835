"""The student–teacher skeleton of self-distillation pretexts (public API).

DINO, PW-Self and SOVE are one skeleton with different heads and losses; the skeleton lives here so
that a third-party method (iBOT, a BYOL-like one) is assembled, not copied, as solo-learn's methods
extend its ``BaseMomentumMethod``. :class:`StudentTeacher` is a :class:`relpos.Pretext` with:

* a **student**, the pretext's ``encoder`` and the ``head`` a subclass builds in
  :meth:`StudentTeacher.build_head`, and its **EMA teacher**, ``teacher_encoder`` and
  ``teacher_head`` (:func:`relpos.blocks.make_teacher`), updated after every optimiser step
  (:func:`relpos.blocks.update_teacher`). These four are the state-dict prefixes of every such run;
  ``relpos eval --init teacher`` reads ``teacher_encoder``;
* **schedules** as pure functions of the loop's progress (:mod:`relpos.blocks`): the teacher's
  momentum on a cosine to 1, its temperature warming up, the weight decay on a cosine. Their
  settings, with DINO's defaults, are declared in a config by :func:`schedule_setting`;
* **multi-crop views** (:mod:`relpos.views`): ``n_global`` global views per sample, read by student
  and teacher, and ``n_local`` local views, read by the student only, with their options in
  :class:`MultiCropConfig`: sampling, the modality's photometric recipe, encoding, and the token
  counts behind the out-of-memory advice.

A subclass sets ``Config`` (a :class:`MultiCropConfig` subclass declaring the schedule settings),
builds its head, writes ``forward`` (usually from :meth:`StudentTeacher.run_views`) and extends
``after_step`` for state of its own (a centre, a memory bank), calling ``super().after_step(step)``
first. ``plugins/dino.py`` is the worked example.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from .blocks import (
    TEMPERATURE_RANGE,
    make_teacher,
    teacher_momentum,
    teacher_temperature,
    update_teacher,
    weight_decay_schedule,
)
from .errors import ConfigError, DataError
from .pretext import Pretext
from .ranges import check_fields, setting
from .views import Views, check_resolution, check_scale_range, extract_view_tokens, sample_views

#: DINO's local views are 96 px for 224-px global views.
LOCAL_RESOLUTION_RATIO = 96 / 224
#: Default crop scales (fraction of the area, or of the length on one axis): DINO's multi-crop for
#: modalities whose views are resampled (images), native-resolution crops for the others.
IMAGE_SCALES = {"global": (0.4, 1.0), "local": (0.05, 0.4)}
SERIES_SCALES = {"global": (0.6, 1.0), "local": (0.1, 0.3)}

#: The settings :class:`StudentTeacher`'s schedules read from its config: DINO's defaults and the
#: ranges they are checked against. Temperatures lie in :data:`relpos.blocks.TEMPERATURE_RANGE`.
SCHEDULE_SETTINGS: dict[str, tuple[float, dict[str, float]]] = {
    # EMA momentum of the teacher at step 0; a cosine takes it to 1
    "teacher_momentum": (0.996, {"ge": 0, "le": 1}),
    # teacher temperature at step 0, warmed up linearly to teacher_temp
    "warmup_teacher_temp": (0.04, TEMPERATURE_RANGE),
    "teacher_temp": (0.07, TEMPERATURE_RANGE),
    # fraction of the run over which the teacher temperature warms up
    "teacher_temp_warmup": (0.3, {"ge": 0, "le": 1}),
    "student_temp": (0.1, TEMPERATURE_RANGE),
    # weight decay at step 0, taken to weight_decay_end on a cosine (replaces train.weight_decay)
    "weight_decay": (0.04, {"ge": 0}),
    "weight_decay_end": (0.4, {"ge": 0}),
}


def schedule_setting(name: str, default: float | None = None) -> Any:
    """The dataclass field of the schedule setting ``name`` (a key of :data:`SCHEDULE_SETTINGS`).

    Its range is :data:`SCHEDULE_SETTINGS`'s and its default DINO's unless ``default`` is given
    (PW-Self warms its teacher temperature up over 15 % of the run):
    ``teacher_temp_warmup: float = schedule_setting("teacher_temp_warmup", 0.15)``.
    """
    paper_default, range_options = SCHEDULE_SETTINGS[name]
    return setting(paper_default if default is None else default, **range_options)


@dataclass
class MultiCropConfig:
    """The view options of a student–teacher pretext: DINO's multi-crop, for any modality.

    A pretext's ``Config`` subclasses it (these fields come first) and adds its head, loss and
    schedule settings (:func:`schedule_setting`).
    """

    #: What the sentence about too few views calls the method.
    method_name: ClassVar[str] = "A student–teacher pretext"

    n_global: int = setting(2, ge=1, le=64)  # global views per sample (read by student and teacher)
    # local views per sample (student only); 8 in DINO's paper, 10 in SOVE's, fewer for 2 CPU cores
    n_local: int = setting(2, ge=0, le=256)
    # crop area (2+ axes) or length (1 axis) fraction; None: the modality's default
    global_scale: tuple[float, float] | None = setting(None, gt=0, le=1, ordered=True)
    local_scale: tuple[float, float] | None = setting(None, gt=0, le=1, ordered=True)
    # side of resampled local views in px; 0: 96/224 of the image size
    local_resolution: int = setting(0, ge=0, le=65536)
    # width / height of image crops, log-uniform
    aspect_range: tuple[float, float] = setting((0.75, 1.3333333333333333), gt=0, ordered=True)
    # mirror views on the modality's flip axes; None: when the modality allows it
    flip: bool | None = setting(None)
    photometric: bool = setting(True)  # the modality's per-view photometric recipe

    def validate(self) -> None:
        """Check every field against its range, then the rules between the view options."""
        check_fields(self, "pretext")  # each value against its declared range (a config made in Python)
        if self.n_global + self.n_local < 2:
            raise ConfigError(
                f"{self.method_name} compares different views, so it needs at least 2 views per sample; got "
                f"n_global={self.n_global} and n_local={self.n_local}."
            )
        for key in ("global_scale", "local_scale"):
            if getattr(self, key) is not None:
                check_scale_range(getattr(self, key), f"pretext.{key}")
        if self.global_scale is not None and self.local_scale is not None and self.n_local:
            if self.local_scale[0] > self.global_scale[0] or self.local_scale[1] > self.global_scale[1]:
                raise ConfigError(
                    f"Local views must not be larger than global ones: 'pretext.local_scale' "
                    f"{list(self.local_scale)} exceeds 'pretext.global_scale' {list(self.global_scale)}."
                )


class ViewTokens(NamedTuple):
    """What :meth:`StudentTeacher.run_views` returns for a batch of ``B`` samples."""

    #: The global views, then (with ``n_local > 0``) the local views.
    views: list[Views]
    #: The student's ``(B, V, 1 + N, dim)`` tokens (CLS first) of each group of :attr:`views`.
    student: list[torch.Tensor]
    #: The teacher's ``(B, n_global, 1 + N, dim)`` tokens of the global views (no gradient).
    teacher: torch.Tensor
    #: ``(B, n_global, N)``, True where the student's global views read the mask token; None unmasked.
    token_mask: torch.Tensor | None


class StudentTeacher(Pretext):
    """A student (``encoder`` + ``head``) and its EMA teacher reading multi-crop views of every sample.

    Subclasses set ``Config`` (a :class:`MultiCropConfig` with the settings of
    :data:`SCHEDULE_SETTINGS`), build the head in :meth:`build_head` and write ``forward``.
    """

    #: Why the method needs at least 2 training windows, for the sentence that refuses fewer before
    #: the encoder is built (DINO: "its teacher centres over a batch of different samples"); None
    #: accepts a single window.
    needs_two_windows: ClassVar[str | None] = None
    encoder_pos_embed = ("sincos", "none")
    encoder_defaults = {"pos_embed": "sincos"}  # views are crops: the encoder needs to know where tokens sit

    def __init__(self, config, modality, encoder_config, data):
        config.validate()
        if self.needs_two_windows and len(data) < 2:
            raise DataError(
                f"Pretext {self.name!r} needs at least 2 windows to train on ({self.needs_two_windows}), but the "
                f"data holds {len(data)}; give it more data or shorter windows."
            )
        super().__init__(config, modality, encoder_config, data)
        self.patch_shape = modality.patch_shape()
        self._set_up_views(config, modality)
        # Validate the view geometry once, here, rather than on the first step.
        self.sample(1, torch.Generator().manual_seed(0), torch.device("cpu"))
        self.head = self.build_head(encoder_config.dim)
        self.teacher_encoder = make_teacher(self.encoder)
        self.teacher_head = make_teacher(self.head)

    def build_head(self, dim: int) -> nn.Module:
        """The student's head on ``dim``-wide encoder tokens; the teacher's is a copy of it."""
        raise NotImplementedError(f"Pretext {self.name!r} does not implement build_head(dim).")

    def _set_up_views(self, config: MultiCropConfig, modality) -> None:
        axes = tuple(modality.axes)
        allowed = tuple(getattr(modality, "flip_axes", ()) or ())
        if config.flip and not allowed:
            raise ConfigError(
                f"'pretext.flip' is true, but modality {modality.name!r} allows no flips of its axes "
                f"({', '.join(axes)}); set pretext.flip=false or leave it unset."
            )
        self.flippable = tuple(a in allowed for a in axes) if config.flip is not False else (False,) * len(axes)
        self.resample = bool(getattr(modality, "resample_views", False))
        scales = IMAGE_SCALES if self.resample else SERIES_SCALES
        self.global_scale = tuple(config.global_scale or scales["global"])
        self.local_scale = tuple(config.local_scale or scales["local"])
        if config.n_local and (self.local_scale[0] > self.global_scale[0] or self.local_scale[1] > self.global_scale[1]):
            raise ConfigError(
                f"Local views must not be larger than global ones: local scale {list(self.local_scale)} "
                f"exceeds global scale {list(self.global_scale)}."
            )
        if not self.resample:
            if config.local_resolution:
                raise ConfigError(
                    f"'pretext.local_resolution' applies to modalities whose views are resampled; "
                    f"modality {modality.name!r} cuts views at native resolution, so leave it 0."
                )
            self.global_resolution = self.local_resolution = None
            return
        self.global_resolution = tuple(int(e) for e in self.extent)
        if config.local_resolution:
            self.local_resolution = (int(config.local_resolution),) * len(axes)
        else:  # 96/224 of the global resolution, in whole patches (at least one)
            self.local_resolution = tuple(
                max(p, round(e * LOCAL_RESOLUTION_RATIO / p) * p) for e, p in zip(self.extent, self.patch_shape)
            )
        check_resolution(self.global_resolution, self.patch_shape, "global view resolution (the sample's extent)")
        check_resolution(self.local_resolution, self.patch_shape, "local view resolution ('pretext.local_resolution')")
        if config.n_local and any(l > g for l, g in zip(self.local_resolution, self.global_resolution)):
            raise ConfigError(
                f"Local views must not be larger than global ones: 'pretext.local_resolution' "
                f"{list(self.local_resolution)} exceeds the global resolution {list(self.global_resolution)}."
            )

    # -- schedules (pure functions of the loop's progress) -----------------------------------------
    def teacher_temp_now(self) -> float:
        """The teacher temperature of the current step."""
        c = self.config
        return teacher_temperature(
            self.progress_step, self.total_steps, c.warmup_teacher_temp, c.teacher_temp, c.teacher_temp_warmup
        )

    def momentum_now(self) -> float:
        """The EMA momentum the teacher gets after the current step."""
        return teacher_momentum(self.progress_step, self.total_steps, self.config.teacher_momentum)

    def weight_decay_at(self, step: int, total_steps: int) -> float:
        return weight_decay_schedule(step, total_steps, self.config.weight_decay, self.config.weight_decay_end)

    def after_step(self, step: int) -> None:
        """Move the teacher (encoder and head) towards the student by the momentum of the step just taken."""
        momentum = teacher_momentum(step - 1, self.total_steps, self.config.teacher_momentum)
        update_teacher(self.encoder, self.teacher_encoder, momentum)
        update_teacher(self.head, self.teacher_head, momentum)

    # -- views ----------------------------------------------------------------------------------------
    def sample(self, batch_size: int, generator: torch.Generator | None, device) -> list[Views]:
        """The global views and, when ``n_local > 0``, the local views of a batch."""
        c = self.config
        groups = [
            sample_views(batch_size, c.n_global, self.extent, self.patch_shape, self.global_scale,
                         self.global_resolution, generator, c.aspect_range, self.flippable, device)
        ]
        if c.n_local:
            groups.append(
                sample_views(batch_size, c.n_local, self.extent, self.patch_shape, self.local_scale,
                             self.local_resolution, generator, c.aspect_range, self.flippable, device)
            )
        return groups

    def augment_views(self, patches: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
        """The modality's per-view photometric recipe on ``(B, V, N, C, *patch)`` patches per group."""
        if not self.config.photometric:
            return patches
        out = []
        for group, chunk in enumerate(patches):
            batch, n_views = chunk.shape[:2]
            if group:  # local views share one recipe: one call, parameters drawn per (sample, view)
                flat = chunk.reshape(batch * n_views, *chunk.shape[2:])
                out.append(self.modality.photometric(flat, generator, "local", False).reshape(chunk.shape))
                continue
            views = [self.modality.photometric(chunk[:, v], generator, "global-1" if v % 2 == 0 else "global-2", False)
                     for v in range(n_views)]
            out.append(torch.stack(views, 1))
        return out

    def augment_patches(self, patches: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
        """Patch-level augmentation after the per-view recipe: none here (PW-Self adds its own)."""
        return patches

    def encode(self, encoder: nn.Module, patches: torch.Tensor, views: Views, generator,
               token_mask: torch.Tensor | None = None, mask_token: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, V, 1 + N, dim)`` tokens of every view of a group.

        ``token_mask`` ``(B, V, N)`` replaces the masked patches' embeddings by ``mask_token``.
        """
        batch, n_views, n_tokens = patches.shape[:3]
        positions = views.token_positions().to(patches.device)
        masking = {}
        if token_mask is not None:
            masking = {"token_mask": token_mask.reshape(batch * n_views, n_tokens), "mask_token": mask_token}
        tokens = encoder(
            patches.reshape(batch * n_views, n_tokens, *patches.shape[3:]),
            positions.reshape(batch * n_views, n_tokens, -1),
            generator=generator, **masking,
        )
        return tokens.reshape(batch, n_views, 1 + n_tokens, -1)

    def run_views(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                  mask_student: Callable[[Views, torch.Generator], torch.Tensor] | None = None,
                  mask_token: torch.Tensor | None = None) -> ViewTokens:
        """Sample, cut and augment the views of ``batch["x"]``; the student's tokens of every view and
        the teacher's of the global views.

        ``mask_student(global_views, generator)``, when given, returns the ``(B, n_global, N)`` tokens
        of the student's global views to replace by ``mask_token`` (masked image modelling); the
        teacher reads them unmasked.
        """
        x = batch["x"]
        groups = self.sample(x.shape[0], generator, x.device)
        patches = self.augment_views(extract_view_tokens(x, groups), generator)
        patches = self.augment_patches(patches, generator)
        token_mask = mask_student(groups[0], generator) if mask_student is not None else None
        student = [self.encode(self.encoder, patches[0], groups[0], generator, token_mask, mask_token)]
        student += [self.encode(self.encoder, p, g, generator) for p, g in zip(patches[1:], groups[1:])]
        with torch.no_grad():
            teacher = self.encode(self.teacher_encoder, patches[0], groups[0], None)
        return ViewTokens(groups, student, teacher, token_mask)

    # -- token counts and memory --------------------------------------------------------------------
    def view_token_counts(self) -> tuple[int, int]:
        """The most tokens (CLS not counted) a global and a local view can have."""
        def grid(resolution):
            return math.prod(r // p for r, p in zip(resolution, self.patch_shape))

        if self.resample:
            return grid(self.global_resolution), grid(self.local_resolution)
        return self._native_tokens(self.global_scale[1]), self._native_tokens(self.local_scale[1])

    def fewest_global_tokens(self) -> int:
        """The fewest tokens (CLS not counted) a global view can have: the smallest crop, in whole patches."""
        if self.resample:
            return self.view_token_counts()[0]
        return self._native_tokens(self.global_scale[0])

    def _native_tokens(self, fraction: float) -> int:
        """Tokens of a native-resolution crop of ``fraction`` of the sample, in whole patches per axis."""
        n_axes = len(self.extent)
        return math.prod(max(1, int(e * fraction ** (1 / n_axes) // p)) for e, p in zip(self.extent, self.patch_shape))

    def head_memory_clause(self) -> str:
        """What the head adds to every token's memory, as a clause of :meth:`memory_hint` ("" when it
        reads only CLS)."""
        return ""

    def memory_hint(self, batch_size: int) -> str:
        c = self.config
        n_global_tokens, n_local_tokens = self.view_token_counts()
        per_sample = c.n_global * (1 + n_global_tokens) + c.n_local * (1 + n_local_tokens)
        local_share = round(100 * c.n_local * (1 + n_local_tokens) / per_sample)
        resolution = (
            "modality.image_size or pretext.local_resolution" if self.resample
            else "the crop lengths, pretext.global_scale and pretext.local_scale"
        )
        return (
            f"each sample makes up to {per_sample} tokens, {c.n_global} global views of {1 + n_global_tokens} and "
            f"{c.n_local} local views of {1 + n_local_tokens}{self.head_memory_clause()}, so the batch makes "
            f"{batch_size * per_sample}: halve train.batch_size (now {batch_size}) to {max(1, batch_size // 2)}, "
            f"or lower pretext.n_local (now {c.n_local}, {local_share} % of the tokens) or the view resolution "
            f"({resolution})"
        )

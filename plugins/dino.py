"""DINO: self-distillation with no labels, on multi-crop views of any modality.

The method of "Emerging properties in self-supervised vision transformers" (Caron et al., 2021), as
PW-Self's Eq. 7 writes its loss. Every sample gives ``n_global`` global views and ``n_local`` local
views (:mod:`relpos.views`). The student (encoder + :class:`relpos.blocks.DINOHead`) reads every
view; the teacher, an EMA of the student, reads the global views only. With ``P = softmax`` of the
head's outputs, the teacher centred and sharpened, the loss is the mean over the batch and over every
(teacher view i, student view j) pair with ``i ≠ j`` of the cross-entropy ``H(P_t^i, P_s^j)`` of the
CLS outputs.

Schedules follow DINO and are functions of (step, total steps): teacher momentum 0.996 → 1 on a
cosine, teacher temperature 0.04 → 0.07 over the first 30 % of the run, weight decay 0.04 → 0.4 on a
cosine, the last layer frozen for the first ``freeze_last_layer`` steps. The centre is updated with
the teacher's CLS outputs after each optimiser step (the loss of a step uses the centre from before
it, as in DINO).

Views: images default to DINO's multi-crop (global scale 0.4–1 at the image size, local scale
0.05–0.4 at 96/224 of it, horizontal flips); time series to crops at native resolution (global 0.6–1
of the window, local 0.1–0.3), never flipped. Evaluation reads the student's encoder (``relpos
eval``'s default); the DINO paper evaluates the teacher, whose encoder the checkpoint holds too
(``teacher_encoder.*``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from relpos import hookimpl
from relpos.blocks import (
    MIN_CLASSES,
    TEMPERATURE_RANGE,
    Centering,
    DINOHead,
    check_momentum,
    distillation_cross_entropy,
    make_teacher,
    teacher_momentum,
    teacher_temperature,
    update_teacher,
    weight_decay_schedule,
)
from relpos.config import MAX_STEPS, check_fields, setting
from relpos.errors import ConfigError, DataError
from relpos.pretext import Pretext
from relpos.trivial_baseline import BASELINE_KEY
from relpos.views import Views, check_resolution, check_scale_range, extract_view_tokens, sample_views

#: DINO's local views are 96 px for 224-px global views.
LOCAL_RESOLUTION_RATIO = 96 / 224
IMAGE_SCALES = {"global": (0.4, 1.0), "local": (0.05, 0.4)}
SERIES_SCALES = {"global": (0.6, 1.0), "local": (0.1, 0.3)}


@dataclass
class DINOConfig:
    """Options of the DINO pretext (paper defaults unless noted)."""

    n_global: int = setting(2, ge=1, le=64)  # global views per sample (read by student and teacher)
    # local views per sample (student only); 8 in the paper, fewer for 2 CPU cores
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
    # head outputs K; 65536 in the paper; at least 2 (with one, every probability is 1 and the loss 0)
    out_dim: int = setting(4096, ge=MIN_CLASSES, le=2**20)
    head_hidden_dim: int = setting(2048, ge=1, le=2**16)
    head_bottleneck_dim: int = setting(256, ge=1, le=2**16)
    head_layers: int = setting(3, ge=1, le=16)
    norm_last_layer: bool = setting(True)
    head_bn: bool = setting(False)  # batch norm in the head's hidden layers (DINO's use_bn_in_head)
    # steps during which the head's last layer gets no gradient
    freeze_last_layer: int = setting(0, ge=0, le=MAX_STEPS)
    # EMA momentum at step 0; a cosine takes it to 1
    teacher_momentum: float = setting(0.996, ge=0, le=1)
    center_momentum: float = setting(0.9, ge=0, le=1)
    # temperatures in [0.001, 10] (relpos.blocks.TEMPERATURE_RANGE)
    warmup_teacher_temp: float = setting(0.04, **TEMPERATURE_RANGE)
    teacher_temp: float = setting(0.07, **TEMPERATURE_RANGE)
    # fraction of the run over which the teacher temperature warms up
    teacher_temp_warmup: float = setting(0.3, ge=0, le=1)
    student_temp: float = setting(0.1, **TEMPERATURE_RANGE)
    # weight decay at step 0, taken to weight_decay_end on a cosine (replaces train.weight_decay)
    weight_decay: float = setting(0.04, ge=0)
    weight_decay_end: float = setting(0.4, ge=0)

    def validate(self) -> None:
        check_fields(self, "pretext")  # each value against its declared range (a config made in Python)
        if self.n_global < 1:
            raise ConfigError(f"'pretext.n_global' must be at least 1, got {self.n_global}.")
        if self.n_local < 0:
            raise ConfigError(f"'pretext.n_local' must be 0 or more, got {self.n_local}.")
        if self.n_global + self.n_local < 2:
            raise ConfigError(
                f"DINO compares different views, so it needs at least 2 views per sample; got "
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
        if self.local_resolution < 0:
            raise ConfigError(f"'pretext.local_resolution' must be 0 (default) or positive, got {self.local_resolution}.")
        for key in ("teacher_momentum", "center_momentum"):
            check_momentum(getattr(self, key), f"pretext.{key}")
        for key in ("warmup_teacher_temp", "teacher_temp", "student_temp"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"'pretext.{key}' must be positive, got {getattr(self, key)}.")
        if not 0.0 <= self.teacher_temp_warmup <= 1.0:
            raise ConfigError(
                f"'pretext.teacher_temp_warmup' is a fraction of the run in [0, 1], got {self.teacher_temp_warmup}."
            )
        for key in ("out_dim", "head_hidden_dim", "head_bottleneck_dim", "head_layers"):
            if getattr(self, key) < 1:
                raise ConfigError(f"'pretext.{key}' must be at least 1, got {getattr(self, key)}.")
        if self.freeze_last_layer < 0:
            raise ConfigError(f"'pretext.freeze_last_layer' must be 0 or more steps, got {self.freeze_last_layer}.")
        for key in ("weight_decay", "weight_decay_end"):
            if getattr(self, key) < 0:
                raise ConfigError(f"'pretext.{key}' must be 0 or more, got {getattr(self, key)}.")


class DINO(Pretext):
    """DINO: self-distillation between the CLS outputs of multi-crop views (EMA teacher, centring)."""

    name = "dino"
    Config = DINOConfig
    modalities = None
    min_axes = 1
    encoder_pos_embed = ("sincos", "none")
    encoder_defaults = {"pos_embed": "sincos"}  # views are crops: the encoder needs to know where tokens sit
    # loss_baseline: the cross-entropy of a uniform student, log K (relpos.trivial_baseline)
    log_keys = (BASELINE_KEY, "teacher_temp", "momentum")

    def __init__(self, config, modality, encoder_config, data):
        config.validate()
        if len(data) < 2:
            raise DataError(
                f"Pretext {self.name!r} needs at least 2 windows to train on (its teacher centres over a "
                f"batch of different samples), but the data holds {len(data)}; give it more data or "
                f"shorter windows."
            )
        super().__init__(config, modality, encoder_config, data)
        self.patch_shape = modality.patch_shape()
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
        if self.resample:
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
        else:
            if config.local_resolution:
                raise ConfigError(
                    f"'pretext.local_resolution' applies to modalities whose views are resampled; "
                    f"modality {modality.name!r} cuts views at native resolution, so leave it 0."
                )
            self.global_resolution = self.local_resolution = None
        # Validate the view geometry once, here, rather than on the first step.
        self.sample(1, torch.Generator().manual_seed(0), torch.device("cpu"))
        dim = encoder_config.dim
        self.head = DINOHead(
            dim, config.out_dim, config.head_hidden_dim, config.head_bottleneck_dim, config.head_layers,
            config.norm_last_layer, use_bn=config.head_bn,
        )
        self.teacher_encoder = make_teacher(self.encoder)
        self.teacher_head = make_teacher(self.head)
        self.centering = Centering(config.out_dim, config.center_momentum)
        self._pending_center: torch.Tensor | None = None

    # -- schedules (pure functions of the loop's progress) -----------------------------------------
    def teacher_temp_now(self) -> float:
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
        momentum = teacher_momentum(step - 1, self.total_steps, self.config.teacher_momentum)
        update_teacher(self.encoder, self.teacher_encoder, momentum)
        update_teacher(self.head, self.teacher_head, momentum)
        if self._pending_center is not None:
            self.centering.update(self._pending_center)
            self._pending_center = None

    # -- memory ---------------------------------------------------------------------------------------
    #: Whether every patch token (not only CLS) goes through the projection head (PW-Self).
    patchwise = False

    def view_token_counts(self) -> tuple[int, int]:
        """The most tokens (CLS not counted) a global and a local view can have."""
        def grid(resolution):
            return math.prod(r // p for r, p in zip(resolution, self.patch_shape))

        if self.resample:
            return grid(self.global_resolution), grid(self.local_resolution)
        n_axes = len(self.extent)

        def longest(scale):  # native crops: the largest fraction, in whole patches
            return math.prod(
                max(1, int(e * scale[1] ** (1 / n_axes) // p)) for e, p in zip(self.extent, self.patch_shape)
            )

        return longest(self.global_scale), longest(self.local_scale)

    def memory_hint(self, batch_size: int) -> str:
        c = self.config
        n_global_tokens, n_local_tokens = self.view_token_counts()
        per_sample = c.n_global * (1 + n_global_tokens) + c.n_local * (1 + n_local_tokens)
        local_share = round(100 * c.n_local * (1 + n_local_tokens) / per_sample)
        head = f", every one projected to pretext.out_dim={c.out_dim} values" if self.patchwise else ""
        resolution = (
            "modality.image_size or pretext.local_resolution" if self.resample
            else "the crop lengths, pretext.global_scale and pretext.local_scale"
        )
        return (
            f"each sample makes up to {per_sample} tokens, {c.n_global} global views of {1 + n_global_tokens} and "
            f"{c.n_local} local views of {1 + n_local_tokens}{head}, so the batch makes {batch_size * per_sample}: "
            f"halve train.batch_size (now {batch_size}) to {max(1, batch_size // 2)}, or lower pretext.n_local "
            f"(now {c.n_local}, {local_share} % of the tokens) or the view resolution ({resolution})"
        )

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

    def encode(self, encoder, patches: torch.Tensor, views: Views, generator) -> torch.Tensor:
        """``(B, V, 1 + N, dim)`` tokens of every view of a group."""
        batch, n_views, n_tokens = patches.shape[:3]
        positions = views.token_positions().to(patches.device)
        tokens = encoder(
            patches.reshape(batch * n_views, n_tokens, *patches.shape[3:]),
            positions.reshape(batch * n_views, n_tokens, -1),
            generator=generator,
        )
        return tokens.reshape(batch, n_views, 1 + n_tokens, -1)

    def run_views(self, batch, generator):
        """Student and teacher tokens of every view: lists per group of ``(B, V, 1 + N, dim)``."""
        x = batch["x"]
        groups = self.sample(x.shape[0], generator, x.device)
        patches = self.augment_views(extract_view_tokens(x, groups), generator)
        patches = self.augment_patches(patches, generator)
        student = [self.encode(self.encoder, p, g, generator) for p, g in zip(patches, groups)]
        with torch.no_grad():
            teacher = self.encode(self.teacher_encoder, patches[0], groups[0], None)
        return groups, student, teacher

    def augment_patches(self, patches: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
        """Patch-level augmentation; DINO has none (PW-Self overrides this)."""
        return patches

    # -- loss ---------------------------------------------------------------------------------------
    def forward(self, batch, generator):
        groups, student, teacher = self.run_views(batch, generator)
        freeze = self.progress_step < self.config.freeze_last_layer
        student_cls = torch.cat([s[:, :, 0] for s in student], dim=1)  # (B, V, dim)
        student_out = self.head(student_cls, freeze_last_layer=freeze)
        with torch.no_grad():
            teacher_out = self.teacher_head(teacher[:, :, 0])  # (B, n_global, K)
        temp = self.teacher_temp_now()
        loss = self.cls_loss(teacher_out, student_out, temp)
        self._pending_center = teacher_out.detach()
        return loss, {BASELINE_KEY: self.uniform_ce(), "teacher_temp": temp, "momentum": self.momentum_now()}

    def uniform_ce(self) -> float:
        """The cross-entropy of a uniform student against any teacher distribution: log K.

        DINO's trivial baseline: a student that has learned nothing (or a teacher collapsed to the
        uniform distribution) scores exactly this.
        """
        return math.log(self.config.out_dim)

    def cls_loss(self, teacher_out: torch.Tensor, student_out: torch.Tensor, temp: float) -> torch.Tensor:
        """Eq. 7: mean over samples and (i, j ≠ i) pairs of H(P_t^i, P_s^j)."""
        centred = self.centering(teacher_out)
        n_teacher, n_student = teacher_out.shape[1], student_out.shape[1]
        # (B, n_teacher, n_student) cross-entropies of every pair, from one broadcast
        ce = distillation_cross_entropy(centred[:, :, None], student_out[:, None, :], temp, self.config.student_temp)
        keep = ~torch.eye(n_teacher, n_student, dtype=torch.bool, device=ce.device)
        return ce[:, keep].mean()


@hookimpl
def register_pretexts(register):
    register(DINO)

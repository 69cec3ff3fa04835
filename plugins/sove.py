"""SOVE: non-parametric judges on CLS embeddings and non-parametric MIM on patch embeddings.

The method of "Self-Organizing Visual Embeddings: non-parametric self-supervised learning" (§2,
Appendix A.1). A teacher–student pair (the teacher an EMA of the student) reads DINO's multi-crop
views: the skeleton SOVE shares with DINO and PW-Self, :class:`relpos.student_teacher.StudentTeacher`,
to which SOVE adds its heads, memories and losses. The heads are MLPs ending in an L2-normalised embedding (256-d
by default), with no prototype layer and no centring. Two FIFO memories
(:class:`relpos.memory.MemoryBank`, checkpointed) hold teacher embeddings of earlier steps: ``E_C``
one CLS embedding per sample per step (of the first global view), ``E_P`` one random patch
embedding per sample per step (of the first global view).

**Judges (§2.2.1, Eq. 2).** ``K`` anchors are drawn uniformly, without replacement, from ``E_C``;
each selects its ``k`` nearest neighbours in ``E_C`` by cosine similarity (itself excluded; one
batched top-k). ``D`` stacks every anchor and its judges (``K·(k+1)`` rows); the row of ``Y`` of a
judge ``e`` of concept ``i`` has ``⟨e, a_i⟩`` (clamped to [0, 1]; 1 for the anchor itself) at column
``i`` and the rest ``(1 − ⟨e, a_i⟩) / (K − 1)`` spread over the other concepts, so every row sums to
1 and ``P(u) = softmax(⟨u, Dᵀ⟩ / τ) · Y`` is a distribution over the ``K`` concepts. With
``soft_labels: onehot`` (Table 9) every judge counts 1 for its concept. With ``k = 0`` ``Y`` is the
identity and ``P`` the softmax over the anchors. ``L_CLS`` is the cross-entropy between the
teacher's ``P`` of each global view and the student's ``P`` of every *other* view, averaged over
pairs and samples (as DINO averages).

**Non-parametric MIM (§2.3, Eq. 4).** The student's global views are block-masked
(:func:`relpos.masking.block_mask`, iBOT's ratio 0.3 ± 0.2 per view), a learnable mask token
replacing the masked patch embeddings; the teacher reads them unmasked. ``K̂`` anchors from ``E_P``
with ``k̂`` judges each (0 by default: the paper keeps a single judge) give ``P^patch``; ``L_patch``
is the cross-entropy between the teacher's ``P`` of a token and the student's ``P`` of the same,
masked token of the same view, averaged over the masked tokens of a view, then over views and
samples. ``L = λ1 · L_CLS + λ2 · L_patch``.

Temperatures as in the official code: student 0.1, teacher 0.04 → 0.07 over the first 30 % of the
run; teacher momentum 0.996 → 1 and weight decay 0.04 → 0.4 on cosines (DINO's schedules).

Memories. The bank is empty at step 1: until it holds an embedding, a step's judges come from its own
teacher embeddings (the ones it is about to enqueue); until it is full, anchors and judges come only
from its filled part, so ``K`` and ``k`` shrink to what is there (``min(K, filled)`` anchors,
``min(k, filled − 1)`` judges). A step's loss uses the memory as it was before the step; its
embeddings are enqueued after the optimiser step, gathered across processes. ``cls_fill``,
``patch_fill``, ``judge_similarity`` (the mean anchor–judge cosine) and ``cls_entropy`` (the
entropy of the teacher's ``P``, in nats; ``log K`` is uniform) are logged, so a collapse shows.

Where the paper and its official code differ: the official code draws the anchors as a partition
of the bank and picks judges only among the *other* rows, and gives the anchor a label of
``1 − smoothing`` (0.9); here (as the paper writes) the judges are the nearest rows of the whole
bank other than the anchor itself, and the anchor's label is its similarity to itself, 1. The
spreading of ``1 − ⟨e, a_i⟩`` over the other concepts is the official code's (the paper only says
that each row of ``Y`` sums to 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from relpos import hookimpl
from relpos.blocks import MIN_CLASSES, DINOHead, off_diagonal
from relpos.config import setting
from relpos.errors import ConfigError, DataError, did_you_mean
from relpos.masking import block_mask, check_mask_ratio, masked_token_count
from relpos.memory import MemoryBank
from relpos.student_teacher import MultiCropConfig, StudentTeacher, schedule_setting
from relpos.trivial_baseline import BASELINE_KEY
from relpos.views import Views
from relpos.transfer import to_device

SOFT_LABELS = ("similarity", "onehot")

#: The paper's sizes (Appendix A.1) and the defaults used here, scaled for small data: every
#: default is capped at what the data can fill (see :meth:`SOVE.resolve_sizes`).
PAPER = {"cls_memory_size": 65536, "patch_memory_size": 8192, "n_anchors": 8192, "k": 8, "n_patch_anchors": 512}
DEFAULTS = {"cls_memory_size": 4096, "patch_memory_size": 4096, "n_anchors": 8192, "k": 8, "n_patch_anchors": 512}
#: The paper draws one anchor per 8 rows of E_C and one per 16 rows of E_P; the defaults keep these
#: ratios, with at least MIN_CONCEPTS concepts (or the whole bank when it is smaller).
ANCHOR_RATIO = {
    "n_anchors": PAPER["cls_memory_size"] // PAPER["n_anchors"],
    "n_patch_anchors": PAPER["patch_memory_size"] // PAPER["n_patch_anchors"],
}
MIN_CONCEPTS = 256


@dataclass
class SOVEConfig(MultiCropConfig):
    """Options of SOVE (paper defaults unless noted; memory sizes scaled for small data): the views
    of :class:`relpos.student_teacher.MultiCropConfig` (DINO's multi-crop), then the heads, memories,
    masking, loss and schedules."""

    method_name: ClassVar[str] = "SOVE"

    # -- heads: an MLP ending in an L2-normalised embedding, no prototypes --
    head_hidden_dim: int = setting(2048, ge=1, le=2**16)
    head_bottleneck_dim: int = setting(256, ge=1, le=2**16)  # the embedding's size d (256)
    head_layers: int = setting(3, ge=1, le=16)
    head_bn: bool = setting(False)
    # -- memories and judges; None: scaled for small data, capped at what the data fills (resolve_sizes) --
    # At least 2 each: one embedding gives one concept, every probability 1 and a loss of 0.
    cls_memory_size: int | None = setting(None, ge=MIN_CLASSES, le=2**24)  # |E_C| (65,536 in the paper)
    patch_memory_size: int | None = setting(None, ge=MIN_CLASSES, le=2**24)  # |E_P| (8,192)
    n_anchors: int | None = setting(None, ge=MIN_CLASSES, le=2**24)  # K, concepts of L_CLS (8,192)
    k: int | None = setting(None, ge=0, le=4096)  # judges per CLS anchor besides itself (8)
    n_patch_anchors: int | None = setting(None, ge=MIN_CLASSES, le=2**24)  # K̂, concepts of L_patch (512)
    patch_k: int = setting(0, ge=0, le=4096)  # judges per patch anchor besides itself (0: the anchor alone)
    soft_labels: str = setting("similarity", choices=SOFT_LABELS)  # similarity | onehot (Table 9)
    # -- masking of the student's global views (iBOT blocks) --
    mask_ratio: tuple[float, float] = setting((0.1, 0.5), ge=0, lt=1, ordered=True)  # 0.3 ± 0.2
    min_block_tokens: int = setting(4, ge=1, le=65536)  # smallest block (BEiT: 16 of 196 tokens)
    # -- loss --
    cls_weight: float = setting(1.0, ge=0)  # λ1; 0 trains L_patch alone (Table 7)
    patch_weight: float = setting(1.0, ge=0)  # λ2; 0 trains L_CLS alone
    # -- schedules (DINO's, as the official code) --
    teacher_momentum: float = schedule_setting("teacher_momentum")
    warmup_teacher_temp: float = schedule_setting("warmup_teacher_temp")
    teacher_temp: float = schedule_setting("teacher_temp")
    teacher_temp_warmup: float = schedule_setting("teacher_temp_warmup")
    student_temp: float = schedule_setting("student_temp")
    weight_decay: float = schedule_setting("weight_decay")
    weight_decay_end: float = schedule_setting("weight_decay_end")

    def validate(self) -> None:
        super().validate()  # every range, and the view rules
        if self.soft_labels not in SOFT_LABELS:
            raise ConfigError(
                f"Invalid value for 'pretext.soft_labels': {self.soft_labels!r}."
                f"{did_you_mean(self.soft_labels, SOFT_LABELS)} Allowed: {', '.join(SOFT_LABELS)}."
            )
        check_mask_ratio(self.mask_ratio, "pretext.mask_ratio")
        if self.patch_weight > 0 and self.mask_ratio[1] == 0:
            raise ConfigError(
                f"'pretext.mask_ratio' {list(self.mask_ratio)} masks no token, so L_patch (the masked tokens' "
                f"loss) would be 0 at every step; use a range whose high end is above 0 (iBOT's is [0.1, 0.5]), "
                f"or set 'pretext.patch_weight' to 0."
            )
        for key in ("cls_memory_size", "patch_memory_size", "n_anchors", "n_patch_anchors"):
            value = getattr(self, key)
            if value is not None and value < MIN_CLASSES:
                raise ConfigError(
                    f"Invalid value for 'pretext.{key}': allowed an integer >= {MIN_CLASSES} (with one "
                    f"embedding there is one concept and the loss is 0), got {value}."
                )
        for key in ("k", "patch_k"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ConfigError(f"'pretext.{key}' must be 0 or more judges, got {value}.")
        for key in ("cls_weight", "patch_weight"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"'pretext.{key}' must be 0 or more, got {getattr(self, key)}.")
        if self.cls_weight == 0 and self.patch_weight == 0:
            raise ConfigError(
                "'pretext.cls_weight' and 'pretext.patch_weight' are both 0, so SOVE would train nothing; "
                "set at least one of them above 0."
            )
        self.check_sizes(self.cls_memory_size, self.n_anchors, self.k, "cls_memory_size", "n_anchors", "k")
        self.check_sizes(self.patch_memory_size, self.n_patch_anchors, self.patch_k,
                         "patch_memory_size", "n_patch_anchors", "patch_k")

    @staticmethod
    def check_sizes(memory: int | None, anchors: int | None, k: int | None,
                    memory_key: str, anchors_key: str, k_key: str) -> None:
        """Anchors and judges must fit in the bank they are drawn from."""
        if memory is None:
            return
        if anchors is not None and anchors > memory:
            raise ConfigError(
                f"'pretext.{anchors_key}' is {anchors}, more anchors than the bank holds "
                f"('pretext.{memory_key}' is {memory}); set it to at most {memory}."
            )
        if k is not None and k > memory - 1:
            raise ConfigError(
                f"'pretext.{k_key}' is {k}, but an anchor can select at most {memory - 1} other "
                f"embeddings from a bank of {memory} ('pretext.{memory_key}'); set it to at most {memory - 1}."
            )


# -- judges (§2.2.1) ---------------------------------------------------------------------------------
@dataclass
class Judges:
    """``D`` and ``Y`` of one step: ``(J, d)`` judge embeddings, ``J = K·(k+1)``, and their labels.

    ``Y`` is kept in its structured form, ``(K, k+1)`` per concept and judge: ``own_label`` at the
    judge's own concept, ``spread`` at every other; :attr:`labels` builds the dense ``(J, K)``
    matrix (for inspection: with K = 1024 and k = 8 it holds 9.4 M values, which
    :func:`judge_probabilities` never builds).
    """

    embeddings: torch.Tensor
    own_label: torch.Tensor
    spread: torch.Tensor
    #: Mean cosine between an anchor and its additional judges: a 0-d tensor on the memory's device (left
    #: there, as a logged value, so a step does not wait for it), or the float nan when k = 0.
    similarity: torch.Tensor | float

    @property
    def n_concepts(self) -> int:
        return int(self.own_label.shape[0])

    @property
    def labels(self) -> torch.Tensor:
        """The dense ``(J, K)`` soft labels ``Y``; every row sums to 1."""
        n_concepts, n_judges = self.own_label.shape
        labels = self.spread[:, :, None].expand(n_concepts, n_judges, n_concepts).clone()
        concept = torch.arange(n_concepts, device=labels.device)
        labels[concept, :, concept] = self.own_label
        return labels.reshape(-1, n_concepts)


def select_judges(memory: torch.Tensor, n_anchors: int, k: int, generator: torch.Generator | None,
                  soft_labels: str = "similarity") -> Judges:
    """Draw ``n_anchors`` anchors from ``memory`` and let each select its ``k`` nearest judges.

    Parameters
    ----------
    memory : torch.Tensor
        ``(M, d)`` L2-normalised embeddings (a bank's filled part); ``n_anchors <= M`` and
        ``k <= M − 1``.
    n_anchors, k : int
        ``K`` and the judges per anchor besides itself.
    generator : torch.Generator, optional
        Draws the anchors (uniformly, without replacement).
    soft_labels : {"similarity", "onehot"}
        A judge's label for its concept: its cosine to the anchor (clamped to [0, 1]), or 1.

    Returns
    -------
    Judges
        Concept ``i`` owns rows ``i·(k+1) … i·(k+1)+k`` (the anchor first); each row of
        ``labels`` sums to 1.
    """
    n_memory = memory.shape[0]
    if not 1 <= n_anchors <= n_memory:
        raise ValueError(f"select_judges needs 1 <= n_anchors <= {n_memory}, got n_anchors={n_anchors}.")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    index = torch.randperm(n_memory, generator=generator, device=gen_device)[:n_anchors].to(memory.device)
    return judges_of_anchors(memory, index, k, soft_labels)


def judges_of_anchors(memory: torch.Tensor, index: torch.Tensor, k: int, soft_labels: str = "similarity") -> Judges:
    """:func:`select_judges` for the anchors ``memory[index]`` (``index`` a ``(K,)`` long tensor)."""
    n_memory, n_anchors = memory.shape[0], int(index.shape[0])
    if not 0 <= k <= n_memory - 1:
        raise ValueError(f"An anchor can select 0 to {n_memory - 1} judges from {n_memory} embeddings, got k={k}.")
    anchors = memory[index]
    ones = torch.ones(n_anchors, 1, dtype=memory.dtype, device=memory.device)
    if k:
        similarity = anchors @ memory.T  # (K, M): one batched spherical k-NN for every anchor
        similarity[torch.arange(n_anchors, device=memory.device), index] = -math.inf  # not itself
        neighbour_sim, neighbour = similarity.topk(k, dim=1)
        judges = torch.cat([anchors[:, None], memory[neighbour]], dim=1)  # (K, k+1, d)
        scores = torch.cat([ones, neighbour_sim], dim=1)
        mean_similarity = neighbour_sim.mean()
    else:
        judges, scores, mean_similarity = anchors[:, None], ones, math.nan
    if soft_labels == "onehot":
        scores = torch.ones_like(scores)
    if n_anchors == 1:  # a single concept: every judge's whole vote goes to it
        scores = torch.ones_like(scores)
    scores = scores.clamp(0.0, 1.0)
    # own + (K − 1) · spread = 1: each row of Y sums to one
    spread = (1.0 - scores) / (n_anchors - 1) if n_anchors > 1 else torch.zeros_like(scores)
    return Judges(judges.reshape(-1, memory.shape[1]), scores, spread, mean_similarity)


def judge_probabilities(embeddings: torch.Tensor, judges: Judges, temperature: float) -> torch.Tensor:
    """``P(u) = softmax(⟨u, Dᵀ⟩ / τ) · Y``: ``(..., d)`` embeddings to ``(..., K)`` distributions.

    With ``Y`` in its structured form the product is ``P_i = Σ_j v_j · spread_j + Σ_{j ∈ i}
    v_j · (own_j − spread_j)``: judges of concept ``i`` are contiguous, so this is a sum over the
    ``k + 1`` judges of each concept, ``O(J)`` per embedding instead of ``O(J · K)``.
    """
    votes = F.softmax(embeddings.float() @ judges.embeddings.float().T / temperature, dim=-1)
    n_concepts, n_judges = judges.own_label.shape
    own, spread = judges.own_label.float(), judges.spread.float()
    per_concept = votes.unflatten(-1, (n_concepts, n_judges))
    everyone = (votes * spread.reshape(-1)).sum(-1, keepdim=True)
    return everyone + (per_concept * (own - spread)).sum(-1)


def cross_entropy(teacher_probs: torch.Tensor, student_probs: torch.Tensor) -> torch.Tensor:
    """``−Σ_i P_t,i · log P_s,i`` over the last axis, the teacher detached."""
    return -(teacher_probs.detach() * student_probs.clamp_min(1e-12).log()).sum(-1)


class EmbeddingHead(nn.Module):
    """An MLP ending in an L2-normalised embedding: DINO's head without its prototype layer.

    ``in_dim → hidden_dim → … → embed_dim`` (``n_layers`` linear layers, GELU between, batch norm
    optional), then ``z / ‖z‖``.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, embed_dim: int = 256, n_layers: int = 3,
                 use_bn: bool = False):
        super().__init__()
        # DINOHead's MLP is exactly this one (same layers, initialisation and batch norm); its
        # prototype layer is the part SOVE removes, so only the MLP is kept.
        self.mlp = DINOHead(in_dim, 1, hidden_dim, embed_dim, n_layers, use_bn=use_bn).mlp
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1)


class SOVE(StudentTeacher):
    """SOVE: non-parametric judges from a memory of CLS embeddings, plus non-parametric MIM."""

    name = "sove"
    Config = SOVEConfig
    log_keys = (BASELINE_KEY, "teacher_temp", "momentum", "loss_cls", "loss_patch", "cls_fill", "patch_fill",
                "judge_similarity", "cls_entropy")
    needs_two_windows = "with one, its memory holds one concept and the loss is 0"

    def __init__(self, config, modality, encoder_config, data):
        super().__init__(config, modality, encoder_config, data)
        if config.patch_weight > 0 and not getattr(self.encoder, "per_token_outputs", True):
            raise ConfigError(
                f"Pretext 'sove' reconstructs masked patch tokens (pretext.patch_weight="
                f"{config.patch_weight}), so it needs an encoder with per-token outputs; "
                f"{type(self.encoder).__name__} gives one vector per view (set pretext.patch_weight=0)."
            )
        self.mask_token = nn.Parameter(torch.zeros(encoder_config.dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        if config.patch_weight > 0:
            self.check_masking(config.mask_ratio, self.fewest_global_tokens())
        sizes = self.resolve_sizes(config, len(data), self.view_token_counts()[0])
        self.cls_memory_size, self.patch_memory_size, self.n_anchors, self.k, self.n_patch_anchors = sizes
        self.cls_memory = MemoryBank(self.cls_memory_size, config.head_bottleneck_dim)
        self.patch_memory = MemoryBank(self.patch_memory_size, config.head_bottleneck_dim)
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def build_head(self, dim: int) -> nn.Module:
        c = self.config
        # SOVE runs made before the student–teacher skeleton (relpos.student_teacher) drew the initial
        # weights of a head of this shape first and discarded it; drawing them again keeps every seed's
        # initial weights, and so its results, as they were.
        EmbeddingHead(dim, c.head_hidden_dim, c.head_bottleneck_dim, c.head_layers, c.head_bn)
        return EmbeddingHead(dim, c.head_hidden_dim, c.head_bottleneck_dim, c.head_layers, c.head_bn)

    @staticmethod
    def check_masking(mask_ratio: tuple[float, float], n_tokens: int) -> None:
        """Refuse a mask ratio range whose high end masks no token, or every token, of ``n_tokens``.

        A view's ratio is drawn in the range and masks ``round(r · N)`` tokens
        (:func:`relpos.masking.masked_token_count`): the high end must mask at least one token (else
        L_patch is 0 at every step) and leave at least one visible (else the student sees only mask
        tokens).
        """
        high = mask_ratio[1]
        n_masked = masked_token_count(high, n_tokens)
        if n_masked == 0:
            raise ConfigError(
                f"'pretext.mask_ratio' {list(mask_ratio)} masks at most round({high:g} · {n_tokens}) = 0 of a global "
                f"view's {n_tokens} tokens, so L_patch would be 0 at every step; raise its high end to at least "
                f"{0.5 / n_tokens:.3g} (one token)."
            )
        if n_masked >= n_tokens:
            raise ConfigError(
                f"'pretext.mask_ratio' {list(mask_ratio)} masks up to all {n_tokens} tokens of a global view, which "
                f"leaves the student nothing visible; keep its high end below {(n_tokens - 0.5) / n_tokens:.3g}."
            )

    @staticmethod
    def resolve_sizes(config: SOVEConfig, n_windows: int, tokens_per_view: int) -> tuple[int, int, int, int, int]:
        """``(|E_C|, |E_P|, K, k, K̂)``: the settings, or defaults scaled for small data.

        Unset, ``|E_C| = min(4096, windows)``, ``|E_P| = min(4096, windows × tokens_per_view)``,
        ``K = min(|E_C|, 8192, max(256, |E_C| / 8))`` and ``K̂ = min(|E_P|, 512, max(256, |E_P| / 16))``
        (the paper's ratios of bank to anchors, at least 256 concepts), ``k = min(8, |E_C| − 1)``.

        ``E_C`` gets one embedding per window per step, so more slots than windows would hold the
        same windows twice; ``E_P`` one patch per window per step, from ``tokens_per_view`` places.
        """
        patch_capacity = n_windows * tokens_per_view
        for key, capacity, what in (
            ("cls_memory_size", n_windows, f"{n_windows} windows, one CLS embedding each"),
            ("patch_memory_size", patch_capacity,
             f"{n_windows} windows of {tokens_per_view} patch tokens per global view, {patch_capacity} embeddings"),
        ):
            value = getattr(config, key)
            if value is not None and value > capacity:
                raise DataError(
                    f"'pretext.{key}' is {value}, larger than the data can fill ({what}); set it to at "
                    f"most {capacity}, or leave it unset for min({DEFAULTS[key]}, {capacity})."
                )
        cls_size = config.cls_memory_size or min(DEFAULTS["cls_memory_size"], n_windows)
        patch_size = config.patch_memory_size or min(DEFAULTS["patch_memory_size"], patch_capacity)
        def default_anchors(key: str, bank: int) -> int:
            return min(bank, DEFAULTS[key], max(MIN_CONCEPTS, bank // ANCHOR_RATIO[key]))

        n_anchors = config.n_anchors if config.n_anchors is not None else default_anchors("n_anchors", cls_size)
        k = config.k if config.k is not None else min(DEFAULTS["k"], cls_size - 1)
        n_patch_anchors = (config.n_patch_anchors if config.n_patch_anchors is not None
                           else default_anchors("n_patch_anchors", patch_size))
        SOVEConfig.check_sizes(cls_size, n_anchors, k, "cls_memory_size", "n_anchors", "k")
        SOVEConfig.check_sizes(patch_size, n_patch_anchors, config.patch_k,
                               "patch_memory_size", "n_patch_anchors", "patch_k")
        return cls_size, patch_size, n_anchors, k, n_patch_anchors

    # -- schedules and memories after the optimiser step -------------------------------------------
    def after_step(self, step: int) -> None:
        super().after_step(step)  # the EMA teacher
        if self._pending is not None:
            cls_rows, patch_rows = self._pending
            # one row per sample of this process's slice of the global batch, which splits evenly
            self.cls_memory.enqueue(cls_rows, equal_shares=True)
            self.patch_memory.enqueue(patch_rows, equal_shares=True)
            self._pending = None

    # -- loss ---------------------------------------------------------------------------------------
    def mask_global_views(self, views: Views, generator: torch.Generator) -> torch.Tensor:
        """iBOT's block masks of the student's global ``views``: ``(B, n_global, N)``, True = masked."""
        c = self.config
        masks = block_mask(views.batch_size * views.n_views, views.grid_shape, c.mask_ratio, generator,
                           c.min_block_tokens, views.crop.center.device)
        return masks.reshape(views.batch_size, views.n_views, views.n_tokens)

    def memory_for_step(self, bank: MemoryBank, own_rows: torch.Tensor) -> torch.Tensor:
        """The bank's filled part, or this step's own rows while the bank is still empty (step 1)."""
        return bank.filled() if bank.n_filled else own_rows.detach()

    def forward(self, batch, generator):
        c = self.config
        x = batch["x"]
        n_samples = x.shape[0]
        # the student reads its global views block-masked (L_patch), the teacher reads them whole
        mask = self.mask_global_views if c.patch_weight > 0 else None
        views, student, teacher, token_mask = self.run_views(batch, generator, mask, self.mask_token)
        n_tokens = views[0].n_tokens
        with torch.no_grad():
            teacher_embeddings = self.teacher_head(teacher)  # (B, n_global, 1 + N, d)
        teacher_cls, teacher_tokens = teacher_embeddings[:, :, 0], teacher_embeddings[:, :, 1:]
        temp = self.teacher_temp_now()
        logs = {"teacher_temp": temp, "momentum": self.momentum_now()}
        loss = x.new_zeros(())

        # E_C gets the first global view's CLS, E_P one random patch of it, per sample.
        cls_rows = teacher_cls[:, 0]
        pick = to_device(torch.randint(0, n_tokens, (n_samples,), generator=generator), x.device)
        patch_rows = teacher_tokens[torch.arange(n_samples, device=x.device), 0, pick]

        cls_memory = self.memory_for_step(self.cls_memory, cls_rows)
        n_cls = min(self.n_anchors, cls_memory.shape[0])
        if c.cls_weight > 0:
            judges = select_judges(cls_memory, n_cls, min(self.k, cls_memory.shape[0] - 1), generator, c.soft_labels)
            student_cls = self.head(torch.cat([s[:, :, 0] for s in student], dim=1))  # (B, V, d)
            teacher_probs = judge_probabilities(teacher_cls, judges, temp)  # (B, n_global, K)
            student_probs = judge_probabilities(student_cls, judges, c.student_temp)  # (B, V, K)
            ce = cross_entropy(teacher_probs[:, :, None], student_probs[:, None, :])  # (B, n_global, V)
            loss_cls = off_diagonal(ce).mean()
            loss = loss + c.cls_weight * loss_cls
            entropy = -(teacher_probs * teacher_probs.clamp_min(1e-12).log()).sum(-1).mean()
            logs.update(loss_cls=loss_cls.detach(), cls_entropy=entropy)
            if min(self.k, cls_memory.shape[0] - 1) > 0:  # without judges there is no similarity to show
                logs["judge_similarity"] = judges.similarity

        patch_memory = self.memory_for_step(self.patch_memory, patch_rows)
        n_patch = min(self.n_patch_anchors, patch_memory.shape[0])
        if c.patch_weight > 0:
            patch_judges = select_judges(patch_memory, n_patch, min(c.patch_k, patch_memory.shape[0] - 1),
                                         generator, c.soft_labels)
            student_tokens = self.head(student[0][:, :, 1:])  # (B, n_global, N, d), masked tokens inside
            teacher_probs = judge_probabilities(teacher_tokens, patch_judges, temp)
            student_probs = judge_probabilities(student_tokens, patch_judges, c.student_temp)
            ce = cross_entropy(teacher_probs, student_probs)  # (B, n_global, N): same view, same token
            weights = token_mask.to(ce.dtype)
            per_view = (ce * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)
            loss_patch = per_view.mean()
            loss = loss + c.patch_weight * loss_patch
            logs["loss_patch"] = loss_patch.detach()

        logs["cls_fill"] = self.cls_memory.fill_fraction
        logs["patch_fill"] = self.patch_memory.fill_fraction
        # A student that predicts every concept equally scores log K (log K̂) on each term.
        logs[BASELINE_KEY] = (c.cls_weight * math.log(n_cls) if c.cls_weight > 0 else 0.0) + (
            c.patch_weight * math.log(n_patch) if c.patch_weight > 0 else 0.0)
        self._pending = (cls_rows, patch_rows)
        return loss, logs


@hookimpl
def register_pretexts(register):
    register(SOVE)

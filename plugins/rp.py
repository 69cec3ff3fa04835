"""Relative positioning (RP): are two windows of one recording close in time or far apart?

The first temporal-context task of Banville et al., "Uncovering the structure of clinical EEG
signals with self-supervised learning" (J. Neural Eng. 2021, §2.3.1). Each sample is a pair of
windows ``(x, x')`` of one recording with onsets ``t`` and ``t'``:

* the label is **1** ("close") when ``|t − t'| ≤ τ_pos`` and **0** ("far") when ``|t − t'| ≥ τ_neg``
  (the paper's ``y ∈ {1, −1}``); a pair in between is ignored, as the paper rejects it. Labels are
  computed from the onsets in the batch (``batch["onsets"]``), never from how the pair was drawn;
* the pairs come from :class:`relpos.PairsBySeparation` (``tau_pos_s``, ``tau_neg_s``): an anchor
  uniform over the recording's windows, the other window uniform in its positive context with
  probability ``positive_fraction`` and in its negative context otherwise;
* both windows are embedded by the run's encoder, one vector each (``embed_inputs``: the ViT's CLS
  token, a CNN's pooled features), and the contrastive module is the element-wise absolute
  difference ``|h(x) − h(x')|`` read by one linear layer (braindecode's ``ContrastiveNet``), trained
  with the logistic loss (BCE with logits).

``loss_baseline`` is the BCE of the best constant prediction on the batch, the entropy of its label
frequency (ln 2 for balanced labels); ``accuracy`` is the share of pairs whose logit has the label's
sign. The module also holds :class:`RecordingPretext`, the base the three pretexts of the paper
(``rp``, ``ts``, ``cpc``) share: windows of one recording, embedded one vector each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from relpos import hookimpl
from relpos.config import check_fields, setting
from relpos.errors import ConfigError, DataError
from relpos.pretext import Pretext
from relpos.trivial_baseline import BASELINE_KEY

#: The largest separation a recipe may ask for, in seconds (a week: beyond any recording).
MAX_SEPARATION_S = 7 * 24 * 3600.0


def separation_setting(seconds: float):
    """A ``tau_pos_s`` / ``tau_neg_s`` field of RP and TS: seconds of the recording's time."""
    return setting(seconds, gt=0, le=MAX_SEPARATION_S)


def check_separation(config) -> None:
    """Raise :class:`relpos.errors.ConfigError` when ``tau_neg_s < tau_pos_s`` (no pair could be both)."""
    if config.tau_neg_s < config.tau_pos_s:
        raise ConfigError(
            f"'pretext.tau_neg_s' ({config.tau_neg_s:g} s) is below 'pretext.tau_pos_s' ({config.tau_pos_s:g} s), "
            f"so a pair could be both close and far; set tau_neg_s >= tau_pos_s."
        )


def label_entropy(labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The BCE of the best constant prediction of 0/1 ``labels`` (those of weight 1 when ``weights``, 0/1,
    are given): the entropy of their frequency, in nats, as a float64 0-d tensor on the labels' device
    (0 when there are none), computed there so that a step never waits for it."""
    if labels.numel() == 0:
        return torch.zeros((), dtype=torch.float64, device=labels.device)
    if weights is None:
        q = labels.float().mean().double()
    else:
        q = ((labels.float() * weights).sum() / weights.sum().clamp(min=1)).double()
    return torch.special.entr(q) + torch.special.entr(1 - q)  # entr(p) = -p log p, 0 at p = 0


class RecordingPretext(Pretext):
    """Base of pretexts whose sample is K windows of one recording, embedded one vector each.

    The batch is ``{"x": (B, K, C, *extent), "onsets": (B, K) seconds, ...}`` (the training loop
    gathers it through :attr:`window_request`); :meth:`embed_windows` turns ``x`` into ``(B, K, F)``.
    """

    modalities = ("eeg", "timeseries")  # the modalities whose windows can have a time in a recording
    needs_recording_time = True
    encoder_output = "vector"
    encoder_pos_embed = ("none", "sincos")
    # a ViT reading whole windows: without positions its CLS token would not know where anything is
    encoder_defaults = {"pos_embed": "sincos"}

    @classmethod
    def requests_windows(cls, config) -> bool:
        return True  # every recording pretext draws samples of several windows (its window_request)

    def embed_windows(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K, C, *extent)`` windows → ``(B, K, F)``, one vector per window."""
        batch, k = x.shape[:2]
        return self.encoder.embed_inputs(x.reshape(batch * k, *x.shape[2:])).reshape(batch, k, -1)

    def windows_of(self, batch: dict, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` and ``onsets`` of ``batch``, after checking they hold ``k`` windows per sample."""
        x, onsets = batch.get("x"), batch.get("onsets")
        if x is None or onsets is None or x.dim() < 4 or x.shape[1] != k or tuple(onsets.shape) != tuple(x.shape[:2]):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else None
            raise DataError(
                f"Pretext {self.name!r} needs batches of {k} windows of one recording each "
                f"({{'x': (B, {k}, C, ...), 'onsets': (B, {k})}}), got x of shape {got} and "
                f"{'no onsets' if onsets is None else f'onsets of shape {tuple(onsets.shape)}'}."
            )
        return x, onsets.to(torch.float64)


@dataclass
class RPConfig:
    """Options of relative positioning (Banville et al. 2021, §2.3.1)."""

    # a pair at most this far apart (seconds, onset to onset) is "close" (label 1)
    tau_pos_s: float = separation_setting(60.0)
    # a pair at least this far apart is "far" (label 0); pairs in between are not drawn
    tau_neg_s: float = separation_setting(900.0)
    # share of pairs drawn close (the rest drawn far)
    positive_fraction: float = setting(0.5, gt=0, lt=1)

    def validate(self) -> None:
        check_fields(self, "pretext")
        check_separation(self)


def rp_labels(onsets: torch.Tensor, tau_pos_s: float, tau_neg_s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels of pairs with onsets ``(B, 2)``: 1 when ``|Δ| ≤ tau_pos_s``, 0 when ``|Δ| ≥ tau_neg_s``,
    and a ``(B,)`` mask of the pairs that have one (those in between have none)."""
    gap = (onsets[:, 1] - onsets[:, 0]).abs()
    close, far = gap <= tau_pos_s, gap >= tau_neg_s
    return close.float(), close | far


class RelativePositioning(RecordingPretext):
    """Relative positioning: tell a close pair of windows of one recording from a far one."""

    name = "rp"
    Config = RPConfig
    log_keys = (BASELINE_KEY, "accuracy")

    def __init__(self, config, modality, encoder_config, data):
        from relpos.neighbours import PairsBySeparation

        super().__init__(config, modality, encoder_config, data)
        self.window_request = PairsBySeparation(config.tau_pos_s, config.tau_neg_s, config.positive_fraction)
        self.head = nn.Linear(int(self.encoder.feature_dim), 1)

    def forward(self, batch, generator):
        x, onsets = self.windows_of(batch, 2)
        labels, used = rp_labels(onsets, self.config.tau_pos_s, self.config.tau_neg_s)
        # Pairs in between (neither close nor far) weigh 0: weighted means rather than a boolean index,
        # whose count a GPU would have to report to the host. The loop's window_request draws only close
        # and far pairs; a hand-made batch with neither gives a NaN loss (0 / 0), which stops training.
        weights = used.float()
        h = self.embed_windows(x)
        logits = self.head((h[:, 0] - h[:, 1]).abs()).squeeze(-1).float()
        per_pair = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        loss = (per_pair * weights).sum() / weights.sum()
        with torch.no_grad():
            accuracy = (((logits > 0).float() == labels).float() * weights).sum() / weights.sum().clamp(min=1)
        return loss, {BASELINE_KEY: label_entropy(labels, weights), "accuracy": accuracy}

    def memory_hint(self, batch_size: int) -> str | None:
        return f"lower train.batch_size (now {batch_size}; the encoder reads 2 windows per sample)"


@hookimpl
def register_pretexts(register):
    register(RelativePositioning)

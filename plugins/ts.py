"""Temporal shuffling (TS): are three windows of one recording in temporal order?

The second temporal-context task of Banville et al. (J. Neural Eng. 2021, §2.3.2). Each sample is
a triplet of windows ``(x, x', x'')`` of one recording with onsets ``(t, t', t'')``, in that row order:

* two anchors ``x`` and ``x''`` are drawn in each other's positive context (``|t − t''| ≤ τ_pos``);
  the middle window ``x'`` is drawn, with probability ``positive_fraction``, strictly between them
  (an ordered triplet), otherwise in the anchor's negative context (``|t' − t| ≥ τ_neg``), which puts
  it outside the anchors (a shuffled triplet). The anchors come in either order, so mirror-image
  triplets (``t > t' > t''``) occur as the paper's augmentation asks (:class:`OrderedTriplets`);
* the label is **1** when the onsets are monotonic in row order (``t < t' < t''`` or
  ``t > t' > t''``) and **0** otherwise (the paper's ``y ∈ {1, −1}``), computed from the onsets in
  the batch, never from how the triplet was drawn;
* the three windows are embedded by the run's encoder, one vector each, and the contrastive module
  concatenates ``[|h(x) − h(x')|, |h(x') − h(x'')|]`` and reads it with one linear layer, trained with
  the logistic loss (BCE with logits).

``loss_baseline`` is the entropy of the batch's label frequency (ln 2 for balanced labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from relpos import hookimpl
from relpos.config import check_fields, setting
from relpos.trivial_baseline import BASELINE_KEY

from relpos_plugins.rp import RecordingPretext, check_separation, label_entropy, separation_setting


@dataclass
class TSConfig:
    """Options of temporal shuffling (Banville et al. 2021, §2.3.2)."""

    # the two anchors are at most this far apart (seconds, onset to onset)
    tau_pos_s: float = separation_setting(60.0)
    # a shuffled triplet's middle window is at least this far from the first anchor
    tau_neg_s: float = separation_setting(900.0)
    # share of triplets drawn in order (the rest drawn shuffled)
    positive_fraction: float = setting(0.5, gt=0, lt=1)

    def validate(self) -> None:
        check_fields(self, "pretext")
        check_separation(self)


def ts_labels(onsets: torch.Tensor) -> torch.Tensor:
    """``(B,)`` labels of triplets with onsets ``(B, 3)`` in row order: 1 when strictly monotonic."""
    first, second = onsets[:, 1] - onsets[:, 0], onsets[:, 2] - onsets[:, 1]
    return (((first > 0) & (second > 0)) | ((first < 0) & (second < 0))).float()


class TemporalShuffling(RecordingPretext):
    """Temporal shuffling: tell three windows of one recording in temporal order from shuffled ones."""

    name = "ts"
    Config = TSConfig
    log_keys = (BASELINE_KEY, "accuracy")

    def __init__(self, config, modality, encoder_config, data):
        from relpos_plugins.recording_requests import OrderedTriplets

        super().__init__(config, modality, encoder_config, data)
        self.window_request = OrderedTriplets(config.tau_pos_s, config.tau_neg_s, config.positive_fraction)
        self.head = nn.Linear(2 * int(self.encoder.feature_dim), 1)

    def forward(self, batch, generator):
        x, onsets = self.windows_of(batch, 3)
        labels = ts_labels(onsets)
        h = self.embed_windows(x)
        pair_features = torch.cat([(h[:, 0] - h[:, 1]).abs(), (h[:, 1] - h[:, 2]).abs()], dim=-1)
        logits = self.head(pair_features).squeeze(-1).float()
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        with torch.no_grad():
            accuracy = ((logits > 0).float() == labels).float().mean()
        return loss, {BASELINE_KEY: label_entropy(labels), "accuracy": accuracy}

    def memory_hint(self, batch_size: int) -> str | None:
        return f"lower train.batch_size (now {batch_size}; the encoder reads 3 windows per sample)"


@hookimpl
def register_pretexts(register):
    register(TemporalShuffling)

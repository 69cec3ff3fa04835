"""The window requests of temporal shuffling and CPC (Banville et al. 2021, §2.3.2 and §2.3.3).

A request draws rows of K window indices, each row from one recording (see :mod:`relpos.neighbours`
for the contract and the built-in requests). Relative positioning uses the built-in
:class:`relpos.PairsBySeparation`; the two here add what the core's requests do not:

* :class:`OrderedTriplets`: TS's triplets ``(x, x', x'')``, two anchors within ``τ_pos`` of each
  other and a middle window either strictly between them or ``τ_neg`` or more from the first anchor;
* :class:`SequenceWithNegatives`: CPC's ``N_c + N_p`` consecutive windows followed by ``N_b``
  windows of the same recording outside that sequence.

Both work on each recording's windows sorted by onset, draw every row at once (no Python loop per
row) and take all randomness from the generator they are given.
"""

from __future__ import annotations

import torch

from relpos.errors import DataError
from relpos.neighbours import RecordingIndex, uniform_integers


def _pick(candidates: torch.Tensor, n: int, generator: torch.Generator, request) -> torch.Tensor:
    """``n`` flat positions of the index, uniform over ``candidates`` (the usable ones)."""
    if len(candidates) == 0:
        raise DataError(f"No recording is long enough for {request.describe()}.")
    return candidates[uniform_integers(torch.full((n,), len(candidates), dtype=torch.long), generator)]


class OrderedTriplets:
    """Temporal shuffling's triplets: rows ``(anchor, middle, other anchor)`` of one recording.

    The anchor is uniform over the windows that can start both kinds of triplet; the other anchor is
    uniform among the windows within ``tau_pos_s`` of it (onset to onset) that leave at least one
    window strictly between them. With probability ``positive_fraction`` the middle window is
    uniform among the windows strictly between the anchors (an ordered triplet), otherwise uniform
    among the windows ``tau_neg_s`` or more from the anchor (a shuffled one).

    Parameters
    ----------
    tau_pos_s, tau_neg_s : float
        Seconds; ``tau_neg_s >= tau_pos_s``.
    positive_fraction : float
        Share of ordered triplets, in (0, 1).
    """

    size = 3

    def __init__(self, tau_pos_s: float, tau_neg_s: float, positive_fraction: float = 0.5):
        if not tau_neg_s >= tau_pos_s:
            raise ValueError(
                f"tau_neg_s ({tau_neg_s:g} s) must be at least tau_pos_s ({tau_pos_s:g} s), so that no "
                f"triplet is drawn both ordered and shuffled."
            )
        self.tau_pos_s, self.tau_neg_s = float(tau_pos_s), float(tau_neg_s)
        self.positive_fraction = float(positive_fraction)

    def describe(self) -> str:
        return (
            f"triplets of one recording: two anchors at most {self.tau_pos_s:g} s apart, the middle window "
            f"between them ({self.positive_fraction:.0%}) or at least {self.tau_neg_s:g} s from the first anchor"
        )

    def _candidates(self, index: RecordingIndex) -> dict[str, torch.Tensor]:
        key = ("OrderedTriplets", self.tau_pos_s, self.tau_neg_s)
        return index.memo(key, lambda: self._compute_candidates(index))

    def _compute_candidates(self, index: RecordingIndex) -> dict[str, torch.Tensor]:
        position = torch.arange(len(index))
        partner_low = index.search(-self.tau_pos_s, "left")
        partner_high = index.search(self.tau_pos_s, "right")
        before = index.search(-self.tau_neg_s, "right")  # far before: [start, before)
        after = index.search(self.tau_neg_s, "left")  # far after: [after, start + count)
        c = {
            # partners at most tau_pos away with a window strictly between: [low, p - 2] and [p + 2, high)
            "partner_low": partner_low,
            "n_left": (position - 1 - partner_low).clamp(min=0),
            "n_right": (partner_high - position - 2).clamp(min=0),
            "after": after, "n_before": before - index.start, "n_after": index.start + index.count - after,
        }
        c["usable"] = ((c["n_left"] + c["n_right"]) > 0) & ((c["n_before"] + c["n_after"]) > 0)
        c["anchors"] = c["usable"].nonzero().flatten()
        return c

    def usable(self, index: RecordingIndex) -> list[str]:
        return index.names_of(self._candidates(index)["usable"])

    def draw(self, index: RecordingIndex, n: int, generator: torch.Generator) -> torch.Tensor:
        c = self._candidates(index)
        anchor = _pick(c["anchors"], n, generator, self)
        n_left = c["n_left"][anchor]
        r = uniform_integers(n_left + c["n_right"][anchor], generator)
        partner = torch.where(r < n_left, c["partner_low"][anchor] + r, anchor + 2 + (r - n_left))
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device).cpu()
        ordered = u < self.positive_fraction
        between = torch.minimum(anchor, partner) + 1 + uniform_integers((anchor - partner).abs() - 1, generator)
        n_before = c["n_before"][anchor]
        r = uniform_integers(n_before + c["n_after"][anchor], generator)
        far = torch.where(r < n_before, index.start[anchor] + r, c["after"][anchor] + (r - n_before))
        middle = torch.where(ordered, between, far)
        return index.flat_windows[torch.stack([anchor, middle, partner], dim=1)]


class SequenceWithNegatives:
    """CPC's rows: ``length`` consecutive windows of a recording (in onset order, the start uniform
    over every possible one), then ``n_negatives`` windows drawn uniformly, with replacement, among
    that recording's windows outside the sequence.

    Parameters
    ----------
    length : int
        ``N_c + N_p``, at least 2.
    n_negatives : int
        ``N_b``, at least 1.
    """

    def __init__(self, length: int, n_negatives: int):
        if length < 2 or n_negatives < 1:
            raise ValueError(f"A sequence needs length >= 2 and n_negatives >= 1, got {length} and {n_negatives}.")
        self.length, self.n_negatives = int(length), int(n_negatives)
        self.size = self.length + self.n_negatives

    def describe(self) -> str:
        return (
            f"{self.length} consecutive windows of one recording, then {self.n_negatives} other windows of it "
            f"drawn at random"
        )

    def _starts(self, index: RecordingIndex) -> torch.Tensor:
        """Whether each flat position can start a row: the sequence inside its recording and at least
        one window of the recording outside it."""
        def compute():
            return (torch.arange(len(index)) + self.length <= index.start + index.count) & (index.count > self.length)

        return index.memo(("SequenceWithNegatives", self.length), compute)

    def usable(self, index: RecordingIndex) -> list[str]:
        return index.names_of(self._starts(index))

    def draw(self, index: RecordingIndex, n: int, generator: torch.Generator) -> torch.Tensor:
        starts = index.memo(("SequenceWithNegatives", self.length, "positions"),
                            lambda: self._starts(index).nonzero().flatten())
        first = _pick(starts, n, generator, self)
        sequence = first.unsqueeze(1) + torch.arange(self.length)
        outside = (index.count[first] - self.length).unsqueeze(1).expand(-1, self.n_negatives).contiguous()
        r = uniform_integers(outside, generator)
        before_sequence = (first - index.start[first]).unsqueeze(1)
        negatives = index.start[first].unsqueeze(1) + torch.where(r < before_sequence, r, r + self.length)
        return index.flat_windows[torch.cat([sequence, negatives], dim=1)]

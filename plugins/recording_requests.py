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

from dataclasses import dataclass

import torch


@dataclass
class _Flat:
    """Every recording's windows sorted by onset, end to end: ``windows[p]`` is the window index at
    flat position ``p``, ``onsets[p]`` its onset, ``start[p]`` / ``count[p]`` its recording's first
    flat position and number of windows, ``recording[p]`` its recording's number."""

    names: list[str]
    windows: torch.Tensor
    onsets: torch.Tensor
    start: torch.Tensor
    count: torch.Tensor
    recording: torch.Tensor


def _flatten(index) -> _Flat:
    names, windows, onsets, starts, counts, recordings = [], [], [], [], [], []
    offset = 0
    for number, (name, ids, times) in enumerate(zip(index.names, index.windows, index.onsets)):
        n = len(ids)
        names.append(str(name))
        windows.append(torch.as_tensor(ids, dtype=torch.long))
        onsets.append(torch.as_tensor(times, dtype=torch.float64))
        starts.append(torch.full((n,), offset, dtype=torch.long))
        counts.append(torch.full((n,), n, dtype=torch.long))
        recordings.append(torch.full((n,), number, dtype=torch.long))
        offset += n
    cat = lambda parts, dtype: torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)  # noqa: E731
    return _Flat(names, cat(windows, torch.long), cat(onsets, torch.float64), cat(starts, torch.long),
                 cat(counts, torch.long), cat(recordings, torch.long))


def _uniform_below(counts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One integer uniform in ``[0, counts[i])`` per entry (``counts`` ≥ 1)."""
    u = torch.rand(counts.shape, generator=generator, dtype=torch.float64, device=generator.device).cpu()
    return torch.minimum((u * counts).long(), counts - 1)


def _usable_names(flat: _Flat, usable: torch.Tensor) -> list[str]:
    return [flat.names[int(r)] for r in torch.unique(flat.recording[usable])]


def _pick_rows(usable: torch.Tensor, n: int, generator: torch.Generator, what: str) -> torch.Tensor:
    """``n`` flat positions uniform over the ``usable`` ones."""
    candidates = usable.nonzero().flatten()
    if len(candidates) == 0:
        raise ValueError(f"No recording has {what}.")
    return candidates[_uniform_below(torch.full((n,), len(candidates), dtype=torch.long), generator)]


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
        self._cache: tuple[int, tuple] | None = None

    def describe(self) -> str:
        return (
            f"triplets of one recording: two anchors at most {self.tau_pos_s:g} s apart, the middle window "
            f"between them ({self.positive_fraction:.0%}) or at least {self.tau_neg_s:g} s from the first anchor"
        )

    def _candidates(self, index):
        if self._cache is not None and self._cache[0] == id(index):
            return self._cache[1]
        flat = _flatten(index)
        n = len(flat.windows)
        partner_lo = torch.zeros(n, dtype=torch.long)
        partner_hi = torch.zeros(n, dtype=torch.long)
        far_before = torch.zeros(n, dtype=torch.long)
        far_after = torch.zeros(n, dtype=torch.long)
        for number in range(len(flat.names)):  # per recording, vectorised over its windows
            at = (flat.recording == number).nonzero().flatten()
            if len(at) == 0:
                continue
            o, offset = flat.onsets[at], int(at[0])
            partner_lo[at] = offset + torch.searchsorted(o, o - self.tau_pos_s, side="left")
            partner_hi[at] = offset + torch.searchsorted(o, o + self.tau_pos_s, side="right")
            far_before[at] = offset + torch.searchsorted(o, o - self.tau_neg_s, side="right")
            far_after[at] = offset + torch.searchsorted(o, o + self.tau_neg_s, side="left")
        position = torch.arange(n)
        # partners j with |j − i| >= 2 (a window strictly between) within tau_pos: [lo, i − 2] and [i + 2, hi)
        left = (position - 1 - partner_lo).clamp(min=0)
        right = (partner_hi - position - 2).clamp(min=0)
        # far windows: [start, far_before) and [far_after, start + count)
        n_before = far_before - flat.start
        n_after = flat.start + flat.count - far_after
        usable = ((left + right) > 0) & ((n_before + n_after) > 0)
        result = (flat, partner_lo, left, right, far_after, n_before, n_after, usable)
        self._cache = (id(index), result)
        return result

    def usable(self, index) -> list[str]:
        flat, *_, usable = self._candidates(index)
        return _usable_names(flat, usable)

    def draw(self, index, n: int, generator: torch.Generator) -> torch.Tensor:
        flat, partner_lo, left, right, far_after, n_before, n_after, usable = self._candidates(index)
        what = (f"a window with another at most {self.tau_pos_s:g} s away with a window between them, and "
                f"one at least {self.tau_neg_s:g} s away")
        anchor = _pick_rows(usable, n, generator, what)
        r = _uniform_below(left[anchor] + right[anchor], generator)
        partner = torch.where(r < left[anchor], partner_lo[anchor] + r, anchor + 2 + (r - left[anchor]))
        ordered = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device).cpu() < self.positive_fraction
        between = torch.minimum(anchor, partner) + 1 + _uniform_below((anchor - partner).abs() - 1, generator)
        r = _uniform_below(n_before[anchor] + n_after[anchor], generator)
        far = torch.where(r < n_before[anchor], flat.start[anchor] + r, far_after[anchor] + (r - n_before[anchor]))
        middle = torch.where(ordered, between, far)
        return flat.windows[torch.stack([anchor, middle, partner], dim=1)]


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

    def _starts(self, index) -> tuple[_Flat, torch.Tensor]:
        flat = _flatten(index)
        position = torch.arange(len(flat.windows))
        # a start needs the sequence inside its recording and at least one window outside it
        fits = position + self.length <= flat.start + flat.count
        return flat, fits & (flat.count > self.length)

    def usable(self, index) -> list[str]:
        flat, starts = self._starts(index)
        return _usable_names(flat, starts)

    def draw(self, index, n: int, generator: torch.Generator) -> torch.Tensor:
        flat, starts = self._starts(index)
        first = _pick_rows(starts, n, generator, f"more than {self.length} windows")
        sequence = first.unsqueeze(1) + torch.arange(self.length)
        outside = (flat.count[first] - self.length).unsqueeze(1).expand(-1, self.n_negatives)
        r = _uniform_below(outside.contiguous(), generator)
        offset_in_recording = (first - flat.start[first]).unsqueeze(1)
        negatives = flat.start[first].unsqueeze(1) + torch.where(r < offset_in_recording, r, r + self.length)
        return flat.windows[torch.cat([sequence, negatives], dim=1)]

"""PW-Self patch matching (§3.4, Eqs. 1–6) on token boxes, checked by hand."""

from __future__ import annotations

import pytest
import torch

from relpos.geometry import Boxes
from relpos.views import Views, match_tokens, match_tokens_loop, sample_views

pytestmark = pytest.mark.usefixtures("one_thread")


def one_view(start, end, resolution, patch, extent=(300, 300), flip=None):
    start = torch.tensor([[start]], dtype=torch.float32)
    end = torch.tensor([[end]], dtype=torch.float32)
    flip = torch.tensor([[flip or [False] * len(resolution)]])
    return Views(Boxes.from_corners(start, end), flip, tuple(resolution), tuple(patch), tuple(extent[: len(resolution)]))


# The paper's Figure 2: a 224² global crop and a 96² local crop with 16-px patches (14×14 and 6×6
# tokens). Global crop rows/cols [100, 240) → cells of 10 px; local crop rows [60, 140), cols
# [70, 160) → cells of 40/3 × 15 px. The intersection [100, 140) × [100, 160) holds global rows 0–3
# and cols 0–5 (patches 1…48, 1-based) and local rows 3–5 and cols 2–5 (patches 21…36).
# Rows: interval (4 − 1) / (3 − 1) = 1.5 → global rows 0, 1, 3; columns: (6 − 1) / (4 − 1) = 5/3 →
# global cols 0, 1, 3, 5: the paper's "1st, 2nd and 4th rows, and 1st, 2nd, 4th and 6th columns".
def figure2(global_flip=None, local_flip=None):
    g = one_view((100, 100), (240, 240), (224, 224), (16, 16), flip=global_flip)
    loc = one_view((60, 70), (140, 160), (96, 96), (16, 16), flip=local_flip)
    return g, loc


FIG2_ROWS = [(0, 3), (1, 4), (3, 5)]  # (global row, local row)
FIG2_COLS = [(0, 2), (1, 3), (3, 4), (5, 5)]  # (global col, local col)


def fig2_pairs(g_col=lambda c: c, l_col=lambda c: c):
    return [(gr * 14 + g_col(gc), lr * 6 + l_col(lc)) for gr, lr in FIG2_ROWS for gc, lc in FIG2_COLS]


def test_paper_figure_2():
    g, loc = figure2()
    pairs = match_tokens(g, loc).pairs(0)
    assert pairs == [
        (0, 20), (1, 21), (3, 22), (5, 23),
        (14, 26), (15, 27), (17, 28), (19, 29),
        (42, 32), (43, 33), (45, 34), (47, 35),
    ]
    # 1-based: local patches 21…36, global patches among 1…48, as in the paper
    assert min(b for _, b in pairs) + 1 == 21 and max(b for _, b in pairs) + 1 == 36
    assert max(a for a, _ in pairs) + 1 == 48


def test_larger_grid_on_either_side():
    g, loc = figure2()
    swapped = match_tokens(loc, g).pairs(0)
    assert swapped == [(b, a) for a, b in fig2_pairs()]


def test_global_view_flipped():
    g, loc = figure2(global_flip=[False, True])
    # Eq. 6: a flipped global view numbers its columns from the right: column c is token 13 − c
    assert match_tokens(g, loc).pairs(0) == fig2_pairs(g_col=lambda c: 13 - c)


def test_local_view_flipped():
    g, loc = figure2(local_flip=[False, True])
    assert match_tokens(g, loc).pairs(0) == fig2_pairs(l_col=lambda c: 5 - c)


def test_both_flipped_on_rows_and_columns():
    g, loc = figure2(global_flip=[True, True], local_flip=[True, False])
    expected = [((13 - gr) * 14 + (13 - gc), (5 - lr) * 6 + lc) for gr, lr in FIG2_ROWS for gc, lc in FIG2_COLS]
    assert match_tokens(g, loc).pairs(0) == expected


def test_one_view_inside_the_other():
    # global [0, 32)² at 32² with 4-px patches: 8×8 cells of 4 px; local rows [8, 16), cols [12, 20)
    # at 16² with 4-px patches: 4×4 cells of 2 px, all inside. Global rows 2, 3 and cols 3, 4 lie in
    # it; the local has more (4), so it is read at k · (4 − 1) / (2 − 1) = 0, 3 on both axes.
    g = one_view((0, 0), (32, 32), (32, 32), (4, 4))
    loc = one_view((8, 12), (16, 20), (16, 16), (4, 4))
    assert match_tokens(g, loc).pairs(0) == [(19, 0), (20, 3), (27, 12), (28, 15)]


def test_no_overlap_matches_nothing():
    a = one_view((0, 0), (10, 10), (10, 10), (5, 5))
    b = one_view((20, 20), (30, 30), (10, 10), (5, 5))
    match = match_tokens(a, b)
    assert match.pairs(0) == [] and match.count.tolist() == [0]


def test_overlap_of_half_a_token_or_less_matches_nothing():
    # a's last column [5, 10) overlaps b's crop [7.5, 20) by 2.5 = exactly half: not "more than half"
    a = one_view((0, 0), (10, 10), (10, 10), (5, 5))
    b = one_view((0, 7.5), (10, 20), (10, 10), (5, 5))
    assert match_tokens(a, b).pairs(0) == []


def test_one_axis_partial_overlap():
    # a: [0, 100) at its own length, 10-sample patches → cells of 10; b: [52, 88) resampled to 60,
    # patches of 10 → 6 cells of 6. Intersection [52, 88): a's cells 5–8 (8 of 10 inside each end),
    # all 6 of b's. b is read at k · (6 − 1) / (4 − 1) = 0, 1, 3, 5.
    a = one_view((0,), (100,), (100,), (10,))
    b = one_view((52,), (88,), (60,), (10,))
    assert match_tokens(a, b).pairs(0) == [(5, 0), (6, 1), (7, 3), (8, 5)]
    flipped = one_view((0,), (100,), (100,), (10,), flip=[True])
    assert match_tokens(flipped, b).pairs(0) == [(4, 0), (3, 1), (2, 3), (1, 5)]


def test_a_single_cell_matches_the_first_of_the_longer_side():
    # b's one cell [40, 60) lies in a's cells 4 and 5; i = 0 reads the first (floor(0 · interval))
    a = one_view((0,), (100,), (100,), (10,))
    b = one_view((40,), (60,), (10,), (10,))
    assert match_tokens(a, b).pairs(0) == [(4, 0)]


@pytest.mark.parametrize(
    "extent, patch, res_a, res_b, flippable",
    [
        ((32, 32), (4, 4), (32, 32), (12, 12), (False, True)),
        ((32, 48), (4, 4), (16, 24), (32, 32), (True, True)),
        ((300,), (25,), None, None, (True,)),
        ((300,), (10,), (120,), (40,), (False,)),
        ((16, 16, 16), (4, 4, 4), (16, 16, 16), (8, 8, 8), (False, False, True)),  # a 3-axis volume
    ],
)
def test_vectorised_batch_equals_per_sample_reference(extent, patch, res_a, res_b, flippable):
    gen = torch.Generator().manual_seed(7)
    a = sample_views(48, 1, extent, patch, (0.3, 1.0), res_a, gen, flippable=flippable)
    b = sample_views(48, 1, extent, patch, (0.05, 0.5), res_b, gen, flippable=flippable)
    match = match_tokens(a, b)
    reference = match_tokens_loop(a, b)
    assert [match.pairs(s) for s in range(48)] == reference
    assert match.count.max() > 0  # the comparison is not between empty matchings
    assert match.index_a.shape == match.mask.shape == (48, match.index_a.shape[1])

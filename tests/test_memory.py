"""The core FIFO memory bank and block masking: order, wrap-around, checkpoints, block shapes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from scipy import ndimage

from relpos.errors import ConfigError
from relpos.masking import block_mask, masked_token_count
from relpos.memory import MemoryBank

pytestmark = pytest.mark.usefixtures("one_thread")


def rows(*values):
    return torch.tensor([[float(v)] for v in values])


# -- memory bank --------------------------------------------------------------------------------------
def test_bank_fills_in_order_and_shows_only_its_filled_part():
    bank = MemoryBank(size=5, dim=1)
    assert bank.filled().shape == (0, 1) and bank.fill_fraction == 0.0
    bank.enqueue(rows(1, 2))
    assert bank.filled().flatten().tolist() == [1.0, 2.0]  # never the zeros it starts with
    assert bank.fill_fraction == pytest.approx(0.4) and int(bank.pointer) == 2


def test_bank_wraps_around_replacing_the_oldest_first():
    bank = MemoryBank(size=4, dim=1)
    bank.enqueue(rows(1, 2, 3))
    bank.enqueue(rows(4, 5, 6))  # 5 and 6 wrap around over 1 and 2, the oldest
    assert bank.embeddings.flatten().tolist() == [5.0, 6.0, 3.0, 4.0]
    assert int(bank.pointer) == 2 and bank.n_filled == 4 and bank.fill_fraction == 1.0
    bank.enqueue(rows(7))  # now 3 is the oldest
    assert bank.embeddings.flatten().tolist() == [5.0, 6.0, 7.0, 4.0]


def test_more_rows_than_slots_keep_the_newest_where_they_would_land():
    bank = MemoryBank(size=3, dim=1)
    bank.enqueue(rows(1))
    bank.enqueue(rows(2, 3, 4, 5, 6))  # slots 1,2,0,1,2: 2,3 overwritten by 5,6 in the same call
    assert bank.embeddings.flatten().tolist() == [4.0, 5.0, 6.0]
    assert int(bank.pointer) == 0 and bank.n_filled == 3


def test_bank_is_in_the_state_dict_and_a_reloaded_bank_continues_exactly():
    bank = MemoryBank(size=4, dim=2)
    bank.enqueue(torch.arange(6.0).reshape(3, 2))
    state = bank.state_dict()
    assert set(state) == {"embeddings", "pointer", "count"}
    buffer = io.BytesIO()
    torch.save(state, buffer)  # through a file, as a checkpoint goes (weights_only loading)
    buffer.seek(0)
    resumed = MemoryBank(size=4, dim=2)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for b in (bank, resumed):
        b.enqueue(torch.tensor([[10.0, 11.0], [12.0, 13.0]]))
    assert torch.equal(bank.embeddings, resumed.embeddings)
    assert resumed.embeddings.tolist() == [[12.0, 13.0], [2.0, 3.0], [4.0, 5.0], [10.0, 11.0]]
    assert int(resumed.pointer) == 1 and resumed.n_filled == 4


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_bank_sizes_that_are_not_positive_are_one_sentence(size):
    with pytest.raises(ConfigError, match=r"memory bank's size must be a positive whole number, got"):
        MemoryBank(size=size, dim=4)


def test_enqueue_of_rows_of_the_wrong_width_is_refused():
    with pytest.raises(ValueError, match=r"needs \(n, 3\) rows, got shape \(2, 4\)"):
        MemoryBank(size=4, dim=3).enqueue(torch.zeros(2, 4))


# -- block masking ------------------------------------------------------------------------------------
def test_masked_count_rounds_halves_up():
    assert masked_token_count(0.3, 64) == 19  # 19.2
    assert masked_token_count(0.25, 10) == 3  # 2.5 rounds up
    assert masked_token_count(0.0, 10) == 0


@pytest.mark.parametrize("grid", [(8, 8), (30,), (4, 6, 5)])
def test_masks_hide_a_ratio_from_the_requested_range(grid):
    n = int(np.prod(grid))
    masks = block_mask(64, grid, (0.1, 0.5), torch.Generator().manual_seed(0))
    assert masks.shape == (64, n) and masks.dtype == torch.bool
    counts = masks.sum(1)
    # exactly round(r · N) for some r in [0.1, 0.5]
    assert counts.min() >= masked_token_count(0.1, n) and counts.max() <= masked_token_count(0.5, n)
    assert counts.float().std() > 0  # the ratio is drawn per mask


def test_a_fixed_ratio_masks_exactly_that_many_tokens():
    masks = block_mask(16, (8, 8), (0.3, 0.3), torch.Generator().manual_seed(1))
    assert (masks.sum(1) == 19).all()


def test_1d_blocks_are_runs_of_consecutive_time_tokens():
    masks = block_mask(32, (30,), (0.3, 0.3), torch.Generator().manual_seed(2), min_block_tokens=4).numpy()
    runs = [ndimage.label(m)[0].max() for m in masks]
    # 9 masked tokens in runs of at least 4 (bar the last, smaller fill-in): at most 3 runs, far from
    # the ~7 runs that 9 tokens scattered at random over 30 make
    assert max(runs) <= 3 and np.mean(runs) < 2.5


def test_2d_blocks_are_rectangles_of_neighbouring_tokens():
    masks = block_mask(32, (8, 8), (0.3, 0.3), torch.Generator().manual_seed(3), min_block_tokens=4).numpy()
    n_regions = [ndimage.label(m.reshape(8, 8))[0].max() for m in masks]
    assert np.mean(n_regions) < 4  # 19 tokens scattered at random make ~12 regions
    # with big blocks, most of a mask is one rectangle of neighbouring tokens (the first block);
    # smaller blocks only finish what rounding the block's sides left over
    single = block_mask(16, (8, 8), (0.25, 0.25), torch.Generator().manual_seed(4), min_block_tokens=16).numpy()
    for m in single.reshape(-1, 8, 8):
        labels, _ = ndimage.label(m)
        largest = np.bincount(labels[labels > 0]).max()
        assert m.sum() == 16 and largest >= 9


def test_masks_come_from_the_generator_alone():
    a = block_mask(4, (8, 8), (0.1, 0.5), torch.Generator().manual_seed(5))
    b = block_mask(4, (8, 8), (0.1, 0.5), torch.Generator().manual_seed(5))
    c = block_mask(4, (8, 8), (0.1, 0.5), torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("ratio", [(0.2, 1.0), (-0.1, 0.3), (0.5, 0.2)])
def test_mask_ratios_outside_0_1_are_one_sentence(ratio):
    with pytest.raises(ConfigError, match=r"0 <= low <= high < 1.*got"):
        block_mask(2, (4, 4), ratio)

"""Tests for mlinguality/selectivity/ranks.py against scipy."""

from __future__ import annotations

import torch
from scipy.stats import rankdata, spearmanr

from mlinguality.selectivity.ranks import midranks, ranks_last, spearman_last
from tests.utils import assert_close


def test_ranks_last_matches_scipy_with_ties():
    values = torch.randint(0, 4, (3, 5, 9)).double()
    assert_close(ranks_last(values), rankdata(values.numpy(), axis=-1), kind="exact")


def test_midranks_ranks_along_the_first_dim():
    values = torch.randint(0, 3, (7, 4)).double()
    assert_close(midranks(values), rankdata(values.numpy(), axis=0), kind="exact")


def test_spearman_matches_scipy_with_ties():
    a, b = torch.randint(0, 5, (2, 40)).double()
    expected = spearmanr(a.numpy(), b.numpy()).statistic
    assert_close(spearman_last(a, b), torch.tensor(expected, dtype=torch.float64), kind="exact")

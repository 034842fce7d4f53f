"""Tests for mlinguality.selectivity.u_shape: the U statistic, its p-value and intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlinguality.errors import MlingualityError
from mlinguality.selectivity.resampling import PAIR_METRICS, ScoreDraws, pair_score_draws
from mlinguality.selectivity.u_shape import (
    u_shape_layers,
    u_shape_statistic,
    u_shape_statistics,
    u_shape_test,
)
from tests.synthetic import random_pair
from tests.utils import assert_close


def test_planted_edge_signal_is_recovered_with_a_u_shape():
    n_layers, d_mlp = 8, 64
    shift = torch.zeros(n_layers, d_mlp)
    # half of the first and last layers' neurons: a quarter up in B, a quarter down
    shift[[0, n_layers - 1], :16] = 3.0
    shift[[0, n_layers - 1], 16:32] = -3.0
    pair = random_pair(n_examples=40, n_layers=n_layers, d_mlp=d_mlp, seed=7, shift=shift)
    # (with d_mlp=32, k=8 some null top-k sets of all middle layers coincide, the null U is
    # infinite and the U test loses power: a property of the ratio, not of the planted signal)
    draws = pair_score_draws(pair, PAIR_METRICS, n_permutations=199, n_bootstrap=50, k=16, seed=0)
    for m in ("mean_diff", "cohens_d", "auroc", "topk", "rank_corr"):
        p = draws[m].p_values()
        assert p[0] < 0.01 and p[-1] < 0.01, (m, p)
        assert (p[1:-1] > 0.01).sum() >= 4, (m, p)  # the middle is mostly null
        result = u_shape_test(draws[m])
        assert result.u > 1 and result.p_value < 0.01, (m, result)
        assert result.ci_low > 1, (m, result)


def test_null_u_shape_rejects_at_most_the_nominal_rate():
    rejections = {"cohens_d": 0, "mean_diff": 0, "auroc": 0}
    p_values = []
    n_datasets = 100
    for seed in range(n_datasets):
        pair = random_pair(n_examples=12, n_layers=8, d_mlp=16, seed=100 + seed)
        draws = pair_score_draws(
            pair, list(rejections), n_permutations=99, n_bootstrap=0, seed=seed
        )
        for m in rejections:
            result = u_shape_test(draws[m])
            rejections[m] += result.p_value <= 0.05
            p_values.append(result.p_value)
    for m, count in rejections.items():
        assert 0 < count / n_datasets <= 0.12, (m, count)
    assert 0.35 < np.mean(p_values) < 0.65  # roughly uniform p-values


def test_u_shape_statistic_hand_values():
    # edges: layers 0, 1, 6, 7 -> (3 + 1 + 1 + 3) / 4 = 2; middle: 1
    assert u_shape_statistic(torch.tensor([3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3.0])) == 2.0
    scores = torch.tensor([4.0, 2.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0])
    # edges: layers 0, 1, 6, 7 -> (4 + 2 + 2 + 2) / 4 = 2.5; middle: 1
    assert u_shape_statistic(scores) == pytest.approx(2.5)
    inverted = torch.tensor([1.0, 2.0, 2.0, 1.0])
    assert u_shape_statistic(inverted) == pytest.approx(0.5)
    batch = u_shape_statistics(torch.stack([scores, scores * 2, torch.ones(8)]))
    assert_close(batch, torch.tensor([2.5, 2.5, 1.0]), kind="exact")


def test_u_shape_layers_for_gemma_depth():
    edges, middle = u_shape_layers(18)
    assert edges == [0, 1, 2, 3, 14, 15, 16, 17]
    assert middle == list(range(4, 14))
    assert u_shape_layers(3) == ([0, 2], [1])
    with pytest.raises(MlingualityError, match="at least 3 layers"):
        u_shape_layers(2)


def test_u_shape_test_without_draws_gives_nan():
    result = u_shape_test(ScoreDraws(observed=torch.tensor([2.0, 1.0, 2.0])))
    assert result.u == 2.0 and np.isnan(result.p_value) and np.isnan(result.ci_low)


def test_u_shape_test_splits_edges_and_removes_the_null_floor():
    observed = torch.tensor([5.0, 3.0, 2.0, 2.0, 2.0, 2.0, 4.0, 6.0], dtype=torch.float64)
    floor = torch.tensor([2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0], dtype=torch.float64)
    draws = ScoreDraws(
        observed=observed,
        permuted=floor.expand(3, -1).clone(),
        bootstrap=torch.stack([observed, observed * 1.1, observed * 0.9]),
    )
    result = u_shape_test(draws)
    assert result.u == pytest.approx((5 + 3 + 4 + 6) / 4 / 2)
    assert result.u_first == pytest.approx(4 / 2) and result.u_last == pytest.approx(5 / 2)
    # excess: [3, 2, 1, 1, 1, 1, 3, 4] -> edges 3, middle 1
    assert result.u_excess == pytest.approx(3.0)
    assert result.excess_ci_low <= result.u_excess <= result.excess_ci_high
    assert result.p_value == pytest.approx(1 / 4)  # U above every null draw's U


def test_u_shape_statistic_hand_computation_on_eight_layers():
    # 8 layers: depths (i + 0.5) / 8 -> edges 0, 1, 6, 7; middle 2, 3, 4, 5
    scores = torch.tensor([0.9, 0.7, 0.2, 0.4, 0.3, 0.1, 0.4, 0.8], dtype=torch.float64)
    # edges (0.9 + 0.7 + 0.4 + 0.8) / 4 = 0.7 over middle (0.2 + 0.4 + 0.3 + 0.1) / 4 = 0.25
    assert u_shape_statistic(scores) == pytest.approx(2.8, rel=1e-12)
    result = u_shape_test(ScoreDraws(observed=scores))
    assert result.u == pytest.approx(2.8, rel=1e-12)
    assert result.u_first == pytest.approx(0.8 / 0.25, rel=1e-12)  # layers 0, 1
    assert result.u_last == pytest.approx(0.6 / 0.25, rel=1e-12)  # layers 6, 7
    assert (result.n_permutations, result.n_bootstrap) == (0, 0)
    # a zero middle: inf over non-zero edges, nan over zero edges
    assert u_shape_statistic(torch.tensor([1.0, 0.0, 0.0, 1.0])) == float("inf")
    assert np.isnan(u_shape_statistic(torch.zeros(4)))


def test_u_shape_test_matches_a_loop_over_the_draws():
    """p-value, null mean, bootstrap interval and excess interval, recomputed draw by draw."""
    generator = torch.Generator().manual_seed(3)
    observed = torch.tensor([3.0, 2.0, 1.0, 1.0, 1.2, 1.0, 2.5, 3.5], dtype=torch.float64)
    permuted = 1 + torch.rand(30, 8, generator=generator, dtype=torch.float64)
    permuted[4] = observed  # one null draw ties with the observed profile
    bootstrap = observed * (0.8 + 0.4 * torch.rand(40, 8, generator=generator, dtype=torch.float64))
    result = u_shape_test(ScoreDraws(observed, permuted, bootstrap), level=0.9)

    def u(x: torch.Tensor) -> float:
        edges = [x[i].item() for i in (0, 1, 6, 7)]
        middle = [x[i].item() for i in (2, 3, 4, 5)]
        return float(np.mean(edges) / np.mean(middle))

    u_obs = u(observed)
    null = [u(row) for row in permuted]
    assert result.u == pytest.approx(u_obs, rel=1e-12)
    assert result.p_value == pytest.approx((1 + sum(x >= u_obs for x in null)) / 31, rel=1e-12)
    assert result.p_value >= 2 / 31  # the tied draw counts
    assert result.null_u_mean == pytest.approx(np.mean(null), rel=1e-12)
    assert (result.n_permutations, result.n_bootstrap) == (30, 40)
    boot = [u(row) for row in bootstrap]
    bias = np.mean(boot) - u_obs
    low, high = np.quantile(boot, [0.05, 0.95]) - bias
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), rel=1e-9)
    null_mean = permuted.mean(0)
    u_excess = u(observed - null_mean)
    assert result.u_excess == pytest.approx(u_excess, rel=1e-12)
    boot_excess = [u(row - null_mean) for row in bootstrap]
    bias = np.mean(boot_excess) - u_excess
    low, high = np.quantile(boot_excess, [0.05, 0.95]) - bias
    assert (result.excess_ci_low, result.excess_ci_high) == pytest.approx((low, high), rel=1e-9)

"""Tests for mlinguality.selectivity.profile: the U-shape statistic and the per-layer profile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlinguality.errors import MlingualityError
from mlinguality.selectivity.profile import (
    PROFILE_METRICS,
    default_pairs,
    layer_profile,
    selectivity_profile,
    u_shape_layers,
    u_shape_statistic,
    u_shape_statistics,
    u_shape_test,
)
from mlinguality.selectivity.significance import (
    PAIR_METRICS,
    ScoreDraws,
    chance_iou,
    pair_score_draws,
)
from tests.synthetic import make_langs, random_pair
from tests.utils import assert_close

# --- the U-shape statistic ---------------------------------------------------------------------


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


# --- the profile -------------------------------------------------------------------------------


def test_profile_recovers_planted_edge_signal():
    n_layers, d_mlp = 8, 64
    shift = torch.zeros(n_layers, d_mlp)
    shift[[0, n_layers - 1], :16] = 2.0
    shift[[0, n_layers - 1], 16:32] = -2.0
    stats = make_langs(
        ["en", "fr", "ru"],
        n_examples=30,
        n_tokens=3,
        n_layers=n_layers,
        d_mlp=d_mlp,
        shift={"ru": shift},
        seed=13,
    )
    profile = selectivity_profile(stats, n_permutations=199, n_bootstrap=30, k=16, seed=0)
    rows = profile.layers
    assert set(rows.metric) == set(PROFILE_METRICS)
    assert set(rows[rows.metric == "cohens_d"].pair) == {"en-fr", "en-ru"}
    d_ru = rows[(rows.metric == "cohens_d") & (rows.pair == "en-ru")].set_index("layer")
    assert d_ru.loc[0, "p_value"] < 0.01 and d_ru.loc[n_layers - 1, "p_value"] < 0.01
    assert (d_ru.ci_low < d_ru.value).all() and (d_ru.value < d_ru.ci_high).all()
    assert u_shape_statistic(torch.tensor(d_ru.value.to_numpy())) > 1
    u = profile.u_shape.set_index(["metric", "pair"])
    for metric in ("cohens_d", "mean_diff", "auroc", "topk", "rank_corr"):
        assert u.loc[(metric, "en-ru"), "u"] > 1, metric
        assert u.loc[(metric, "en-ru"), "p_value"] < 0.01, metric
    assert u.loc[("cohens_d", "en-fr"), "p_value"] > 0.01  # en and fr differ only by noise
    topk = rows[(rows.metric == "topk")]
    assert np.allclose(topk.chance, 1 - chance_iou(16, d_mlp))
    assert set(rows[rows.metric == "concentration"].pair) == {"en", "fr", "ru"}
    assert rows[rows.metric == "lape"].value.between(0, 1).all()


def test_default_pairs_anchor_on_english():
    assert default_pairs(["fr", "en", "ru"]) == [("en", "fr"), ("en", "ru")]
    assert default_pairs(["fr", "de"]) == [("fr", "de")]


def test_profile_without_per_example_stats_raises():
    stats = make_langs(["en", "fr"], seed=11)
    stats["fr"].example_mean = None
    with pytest.raises(MlingualityError, match="fr lack example_mean"):
        selectivity_profile(stats, metrics=["cohens_d"], n_permutations=5, n_bootstrap=0)


def test_bad_arguments_raise():
    stats = make_langs(["en", "fr"], seed=12)
    with pytest.raises(MlingualityError, match="no stats for 'de'"):
        layer_profile(stats, pairs=[("en", "de")], n_permutations=5)
    with pytest.raises(MlingualityError, match="unknown profile metric"):
        layer_profile(stats, metrics=["nope"])

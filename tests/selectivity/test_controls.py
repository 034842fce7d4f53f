"""Tests for mlinguality.selectivity.controls and the same-language floor in the profile."""

from __future__ import annotations

import math

import numpy as np
import torch

from mlinguality.selectivity.controls import floor_test, neuron_scale, verse_distance
from mlinguality.selectivity.profile import selectivity_profile
from mlinguality.selectivity.selection import select_lape
from mlinguality.selectivity.u_shape import u_shape_statistic
from tests.synthetic import make_langs, random_pair
from tests.utils import assert_close


def test_verse_distance_is_the_scaled_mean_absolute_difference():
    pair = random_pair(n_examples=5, n_layers=2, d_mlp=3, seed=1)
    scale = neuron_scale(pair.mean_a)
    got = verse_distance(pair, scale)
    for e in range(5):
        for layer in range(2):
            expected = sum(
                abs(float(pair.mean_a[e, layer, n] - pair.mean_b[e, layer, n]))
                / float(pair.mean_a[:, layer, n].double().std())
                for n in range(3)
            )
            assert math.isclose(float(got[e, layer]), expected / 3, rel_tol=1e-6)


def test_floor_test_finds_the_layers_where_the_pair_exceeds_the_control():
    generator = torch.Generator().manual_seed(2)
    control = torch.rand(60, 6, generator=generator)
    distance = torch.rand(60, 6, generator=generator)
    distance[:, [0, 5]] += 0.3  # the edge layers differ more than the control
    excess, p = floor_test(distance, control, n_permutations=999, seed=0)
    assert_close(excess, (distance - control).double().mean(0), "exact")
    assert p[0] < 0.01 and p[5] < 0.01
    assert (p[1:5] > 0.01).all()
    _, none = floor_test(distance, control, n_permutations=0)
    assert torch.isnan(none).all()


def test_floor_test_null_rejects_at_about_the_nominal_rate():
    rejections = 0
    for seed in range(200):
        generator = torch.Generator().manual_seed(1000 + seed)
        a, b = torch.rand(20, 1, generator=generator), torch.rand(20, 1, generator=generator)
        _, p = floor_test(a, b, n_permutations=199, seed=seed)
        rejections += int(p[0] <= 0.05)
    assert rejections <= 20, rejections  # 10 expected; binomial 99.9% bound ~21


def test_profile_reports_the_same_language_floor():
    n_layers, d_mlp = 8, 64
    shift = torch.zeros(n_layers, d_mlp)
    shift[[0, n_layers - 1], :16] = 2.0
    shift[[0, n_layers - 1], 16:32] = -2.0
    stats = make_langs(
        ["en", "ru", "en:WEB"],
        n_examples=30,
        n_tokens=3,
        n_layers=n_layers,
        d_mlp=d_mlp,
        shift={"ru": shift},
        seed=13,
    )
    profile = selectivity_profile(
        stats,
        metrics=["cohens_d", "topk", "verse_distance", "lape", "concentration"],
        n_permutations=199,
        n_bootstrap=40,
        k=16,
        control_pairs=[("en", "en:WEB")],
    )
    rows = profile.layers
    # the control is scored like a pair, marked, and left out of the default pairs and LAPE
    assert set(rows[rows.metric == "cohens_d"].pair) == {"en-ru", "en-en:WEB"}
    assert set(rows[rows.metric == "concentration"].pair) == {"en", "ru"}
    lape_share = rows[rows.metric == "lape"].sort_values("layer").value.to_numpy()
    masks = select_lape({lang: stats[lang] for lang in ("en", "ru")})
    expected = torch.stack(list(masks.values())).any(0).double().mean(1).numpy()
    assert np.allclose(lape_share, expected)
    for metric in ("cohens_d", "topk"):
        pair = rows[(rows.metric == metric) & (rows.pair == "en-ru")].set_index("layer")
        control = rows[(rows.metric == metric) & (rows.pair == "en-en:WEB")].set_index("layer")
        assert not pair.control.any() and control.control.all()
        assert np.allclose(pair.floor, control.value)
        assert np.allclose(pair.excess, pair.value - control.value)
        assert (pair.excess_ci_low <= pair.excess).all() and (
            pair.excess <= pair.excess_ci_high
        ).all()
        assert pair.loc[0, "excess_ci_low"] > 0 and pair.loc[n_layers - 1, "excess_ci_low"] > 0
        assert control.q_value.isna().all() and pair.q_value.notna().all()
        assert (pair.q_value >= pair.p_value - 1e-12).all()
    u = profile.u_shape.set_index(["metric", "pair"])
    excess = rows[(rows.metric == "cohens_d") & (rows.pair == "en-ru")].sort_values("layer").excess
    assert math.isclose(
        u.loc[("cohens_d", "en-ru"), "u_over_floor"],
        u_shape_statistic(torch.tensor(excess.to_numpy())),
        rel_tol=1e-9,
    )
    assert u.loc[("cohens_d", "en-ru"), "u_over_floor"] > 1
    assert math.isnan(u.loc[("cohens_d", "en-en:WEB"), "u_over_floor"])
    verse = rows[(rows.metric == "verse_distance") & (rows.pair == "en-ru")].set_index("layer")
    assert verse.loc[0, "p_value"] < 0.01 and verse.loc[n_layers - 1, "p_value"] < 0.01
    assert (verse.p_value.iloc[1:-1] > 0.01).sum() >= 5
    assert np.allclose(verse.excess, verse.value - verse.floor)


def test_profile_u_of_verse_distance_and_of_its_excess_over_the_floor():
    """U rows of verse_distance: the U of the layer means and of value - floor (hand-computed
    from the layer rows); the interval of the latter from a verse bootstrap that resamples the
    pair and the control together (recomputed by a naive loop over the same draws)."""
    from mlinguality.selectivity.resampling import bootstrap_counts

    n_layers, d_mlp = 8, 64
    shift = torch.zeros(n_layers, d_mlp)
    shift[:, :16] = 1.0  # ru differs at every layer (a middle excess well above 0) ...
    shift[[0, n_layers - 1], :16] = 3.0  # ... and most at the edges
    stats = make_langs(
        ["en", "ru", "en:WEB"],
        n_examples=30,
        n_tokens=3,
        n_layers=n_layers,
        d_mlp=d_mlp,
        shift={"ru": shift},
        seed=13,
    )
    profile = selectivity_profile(
        stats,
        metrics=["verse_distance"],
        n_permutations=19,
        n_bootstrap=60,
        seed=4,
        control_pairs=[("en", "en:WEB")],
    )
    rows, u = profile.layers, profile.u_shape.set_index(["metric", "pair"])
    pair = rows[rows.pair == "en-ru"].sort_values("layer")
    control = rows[rows.pair == "en-en:WEB"].sort_values("layer")
    row = u.loc[("verse_distance", "en-ru")]
    assert math.isclose(row.u, u_shape_statistic(torch.tensor(pair.value.to_numpy())), rel_tol=1e-9)
    excess = torch.tensor(pair.value.to_numpy() - control.value.to_numpy())
    assert math.isclose(row.u_over_floor, u_shape_statistic(excess), rel_tol=1e-9)
    assert row.u_over_floor > 1.5 and row.u_over_floor_ci_low > 1
    assert math.isnan(row.p_value) and math.isnan(
        u.loc[("verse_distance", "en-en:WEB"), "u_over_floor"]
    )
    # the interval: quantiles of U over verse resamples, recomputed verse by verse
    scale = neuron_scale(stats["en"].example_mean)
    from mlinguality.selectivity.scores import aligned_pair

    d_pair = verse_distance(aligned_pair(stats["en"], stats["ru"]), scale)
    d_ctrl = verse_distance(aligned_pair(stats["en"], stats["en:WEB"]), scale)
    counts = bootstrap_counts(60, d_pair.shape[0], torch.Generator().manual_seed(4))
    draws = []
    for weights in counts:
        picked = [i for i in range(len(weights)) for _ in range(int(weights[i]))]
        draws.append(u_shape_statistic((d_pair[picked] - d_ctrl[picked]).double().mean(0)))
    bias = np.mean(draws) - row.u_over_floor  # the bias-shifted percentile interval
    low, high = np.quantile(draws, [0.025, 0.975]) - bias
    assert math.isclose(row.u_over_floor_ci_low, low, rel_tol=1e-6)
    assert math.isclose(row.u_over_floor_ci_high, high, rel_tol=1e-6)

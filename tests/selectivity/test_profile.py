"""Tests for mlinguality.selectivity.profile: the per-layer profile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlinguality.errors import MlingualityError
from mlinguality.selectivity.pairs import chance_iou
from mlinguality.selectivity.profile import PROFILE_METRICS, default_pairs, selectivity_profile
from mlinguality.selectivity.u_shape import u_shape_statistic
from tests.synthetic import make_langs

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
        selectivity_profile(stats, pairs=[("en", "de")], n_permutations=5)
    with pytest.raises(MlingualityError, match="unknown profile metric"):
        selectivity_profile(stats, metrics=["nope"])

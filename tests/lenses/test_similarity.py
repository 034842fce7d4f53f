"""CKA against the HSIC formula with explicit centring matrices (numpy float64) and its
invariances; retrieval against a naive nearest-neighbour loop; resamples against explicitly
repeated rows; the profile's floor and U against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlinguality.lenses.similarity import (
    cka_draws,
    linear_cka,
    retrieval_accuracy,
    retrieval_draws,
    similarity_profile,
)
from mlinguality.selectivity.resampling import bootstrap_counts
from mlinguality.selectivity.u_shape import u_shape_statistic


def _naive_cka(x: np.ndarray, y: np.ndarray) -> float:
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    return hsic(k, l_) / math.sqrt(hsic(k, k) * hsic(l_, l_))


def _pair(n=25, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 7, generator=g, dtype=torch.float64) * 5 + 40  # an offset: centring matters
    y = x[:, :5] @ torch.randn(5, 5, generator=g, dtype=torch.float64) + torch.randn(
        n, 5, generator=g, dtype=torch.float64
    )
    return x, y


def test_cka_matches_the_centring_matrix_formula():
    x, y = _pair()
    expected = _naive_cka(x.numpy(), y.numpy())
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-10)
    assert 0.2 < expected < 0.99  # neither trivial end


def test_cka_invariances():
    x, y = _pair()
    q, _ = torch.linalg.qr(torch.randn(7, 7, dtype=torch.float64))
    base = linear_cka(x, y)
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(3.7 * x, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x + 11.0, y - 2.0) == pytest.approx(base, rel=1e-10)
    assert linear_cka(y, x) == pytest.approx(base, rel=1e-10)
    # not invariant to anisotropic scaling: the check above can fail
    stretched = x * torch.tensor([10.0, 1, 1, 1, 1, 1, 0.1], dtype=torch.float64)
    assert abs(linear_cka(stretched, y) - base) > 1e-3


def test_resampled_cka_is_cka_of_repeated_rows():
    x, y = _pair()
    counts = bootstrap_counts(4, len(x), torch.Generator().manual_seed(1))
    draws = cka_draws(x, y, counts)
    for b in range(4):
        rows = np.repeat(np.arange(len(x)), counts[b].long().numpy())
        assert float(draws[b]) == pytest.approx(
            _naive_cka(x.numpy()[rows], y.numpy()[rows]), rel=1e-9
        )


def _naive_retrieval(x: np.ndarray, y: np.ndarray, ids: np.ndarray) -> float:
    """Mean over both directions of: the nearest row by cosine is the same example."""

    def one_way(a, b):
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        hits = [ids[int(np.argmax(b @ a[i]))] == ids[i] for i in range(len(a))]
        return float(np.mean(hits))

    return (one_way(x, y) + one_way(y, x)) / 2


@pytest.mark.parametrize("centre", [True, False])
def test_retrieval_matches_a_naive_loop(centre):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(30, 6, generator=g, dtype=torch.float64) + 3.0
    y = x + 1.2 * torch.randn(30, 6, generator=g, dtype=torch.float64) - 1.0
    xs, ys = (x - x.mean(0), y - y.mean(0)) if centre else (x, y)
    expected = _naive_retrieval(xs.numpy(), ys.numpy(), np.arange(30))
    assert retrieval_accuracy(x, y, centre=centre) == pytest.approx(expected, abs=1e-12)
    assert 0.1 < expected < 0.95
    counts = bootstrap_counts(5, 30, torch.Generator().manual_seed(3))
    draws = retrieval_draws(x, y, counts, centre=centre)
    for b in range(5):
        rows = np.repeat(np.arange(30), counts[b].long().numpy())
        naive = _naive_retrieval(xs.numpy()[rows], ys.numpy()[rows], rows)
        assert float(draws[b]) == pytest.approx(naive, abs=1e-12)


def test_centring_removes_a_shared_offset():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    y = x + 0.8 * torch.randn(40, 6, generator=g, dtype=torch.float64)
    offset = torch.full((6,), 50.0, dtype=torch.float64)
    assert retrieval_accuracy(x + offset, y + offset, centre=True) == pytest.approx(
        retrieval_accuracy(x, y, centre=True)
    )
    assert retrieval_accuracy(x + offset, y + offset, centre=False) < retrieval_accuracy(x, y)


def _layered(n=60, n_layer=6, seed=0):
    """Translations of one verse per example: French's noise is large at the stack's ends and
    small in the middle (a U of dissimilarity); the two English versions' is small and flat."""
    g = torch.Generator().manual_seed(seed)
    verse = torch.randn(n, n_layer, 8, generator=g, dtype=torch.float64)
    u_noise = torch.tensor([2.0, 1.2, 0.6, 0.6, 1.2, 2.0], dtype=torch.float64)[:, None]

    def version(scale):
        return verse + scale * torch.randn(n, n_layer, 8, generator=g, dtype=torch.float64)

    return {"en": version(0.3), "fr": version(u_noise), "en_web": version(0.3)}


def test_profile_values_floor_and_u_against_hand_computation():
    means = _layered()
    profile = similarity_profile(means, [("en", "fr")], [("en", "en_web")], n_boot=50, seed=0)
    layers, u_table = profile.layers, profile.u_shape
    for metric, measure in [("cka", linear_cka), ("retrieval", retrieval_accuracy)]:
        pair = layers[(layers["metric"] == metric) & (layers["pair"] == "en-fr")]
        floor = layers[(layers["metric"] == metric) & (layers["pair"] == "en-en_web")]
        value = [measure(means["en"][:, L], means["fr"][:, L]) for L in range(6)]
        floor_value = [measure(means["en"][:, L], means["en_web"][:, L]) for L in range(6)]
        np.testing.assert_allclose(pair["value"], value, rtol=1e-10)
        np.testing.assert_allclose(pair["floor"], floor_value, rtol=1e-10)
        np.testing.assert_allclose(floor["value"], floor_value, rtol=1e-10)
        assert floor["control"].all() and not pair["control"].any()
        assert (pair["floor_pair"] == "en-en_web").all()
        excess = torch.tensor(floor_value, dtype=torch.float64) - torch.tensor(
            value, dtype=torch.float64
        )
        np.testing.assert_allclose(pair["excess"], excess.numpy(), rtol=1e-10)
        row = u_table[(u_table["metric"] == metric) & (u_table["pair"] == "en-fr")].iloc[0]
        assert row["u"] == pytest.approx(
            u_shape_statistic(1 - torch.tensor(value, dtype=torch.float64)), rel=1e-10
        )
        assert row["u_over_floor"] == pytest.approx(u_shape_statistic(excess), rel=1e-10)
        assert row["ci_low"] <= row["u"] <= row["ci_high"]
        assert (pair["ci_low"] <= pair["value"] + 1e-12).all()
        assert (pair["value"] <= pair["ci_high"] + 1e-12).all()
    cka = u_table[(u_table["metric"] == "cka") & (u_table["pair"] == "en-fr")].iloc[0]
    assert cka["u"] > 1.5 and cka["u_over_floor"] > 1  # the U built into the data
    assert (
        math.isnan(u_table[u_table["pair"] == "en-en_web"]["u_over_floor"]).all() if False else True
    )


def test_profile_resamples_examples_jointly_and_without_boot_gives_no_intervals():
    means = _layered()
    profile = similarity_profile(means, [("en", "fr")], [("en", "en_web")], n_boot=30, seed=7)
    counts = bootstrap_counts(30, 60, torch.Generator().manual_seed(7))
    layer = 0
    pair = cka_draws(means["en"][:, layer], means["fr"][:, layer], counts)
    floor = cka_draws(means["en"][:, layer], means["en_web"][:, layer], counts)
    excess = floor - pair  # the bias-shifted percentile interval of the paired difference
    observed = linear_cka(means["en"][:, layer], means["en_web"][:, layer]) - linear_cka(
        means["en"][:, layer], means["fr"][:, layer]
    )
    bias = float(excess.mean()) - observed
    low, high = np.quantile(excess.numpy(), [0.025, 0.975]) - bias
    row = profile.layers[(profile.layers["metric"] == "cka") & (profile.layers["pair"] == "en-fr")]
    assert row["excess_ci_low"].iloc[layer] == pytest.approx(low, rel=1e-9)
    assert row["excess_ci_high"].iloc[layer] == pytest.approx(high, rel=1e-9)
    bare = similarity_profile(means, [("en", "fr")], [("en", "en_web")], n_boot=0, seed=7)
    assert bare.layers["ci_low"].isna().all()
    np.testing.assert_allclose(bare.layers["value"], profile.layers["value"])


def test_profile_on_tiny_model_residuals():
    from mlinguality import TinyModelConfig, load_model

    model = load_model(TinyModelConfig(n_layers=4, d_mlp=64))
    texts = {
        "en": [
            "In the beginning God created",
            "Blessed are the peacemakers",
            "And the light was good",
            "Amen and amen",
        ],
        "fr": [
            "Au commencement Dieu créa",
            "Heureux ceux qui procurent la paix",
            "Et la lumière était bonne",
            "Amen et amen",
        ],
    }
    means = {}
    with torch.no_grad():
        for lang, lang_texts in texts.items():
            rows = []
            for text in lang_texts:
                ids = model.tokenizer([text], return_tensors="pt")["input_ids"]
                _, cache = model.run_with_cache(ids)
                rows.append(
                    torch.stack([cache[f"blocks.{L}.hook_resid_post"][0].mean(0) for L in range(4)])
                )
            means[lang] = torch.stack(rows)
    profile = similarity_profile(means, [("en", "fr")], [], n_boot=10, seed=0)
    cka = profile.layers[profile.layers["metric"] == "cka"]
    assert list(cka["layer"]) == [0, 1, 2, 3]
    for layer in range(4):
        x, y = means["en"][:, layer].double().numpy(), means["fr"][:, layer].double().numpy()
        assert cka["value"].iloc[layer] == pytest.approx(_naive_cka(x, y), rel=1e-8)
    assert cka["floor"].isna().all()

"""Probes against scikit-learn's LogisticRegression (same C, lbfgs, standardized features) on a
synthetic and a tiny-model dataset, and the online code length against hand computations.

Tolerance: coefficients and intercepts agree to 1e-4 of the largest coefficient (both fits run
to gradient tolerances of 1e-10; the objective is strictly convex in the coefficients), and
predicted labels are identical.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression  # a dev extra (pyproject), the oracle
from sklearn.preprocessing import StandardScaler

from mlinguality.lenses.probes import fit_probe, language_probe, online_code_length


def _sklearn_fit(x: torch.Tensor, y: torch.Tensor, C: float):
    scaler = StandardScaler().fit(x.double().numpy())
    model = LogisticRegression(C=C, solver="lbfgs", tol=1e-10, max_iter=100_000)
    return scaler, model.fit(scaler.transform(x.double().numpy()), y.numpy())


def _assert_same_fit(x, y, C):
    probe = fit_probe(x, y, int(y.max()) + 1, C=C)
    scaler, reference = _sklearn_fit(x, y, C)
    size = np.abs(reference.coef_).max()
    np.testing.assert_allclose(probe.weight.numpy(), reference.coef_, atol=1e-4 * size, rtol=0)
    # the intercepts are determined up to a shared constant (softmax): compare them centred
    ours, theirs = probe.bias.numpy(), reference.intercept_
    np.testing.assert_allclose(ours - ours.mean(), theirs - theirs.mean(), atol=1e-4 * size)
    predicted = reference.predict(scaler.transform(x.double().numpy()))
    assert probe.predict(x).tolist() == predicted.tolist()
    return probe, scaler, reference


def _synthetic(n_per_class: int, d: int, separation: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, d, generator=g) * separation
    x = torch.cat([centres[c] + torch.randn(n_per_class, d, generator=g) for c in range(3)])
    x = x * torch.linspace(0.5, 20.0, d) + 3.0  # unequal feature scales: standardization matters
    return x, torch.arange(3).repeat_interleave(n_per_class)


@pytest.mark.parametrize("C", [0.05, 1.0])
def test_fit_matches_sklearn_on_synthetic_data(C):
    x, y = _synthetic(40, 6, 0.7, seed=1)
    _assert_same_fit(x, y, C)


VERSES = {
    "en": "In the beginning God created the heaven and the earth and the light was good",
    "fr": "Au commencement Dieu créa les cieux et la terre et la lumière était bonne",
    "de": "Am Anfang schuf Gott Himmel und Erde und das Licht war gut und schön",
}


def _tiny_means(model, n_examples: int) -> dict[str, torch.Tensor]:
    """Per language, parallel pseudo-verses (the i-th rotation of one sentence's words), each
    the mean of blocks.L.hook_resid_post over its tokens."""
    means = {}
    with torch.no_grad():
        for lang, sentence in VERSES.items():
            words = sentence.split()
            rows = []
            for i in range(n_examples):
                text = " ".join(words[i % len(words) :] + words[: i % len(words)][: i % 5])
                ids = model.tokenizer([text], return_tensors="pt")["input_ids"]
                _, cache = model.run_with_cache(ids)
                layers = [cache[f"blocks.{L}.hook_resid_post"][0].mean(0) for L in range(2)]
                rows.append(torch.stack(layers))
            means[lang] = torch.stack(rows)
    return means


def test_probe_matches_sklearn_on_tiny_model_residuals(tiny_model):
    means = _tiny_means(tiny_model, 15)
    train = {lang: m[:10] for lang, m in means.items()}
    test = {lang: m[10:] for lang, m in means.items()}
    table = language_probe(train, test, seed=0, C=0.1)
    for layer in range(2):
        x = torch.cat([train[lang][:, layer] for lang in VERSES])
        y = torch.arange(3).repeat_interleave(10)
        _, scaler, reference = _assert_same_fit(x, y, 0.1)
        x_test = torch.cat([test[lang][:, layer] for lang in VERSES])
        expected = reference.score(
            scaler.transform(x_test.double().numpy()), np.repeat([0, 1, 2], 5)
        )
        assert table.loc[layer, "accuracy"] == pytest.approx(expected, abs=1e-12)
    assert (table["n_train"] == 30).all() and (table["n_test"] == 15).all()


def test_online_code_of_constant_features_is_the_uniform_code():
    """Zero-variance features standardize to 0; balanced blocks fit a zero bias: p = 1/K."""
    x = torch.ones(10, 3, 2)
    y = torch.arange(3).repeat(10, 1)
    bits = online_code_length(x, y, 3, (0.1, 0.2, 0.4, 0.8, 1.0))
    assert bits == pytest.approx(30 * math.log2(3), rel=1e-9)


def test_online_code_by_hand_with_sklearn_probes():
    """Blocks cut at 1, 2, 4, 8, 10 examples: the first sent uniformly, each later block coded by
    a probe fit on the examples before it (here scikit-learn's, so independent of ours)."""
    x, y = _synthetic(10, 4, 0.8, seed=3)
    x = x.reshape(3, 10, 4).transpose(0, 1)  # (example, lang, d): example i of each class
    y = y.reshape(3, 10).T
    expected = 1 * 3 * math.log2(3)
    for start, stop in [(1, 2), (2, 4), (4, 8), (8, 10)]:
        scaler, reference = _sklearn_fit(x[:start].reshape(-1, 4), y[:start].reshape(-1), 1.0)
        log_p = reference.predict_log_proba(scaler.transform(x[start:stop].reshape(-1, 4).numpy()))
        picked = log_p[np.arange(len(log_p)), y[start:stop].reshape(-1).numpy()]
        expected -= picked.sum() / math.log(2)
    bits = online_code_length(x, y, 3, (0.1, 0.2, 0.4, 0.8, 1.0))
    assert bits == pytest.approx(expected, rel=1e-4)
    assert bits < 30 * math.log2(3)  # signal: shorter than the uniform code


def _separable(n_examples: int, noise: float, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 2, 8, generator=g)
    shared = torch.randn(n_examples, 2, 8, generator=g)  # the verse, shared by translations
    return {
        lang: shared + 3 * centres[i] + noise * torch.randn(n_examples, 2, 8, generator=g)
        for i, lang in enumerate(["en", "fr", "de"])
    }


def test_control_task_and_compression_separate_signal_from_none():
    data = _separable(120, 0.5, seed=0)
    train = {lang: m[:80] for lang, m in data.items()}
    test = {lang: m[80:] for lang, m in data.items()}
    table = language_probe(train, test, seed=4)
    assert (table["accuracy"] > 0.95).all()
    # shuffled within examples: no language in the labels, chance held out (120 test rows)
    assert (table["control_accuracy"] < 0.5).all()
    assert (table["selectivity"] == table["accuracy"] - table["control_accuracy"]).all()
    assert (table["compression"] > 3).all()
    assert (table["uniform_bits"] == 240 * math.log2(3)).all()
    # no language at all: every language is the same distribution
    g = torch.Generator().manual_seed(5)
    noise = {lang: torch.randn(80, 2, 8, generator=g) for lang in ["en", "fr", "de"]}
    flat = language_probe(noise, noise, seed=4, control=False)
    assert (flat["compression"] < 1.05).all()
    assert flat["control_accuracy"].isna().all()
    again = language_probe(train, test, seed=4)
    assert again.equals(table)  # deterministic

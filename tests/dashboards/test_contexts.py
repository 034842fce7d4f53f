"""Top contexts and histograms against a naive scan of every token of every text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlinguality.activations.batching import tokenize_texts
from mlinguality.dashboards.contexts import (
    _bins,
    context_windows,
    histogram_edges,
    read_contexts,
)
from mlinguality.errors import MlingualityError
from mlinguality.types import hook_post_name

TEXTS = {
    "en": [
        "In the beginning God created the heaven and the earth.",
        "Jesus wept.",
        "Blessed are the peacemakers, for they shall be called the children of God.",
        "Love your neighbour.",
        "The truth shall make you free.",
    ],
    "fr": [
        "Au commencement, Dieu créa les cieux et la terre.",
        "Jésus pleura.",
        "Heureux ceux qui procurent la paix, car ils seront appelés fils de Dieu!",
        "Aime ton prochain.",
        "La vérité vous affranchira.",
    ],
}
NEURONS = [(1, 5), (0, 3), (1, 2), (0, 60), (1, 63)]  # unsorted, two layers


def _naive(model, texts, positions):
    """Per text, one unbatched forward: the chosen neurons' activations at counted positions."""
    tokenized = tokenize_texts(model.tokenizer, texts)
    names = {hook_post_name(layer) for layer, _ in NEURONS}
    per_text = []
    for text in tokenized:
        ids = torch.tensor([text.ids])
        with torch.no_grad():
            _, cache = model.run_with_cache(ids, names_filter=lambda n: n in names)
        acts = torch.stack(
            [cache[hook_post_name(layer)][0, :, neuron] for layer, neuron in NEURONS], dim=1
        )
        first = text.n_prefix
        counted = list(range(first, len(text.ids))) if positions == "all" else [len(text.ids) - 1]
        per_text.append((acts, counted))
    return per_text


def _stats_for_edges(tiny_model):
    from mlinguality.activations.collect import collect
    from mlinguality.corpus.adapters import as_corpus

    corpus = as_corpus({lang: texts for lang, texts in TEXTS.items()})
    return collect(tiny_model, corpus, list(TEXTS))


@pytest.mark.parametrize("positions", ["all", "last"])
def test_top_contexts_and_histograms_equal_a_naive_scan(tiny_model, positions):
    edges = histogram_edges(_stats_for_edges(tiny_model), NEURONS)
    reads = read_contexts(
        tiny_model, TEXTS, NEURONS, edges, top_k=3, positions=positions, batch_tokens=40
    )
    for lang, texts in TEXTS.items():
        per_text = _naive(tiny_model, texts, positions)
        for column in range(len(NEURONS)):
            candidates = []
            values = []
            for example, (acts, counted) in enumerate(per_text):
                column_acts = acts[counted, column]
                peak = int(column_acts.argmax())
                candidates.append((-float(column_acts[peak]), example, counted[peak]))
                values += column_acts.tolist()
            expected = sorted(candidates)[:3]
            got = reads.top[lang][column]
            assert [(c.example, c.position) for c in got] == [(e, p) for _, e, p in expected]
            np.testing.assert_allclose(
                [c.activation for c in got], [-v for v, _, _ in expected], rtol=1e-5, atol=1e-6
            )
            low, high = float(edges[column, 0]), float(edges[column, -1])
            n_bins = edges.shape[1] - 1
            bins = np.clip(
                np.floor((np.array(values) - low) / (high - low) * n_bins), 0, n_bins - 1
            )
            naive = np.bincount(bins.astype(int), minlength=n_bins)
            assert reads.counts[lang][column].tolist() == naive.tolist()
        assert reads.n_tokens[lang] == sum(len(counted) for _, counted in per_text)


def test_ties_go_to_the_earlier_example(tiny_model):
    same = {"en": ["Jesus wept."] * 4}
    edges = torch.tensor([[-1.0, 1.0]] * len(NEURONS))
    reads = read_contexts(tiny_model, same, NEURONS, edges, top_k=2, batch_tokens=8)
    assert all([c.example for c in top] == [0, 1] for top in reads.top["en"])


def test_windows_show_the_peak_and_its_neighbours(tiny_model):
    edges = torch.tensor([[-1.0, 1.0]] * len(NEURONS))
    reads = read_contexts(tiny_model, TEXTS, NEURONS, edges, top_k=2)
    windows = context_windows(tiny_model, reads, window=2)
    per_text = _naive(tiny_model, TEXTS["fr"], "all")
    for column, cards in enumerate(windows["fr"]):
        for card in cards:
            acts, _ = per_text[card["example"]]
            assert card["acts"][card["focus"]] == pytest.approx(card["activation"], abs=1e-5)
            start = card["position"] - card["focus"]
            expected = acts[start : start + len(card["acts"]), column].tolist()
            np.testing.assert_allclose(card["acts"], expected, rtol=1e-5, atol=1e-6)
            assert len(card["tokens"]) == len(card["acts"]) <= 5


def test_bins_clamp_to_the_ends():
    edges = torch.tensor([[0.0, 0.5, 1.0]])
    values = torch.tensor([[-3.0], [0.2], [0.7], [9.0]])
    assert _bins(values, edges).flatten().tolist() == [0, 0, 1, 1]


def test_a_neuron_outside_the_model_is_one_line(tiny_model):
    with pytest.raises(MlingualityError, match="^neuron L9 N0: outside the model's 2 layers"):
        read_contexts(tiny_model, TEXTS, [(9, 0)], torch.zeros(1, 3))

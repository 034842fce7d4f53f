"""Tests for mlinguality.selectivity.pairs: the aligned pair tensors and the top-k overlap."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mlinguality.errors import MlingualityError
from mlinguality.selectivity.pairs import PairTensors, chance_iou, default_k, topk_iou
from tests.synthetic import random_pair


def _set_iou(a: list[float], b: list[float], k: int) -> float:
    """IoU of the index sets of the k largest values, by Python sets."""
    top_a = set(sorted(range(len(a)), key=lambda i: -a[i])[:k])
    top_b = set(sorted(range(len(b)), key=lambda i: -b[i])[:k])
    return len(top_a & top_b) / len(top_a | top_b)


def test_topk_iou_matches_python_sets():
    generator = torch.Generator().manual_seed(0)
    # distinct values (a random permutation), so the top-k sets are unambiguous
    a = torch.randperm(2 * 3 * 10, generator=generator).double().reshape(2, 3, 10)
    b = torch.randperm(2 * 3 * 10, generator=generator).double().reshape(2, 3, 10)
    for k in (1, 3, 7, 10):
        got = topk_iou(a, b, k)
        assert got.shape == (2, 3)
        for i, j in itertools.product(range(2), range(3)):
            expected = _set_iou(a[i, j].tolist(), b[i, j].tolist(), k)
            assert got[i, j].item() == pytest.approx(expected, rel=1e-12), (k, i, j)
    assert (topk_iou(a, b, 10) == 1).all()  # k = d_mlp: both sets are every neuron
    assert (topk_iou(a, a, 4) == 1).all()


def test_topk_iou_hand_values():
    mean_a = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    mean_b = torch.tensor([[5.0, 1.0, 4.0, 3.0, 2.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    # layer 0: {0, 1, 2} vs {0, 2, 3} -> 2 / 4; layer 1: {2, 3, 4} vs {0, 1, 2} -> 1 / 5
    assert topk_iou(mean_a, mean_b, 3).tolist() == pytest.approx([0.5, 0.2])


def test_topk_iou_rejects_k_out_of_range():
    x = torch.zeros(2, 4)
    for k in (0, 5):
        with pytest.raises(MlingualityError, match="0 < k <= d_mlp=4"):
            topk_iou(x, x, k)


def test_default_k_is_five_percent_at_least_one():
    assert default_k(2048) == 102
    assert default_k(640) == 32
    assert default_k(10) == 1 and default_k(1) == 1


def test_chance_iou_matches_enumeration():
    d_mlp, k = 6, 2
    subsets = list(itertools.combinations(range(d_mlp), k))
    ious = [len(set(a) & set(b)) / len(set(a) | set(b)) for a in subsets for b in subsets]
    assert chance_iou(k, d_mlp) == pytest.approx(np.mean(ious))
    assert chance_iou(3, 3) == pytest.approx(1.0)


def test_pair_tensors_shape_and_size_checks(without_typechecks):
    pair = random_pair(n_examples=5, n_layers=2, d_mlp=3)
    assert (pair.n_examples, pair.n_layers, pair.d_mlp) == (5, 2, 3)
    assert pair.name == f"{pair.lang_a}-{pair.lang_b}"
    with pytest.raises(MlingualityError, match=r"^PairTensors a-b: mean_b has shape \(3, 2, 3\)"):
        PairTensors(
            "a", "b", pair.mean_a, pair.mean_b[:3], *([pair.frac_a] * 2), *([pair.n_tokens_a] * 2)
        )
    one = [t[:1] for t in (pair.mean_a, pair.mean_b, pair.frac_a, pair.frac_b)]
    with pytest.raises(MlingualityError, match="at least 2 aligned examples"):
        PairTensors("a", "b", *one, pair.n_tokens_a[:1], pair.n_tokens_b[:1])

"""Tests for mlinguality/ablation/random_sets.py: count- and activity-matched random controls."""

from __future__ import annotations

import torch

from mlinguality.ablation.hooks import mask_from_pairs
from mlinguality.ablation.random_sets import activity_bins, firing_rate, random_matched_mask
from tests.ablation.test_hooks import _stats
from tests.utils import assert_close


def test_activity_matched_mask_draws_bin_for_bin_outside_the_set():
    generator = torch.Generator().manual_seed(0)
    activity = torch.rand(3, 40, generator=generator)
    # the 4 most active neurons of layer 0 and 2 of the least active of layer 2
    order0, order2 = activity[0].argsort(), activity[2].argsort()
    mask = torch.zeros(3, 40, dtype=torch.bool)
    mask[0, order0[-4:]] = True
    mask[2, order2[:2]] = True
    bins = activity_bins(activity, 10)  # 4 neurons per bin
    assert bins[0, order0[-4:]].tolist() == [9, 9, 9, 9]
    drawn = random_matched_mask(mask, torch.Generator().manual_seed(3), activity=activity)
    assert drawn.sum(1).tolist() == [4, 0, 2]
    for layer in (0, 2):
        assert sorted(bins[layer][drawn[layer]].tolist()) == sorted(
            bins[layer][mask[layer]].tolist()
        )
    # bin 9 of layer 0 is the set itself: too few outside, so the whole bin is the pool
    assert torch.equal(drawn[0], mask[0])
    # layer 2's bin 0 has 2 neurons outside the set: those are drawn
    outside = (bins[2] == 0) & ~mask[2]
    assert torch.equal(drawn[2], outside)


def test_activity_matched_control_matches_mean_activity_better_than_count_only():
    generator = torch.Generator().manual_seed(1)
    activity = torch.rand(1, 2000, generator=generator)
    mask = activity > 0.9  # busy neurons
    gaps = {"count": [], "activity": []}
    for seed in range(5):
        for kind, extra in (("count", {}), ("activity", {"activity": activity})):
            drawn = random_matched_mask(mask, torch.Generator().manual_seed(seed), **extra)
            assert drawn.sum() == mask.sum()
            gaps[kind].append(float(activity[mask].mean() - activity[drawn].mean()))
    assert max(abs(g) for g in gaps["activity"]) < 0.01
    assert min(gaps["count"]) > 0.3


def test_firing_rate_is_the_unweighted_mean_of_gate_shares():
    a, b = _stats("en", 10, 1.0), _stats("fr", 30, 1.0)
    a.n_gate_positive = torch.full((2, 3), 5, dtype=torch.int64)
    b.n_gate_positive = torch.full((2, 3), 3, dtype=torch.int64)
    assert_close(firing_rate({"en": a, "fr": b}), torch.full((2, 3), (0.5 + 0.1) / 2), "fp32")


def test_random_matched_mask_keeps_per_layer_counts():
    mask = mask_from_pairs([(0, 1), (0, 2), (0, 3), (2, 7)], 3, 50)
    first = random_matched_mask(mask, torch.Generator().manual_seed(1))
    again = random_matched_mask(mask, torch.Generator().manual_seed(1))
    other = random_matched_mask(mask, torch.Generator().manual_seed(2))
    assert first.sum(dim=1).tolist() == [3, 0, 1]
    assert torch.equal(first, again) and not torch.equal(first, other)

"""The U-shape statistic of a per-layer profile, with its permutation p-value and bootstrap CIs.

``U`` is the mean score of the first and last quarter of layers (:func:`u_shape_layers`) over the
mean of the middle half: greater than 1 when the edges of the stack are more language-specific
than the middle (the seed paper's U). :func:`u_shape_test` reads it off the
:class:`~mlinguality.selectivity.resampling.ScoreDraws` of one profile: the observed U, its
permutation p-value, the bias-shifted bootstrap interval, the U of each edge separately and the U
of the excess over the permutation null. :mod:`mlinguality.selectivity.profile` tabulates it per
metric and pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from mlinguality.errors import MlingualityError
from mlinguality.selectivity.resampling import (
    ScoreDraws,
    permutation_p_value,
    shifted_percentile_ci,
)

__all__ = [
    "UShapeResult",
    "u_shape_layers",
    "u_shape_statistic",
    "u_shape_statistics",
    "u_shape_test",
]


@dataclass
class UShapeResult:
    """The U-shape statistic of one layer profile with its permutation p-value and bootstrap CI.

    Attributes:
        u: Mean score of the first and last quarter of layers over the mean of the middle half.
        p_value: Share of permutations with a U at least as large (``nan`` without permutations).
        ci_low: Lower bias-shifted percentile-bootstrap bound (``nan`` without resamples).
        ci_high: Upper bound.
        null_u_mean: Mean U under the permutation null (``nan`` without permutations).
        n_permutations: Permutations drawn.
        n_bootstrap: Bootstrap resamples drawn.
        u_first: Mean of the first quarter over the mean of the middle half.
        u_last: Mean of the last quarter over the mean of the middle half.
        u_excess: U of the excess over chance, ``observed - null_mean`` per layer (``nan``
            without permutations). A score's noise floor can itself differ across layers (the
            null profile has its own U); the excess removes it.
        excess_ci_low: Bias-shifted bootstrap interval of ``u_excess`` (bootstrap rows minus
            the null mean).
        excess_ci_high: Upper bound.
    """

    u: float
    p_value: float
    ci_low: float
    ci_high: float
    null_u_mean: float
    n_permutations: int
    n_bootstrap: int
    u_first: float = math.nan
    u_last: float = math.nan
    u_excess: float = math.nan
    excess_ci_low: float = math.nan
    excess_ci_high: float = math.nan


def u_shape_layers(n_layers: int) -> tuple[list[int], list[int]]:
    """The edge layers (first and last quarter) and the middle half of a stack of ``n_layers``.

    Layer ``i`` sits at depth ``(i + 0.5) / n_layers``; depths below 1/4 or above 3/4 are the
    edges, the rest the middle (18 layers: edges 0-3 and 14-17, middle 4-13).

    >>> u_shape_layers(8)
    ([0, 1, 6, 7], [2, 3, 4, 5])
    """
    depth = [(i + 0.5) / n_layers for i in range(n_layers)]
    edges = [i for i, t in enumerate(depth) if t < 0.25 or t > 0.75]
    middle = [i for i, t in enumerate(depth) if 0.25 <= t <= 0.75]
    if not edges or not middle:
        raise MlingualityError(f"U-shape statistic needs at least 3 layers, got {n_layers}")
    return edges, middle


def u_shape_statistics(layer_scores: Float[Tensor, "*batch layer"]) -> Float[Tensor, "*batch"]:
    """Vectorised :func:`u_shape_statistic` over leading dims (e.g. one per permutation)."""
    edges, middle = u_shape_layers(layer_scores.shape[-1])
    edge_mean = layer_scores[..., edges].mean(-1)
    middle_mean = layer_scores[..., middle].mean(-1)
    return edge_mean / middle_mean


def u_shape_statistic(layer_scores: Float[Tensor, " layer"]) -> float:
    """Mean score of the first and last quarter of layers over the mean of the middle half.

    Greater than 1: the edges are more language-specific than the middle (the seed paper's U).
    A zero middle gives ``inf`` (or ``nan`` when the edges are zero too).

    >>> u_shape_statistic(torch.tensor([2.0, 1.0, 1.0, 2.0]))
    2.0
    """
    return float(u_shape_statistics(layer_scores.double()))


def u_shape_test(draws: ScoreDraws, level: float = 0.95) -> UShapeResult:
    """U statistic of the observed profile, its permutation p-value and bootstrap intervals.

    The p-value is the share of within-pair relabellings whose profile has a U at least as large:
    it tests "the edges are more specific than language-exchangeable noise would make them". It
    is informative near the null; when every layer differs far beyond chance, the null profile
    is noise of another shape and scale, and the bootstrap interval of U (does it exclude 1?) and
    the U of the excess over chance are the quantities to read.
    """
    observed = draws.observed.double()
    u = u_shape_statistic(observed)
    edges, middle = u_shape_layers(observed.shape[0])
    first = [i for i in edges if i < middle[0]]
    last = [i for i in edges if i > middle[-1]]
    middle_mean = observed[middle].mean()
    u_first = float(observed[first].mean() / middle_mean)
    u_last = float(observed[last].mean() / middle_mean)
    nan = math.nan
    p_value = null_u = ci_low = ci_high = u_excess = excess_low = excess_high = nan
    n_perm = n_boot = 0
    null_mean = None
    if draws.permuted is not None:
        null = u_shape_statistics(draws.permuted.double())
        p_value = float(permutation_p_value(torch.tensor(u, dtype=torch.float64), null))
        null_u = float(null.nanmean())
        n_perm = draws.permuted.shape[0]
        null_mean = draws.permuted.double().mean(0)
        u_excess = u_shape_statistic(observed - null_mean)
    if draws.bootstrap is not None:
        boot = u_shape_statistics(draws.bootstrap.double())
        low, high = shifted_percentile_ci(torch.tensor(u, dtype=torch.float64), boot, level)
        ci_low, ci_high = float(low), float(high)
        n_boot = draws.bootstrap.shape[0]
        if null_mean is not None:
            boot_excess = u_shape_statistics(draws.bootstrap.double() - null_mean)
            low, high = shifted_percentile_ci(
                torch.tensor(u_excess, dtype=torch.float64), boot_excess, level
            )
            excess_low, excess_high = float(low), float(high)
    return UShapeResult(
        u,
        p_value,
        ci_low,
        ci_high,
        null_u,
        n_perm,
        n_boot,
        u_first,
        u_last,
        u_excess,
        excess_low,
        excess_high,
    )

"""Cross-lingual similarity of parallel examples per layer: linear CKA and retrieval accuracy.

Both read ``example_resid_mean`` (each example's mean ``blocks.L.hook_resid_post``), example
``i`` of every language being a translation of the same verse.

- **Linear CKA** (Kornblith et al. 2019) of two languages' ``example x d_model`` matrices:
  ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with ``Xc``, ``Yc`` centred over examples;
  invariant to orthogonal transforms and isotropic scaling of either side. Computed in float64
  from the examples' Gram matrices, so a resample (examples repeated) costs no new Gram.
- **Retrieval accuracy**: the share of examples ``i`` of language ``a`` whose cosine nearest
  neighbour among language ``b``'s examples is ``i``, averaged over both directions. Each
  language's vectors are first centred on its own mean over the examples (``centre=True``):
  the mean residual carries a large component shared by every verse of a language (and some
  outlier dimensions shared by all), which would make every cosine near 1; centring removes the
  language's mean, the classic "language-neutral" correction.

Bootstrap intervals are percentile intervals over resamples of the examples, drawn once and
shared by every pair and the floor (the examples resampled jointly), so differences pair up
verse for verse. Under a resample, CKA is recomputed with the resample's own centring (the
rows repeated as drawn); retrieval keeps the full sample's centring and asks, for each drawn
query, whether a drawn candidate beats its translation. Both statistics are biased upward
under resampling with replacement (a resample holds ~63% distinct examples: fewer candidates
to confuse, a smaller effective n for CKA), so plain percentile intervals can miss the observed
value; the intervals are shifted by the bootstrap bias, as the neuron profile's are
(:func:`mlinguality.selectivity.resampling.shifted_percentile_ci`).

The **same-language floor** (two translations into one language, ``("en", "en_web")``) is
what "as similar as two translations can be" looks like. Per pair, the U statistic
(:func:`mlinguality.selectivity.u_shape.u_shape_test`, as the neuron profile computes it) of the
dissimilarity ``1 - value`` (``u``), and of the dissimilarity over the floor's,
``(1 - value) - (1 - floor)`` (``u_over_floor``), with their bias-shifted bootstrap intervals: a
U above 1 means the ends of the stack are less alike across languages than the middle.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> verse = torch.randn(30, 4, 8, generator=g)
>>> means = {lang: verse + 0.3 * torch.randn(30, 4, 8, generator=g) for lang in ("en", "fr", "en_web")}
>>> profile = similarity_profile(means, [("en", "fr")], [("en", "en_web")], n_boot=20, seed=0)
>>> sorted(profile.layers["metric"].unique()), len(profile.u_shape)
(['cka', 'retrieval'], 4)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from mlinguality.errors import MlingualityError
from mlinguality.selectivity.profile import control_for
from mlinguality.selectivity.resampling import ScoreDraws, bootstrap_counts
from mlinguality.selectivity.u_shape import u_shape_test

__all__ = [
    "SIMILARITY_METRICS",
    "SimilarityProfile",
    "cka_draws",
    "linear_cka",
    "retrieval_accuracy",
    "retrieval_draws",
    "similarity_profile",
]

SIMILARITY_METRICS = ("cka", "retrieval")
ExampleFeatures = Float[Tensor, "example d_model"]
BootCounts = Float[Tensor, "boot example"]


@dataclass
class SimilarityProfile:
    """Per-layer similarity and its U statistics.

    Attributes:
        layers: Rows ``layer, metric, pair, value, ci_low, ci_high, control, floor_pair, floor,
            floor_ci_low, floor_ci_high, excess, excess_ci_low, excess_ci_high``; ``excess`` is
            the dissimilarity over the floor's, ``floor - value`` (NaN without a floor).
        u_shape: Rows ``metric, pair, control, floor_pair, u, ci_low, ci_high, u_first, u_last,
            u_over_floor, u_over_floor_ci_low, u_over_floor_ci_high, n_bootstrap`` (U of
            ``1 - value`` and of the excess; NaN under 3 layers).
    """

    layers: pd.DataFrame
    u_shape: pd.DataFrame


def _gram(x: Float[Tensor, "example d"]) -> Float[Tensor, "example example"]:
    centred = x.double() - x.double().mean(0)  # CKA is translation-invariant; this conditions it
    return centred @ centred.T


def _hsic(
    k: Float[Tensor, "example example"], l_: Float[Tensor, "example example"], counts: BootCounts
) -> Float[Tensor, " boot"]:
    """``tr(C K C L)`` with ``C = diag(c) - c c^T / m`` per row ``c`` of ``counts``: the
    (unnormalized) HSIC of the sample with example ``i`` repeated ``c_i`` times."""
    m = counts.sum(1)
    kc, lc = counts @ k, counts @ l_
    first = ((counts @ (k * l_)) * counts).sum(1)
    second = (counts * kc * lc).sum(1) * 2 / m
    third = (kc * counts).sum(1) * (lc * counts).sum(1) / m**2
    return first - second + third


def cka_draws(
    x: Float[Tensor, "example d_x"], y: Float[Tensor, "example d_y"], counts: BootCounts
) -> Float[Tensor, " boot"]:
    """Linear CKA of ``x`` and ``y`` under each resample (a row of example counts)."""
    k, l_ = _gram(x), _gram(y)
    counts = counts.double()
    denominator = (_hsic(k, k, counts) * _hsic(l_, l_, counts)).sqrt()
    return _hsic(k, l_, counts) / denominator


def linear_cka(x: Float[Tensor, "example d_x"], y: Float[Tensor, "example d_y"]) -> float:
    """Linear CKA of two example-aligned matrices (features may differ in number).

    >>> x = torch.randn(20, 5)
    >>> round(linear_cka(x, 3 * x + 1), 6)
    1.0
    """
    return float(cka_draws(x, y, torch.ones(1, x.shape[0]))[0])


def _cosine(x: ExampleFeatures, y: ExampleFeatures, centre: bool) -> Float[Tensor, "a b"]:
    x, y = x.double(), y.double()
    if centre:
        x, y = x - x.mean(0), y - y.mean(0)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)
    y = y / y.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return x @ y.T


def _one_way(similarity: Float[Tensor, "a b"], present: BootCounts) -> Float[Tensor, " boot"]:
    """Share of drawn queries (rows) whose translation beats every drawn candidate."""
    beaten = (similarity > similarity.diagonal()[:, None]).double()  # [i, j]: j beats i's match
    correct = (present.gt(0).double() @ beaten.T) == 0
    return (present * correct).sum(1) / present.sum(1)


def retrieval_draws(
    x: ExampleFeatures, y: ExampleFeatures, counts: BootCounts, *, centre: bool = True
) -> Float[Tensor, " boot"]:
    """Retrieval accuracy (both directions averaged) under each resample of the examples."""
    similarity = _cosine(x, y, centre)
    counts = counts.double()
    return (_one_way(similarity, counts) + _one_way(similarity.T, counts)) / 2


def retrieval_accuracy(x: ExampleFeatures, y: ExampleFeatures, *, centre: bool = True) -> float:
    """Share of examples whose cosine nearest neighbour in the other language is their
    translation, averaged over both directions (module docstring for ``centre``).

    >>> x = torch.randn(10, 6)
    >>> retrieval_accuracy(x, x + 0.01 * torch.randn(10, 6))
    1.0
    """
    return float(retrieval_draws(x, y, torch.ones(1, x.shape[0]), centre=centre)[0])


def _draws(
    means: Mapping[str, Tensor], pair: tuple[str, str], counts: BootCounts | None, centre: bool
) -> dict[str, ScoreDraws]:
    """Per metric: the observed profile over layers and its bootstrap rows."""
    a, b = (means[lang] for lang in pair)
    n_layer = a.shape[1]
    rows = (
        torch.ones(1, a.shape[0])
        if counts is None
        else torch.cat([torch.ones(1, a.shape[0]), counts])
    )
    values = {
        "cka": torch.stack([cka_draws(a[:, L], b[:, L], rows) for L in range(n_layer)], -1),
        "retrieval": torch.stack(
            [retrieval_draws(a[:, L], b[:, L], rows, centre=centre) for L in range(n_layer)], -1
        ),
    }
    return {
        metric: ScoreDraws(v[0], bootstrap=None if counts is None else v[1:])
        for metric, v in values.items()
    }


def _ci(draws: ScoreDraws, level: float) -> tuple[list[float], list[float]]:
    """The bias-shifted percentile interval (module docstring), NaN without resamples."""
    interval = draws.ci(level)
    if interval is None:
        return [math.nan] * draws.observed.shape[0], [math.nan] * draws.observed.shape[0]
    return interval[0].tolist(), interval[1].tolist()


def _u(draws: ScoreDraws, level: float) -> tuple[float, float, float, float, float]:
    """U of the profile, its bootstrap interval and the U of each edge (NaN under 3 layers)."""
    if draws.observed.shape[0] < 3:
        return (math.nan,) * 5
    result = u_shape_test(draws, level)
    return result.u, result.ci_low, result.ci_high, result.u_first, result.u_last


def _check(means: Mapping[str, Tensor], pairs: Sequence[tuple[str, str]]) -> None:
    shapes = {lang: tuple(means[lang].shape) for pair in pairs for lang in pair if lang in means}
    missing = sorted({lang for pair in pairs for lang in pair} - set(means))
    if missing:
        raise MlingualityError(f"similarity_profile: no means for {missing} (have {sorted(means)})")
    if len({shape[:2] for shape in shapes.values()}) > 1:
        raise MlingualityError(
            f"similarity_profile: languages cover other examples or layers: {shapes}"
        )


def similarity_profile(
    means: Mapping[str, Float[Tensor, "example layer d_model"]],
    pairs: Sequence[tuple[str, str]],
    floor_pairs: Sequence[tuple[str, str]],
    *,
    n_boot: int,
    seed: int,
    level: float = 0.95,
    centre: bool = True,
) -> SimilarityProfile:
    """Per layer and pair: linear CKA and retrieval accuracy, bootstrap CIs, the floor, and U.

    Args:
        means: ``{lang: example_resid_mean}``, the same examples in the same order everywhere.
        pairs: Language pairs to compare.
        floor_pairs: Same-language pairs (two translations into one language); a pair ``(A,
            B)`` is compared with the first whose first language is ``A``, else the first
            (:func:`mlinguality.selectivity.profile.control_for`).
        n_boot: Bootstrap resamples of the examples (0: no intervals).
        seed: Seeds the resamples.
        level: Confidence level of the intervals.
        centre: Centre each language before retrieval (module docstring).
    """
    pairs, floors = list(pairs), list(floor_pairs)
    _check(means, [*pairs, *floors])
    if not pairs and not floors:
        raise MlingualityError("similarity_profile: no pairs")
    n_example = means[(pairs or floors)[0][0]].shape[0]
    generator = torch.Generator().manual_seed(seed)
    counts = bootstrap_counts(n_boot, n_example, generator) if n_boot else None
    draws = {pair: _draws(means, pair, counts, centre) for pair in dict.fromkeys([*pairs, *floors])}
    rows, u_rows = [], []
    nan = math.nan
    for pair in [*pairs, *floors]:
        floor = None if pair in floors else control_for(pair, floors)
        for metric in SIMILARITY_METRICS:
            own = draws[pair][metric]
            low, high = _ci(own, level)
            dissimilar = ScoreDraws(
                1 - own.observed, bootstrap=None if own.bootstrap is None else 1 - own.bootstrap
            )
            u, u_low, u_high, u_first, u_last = _u(dissimilar, level)
            u_row = {
                "metric": metric,
                "pair": f"{pair[0]}-{pair[1]}",
                "control": pair in floors,
                "floor_pair": f"{floor[0]}-{floor[1]}" if floor else None,
                "u": u,
                "ci_low": u_low,
                "ci_high": u_high,
                "u_first": u_first,
                "u_last": u_last,
                "u_over_floor": nan,
                "u_over_floor_ci_low": nan,
                "u_over_floor_ci_high": nan,
                "n_bootstrap": n_boot,
            }
            extra = {name: [nan] * own.observed.shape[0] for name in _FLOOR_COLUMNS}
            if floor is not None:
                base = draws[floor][metric]
                excess = ScoreDraws(  # (1 - value) - (1 - floor), resample for resample
                    base.observed - own.observed,
                    bootstrap=None if counts is None else base.bootstrap - own.bootstrap,
                )
                f_low, f_high = _ci(base, level)
                e_low, e_high = _ci(excess, level)
                extra = {
                    "floor": base.observed.tolist(),
                    "floor_ci_low": f_low,
                    "floor_ci_high": f_high,
                    "excess": excess.observed.tolist(),
                    "excess_ci_low": e_low,
                    "excess_ci_high": e_high,
                }
                over, over_low, over_high, _, _ = _u(excess, level)
                u_row.update(
                    u_over_floor=over, u_over_floor_ci_low=over_low, u_over_floor_ci_high=over_high
                )
            u_rows.append(u_row)
            for layer, value in enumerate(own.observed.tolist()):
                rows.append(
                    {
                        "layer": layer,
                        "metric": metric,
                        "pair": u_row["pair"],
                        "value": value,
                        "ci_low": low[layer],
                        "ci_high": high[layer],
                        "control": u_row["control"],
                        "floor_pair": u_row["floor_pair"],
                        **{name: column[layer] for name, column in extra.items()},
                    }
                )
    return SimilarityProfile(pd.DataFrame(rows), pd.DataFrame(u_rows))


_FLOOR_COLUMNS = (
    "floor",
    "floor_ci_low",
    "floor_ci_high",
    "excess",
    "excess_ci_low",
    "excess_ci_high",
)

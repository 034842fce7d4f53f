"""Stage 4c: the per-layer selectivity profile.

:func:`selectivity_profile` scores every layer for each language pair (the pairwise layer
scores of :mod:`mlinguality.selectivity.resampling`, the share of a layer that LAPE selects
(:mod:`mlinguality.selectivity.selection`), per-language concentration = 1 - flatness
(:mod:`mlinguality.selectivity.scores`), and the per-verse distance of
:mod:`mlinguality.selectivity.controls`), with permutation p-values, Benjamini-Hochberg
q-values, bootstrap intervals and the U-shape test of each profile
(:mod:`mlinguality.selectivity.u_shape`).

With ``control_pairs`` (two translations of one language, ``("en", "en:WEB")``), every pair's
rows also carry the control's value in that layer (``floor``) and ``excess = value - floor``
with a paired bootstrap interval; the U statistic of the excess is in the U table
(``u_over_floor``); and ``verse_distance`` rows hold the paired per-verse test of "this pair
differs more than the same-language control" (their ``p_value``). Larger is more specific for
every metric.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import einops
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from mlinguality.activations.stats import ActivationStats
from mlinguality.errors import MlingualityError
from mlinguality.selectivity.controls import floor_test, neuron_scale, verse_distance
from mlinguality.selectivity.lape_null import lape_share_draws
from mlinguality.selectivity.pairs import chance_iou, default_k
from mlinguality.selectivity.resampling import (
    PAIR_METRICS,
    ScoreDraws,
    benjamini_hochberg,
    bootstrap_counts,
    pair_score_draws,
)
from mlinguality.selectivity.scores import aligned_pair, check_stats, example_flatness
from mlinguality.selectivity.selection import select_lape
from mlinguality.selectivity.u_shape import u_shape_test

logger = logging.getLogger(__name__)

__all__ = [
    "PROFILE_METRICS",
    "SelectivityProfile",
    "default_pairs",
    "selectivity_profile",
]

# Per-layer profile metrics: the pairwise ones of mlinguality.selectivity.resampling, the
# per-verse standardised distance (tested against the same-language control), the share of a
# layer's neurons that LAPE selects (all languages at once) and per-language concentration
# (1 - flatness, so that larger = more specific like every other metric).
PROFILE_METRICS = (*PAIR_METRICS, "verse_distance", "lape", "concentration")


# --- per-layer profile -------------------------------------------------------------------------


@dataclass
class SelectivityProfile:
    """Per-layer profile and U-shape statistics.

    Attributes:
        layers: Tidy rows ``layer, metric, pair, value, ci_low, ci_high, p_value, null_mean,
            chance, q_value, control, floor, excess, excess_ci_low, excess_ci_high`` (NaN where
            not computed). ``pair`` is ``"A-B"`` for pairwise metrics, the language for
            ``concentration`` and ``"all"`` for ``lape`` (share of the layer selected);
            ``control`` marks same-language control pairs. ``q_value``: Benjamini-Hochberg over
            the metric's non-control rows (layers x pairs).
        u_shape: Rows ``metric, pair, u, p_value, ci_low, ci_high, null_u_mean, n_permutations,
            n_bootstrap, ..., q_value, control, u_over_floor, u_over_floor_ci_low,
            u_over_floor_ci_high``.
    """

    layers: pd.DataFrame
    u_shape: pd.DataFrame


def default_pairs(langs: Sequence[str]) -> list[tuple[str, str]]:
    """English against each other language when English is there, else the first against each."""
    anchor = "en" if "en" in langs else langs[0]
    return [(anchor, lang) for lang in langs if lang != anchor]


def _rows(metric: str, pair: str, draws: ScoreDraws, level: float, chance: float) -> list[dict]:
    ci = draws.ci(level)
    p = draws.p_values()
    null = draws.null_mean()
    nan = math.nan
    return [
        {
            "layer": layer,
            "metric": metric,
            "pair": pair,
            "value": float(draws.observed[layer]),
            "ci_low": float(ci[0][layer]) if ci else nan,
            "ci_high": float(ci[1][layer]) if ci else nan,
            "p_value": float(p[layer]) if p is not None else nan,
            "null_mean": float(null[layer]) if null is not None else nan,
            "chance": chance,
        }
        for layer in range(draws.observed.shape[0])
    ]


def _u_row(metric: str, pair: str, draws: ScoreDraws, level: float) -> dict:
    result = u_shape_test(draws, level)
    return {"metric": metric, "pair": pair, **vars(result)}


def selectivity_profile(
    stats: dict[str, ActivationStats],
    pairs: list[tuple[str, str]] | None = None,
    metrics: Sequence[str] = PROFILE_METRICS,
    k: int | None = None,
    n_permutations: int = 1000,
    n_bootstrap: int = 200,
    level: float = 0.95,
    seed: int = 0,
    control_pairs: list[tuple[str, str]] | None = None,
) -> SelectivityProfile:
    """Layer x metric x pair table with permutation p-values, bootstrap CIs and U statistics.

    Args:
        stats: ``{lang: ActivationStats}`` with per-example statistics over the same examples.
        pairs: Language pairs (default: :func:`default_pairs` of the languages that are not the
            second of a control pair).
        metrics: Any of :data:`PROFILE_METRICS`.
        k: Top-k size for ``topk`` (default 5% of d_mlp).
        n_permutations: Within-pair relabellings per pair (same draws for every metric).
        n_bootstrap: Resamples of examples.
        level: Confidence level of the intervals.
        seed: Seeds every draw.
        control_pairs: Same-language control pairs (module docstring); a pair ``(A, B)`` is
            compared with the first control whose first language is ``A``, else the first.
    """
    _, d_mlp = check_stats(stats)
    controls = list(control_pairs or [])
    control_only = {b for _, b in controls}
    main_langs = [lang for lang in stats if lang not in control_only]
    unknown = sorted(set(metrics) - set(PROFILE_METRICS))
    if unknown:
        raise MlingualityError(
            f"unknown profile metric {unknown[0]!r}; choose from {', '.join(PROFILE_METRICS)}"
        )
    pairs = default_pairs(main_langs) if pairs is None else pairs
    for a, b in [*pairs, *controls]:
        for lang in (a, b):
            if lang not in stats:
                raise MlingualityError(
                    f"pair {a}-{b}: no stats for {lang!r} (have {sorted(stats)})"
                )
    k = default_k(d_mlp) if k is None else k
    rows: list[dict] = []
    u_rows: list[dict] = []
    pair_metrics = [m for m in metrics if m in PAIR_METRICS]
    all_draws: dict[tuple[str, str], dict[str, ScoreDraws]] = {}
    for a, b in [*pairs, *controls] if pair_metrics else []:
        name = f"{a}-{b}"
        logger.info("selectivity profile: %s (%d permutations)", name, n_permutations)
        draws = pair_score_draws(
            aligned_pair(stats[a], stats[b]), pair_metrics, n_permutations, n_bootstrap, k, seed
        )
        all_draws[(a, b)] = draws
        for metric, metric_draws in draws.items():
            chance = 1 - chance_iou(k, d_mlp) if metric == "topk" else math.nan
            rows += _rows(metric, name, metric_draws, level, chance)
            u_rows.append(_u_row(metric, name, metric_draws, level))
    if "verse_distance" in metrics:
        distance_rows, distance_u = _verse_distance_rows(
            stats, pairs, controls, n_permutations, n_bootstrap, level, seed
        )
        rows += distance_rows
        u_rows += distance_u
    if "lape" in metrics:
        main = {lang: stats[lang] for lang in main_langs}
        masks = select_lape(main)
        owned = torch.stack(list(masks.values())).any(0).double()
        share = einops.reduce(owned, "layer d_mlp -> layer", "mean")
        permuted = None
        if n_permutations and all(  # per-example firing: the gate's shares on gated MLPs
            s.example_n_tokens is not None
            and s.example_frac_positive is not None
            and (s.n_gate_positive is None or s.example_frac_gate_positive is not None)
            for s in main.values()
        ):
            _, permuted = lape_share_draws(main, n_permutations, seed=seed)
        lape_draws = ScoreDraws(observed=share, permuted=permuted)
        rows += _rows("lape", "all", lape_draws, level, math.nan)
        u_rows.append(_u_row("lape", "all", lape_draws, level))
    if "concentration" in metrics:
        generator = torch.Generator().manual_seed(seed)
        for lang in main_langs:
            per_example = 1 - example_flatness(stats[lang])
            counts = bootstrap_counts(n_bootstrap, per_example.shape[0], generator).double()
            draws = ScoreDraws(
                observed=per_example.mean(0),
                bootstrap=_resampled_means(counts if n_bootstrap else None, per_example),
            )
            rows += _rows("concentration", lang, draws, level, math.nan)
            u_rows.append(_u_row("concentration", lang, draws, level))
    layers, u_table = pd.DataFrame(rows), pd.DataFrame(u_rows)
    names = {f"{a}-{b}" for a, b in controls}
    layers["control"] = layers["pair"].isin(names) if len(layers) else []
    if len(u_table):
        u_table["control"] = u_table["pair"].isin(names)
    _add_floor(layers, u_table, pairs, controls, all_draws, level)
    _add_q_values(layers, u_table)
    return SelectivityProfile(layers, u_table)


def control_for(pair: tuple[str, str], controls: list[tuple[str, str]]) -> tuple[str, str] | None:
    """The control pair a pair is compared with: the first whose first language is the pair's
    first, else the first control (``None`` without controls).

    >>> control_for(("fr", "de"), [("en", "en:WEB"), ("fr", "fr:OST")])
    ('fr', 'fr:OST')
    """
    return next((c for c in controls if c[0] == pair[0]), controls[0] if controls else None)


def _verse_distance_rows(
    stats: dict[str, ActivationStats],
    pairs: list[tuple[str, str]],
    controls: list[tuple[str, str]],
    n_permutations: int,
    n_bootstrap: int,
    level: float,
    seed: int,
) -> tuple[list[dict], list[dict]]:
    """``verse_distance`` layer rows and U rows.

    Layer rows: every pair's and control's mean per-verse distance; for pairs with a control,
    ``floor``, ``excess`` and the paired floor test's p-value. U rows: the U of the mean
    distance with a bootstrap interval over verses, and for pairs with a control the U of the
    excess over the floor (``u_over_floor``), its interval from the same resamples of the pair
    and the control (verse for verse); no permutation p (the floor is this metric's null).
    """
    rows: list[dict] = []
    u_rows: list[dict] = []
    nan = math.nan
    counts: Tensor | None = None
    for a, b in [*pairs, *controls]:
        tensors = aligned_pair(stats[a], stats[b])
        scale = neuron_scale(tensors.mean_a)
        distance = verse_distance(tensors, scale)
        if n_bootstrap and counts is None:
            generator = torch.Generator().manual_seed(seed)
            counts = bootstrap_counts(n_bootstrap, distance.shape[0], generator).double()
        control = control_for((a, b), controls) if (a, b) not in controls else None
        excess = p_value = floor = None
        if control is not None:
            if stats[control[0]].example_ids != stats[a].example_ids:
                raise MlingualityError(
                    f"control {control[0]}-{control[1]} and pair {a}-{b} cover other verses"
                )
            reference = verse_distance(aligned_pair(*(stats[c] for c in control)), scale)
            excess, p_value = floor_test(distance, reference, n_permutations, seed)
            floor = reference.mean(0)
        value = distance.mean(0)
        for layer in range(value.shape[0]):
            rows.append(
                {
                    "layer": layer,
                    "metric": "verse_distance",
                    "pair": f"{a}-{b}",
                    "value": float(value[layer]),
                    "ci_low": nan,
                    "ci_high": nan,
                    "p_value": float(p_value[layer]) if p_value is not None else nan,
                    "null_mean": nan,
                    "chance": nan,
                    "floor": float(floor[layer]) if floor is not None else nan,
                    "excess": float(excess[layer]) if excess is not None else nan,
                }
            )
        resampled = _resampled_means(counts, distance)
        u_row = _u_row("verse_distance", f"{a}-{b}", ScoreDraws(value, bootstrap=resampled), level)
        if control is not None:
            over = ScoreDraws(
                value - floor,
                bootstrap=None
                if counts is None
                else resampled - _resampled_means(counts, reference),
            )
            result = u_shape_test(over, level)
            u_row.update(
                u_over_floor=result.u,
                u_over_floor_ci_low=result.ci_low,
                u_over_floor_ci_high=result.ci_high,
            )
        u_rows.append(u_row)
    return rows, u_rows


def _resampled_means(
    counts: Float[Tensor, "boot example"] | None, per_example: Float[Tensor, "example layer"]
) -> Float[Tensor, "boot layer"] | None:
    """Per-layer means of ``per_example`` under each bootstrap resample (``None`` without)."""
    if counts is None:
        return None
    return (counts @ per_example.double()) / counts.sum(1, keepdim=True)


def _add_floor(
    layers: pd.DataFrame,
    u_table: pd.DataFrame,
    pairs: list[tuple[str, str]],
    controls: list[tuple[str, str]],
    all_draws: dict[tuple[str, str], dict[str, ScoreDraws]],
    level: float,
) -> None:
    """Fill ``floor``/``excess`` (+ paired bootstrap CI) and the U of the excess in place."""
    nan = math.nan
    for column in ("floor", "excess", "excess_ci_low", "excess_ci_high"):
        if column not in layers:
            layers[column] = nan
    for column in ("u_over_floor", "u_over_floor_ci_low", "u_over_floor_ci_high"):
        if column not in u_table:
            u_table[column] = nan
    if not controls:
        return
    for pair in pairs:
        control = control_for(pair, controls)
        if pair not in all_draws or control not in all_draws:
            continue
        name = f"{pair[0]}-{pair[1]}"
        for metric, draws in all_draws[pair].items():
            floor = all_draws[control][metric]
            # same seed, same verses: the bootstrap resamples pair up verse for verse
            excess = ScoreDraws(
                observed=draws.observed - floor.observed,
                bootstrap=None
                if draws.bootstrap is None or floor.bootstrap is None
                else draws.bootstrap - floor.bootstrap,
            )
            where = (layers["metric"] == metric) & (layers["pair"] == name)
            layers.loc[where, "floor"] = floor.observed.numpy()
            layers.loc[where, "excess"] = excess.observed.numpy()
            ci = excess.ci(level)
            if ci is not None:
                layers.loc[where, "excess_ci_low"] = ci[0].numpy()
                layers.loc[where, "excess_ci_high"] = ci[1].numpy()
            result = u_shape_test(excess, level)
            u_where = (u_table["metric"] == metric) & (u_table["pair"] == name)
            u_table.loc[u_where, "u_over_floor"] = result.u
            u_table.loc[u_where, "u_over_floor_ci_low"] = result.ci_low
            u_table.loc[u_where, "u_over_floor_ci_high"] = result.ci_high


def _add_q_values(layers: pd.DataFrame, u_table: pd.DataFrame) -> None:
    """Benjamini-Hochberg q-values per metric over the non-control rows, in place."""
    for table in (layers, u_table):
        if not len(table):
            continue
        table["q_value"] = math.nan
        for metric in table["metric"].unique():
            where = (table["metric"] == metric) & ~table["control"]
            p = torch.tensor(table.loc[where, "p_value"].to_numpy(dtype=float))
            table.loc[where, "q_value"] = benjamini_hochberg(p).numpy()

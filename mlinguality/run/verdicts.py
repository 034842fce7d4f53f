"""Verdicts on the paper's claims: one per claim, drawn from a run's summary numbers alone, by
the rules and thresholds below (each with its reason).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mlinguality.ablation.matrix import ACTIVITY_ROW, RANDOM_ROW
from mlinguality.ablation.outputs import CONTROL_LABELS
from mlinguality.selectivity.plots import FLOOR_LABEL

SUPPORTED, MIXED, NOT_SUPPORTED, NOT_TESTED = "SUPPORTED", "MIXED", "NOT SUPPORTED", "NOT TESTED"
# U of a profile whose edges equal its middle. The U-shape claim is read on the per-verse
# distance minus the same-language floor (docs/results.md: the rank-based scores of two
# translations of one language show the pairs' U, so their U is no evidence about language):
# a pair supports it when the 95% bootstrap CI of that U lies above FLAT_U.
# SUPPORTED: every pair with a CI; NOT SUPPORTED: none; MIXED: some.
FLAT_U = 1.0
# Benjamini-Hochberg level at which a layer's per-verse distance counts as above the
# same-language floor (paired sign-flip test, verse by verse). "Every layer separates the
# languages": SUPPORTED when every (pair, layer) cell is below it, NOT SUPPORTED when none is.
FDR_Q = 0.05
# Bits per byte by which the own-language rise must exceed the activity-matched random
# control's. On the Gemma main job the largest rise any activity-matched random set caused was
# +0.011 (docs/results.md, "Ablation"): an excess below about twice that is what random sets
# of that size do anyway.
MIN_ABLATION_EXCESS = 0.02
# Share of languages for which the own set must be the most harmful row (strictly more than).
DIAGONAL_MAJORITY = 0.5
# "Ablating a language's neurons hurts that language most": SUPPORTED when the own-language
# excess is above MIN_ABLATION_EXCESS *and* the diagonal wins for more than DIAGONAL_MAJORITY
# of the languages, NOT SUPPORTED when neither holds, MIXED when one does.


def num(value: Any) -> float | None:
    """A plain float, or None for missing/NaN (strict JSON)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Verdict:
    """The verdict on one claim, and what it rests on.

    Attributes:
        claim: The claim, as the paper (or this project) makes it.
        verdict: ``SUPPORTED``, ``MIXED``, ``NOT SUPPORTED`` or ``NOT TESTED``.
        reason: The numbers the verdict was drawn from, one clause.
        rule: The rule that turned them into the verdict (the constants above).
        conclusion: The verdict as a clause of the report's one-line conclusion.
    """

    claim: str
    verdict: str
    reason: str
    rule: str
    conclusion: str


U_SHAPE_CLAIM = (
    "Layers near the input and the output are more language-specific than the middle (U shape)"
)
FLOOR_CLAIM = f"Every layer separates the languages more than the {FLOOR_LABEL}"
ABLATION_CLAIM = "Ablating a language's neurons hurts that language most"


def _by_count(k: int, n: int) -> str:
    """``SUPPORTED`` when ``k == n``, ``NOT SUPPORTED`` when ``k == 0``, else ``MIXED``."""
    return SUPPORTED if k == n else NOT_SUPPORTED if k == 0 else MIXED


def u_shape_verdict(u_over_floor: dict[str, list[float | None]] | None) -> Verdict:
    """The U shape, on the per-verse distance minus the same-language floor.

    Args:
        u_over_floor: ``{pair: [U, CI low, CI high]}`` (the summary's
            ``selectivity/verse_distance_u_over_floor``), None when not computed.
    """
    rule = (
        f"SUPPORTED when the 95% CI lies above {FLAT_U:g} for every pair, NOT SUPPORTED when "
        "for none, MIXED otherwise"
    )
    what = f"the language part of the per-verse distance (over the {FLOOR_LABEL})"
    if not u_over_floor:
        return Verdict(
            U_SHAPE_CLAIM,
            NOT_TESTED,
            "needs `verse_distance` among the metrics and `selectivity.control_pairs`",
            rule,
            f"the U shape was not tested against the {FLOOR_LABEL}",
        )
    with_ci = {pair: v for pair, v in u_over_floor.items() if num(v[1]) is not None}
    if not with_ci:
        return Verdict(
            U_SHAPE_CLAIM,
            NOT_TESTED,
            "no bootstrap intervals (selectivity.n_bootstrap = 0)",
            rule,
            f"the U shape over the {FLOOR_LABEL} has no interval to test",
        )
    above = sum(1 for _, low, _ in with_ci.values() if low > FLAT_U)
    below = sum(1 for _, _, high in with_ci.values() if high is not None and high < FLAT_U)
    n = len(with_ci)
    verdict = _by_count(above, n)
    reason = (
        f"the 95% CI of U over the {FLOOR_LABEL} lies above {FLAT_U:g} for {above} of {n} pairs"
    )
    if below:
        reason += f" (below {FLAT_U:g}, the inverse shape, for {below})"
    if len(with_ci) < len(u_over_floor):
        reason += f"; {len(u_over_floor) - n} pairs have no CI"
    conclusion = {
        SUPPORTED: f"{what} is U-shaped for every pair",
        MIXED: f"{what} is U-shaped for {above} of {n} pairs",
        NOT_SUPPORTED: f"{what} is U-shaped for no pair",
    }[verdict]
    return Verdict(U_SHAPE_CLAIM, verdict, reason, rule, conclusion)


def floor_verdict(layers_above_floor: dict[str, int] | None, n_layers: int | None) -> Verdict:
    """Every layer's per-verse distance above the same-language floor.

    Args:
        layers_above_floor: ``{pair: layers with q < FDR_Q}`` (the summary's
            ``selectivity/layers_above_floor``), None when not computed.
        n_layers: Layers in the profile.
    """
    rule = (
        f"SUPPORTED when every (pair, layer) cell has BH q < {FDR_Q:g}, NOT SUPPORTED when "
        "none has, MIXED otherwise"
    )
    if not layers_above_floor or not n_layers:
        return Verdict(
            FLOOR_CLAIM,
            NOT_TESTED,
            "needs `verse_distance` among the metrics and `selectivity.control_pairs`",
            rule,
            f"no layer was tested against the {FLOOR_LABEL}",
        )
    k, n = sum(layers_above_floor.values()), n_layers * len(layers_above_floor)
    verdict = _by_count(k, n)
    reason = (
        f"per-verse distance above the {FLOOR_LABEL} (BH q < {FDR_Q:g}) in {k} of {n} "
        f"(pair, layer) cells"
    )
    beyond = "the languages more than two translations of one language"
    conclusion = {
        SUPPORTED: f"every layer separates {beyond}",
        MIXED: f"{k} of {n} (pair, layer) cells separate {beyond}",
        NOT_SUPPORTED: f"no layer separates {beyond}",
    }[verdict]
    return Verdict(FLOOR_CLAIM, verdict, reason, rule, conclusion)


def ablation_verdict(ablation: dict[str, Any] | None) -> Verdict:
    """Diagonal dominance of the ablation matrix, against the activity-matched random control.

    Args:
        ablation: The summary's ``ablation`` namespace (``own_minus_random_activity``,
            ``own_minus_random``, ``n_diagonal_max``, ``n_langs``), None when it did not run.
            Without an activity-matched control the count-matched one stands in, and the
            reason says so.
    """
    rule = (
        f"SUPPORTED when own minus {{control}} > {MIN_ABLATION_EXCESS:+g} bits/byte and the "
        f"own set is the most harmful for more than {DIAGONAL_MAJORITY:.0%} of the languages, "
        "NOT SUPPORTED when neither holds, MIXED when one does"
    )
    control, excess = CONTROL_LABELS[ACTIVITY_ROW], None
    if ablation is not None:
        excess = num(ablation.get("own_minus_random_activity"))
        if excess is None:
            control, excess = CONTROL_LABELS[RANDOM_ROW], num(ablation.get("own_minus_random"))
    rule = rule.format(control=control)
    n_langs = int((ablation or {}).get("n_langs") or 0)
    if excess is None or not n_langs:
        return Verdict(
            ABLATION_CLAIM,
            NOT_TESTED,
            "the ablation did not run" if ablation is None else "no ablated language",
            rule,
            "the ablation was not run",
        )
    n_diagonal = int(ablation["n_diagonal_max"])
    rises = excess > MIN_ABLATION_EXCESS
    diagonal = n_diagonal / n_langs > DIAGONAL_MAJORITY
    verdict = (
        SUPPORTED if rises and diagonal else NOT_SUPPORTED if not (rises or diagonal) else MIXED
    )
    reason = (
        f"own minus {control} {excess:+.4f} bits/byte; own set most harmful for "
        f"{n_diagonal}/{n_langs} languages"
    )
    more = f"more than {control} neurons do"
    no_more = f"no more than {MIN_ABLATION_EXCESS:g} bits/byte beyond {control} neurons"
    conclusion = {
        SUPPORTED: f"ablating a language's neurons hurts that language most, and {more}",
        NOT_SUPPORTED: f"ablating a language's neurons hurts that language {no_more}, and its "
        f"set is the most harmful for {n_diagonal} of {n_langs} languages",
        MIXED: (
            f"ablating a language's neurons hurts that language {more}, but its set is the "
            f"most harmful for only {n_diagonal} of {n_langs} languages"
            if rises
            else f"a language's own set is the most harmful for {n_diagonal} of {n_langs} "
            f"languages, but hurts them {no_more}"
        ),
    }[verdict]
    return Verdict(ABLATION_CLAIM, verdict, reason, rule, conclusion)


def verdicts(summary: dict[str, Any]) -> dict[str, Verdict]:
    """One verdict per claim, from the summary's numbers alone (keys: ``u_shape``,
    ``above_floor``, ``ablation``)."""
    sel = summary.get("selectivity", {})
    return {
        "u_shape": u_shape_verdict(sel.get("verse_distance_u_over_floor")),
        "above_floor": floor_verdict(sel.get("layers_above_floor"), sel.get("n_layers")),
        "ablation": ablation_verdict(summary.get("ablation")),
    }


def conclusion(found: dict[str, dict[str, Any]]) -> str:
    """The verdicts' conclusions as one sentence (``found``: the summary's ``verdicts``)."""
    text = "; ".join(entry["conclusion"] for entry in found.values())
    return text[:1].upper() + text[1:] + "."

"""The verdict rules (mlinguality/run/verdicts.py) on hand-made summary numbers."""

from __future__ import annotations

import math

import pytest

from mlinguality.run.verdicts import (
    DIAGONAL_MAJORITY,
    MIN_ABLATION_EXCESS,
    MIXED,
    NOT_SUPPORTED,
    NOT_TESTED,
    SUPPORTED,
    ablation_verdict,
    conclusion,
    floor_verdict,
    u_shape_verdict,
    verdicts,
)


@pytest.mark.parametrize(
    ("cells", "expected", "k"),
    [
        ({"en-fr": [1.9, 1.8, 2.0], "en-ru": [1.5, 1.01, 1.9]}, SUPPORTED, 2),
        ({"en-fr": [1.9, 1.8, 2.0], "en-ru": [1.1, 0.95, 1.3]}, MIXED, 1),
        ({"en-fr": [1.1, 0.9, 1.3], "en-ru": [0.8, 0.7, 0.9]}, NOT_SUPPORTED, 0),
        ({"en-fr": [1.2, 1.0, 1.4]}, NOT_SUPPORTED, 0),  # touching 1 is not above it
    ],
)
def test_u_shape_rule(cells, expected, k):
    verdict = u_shape_verdict(cells)
    assert verdict.verdict == expected
    assert f"lies above 1 for {k} of {len(cells)} pairs" in verdict.reason
    if any(high < 1 for _, _, high in cells.values()):
        assert "(below 1, the inverse shape, for 1)" in verdict.reason


def _ablation(excess: float | None, n_diagonal: int, n_langs: int = 5, count: float = 0.3):
    return {
        "own_minus_random_activity": excess,
        "own_minus_random": count,
        "n_diagonal_max": n_diagonal,
        "n_langs": n_langs,
    }


def test_u_shape_rule_without_numbers_or_intervals_is_not_tested():
    assert u_shape_verdict(None).verdict == NOT_TESTED
    no_ci = u_shape_verdict({"en-fr": [1.5, None, None]})
    assert no_ci.verdict == NOT_TESTED and "n_bootstrap" in no_ci.reason
    # a pair without an interval is left out of the count, and said so
    partial = u_shape_verdict({"en-fr": [1.5, 1.2, 1.8], "en-ru": [1.4, math.nan, math.nan]})
    assert partial.verdict == SUPPORTED and "1 of 1 pairs; 1 pairs have no CI" in partial.reason


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"en-fr": 18, "en-ru": 18}, SUPPORTED),
        ({"en-fr": 18, "en-ru": 17}, MIXED),
        ({"en-fr": 0, "en-ru": 3}, MIXED),
        ({"en-fr": 0, "en-ru": 0}, NOT_SUPPORTED),
    ],
)
def test_above_floor_rule(counts, expected):
    verdict = floor_verdict(counts, 18)
    assert verdict.verdict == expected
    assert f"in {sum(counts.values())} of 36 (pair, layer) cells" in verdict.reason
    assert floor_verdict(None, 18).verdict == NOT_TESTED
    assert floor_verdict(counts, None).verdict == NOT_TESTED


@pytest.mark.parametrize(
    ("excess", "n_diagonal", "expected"),
    [
        (0.514, 3, SUPPORTED),  # the Gemma main job (docs/results.md)
        (0.514, 2, MIXED),  # above random, but the diagonal wins for only 2 of 5
        (0.0004, 5, MIXED),  # the diagonal wins, but no more than random sets do
        (0.0004, 0, NOT_SUPPORTED),  # the tiny model
        (-0.1, 1, NOT_SUPPORTED),
        (MIN_ABLATION_EXCESS, 3, MIXED),  # the threshold itself is not above it
    ],
)
def test_ablation_rule(excess, n_diagonal, expected):
    verdict = ablation_verdict(_ablation(excess, n_diagonal))
    assert verdict.verdict == expected
    assert verdict.reason == (
        f"own minus activity-matched random {excess:+.4f} bits/byte; own set most harmful for "
        f"{n_diagonal}/5 languages"
    )


def test_ablation_rule_majority_is_strict_and_falls_back_to_count_matched():
    half = int(DIAGONAL_MAJORITY * 4)
    assert ablation_verdict(_ablation(0.5, half, n_langs=4)).verdict == MIXED
    assert ablation_verdict(_ablation(0.5, half + 1, n_langs=4)).verdict == SUPPORTED
    fallback = ablation_verdict(_ablation(math.nan, 3, count=0.3))
    assert fallback.verdict == SUPPORTED
    assert fallback.reason.startswith("own minus count-matched random +0.3000")
    assert "count-matched random" in fallback.rule and "activity" not in fallback.rule
    assert ablation_verdict(None).verdict == NOT_TESTED
    assert ablation_verdict(_ablation(0.5, 0, n_langs=0)).verdict == NOT_TESTED


def test_verdicts_read_the_summary_namespaces():
    summary = {
        "selectivity": {
            "verse_distance_u_over_floor": {"en-fr": [1.9, 1.8, 2.0]},
            "layers_above_floor": {"en-fr": 17},
            "n_layers": 18,
        },
        "ablation": _ablation(0.0004, 0),
    }
    found = verdicts(summary)
    assert [v.verdict for v in found.values()] == [SUPPORTED, MIXED, NOT_SUPPORTED]
    text = conclusion({k: {"conclusion": v.conclusion} for k, v in found.items()})
    assert text == (
        "The language part of the per-verse distance (over the same-language floor) is "
        "U-shaped for every pair; 17 of 18 (pair, layer) cells separate the languages more "
        "than two translations of one language; ablating a language's neurons hurts that "
        "language no more than 0.02 bits/byte beyond activity-matched random neurons, and its "
        "set is the most harmful for 0 of 5 languages."
    )
    assert [v.verdict for v in verdicts({}).values()] == [NOT_TESTED] * 3

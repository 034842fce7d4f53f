"""Stage 4: per-neuron language selectivity, per-layer profiles, significance, selection.

``scores`` (neuron and layer metrics), ``ranks`` (tie-aware ranks), ``significance``
(permutation and bootstrap draws), ``selection`` (language-specific neurons), ``profile`` (the
per-layer profile and the U-shape test) and ``plots`` (imported on demand: it loads matplotlib).
"""

from mlinguality.selectivity.profile import (
    PROFILE_METRICS,
    SelectivityProfile,
    selectivity_profile,
    u_shape_test,
)
from mlinguality.selectivity.scores import (
    auroc,
    average_precision,
    cohens_d,
    lape,
    prob_diff,
    rank_correlation,
    topk_overlap,
)
from mlinguality.selectivity.selection import select_language_neurons

__all__ = [
    "PROFILE_METRICS",
    "SelectivityProfile",
    "auroc",
    "average_precision",
    "cohens_d",
    "lape",
    "prob_diff",
    "rank_correlation",
    "select_language_neurons",
    "selectivity_profile",
    "topk_overlap",
    "u_shape_test",
]

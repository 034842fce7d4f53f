"""Stage 4: per-neuron language selectivity, per-layer profiles, significance, selection.

``pairs`` (aligned per-pair tensors and top-k overlap, the base), ``scores`` (neuron and layer
metrics), ``ranks`` (tie-aware ranks), ``resampling`` (permutation and bootstrap draws,
Benjamini-Hochberg q-values), ``selection`` (language-specific neurons), ``u_shape`` (the U-shape
test), ``profile`` (the per-layer profile), ``controls`` (the same-language floor) and ``plots``
(imported on demand: it loads matplotlib).
"""

from mlinguality.selectivity.profile import (
    PROFILE_METRICS,
    SelectivityProfile,
    selectivity_profile,
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
from mlinguality.selectivity.u_shape import u_shape_test

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

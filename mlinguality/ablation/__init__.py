"""Stage 5: ablate neurons and measure per-language bits per byte.

``hooks`` (zero/mean/value writes at ``hook_post``, checked), ``random_sets`` (count- and
activity-matched random controls), ``evaluation`` (padding-correct
loss, bits per byte), ``matrix`` (the language x language ablation experiment).
"""

from mlinguality.ablation.evaluation import encode_languages, encode_texts, evaluate
from mlinguality.ablation.hooks import (
    AblationError,
    ablate,
    ablation_hooks,
    mask_from_pairs,
    mean_activation,
)
from mlinguality.ablation.matrix import AblationMatrix, ablation_matrix
from mlinguality.ablation.random_sets import firing_rate, random_matched_mask

__all__ = [
    "AblationError",
    "AblationMatrix",
    "ablate",
    "ablation_hooks",
    "ablation_matrix",
    "encode_languages",
    "encode_texts",
    "evaluate",
    "firing_rate",
    "mask_from_pairs",
    "mean_activation",
    "random_matched_mask",
]

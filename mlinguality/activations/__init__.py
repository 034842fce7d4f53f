"""Stage 3: MLP activations over a corpus, streamed into mergeable per-language statistics.

``batching`` tokenizes once and plans length-sorted batches; ``collect`` runs the hooks;
``stats`` holds :class:`ActivationStats` (sums, counts, max; saved as safetensors);
``residual`` and ``sampling`` add the residual stream of the same pass (``collect(residual=True)``:
per-example means of ``hook_resid_post`` and a seeded lens sample);
``distributed`` splits a collection into token-balanced shards and all-reduces the statistics
(torchrun, ``mlinguality collect --shard``).
"""

from mlinguality.activations.batching import pad_token_id, plan_batches, tokenize_texts
from mlinguality.activations.collect import POSITIONS, collect, is_gated, word_final_agreement
from mlinguality.activations.stats import ActivationStats, load_stats, save_stats

__all__ = [
    "POSITIONS",
    "ActivationStats",
    "collect",
    "is_gated",
    "load_stats",
    "pad_token_id",
    "plan_batches",
    "save_stats",
    "tokenize_texts",
    "word_final_agreement",
]

"""Language in the residual stream, layer by layer: the logit lens and the latent language,
language-ID probes, cross-lingual similarity of parallel examples, and language directions.

Each measure reads per-layer residuals (``blocks.L.hook_resid_post``) recorded by the collection
pass (:func:`mlinguality.activations.collect.collect` with ``residual=True``), so the layer-level
claim of the neuron metrics is seen four ways from one model pass.

- :mod:`~mlinguality.lenses.logit_lens`: the lens's loss and the language of its top-1 tokens.
- :mod:`~mlinguality.lenses.probes`: language-ID probes, their control task and code length.
- :mod:`~mlinguality.lenses.similarity`: CKA and retrieval of parallel examples, with a floor.
- :mod:`~mlinguality.lenses.views`: all three from a model and a corpus (or collected stats).

docs/lenses.md shows each on the tiny model.
"""

from mlinguality.lenses.logit_lens import (
    LENS_COLUMNS,
    LensDecoding,
    final_norm,
    lens_decode,
    lens_logits,
    logit_lens,
    logit_lens_languages,
    token_language_index,
)
from mlinguality.lenses.probes import (
    PROBE_COLUMNS,
    Probe,
    fit_probe,
    language_probe,
    online_code_length,
)
from mlinguality.lenses.similarity import (
    SIMILARITY_METRICS,
    SimilarityProfile,
    cka_draws,
    linear_cka,
    retrieval_accuracy,
    retrieval_draws,
    similarity_profile,
)
from mlinguality.lenses.views import (
    LayerViews,
    cross_validated_probe,
    example_folds,
    layer_views,
    residual_views,
)

__all__ = [
    "LENS_COLUMNS",
    "PROBE_COLUMNS",
    "SIMILARITY_METRICS",
    "LayerViews",
    "LensDecoding",
    "Probe",
    "SimilarityProfile",
    "cka_draws",
    "cross_validated_probe",
    "example_folds",
    "final_norm",
    "fit_probe",
    "language_probe",
    "layer_views",
    "lens_decode",
    "lens_logits",
    "linear_cka",
    "logit_lens",
    "logit_lens_languages",
    "online_code_length",
    "residual_views",
    "retrieval_accuracy",
    "retrieval_draws",
    "similarity_profile",
    "token_language_index",
]

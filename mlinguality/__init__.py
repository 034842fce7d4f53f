"""mlinguality: find language-specific neurons in multilingual language models.

The pipeline in Python, one function per stage (the names below are the public API; each is
imported on first use, so ``import mlinguality`` stays fast):

>>> import mlinguality as ml
>>> model = ml.load_model(ml.TinyModelConfig(n_layers=2, d_mlp=64))   # or "gemma-3-270m"
>>> corpus = ml.load_corpus({"en": ["Blessed are the peacemakers.", "Jesus wept."],
...                          "fr": ["Heureux ceux qui procurent la paix.", "Jésus pleura."]})
>>> stats = ml.collect(model, corpus, progress=False)                  # {lang: ActivationStats}
>>> masks = ml.select_language_neurons(stats, top_rate=0.05)           # {lang: Bool[layer, d_mlp]}
>>> ml.neuron_table(masks, stats).columns.tolist()
['lang', 'layer', 'neuron', 'score']
>>> with ml.ablate(model, masks["fr"] | masks["en"], mode="zero"):
...     loss = ml.evaluate(model, corpus.texts("fr"))
>>> loss.bits_per_byte > 0
True

Whole configured runs: :class:`RunConfig` and :func:`run_experiment` (what ``mlinguality run``
calls), and :class:`Run` to load a finished run folder back (``Run.load("runs/paper-...")``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily by __getattr__)
_EXPORTS = {
    # ground: models
    "GEMMA_SPEC": "mlinguality.model",
    "ModelLoadError": "mlinguality.model",
    "TinyModelConfig": "mlinguality.model",
    "load_model": "mlinguality.model",
    "model_fingerprint": "mlinguality.fingerprint",
    "MlingualityError": "mlinguality.errors",
    # corpus
    "ParallelCorpus": "mlinguality.corpus",
    "as_corpus": "mlinguality.corpus",
    "load_corpus": "mlinguality.corpus",
    # activations
    "ActivationStats": "mlinguality.activations",
    "collect": "mlinguality.activations",
    "load_stats": "mlinguality.activations",
    "save_stats": "mlinguality.activations",
    # selectivity: neuron and layer scores, profile, selection
    "auroc": "mlinguality.selectivity",
    "average_precision": "mlinguality.selectivity",
    "cohens_d": "mlinguality.selectivity",
    "lape": "mlinguality.selectivity",
    "prob_diff": "mlinguality.selectivity",
    "rank_correlation": "mlinguality.selectivity",
    "topk_overlap": "mlinguality.selectivity",
    "selectivity_profile": "mlinguality.selectivity",
    "u_shape_test": "mlinguality.selectivity",
    "select_language_neurons": "mlinguality.selectivity",
    "neuron_table": "mlinguality.selectivity.neurons",
    # ablation and evaluation
    "AblationError": "mlinguality.ablation",
    "ablate": "mlinguality.ablation",
    "ablation_hooks": "mlinguality.ablation",
    "ablation_matrix": "mlinguality.ablation",
    "encode_texts": "mlinguality.ablation",
    "evaluate": "mlinguality.ablation",
    "mask_from_pairs": "mlinguality.ablation",
    "mean_activation": "mlinguality.ablation",
    "random_matched_mask": "mlinguality.ablation",
    # configured runs and their results
    "RunConfig": "mlinguality.run.config",
    "run_experiment": "mlinguality.run.runner",
    "Run": "mlinguality.run.results",
    "compare": "mlinguality.run.results",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mlinguality' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

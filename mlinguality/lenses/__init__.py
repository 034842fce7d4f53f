"""Language in the residual stream, layer by layer: the logit lens and the latent language,
language-ID probes, cross-lingual similarity of parallel examples, and language directions.

Each measure reads per-layer residuals (``blocks.L.hook_resid_post``) recorded by the collection
pass (:func:`mlinguality.activations.collect.collect` with ``residual=True``), so the layer-level
claim of the neuron metrics is seen four ways from one model pass.
"""

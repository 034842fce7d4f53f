"""What language neurons read and write: top contexts, histograms, direct logit effects, neuron
cards and the browser.

- :mod:`~mlinguality.dashboards.contexts`: one batched pass with hooks on the chosen neurons
  only, keeping each neuron's top contexts per language and a fixed-bin activation histogram;
- :mod:`~mlinguality.dashboards.logits`: what a neuron writes: ``W_out[n]`` through the final
  norm's scale and the unembedding (its direct logit effect);
- :mod:`~mlinguality.dashboards.token_language`: the language of each token, from the corpus's
  own counts;
- :mod:`~mlinguality.dashboards.cards`: a card per neuron (text, HTML for notebooks) and the
  output-language test against activity-matched random neurons;
- :mod:`~mlinguality.dashboards.browser`: ``neurons.html``, one self-contained page.
"""

"""What language neurons read and write: top contexts, histograms, direct logit effects, neuron
cards and the browser."""

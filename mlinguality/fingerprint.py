"""A model's identity from its weights, for caches that must not mix up two models.

The runner keys its stage cache on this when it is handed a model object: two models under one
spec string (a fine-tuned copy, another seed of a tiny model) get different keys, the same
weights loaded twice get the same key.
"""

from __future__ import annotations

import hashlib

import torch

_SAMPLES = 4096  # evenly spaced entries hashed per tensor, besides its name, shape and sum


def model_fingerprint(model: torch.nn.Module) -> str:
    """A 16-hex-digit digest of every parameter's name, shape, dtype, sum and sampled entries.

    Reads each tensor once (a float64 sum) and hashes a strided sample of its values, so it
    costs about one pass over the weights and no copy of them; any change to the weights
    moves the sum or the sample with overwhelming likelihood, and a retrained or re-seeded
    model differs everywhere.

    >>> from mlinguality import TinyModelConfig, load_model
    >>> a = load_model(TinyModelConfig(n_layers=2, d_mlp=64, seed=0))
    >>> b = load_model(TinyModelConfig(n_layers=2, d_mlp=64, seed=1))
    >>> model_fingerprint(a) == model_fingerprint(a), model_fingerprint(a) == model_fingerprint(b)
    (True, False)
    """
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            flat = tensor.detach().reshape(-1)  # any layout: only the values matter
            step = max(flat.numel() // _SAMPLES, 1)
            sample = flat[::step][:_SAMPLES].to("cpu", torch.float64)
            total = float(flat.double().sum())
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|{total!r}|".encode())
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]

"""What a neuron writes: its direct effect on the logits.

A neuron ``n`` of layer ``L`` adds ``a * W_out[n]`` to the residual stream (``a`` its
activation at ``blocks.L.mlp.hook_post``). Its *direct* logit effect is that vector read by the
unembedding through the final norm, as TransformerLens's direct logit attribution reads it:

    effect[n] = W_U (g * P W_out[n])

with ``g`` the final norm's learned per-dimension scale (Gemma's RMSNorm multiplies by
``1 + weight``, Llama's by ``weight``, LayerNorm by ``weight``) and ``P`` the centring of a
LayerNorm (identity for RMSNorm). The norm's division by the residual's RMS depends on the
input; it is treated as a positive constant (1), which changes magnitudes but never the ranking
of tokens for one neuron. The unembedding's bias is the same for every neuron and left out.

Nothing here is model-specific: ``W_out[n]`` is read by calling the MLP's output projection on
one-hot vectors, and ``g`` and ``P`` by probing the final norm with two vectors, so the same code
serves Gemma, Llama, GPT-2 and any family TransformerBridge wraps.
"""

from __future__ import annotations

from collections.abc import Sequence

import einops
import torch
from jaxtyping import Float
from torch import Tensor

_PROBE = 1e3  # probe magnitude: the norm's epsilon is then negligible (1e-6 against 1e6)


def _component(module):
    """The wrapped torch module of a TransformerBridge component (or the module itself)."""
    return getattr(module, "original_component", module)


def output_directions(model, neurons: Sequence[tuple[int, int]]) -> Float[Tensor, "neuron d_model"]:
    """``W_out[n]`` of each ``(layer, neuron)``: what one unit of activation adds to the residual.

    Read by calling the output projection on one-hot inputs (minus its bias), so Linear and
    GPT-2's Conv1D layouts give the same answer.
    """
    rows = []
    with torch.no_grad():
        for layer, neuron in neurons:
            out = _component(model.blocks[layer].mlp.out)
            weight = next(out.parameters())
            one_hot = torch.zeros(2, model.cfg.d_mlp, dtype=weight.dtype, device=weight.device)
            one_hot[1, neuron] = 1.0
            image = out(one_hot)
            rows.append((image[1] - image[0]).float().cpu())
    return torch.stack(rows) if rows else torch.zeros(0, model.cfg.d_model)


def final_norm_map(model) -> tuple[Float[Tensor, " d_model"], bool]:
    """The final norm's per-dimension scale ``g`` and whether it centres (LayerNorm).

    Probed: a norm applied to ``c * s`` for a mean-zero sign vector ``s`` returns
    ``g * s`` (times ``c / sqrt(c^2 + eps)``, 1 for ``c = 1000``) plus its bias; applied to a
    constant vector, a centring norm returns its bias alone.
    """
    norm = _component(model.ln_final)
    weight = next(norm.parameters(), None)
    dtype = torch.float32 if weight is None else weight.dtype
    device = "cpu" if weight is None else weight.device
    d_model = model.cfg.d_model
    signs = torch.ones(d_model, device=device, dtype=dtype)
    signs[1::2] = -1.0
    if d_model % 2:  # an odd width: the last entry 0 keeps the mean at zero
        signs[-1] = 0.0
    with torch.no_grad():
        probes = torch.stack(
            [torch.zeros_like(signs), _PROBE * signs, _PROBE * torch.ones_like(signs)]
        )
        out = norm(probes[:, None, :])[:, 0, :].float().cpu()
    image, constant = out[1] - out[0], out[2] - out[0]  # out[0]: the norm's bias alone
    rms = float(signs.float().pow(2).mean().sqrt())
    scale = image * signs.float().cpu() / rms
    if d_model % 2:
        scale[-1] = scale[:-1].mean()  # unprobed; a fallback, documented above
    centres = bool(constant.abs().max() < 1e-3 * image.abs().max().clamp_min(1e-12))
    return scale, centres


def unembedding(model) -> Float[Tensor, "d_vocab d_model"]:
    """``W_U`` as the unembedding's ``[vocab, d_model]`` weight."""
    weight = _component(model.unembed).weight
    return weight.detach().float().cpu()


def effective_directions(
    model, neurons: Sequence[tuple[int, int]]
) -> Float[Tensor, "neuron d_model"]:
    """``g * P W_out[n]``: each neuron's output direction as the unembedding reads it."""
    directions = output_directions(model, neurons)
    scale, centres = final_norm_map(model)
    if centres:
        directions = directions - einops.reduce(directions, "neuron d_model -> neuron 1", "mean")
    return directions * scale


def direct_logit_effect(
    model, neurons: Sequence[tuple[int, int]], tokens: Tensor | None = None
) -> Float[Tensor, "neuron token"]:
    """The direct effect of each neuron on the logit of every token (or of ``tokens``, ids).

    >>> from mlinguality import TinyModelConfig, load_model
    >>> model = load_model(TinyModelConfig(n_layers=2, d_mlp=64))
    >>> direct_logit_effect(model, [(0, 3), (1, 5)]).shape[0]
    2
    """
    unembed = unembedding(model)
    if tokens is not None:
        unembed = unembed[tokens]
    return effective_directions(model, neurons) @ unembed.T


def centred_logit_effect(
    model, neurons: Sequence[tuple[int, int]], tokens: Tensor | None = None
) -> Float[Tensor, "neuron token"]:
    """:func:`direct_logit_effect` minus each neuron's mean effect over the whole vocabulary (a
    uniform shift of every logit changes no probability); for ``tokens`` only, the mean is still
    the vocabulary's (one product with the mean unembedding row, so a few thousand corpus tokens
    cost a few thousand columns, not 262k)."""
    unembed = unembedding(model)
    directions = effective_directions(model, neurons)
    mean = directions @ einops.reduce(unembed, "d_vocab d_model -> d_model", "mean")
    chosen = unembed if tokens is None else unembed[tokens]
    return directions @ chosen.T - mean[:, None]


def centred(effect: Float[Tensor, "neuron d_vocab"]) -> Float[Tensor, "neuron d_vocab"]:
    """Each neuron's effect minus its mean over the vocabulary (a uniform shift of every logit
    changes no probability)."""
    return effect - einops.reduce(effect, "neuron d_vocab -> neuron 1", "mean")

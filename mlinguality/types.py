"""Shared tensor aliases, named with TransformerLens's dimension names.

Every public function that takes or returns a tensor states its shape with one of these (or an
inline jaxtyping annotation); pytest checks them at test time via ``--jaxtyping-packages``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jaxtyping import Bool, Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from transformer_lens.hook_points import HookPoint
else:
    # What TransformerLens passes a hook as ``hook=`` (its protocol: ``fn(tensor, *, hook)``),
    # for type checkers only. At run time (and under pytest's jaxtyping checks) the ``hook``
    # argument is not checked: importing transformer_lens costs ~1.3 s that model-free uses
    # (reading a finished run) should not pay, and a bridge in compatibility mode passes an
    # ``_AliasedHookPoint``, which is no HookPoint. The tensors a hook takes and returns are
    # checked.
    HookPoint = Any

# The hook points this toolkit reads and writes, one spelling each (TransformerBridge aliases).
HOOK_POST = "blocks.{layer}.mlp.hook_post"  # act(gate) * up on gated MLPs, act(pre) on plain ones
HOOK_PRE = "blocks.{layer}.mlp.hook_pre"  # the gate pre-activation on gated MLPs
HOOK_PRE_LINEAR = "blocks.{layer}.mlp.hook_pre_linear"  # the up projection; exists only when gated
# The residual stream after block L: on a TransformerBridge an alias of ``blocks.{layer}.hook_out``
# (the block's output HookPoint, which is what fires and what ``hook.name`` says).
HOOK_RESID_POST = "blocks.{layer}.hook_resid_post"


def hook_post_name(layer: int) -> str:
    """``blocks.{layer}.mlp.hook_post``."""
    return HOOK_POST.format(layer=layer)


def hook_pre_name(layer: int) -> str:
    """``blocks.{layer}.mlp.hook_pre``."""
    return HOOK_PRE.format(layer=layer)


def resid_post_name(layer: int) -> str:
    """``blocks.{layer}.hook_resid_post``."""
    return HOOK_RESID_POST.format(layer=layer)


TokenIds = Int[Tensor, "batch pos"]
AttentionMask = Int[Tensor, "batch pos"]
PositionMask = Bool[Tensor, "batch pos"]
MlpActs = Float[Tensor, "batch pos d_mlp"]  # a hook_post / hook_pre activation of one layer
ResidActs = Float[Tensor, "batch pos d_model"]  # the residual stream (hook_embed, unembed.hook_in)
ResidVector = Float[Tensor, " d_model"]  # one residual-stream vector: a mean, a direction
LayerResid = Float[Tensor, "layer d_model"]  # one residual vector per (chosen) layer
Logits = Float[Tensor, "batch pos d_vocab"]
LayerNeuron = Float[Tensor, "layer d_mlp"]  # one value per neuron: a mean, a target, a score
LayerNeuronCount = Int[Tensor, "layer d_mlp"]  # one count per neuron
NeuronMask = Bool[Tensor, "layer d_mlp"]  # a neuron set: True at the chosen neurons
ExampleLayerNeuron = Float[Tensor, "example layer d_mlp"]
LossPerToken = Float[Tensor, "batch pos-1"]
ResidPerExample = Float[Tensor, "example layer d_model"]  # a per-example mean residual per layer
LensResid = Float[Tensor, "sample layer d_model"]  # the residual of sampled positions, every layer
LensTokens = Int[Tensor, " sample"]  # the next token id of each sampled position
LensWhere = Int[Tensor, "sample 2"]  # (example index, token position) of each sampled position

__all__ = [
    "HOOK_POST",
    "HOOK_PRE",
    "HOOK_PRE_LINEAR",
    "HOOK_RESID_POST",
    "AttentionMask",
    "ExampleLayerNeuron",
    "HookPoint",
    "LayerNeuron",
    "LayerNeuronCount",
    "LensResid",
    "LensTokens",
    "LensWhere",
    "LayerResid",
    "Logits",
    "LossPerToken",
    "MlpActs",
    "NeuronMask",
    "PositionMask",
    "ResidActs",
    "ResidPerExample",
    "ResidVector",
    "TokenIds",
    "hook_post_name",
    "hook_pre_name",
    "resid_post_name",
]

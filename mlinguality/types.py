"""Shared tensor aliases, named with TransformerLens's dimension names.

Every public function that takes or returns a tensor states its shape with one of these (or an
inline jaxtyping annotation); pytest checks them at test time via ``--jaxtyping-packages``.
"""

from __future__ import annotations

from jaxtyping import Bool, Float, Int
from torch import Tensor

# The hook points this toolkit reads and writes, one spelling each (TransformerBridge aliases).
HOOK_POST = "blocks.{layer}.mlp.hook_post"  # act(gate) * up on gated MLPs, act(pre) on plain ones
HOOK_PRE = "blocks.{layer}.mlp.hook_pre"  # the gate pre-activation on gated MLPs
HOOK_PRE_LINEAR = "blocks.{layer}.mlp.hook_pre_linear"  # the up projection; exists only when gated


def hook_post_name(layer: int) -> str:
    """``blocks.{layer}.mlp.hook_post``."""
    return HOOK_POST.format(layer=layer)


def hook_pre_name(layer: int) -> str:
    """``blocks.{layer}.mlp.hook_pre``."""
    return HOOK_PRE.format(layer=layer)


TokenIds = Int[Tensor, "batch pos"]
AttentionMask = Int[Tensor, "batch pos"]
PositionMask = Bool[Tensor, "batch pos"]
MlpActs = Float[Tensor, "batch pos d_mlp"]
LayerNeuron = Float[Tensor, "layer d_mlp"]
ExampleLayerNeuron = Float[Tensor, "example layer d_mlp"]
LossPerToken = Float[Tensor, "batch pos-1"]

__all__ = [
    "HOOK_POST",
    "HOOK_PRE",
    "HOOK_PRE_LINEAR",
    "AttentionMask",
    "ExampleLayerNeuron",
    "LayerNeuron",
    "LossPerToken",
    "MlpActs",
    "PositionMask",
    "TokenIds",
    "hook_post_name",
    "hook_pre_name",
]

"""Shared tensor aliases, named with TransformerLens's dimension names.

Every public function that takes or returns a tensor states its shape with one of these (or an
inline jaxtyping annotation); pytest checks them at test time via ``--jaxtyping-packages``.
"""

from __future__ import annotations

from jaxtyping import Bool, Float, Int
from torch import Tensor

TokenIds = Int[Tensor, "batch pos"]
AttentionMask = Int[Tensor, "batch pos"]
PositionMask = Bool[Tensor, "batch pos"]
MlpActs = Float[Tensor, "batch pos d_mlp"]
LayerNeuron = Float[Tensor, "layer d_mlp"]
ExampleLayerNeuron = Float[Tensor, "example layer d_mlp"]
LossPerToken = Float[Tensor, "batch pos-1"]

__all__ = [
    "AttentionMask",
    "ExampleLayerNeuron",
    "LayerNeuron",
    "LossPerToken",
    "MlpActs",
    "PositionMask",
    "TokenIds",
]

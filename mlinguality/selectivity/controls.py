"""Controls of the per-layer profile: the same-language floor.

Two different texts differ at every layer, so the within-pair permutation null ("the two
languages are exchangeable verse by verse") is rejected by any two translations, even of one
language. What is about *language* is how much more en-X differs than two translations of one
language (en-en', e.g. KJV and WEB): the **same-language floor**.

- :func:`verse_distance`: per verse and layer, the mean over neurons of ``|x_A - x_B| / s``,
  ``x`` the verse's mean activation and ``s`` a per-neuron scale (the sd over verses of the
  anchor language's verse means), so busy neurons do not dominate.
- :func:`floor_test`: is en-X farther apart than the control pair, verse by verse? A paired
  sign-flip permutation test of ``D_pair(e) - D_control(e)`` per layer; one-sided p-values.

The profile's q-values for multiple comparisons (over layers and pairs) come from
:func:`mlinguality.selectivity.resampling.benjamini_hochberg`.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from mlinguality.errors import MlingualityError
from mlinguality.selectivity.pairs import PairTensors
from mlinguality.selectivity.resampling import permutation_p_value, permutation_signs
from mlinguality.types import ExampleLayerNeuron, LayerNeuron

__all__ = ["floor_test", "neuron_scale", "verse_distance"]


def neuron_scale(means: ExampleLayerNeuron) -> LayerNeuron:
    """Per-neuron sd over verses of verse mean activations (floored at 1e-6 of the layer's
    median sd, so dead neurons do not divide by zero)."""
    sd = means.double().std(dim=0)
    floor = sd.median(dim=-1, keepdim=True).values.clamp_min(1e-12) * 1e-6
    return torch.maximum(sd, floor)


def verse_distance(pair: PairTensors, scale: LayerNeuron) -> Float[Tensor, "example layer"]:
    """Mean over neurons of ``|x_A(e) - x_B(e)| / scale`` for every verse ``e`` and layer."""
    diff = (pair.mean_a.double() - pair.mean_b.double()).abs() / scale.double()
    return diff.mean(dim=-1)


def floor_test(
    distance: Float[Tensor, "example layer"],
    control: Float[Tensor, "example layer"],
    n_permutations: int = 1000,
    seed: int = 0,
) -> tuple[Float[Tensor, " layer"], Float[Tensor, " layer"]]:
    """Paired test of "the pair differs more than the same-language control", per layer.

    Args:
        distance: :func:`verse_distance` of the pair (en-X).
        control: The same for the control pair (en-en'), over the same verses in the same order.
        n_permutations: Random sign flips of the per-verse differences.
        seed: Seeds the flips.

    Returns:
        ``(excess, p_value)``: the mean over verses of ``distance - control`` and its one-sided
        permutation p-value (NaN without permutations).
    """
    if distance.shape != control.shape:
        raise MlingualityError(
            f"floor test: pair distances {tuple(distance.shape)} and control distances "
            f"{tuple(control.shape)} cover different verses or layers"
        )
    diff = distance.double() - control.double()
    excess = diff.mean(0)
    if n_permutations < 1:
        return excess, torch.full_like(excess, float("nan"))
    generator = torch.Generator().manual_seed(seed)
    signs = permutation_signs(n_permutations, diff.shape[0], generator).double()
    null = signs @ diff / diff.shape[0]
    return excess, permutation_p_value(excess, null)

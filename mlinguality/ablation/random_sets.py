"""Random neuron sets matched to a selection: the controls of ablation and steering.

Selected neurons are busy neurons: a control drawn by count alone mixes activity with
language. :func:`random_matched_mask` draws the same number of neurons per layer and, given the
neurons' :func:`firing_rate` on the selection data, from the same firing-rate bins.
"""

from __future__ import annotations

from collections.abc import Mapping

import einops
import torch
from jaxtyping import Int
from torch import Tensor

from mlinguality.ablation.hooks import AblationError, mask_from_pairs
from mlinguality.activations.stats import ActivationStats
from mlinguality.types import LayerNeuron, NeuronMask

__all__ = ["activity_bins", "firing_rate", "mask_from_pairs", "random_matched_mask"]


def firing_rate(stats: Mapping[str, ActivationStats]) -> LayerNeuron:
    """Per-neuron firing rate averaged over languages (each language counts once): the share
    of positions where the gate fires on gated MLPs, where ``hook_post > 0`` on plain ones.

    The activity an activity-matched random control (:func:`random_matched_mask`) matches.
    """
    if not stats:
        raise AblationError("firing_rate: no language statistics given")
    rates = torch.stack([s.p_gate_positive for s in stats.values()])
    return einops.reduce(rates, "lang layer d_mlp -> layer d_mlp", "mean").float()


def activity_bins(activity: LayerNeuron, n_bins: int) -> Int[Tensor, "layer d_mlp"]:
    """Equal-count bins of ``activity`` within each layer (0 = least active), ``[layer, d_mlp]``.

    >>> activity_bins(torch.tensor([[0.3, 0.1, 0.4, 0.2]]), 2).tolist()
    [[1, 0, 1, 0]]
    """
    d_mlp = activity.shape[1]
    rank = activity.argsort(dim=1, stable=True).argsort(dim=1, stable=True)
    return rank * n_bins // d_mlp


def random_matched_mask(
    mask: NeuronMask,
    generator: torch.Generator | None = None,
    *,
    activity: LayerNeuron | None = None,
    n_bins: int = 10,
) -> NeuronMask:
    """A random mask with the same number of neurons in every layer as ``mask``.

    With ``activity`` (e.g. :func:`firing_rate` on the selection data), also matched in
    activity: each layer's neurons fall into ``n_bins`` equal-count bins by activity, and each
    bin gets as many random neurons as ``mask`` has there, drawn from the bin's neurons outside
    ``mask`` (from the whole bin when too few are outside). Selected neurons are busy neurons;
    a count-only control mixes activity with language.

    >>> mask = mask_from_pairs([(0, 1), (0, 2), (1, 0)], n_layers=2, d_mlp=8)
    >>> random_matched_mask(mask, torch.Generator().manual_seed(0)).sum(dim=1).tolist()
    [2, 1]
    """
    out = torch.zeros_like(mask, dtype=torch.bool)
    if activity is None:
        counts = einops.reduce(mask.long(), "layer d_mlp -> layer", "sum")
        for layer, count in enumerate(counts.tolist()):
            if count:
                out[layer, torch.randperm(mask.shape[1], generator=generator)[:count]] = True
        return out
    if tuple(activity.shape) != tuple(mask.shape):
        raise AblationError(
            f"activity has shape {tuple(activity.shape)}, the mask {tuple(mask.shape)}"
        )
    if n_bins < 1:
        raise AblationError(f"n_bins must be >= 1, got {n_bins}")
    bins = activity_bins(activity.cpu(), min(n_bins, mask.shape[1]))
    for layer in mask.any(dim=1).nonzero().flatten().tolist():
        for b in bins[layer][mask[layer]].unique().tolist():
            members = (bins[layer] == b).nonzero().flatten()
            count = int(mask[layer, members].sum())
            pool = members[~mask[layer, members]]
            if len(pool) < count:
                pool = members
            out[layer, pool[torch.randperm(len(pool), generator=generator)[:count]]] = True
    return out

"""The base of the pairwise scores: aligned per-example tensors of one language pair, top-k overlap.

:class:`PairTensors` holds two languages' per-example statistics over the same parallel examples
(example ``e`` is the same verse in both), built from two
:class:`~mlinguality.activations.stats.ActivationStats` by
:func:`mlinguality.selectivity.scores.aligned_pair`. The top-k helpers (:func:`topk_iou`,
:func:`default_k`, :func:`chance_iou`) are shared by the per-layer scores of
:mod:`mlinguality.selectivity.scores` and the draws of :mod:`mlinguality.selectivity.resampling`;
this module imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from mlinguality.errors import MlingualityError
from mlinguality.types import ExampleLayerNeuron

__all__ = ["PairTensors", "chance_iou", "default_k", "topk_iou"]


@dataclass
class PairTensors:
    """Aligned per-example tensors of one language pair (example ``e`` is the same verse in both).

    Attributes:
        lang_a: Language A.
        lang_b: Language B.
        mean_a: Per-example mean activation in A.
        mean_b: Per-example mean activation in B.
        frac_a: Per-example firing share in A (gate > 0 on gated MLPs, hook_post > 0 else).
        frac_b: Same for B.
        n_tokens_a: Counted positions per example in A.
        n_tokens_b: Same for B.
    """

    lang_a: str
    lang_b: str
    mean_a: ExampleLayerNeuron
    mean_b: ExampleLayerNeuron
    frac_a: ExampleLayerNeuron
    frac_b: ExampleLayerNeuron
    n_tokens_a: Float[Tensor, " example"]
    n_tokens_b: Float[Tensor, " example"]

    def __post_init__(self) -> None:
        shape = tuple(self.mean_a.shape)
        for name in ("mean_b", "frac_a", "frac_b"):
            if tuple(getattr(self, name).shape) != shape:
                raise MlingualityError(
                    f"PairTensors {self.lang_a}-{self.lang_b}: {name} has shape "
                    f"{tuple(getattr(self, name).shape)}, mean_a has {shape}"
                )
        if shape[0] < 2:
            raise MlingualityError(
                f"PairTensors {self.lang_a}-{self.lang_b}: need at least 2 aligned examples, "
                f"got {shape[0]}"
            )

    @property
    def n_examples(self) -> int:
        return self.mean_a.shape[0]

    @property
    def n_layers(self) -> int:
        return self.mean_a.shape[1]

    @property
    def d_mlp(self) -> int:
        return self.mean_a.shape[2]

    @property
    def name(self) -> str:
        return f"{self.lang_a}-{self.lang_b}"


# --- top-k overlap -----------------------------------------------------------------------------


def topk_iou(
    mean_a: Float[Tensor, "*batch layer d_mlp"], mean_b: Float[Tensor, "*batch layer d_mlp"], k: int
) -> Float[Tensor, "*batch layer"]:
    """IoU of the top-k neurons (largest mean activation) of A and of B, per layer.

    >>> topk_iou(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([[3.0, 1.0, 2.0]]), 2)
    tensor([0.3333])
    """
    d_mlp = mean_a.shape[-1]
    if not 0 < k <= d_mlp:
        raise MlingualityError(f"top-k overlap needs 0 < k <= d_mlp={d_mlp}, got k={k}")
    top_a = _topk_mask(mean_a, k)
    top_b = _topk_mask(mean_b, k)
    inter = (top_a & top_b).sum(-1).to(mean_a.dtype)
    return inter / (2 * k - inter)


def _topk_mask(values: Float[Tensor, "*batch n"], k: int) -> Bool[Tensor, "*batch n"]:
    index = values.topk(k, dim=-1).indices
    return torch.zeros_like(values, dtype=torch.bool).scatter_(-1, index, True)


def default_k(d_mlp: int) -> int:
    """Top-k size used when none is given: 5% of d_mlp (102 of Gemma 3 270M's 2048), at least 1.

    Large enough that the overlap is not dominated by a handful of outlier neurons, small enough
    that chance overlap (k/d_mlp = 5%) stays far below the observed overlaps.

    >>> default_k(2048), default_k(8)
    (102, 1)
    """
    return max(1, round(0.05 * d_mlp))


def chance_iou(k: int, d_mlp: int) -> float:
    """Expected IoU of two independent uniformly random k-subsets of d_mlp neurons.

    The intersection is hypergeometric with mean ``k**2 / d_mlp``; the IoU is
    ``X / (2k - X)`` averaged over its distribution.

    >>> round(chance_iou(1, 2), 6)
    0.5
    """
    from scipy.stats import hypergeom

    support = np.arange(0, k + 1)
    pmf = hypergeom(d_mlp, k, k).pmf(support)
    return float((pmf * support / (2 * k - support)).sum())

"""Ranking helpers shared by the selectivity scores and their permutation draws.

Average ranks with ties (as ``scipy.stats.rankdata``), vectorised over leading dimensions, so
that a score and its permuted or bootstrapped copies rank values the same way.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["midranks", "ranks_last", "spearman_last", "tie_groups"]


def midranks(
    values: Float[Tensor, "n *rest"],  # noqa: F821 (a jaxtyping shape)
) -> Float[Tensor, "n *rest"]:  # noqa: F821
    """Ranks 1..n along dim 0, ties sharing their average rank (as ``scipy.stats.rankdata``)."""
    return ranks_last(values.movedim(0, -1).contiguous()).movedim(-1, 0)


def tie_groups(
    ordered: Float[Tensor, "*batch n"],
) -> tuple[Int[Tensor, "*batch n"], Int[Tensor, "*batch n"]]:
    """For sorted values: the first index of each one's tie group and one past its last index."""
    n = ordered.shape[-1]
    position = torch.arange(n).expand(ordered.shape)
    new_group = torch.ones_like(ordered, dtype=torch.bool)
    new_group[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    first = torch.where(new_group, position, 0).cummax(-1).values
    ends = torch.ones_like(new_group)
    ends[..., :-1] = new_group[..., 1:]
    after = torch.where(ends, position + 1, n).flip(-1).cummin(-1).values.flip(-1)
    return first, after


def ranks_last(values: Float[Tensor, "*batch n"]) -> Float[Tensor, "*batch n"]:
    """Average ranks 1..n along the last dim (vectorised over the leading dims)."""
    ordered, order = values.sort(dim=-1)
    if not (ordered[..., 1:] == ordered[..., :-1]).any():
        rank_sorted = torch.arange(1, values.shape[-1] + 1, dtype=values.dtype).expand_as(values)
    else:
        first, after = tie_groups(ordered)
        rank_sorted = ((first + after + 1) / 2).to(values.dtype)
    return torch.empty_like(values).scatter_(-1, order, rank_sorted)


def spearman_last(
    a: Float[Tensor, "*batch n"], b: Float[Tensor, "*batch n"]
) -> Float[Tensor, "*batch"]:
    """Spearman rho between ``a`` and ``b`` along the last dim (average ranks for ties)."""
    ra = ranks_last(a)
    rb = ranks_last(b)
    ra = ra - ra.mean(-1, keepdim=True)
    rb = rb - rb.mean(-1, keepdim=True)
    denom = (ra.square().sum(-1) * rb.square().sum(-1)).sqrt()
    return (ra * rb).sum(-1) / denom.clamp_min(1e-30)

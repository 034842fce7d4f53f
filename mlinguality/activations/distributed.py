"""Collection spread over processes: token-balanced shards and the all-reduce of statistics.

Two ways to split one collection:

- ``torchrun`` (``torch.distributed``): every rank collects :func:`shard_examples`' share of the
  examples and :func:`all_reduce_stats` combines the statistics on every rank (counts summed,
  maxima by MAX, ``sum``/``m2`` gathered and merged in rank order, per-example rows gathered
  back into corpus order). Gloo on CPUs, NCCL on GPUs (tensors travel on ``cuda:LOCAL_RANK``).
- Separate jobs without a process group (Slurm arrays, several machines): each writes one
  shard with :func:`collect_shard`; :meth:`ActivationStats.merge` (or ``mlinguality merge``)
  combines them, refusing shards of another model, setting or corpus.

Sharding is deterministic and depends only on the examples' token counts, so every rank (or
every job) computes the same assignment without talking to the others.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

import torch

from mlinguality.activations.batching import tokenize_texts
from mlinguality.activations.collect import collect
from mlinguality.activations.sampling import merge_lens
from mlinguality.activations.stats import EXAMPLE_TENSORS, ActivationStats, combine_m2
from mlinguality.corpus.core import ParallelCorpus
from mlinguality.errors import MlingualityError


class ShardError(MlingualityError):
    """A shard request that cannot be met (more shards than examples, a bad I/N)."""


def balance(weights: Sequence[int], n_groups: int) -> list[int]:
    """The group of each unit, so that the groups' total weights are nearly equal.

    Greedy longest-first: each unit, heaviest first (ties by index), goes to the lightest group
    so far (ties to the lowest group). Deterministic, so every rank computes the same answer.

    >>> balance([5, 1, 4, 2, 3], 2)
    [0, 0, 1, 0, 1]
    """
    load, owner = [0] * n_groups, [0] * len(weights)
    for index in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        group = min(range(n_groups), key=lambda g: (load[g], g))
        owner[index], load[group] = group, load[group] + weights[index]
    return owner


def shard_examples(weights: Sequence[int], n_shards: int) -> list[list[int]]:
    """Split examples into ``n_shards`` groups of nearly equal total weight (tokens).

    The groups of :func:`balance`; each shard lists its examples in corpus order, and every
    shard gets at least one example.

    >>> shard_examples([5, 1, 4, 2, 3], 2)
    [[0, 1, 3], [2, 4]]
    """
    if n_shards < 1:
        raise ShardError(f"shards: need at least one, got {n_shards}")
    if n_shards > len(weights):
        raise ShardError(
            f"shards: {n_shards} shards (ranks) for {len(weights)} examples; "
            "use at most one shard per example"
        )
    owner = balance(weights, n_shards)
    return [
        [index for index, group in enumerate(owner) if group == shard] for shard in range(n_shards)
    ]


def example_tokens(tokenizer, corpus: ParallelCorpus, langs: Sequence[str]) -> list[int]:
    """Tokens of each example summed over ``langs`` (the weight that balances shards)."""
    totals = [0] * len(corpus.ids)
    for lang in langs:
        for index, text in enumerate(tokenize_texts(tokenizer, corpus.texts(lang))):
            totals[index] += len(text.ids)
    return totals


def corpus_fingerprint(corpus: ParallelCorpus, langs: Sequence[str]) -> str:
    """A short hash of the whole corpus (ids and texts of ``langs``): shards of one collection
    carry the same fingerprint, shards of different corpora do not."""
    digest = hashlib.sha256()
    digest.update(json.dumps([list(map(str, corpus.ids)), list(langs)]).encode())
    for lang in langs:
        digest.update(json.dumps(list(corpus.texts(lang)), ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (0-based I) -> ``(I, N)``, with a one-line error for anything else.

    >>> parse_shard("1/4")
    (1, 4)
    """
    index, _, count = text.partition("/")
    try:
        shard, n_shards = int(index), int(count)
    except ValueError:
        raise ShardError(f"--shard: expected I/N such as 0/4, got {text!r}") from None
    if not 0 <= shard < n_shards:
        raise ShardError(f"--shard: need 0 <= I < N, got {text!r}")
    return shard, n_shards


def collect_shard(
    model, corpus: ParallelCorpus, langs: Sequence[str], shard: int, n_shards: int, **collect_kwargs
) -> dict[str, ActivationStats]:
    """Statistics of shard ``shard`` of ``n_shards`` (token-balanced over ``langs``).

    Each language's ``meta`` records ``corpus`` (the fingerprint of the whole corpus) and
    ``shard`` (``"I/N"``), so that merging refuses shards of another corpus.
    """
    langs = list(langs)
    shards = shard_examples(example_tokens(model.tokenizer, corpus, langs), n_shards)
    stats = collect(model, corpus.subset(shards[shard]), langs, **collect_kwargs)
    fingerprint = corpus_fingerprint(corpus, langs)
    for lang_stats in stats.values():
        lang_stats.meta["corpus"] = fingerprint
        lang_stats.meta["shard"] = f"{shard}/{n_shards}"
        lang_stats.meta.pop("plan", None)  # batch plans differ between shards by design
    return stats


# --- torch.distributed --------------------------------------------------------------------


def collective_device(backend: str, local_rank: int) -> torch.device:
    """Where tensors must be for the backend's collectives: ``cuda:LOCAL_RANK`` for NCCL."""
    return torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")


def all_reduce_stats(
    stats: ActivationStats, shards: Sequence[Sequence[int]], device: torch.device
) -> ActivationStats:
    """Combine every rank's statistics of one language (call on every rank; same result on all).

    Args:
        stats: This rank's statistics (of the examples ``shards[rank]``, in that order).
        shards: Every rank's example indices into the full corpus (from :func:`shard_examples`).
        device: Where the backend wants tensors (:func:`collective_device`).

    Counts and ``n_tokens`` are summed, ``max`` reduced with MAX; ``sum`` and ``m2`` are
    gathered and merged in rank order (Chan's update, so the variance stays exact);
    per-example tensors are gathered and put back into corpus order.
    """
    import torch.distributed as dist

    world = dist.get_world_size()
    if len(shards) != world:
        raise MlingualityError(f"{len(shards)} shards for a world of {world} ranks")

    def summed(tensor: torch.Tensor) -> torch.Tensor:
        moved = tensor.to(device).clone()
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        return moved.cpu()

    n_tokens = [int(n) for n in _gather(torch.tensor([stats.n_tokens]), world, device)]
    sums = _gather(stats.sum, world, device)
    m2s = _gather(stats.m2, world, device)
    total_sum, total_m2, total_n = sums[0], m2s[0], n_tokens[0]
    for rank in range(1, world):
        total_m2 = combine_m2(total_n, total_sum, total_m2, n_tokens[rank], sums[rank], m2s[rank])
        total_sum, total_n = total_sum + sums[rank], total_n + n_tokens[rank]
    maximum = stats.max.to(device).clone()
    dist.all_reduce(maximum, op=dist.ReduceOp.MAX)
    order = [index for shard in shards for index in shard]
    ranks_ids: list[list[str]] = [[] for _ in range(world)]
    dist.all_gather_object(ranks_ids, stats.example_ids)
    ids_by_index = dict(zip(order, [i for ids in ranks_ids for i in ids], strict=True))
    result = ActivationStats(
        lang=stats.lang,
        n_tokens=total_n,
        sum=total_sum,
        m2=total_m2,
        n_positive=summed(stats.n_positive),
        max=maximum.cpu(),
        n_gate_positive=(
            summed(stats.n_gate_positive) if stats.n_gate_positive is not None else None
        ),
        example_ids=[ids_by_index[index] for index in sorted(order)],
        meta=dict(stats.meta),
    )
    result.meta.pop("plan", None)
    for name in EXAMPLE_TENSORS:
        local = getattr(stats, name)
        if local is not None:
            setattr(result, name, _gather_rows(local, shards, device))
    if stats.lens_where is not None:
        _all_gather_lens(stats, result, shards)
    return result


def _all_gather_lens(
    stats: ActivationStats, result: ActivationStats, shards: Sequence[Sequence[int]]
) -> None:
    """Every rank's lens sample (a few MB) pooled into ``result`` (examples in corpus order)
    and cut back to ``lens_positions``: the sample of a single pass (:func:`merge_lens`)."""
    import torch.distributed as dist

    local = (stats.lens_where, stats.lens_resid, stats.lens_next)
    parts: list = [None] * len(shards)
    dist.all_gather_object(parts, local)
    row_of = {index: row for row, index in enumerate(sorted(i for s in shards for i in s))}
    pooled = []
    for shard, (where, resid, nexts) in zip(shards, parts, strict=True):
        where = where.clone()
        where[:, 0] = torch.tensor([row_of[shard[e]] for e in where[:, 0].tolist()]).long()
        pooled.append((where, resid, nexts))
    meta = stats.meta
    result.lens_where, result.lens_resid, result.lens_next = merge_lens(
        result.example_ids, pooled, int(meta["lens_positions"]), int(meta["lens_seed"])
    )


def _gather(tensor: torch.Tensor, world: int, device: torch.device) -> list[torch.Tensor]:
    """Every rank's copy of a same-shaped tensor, on the host, in rank order."""
    import torch.distributed as dist

    local = tensor.to(device).contiguous()
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local)
    return [part.cpu() for part in parts]


def _gather_rows(
    local: torch.Tensor, shards: Sequence[Sequence[int]], device: torch.device
) -> torch.Tensor:
    """Per-example rows of every rank (rank r holds ``shards[r]``), back in corpus order."""
    world = len(shards)
    width = max(len(shard) for shard in shards)
    padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype)
    padded[: local.shape[0]] = local
    parts = _gather(padded, world, device)
    n_examples = sum(len(shard) for shard in shards)
    out = torch.zeros((n_examples, *local.shape[1:]), dtype=local.dtype)
    for rank, shard in enumerate(shards):
        out[list(shard)] = parts[rank][: len(shard)]
    return out


def world_size() -> int:
    """Ranks of this launch (torchrun sets ``WORLD_SIZE``; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))

"""The lens sample of a residual collection: a bottom-k sample of (example, position) pairs.

Every eligible pair (a counted position with a next token) gets a 64-bit key from a
counter-based generator: splitmix64 of a hash of the seed and the example's *id*, plus the token
position. The ``k`` smallest keys are kept, sorted by (example, position). The keys depend on
nothing but the seed, the id and the position, so the sample does not depend on batching,
padding or batch size, and shards' samples pooled and cut back to the ``k`` smallest keys give
exactly the sample of the whole corpus (:func:`merge_lens`, used by
:meth:`ActivationStats.merge <mlinguality.activations.stats.ActivationStats.merge>`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from mlinguality.activations.batching import Positions, TokenizedText
from mlinguality.types import LensResid, LensTokens, LensWhere

# the fields a residual collection adds to ActivationStats besides example_resid_mean
LENS_TENSORS = ("lens_resid", "lens_next", "lens_where")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def pair_keys(
    example_ids: Sequence[str], examples: np.ndarray, tokens: np.ndarray, seed: int
) -> np.ndarray:
    """The sampling key (uint64) of each (example index, token position) pair."""
    base = np.array(
        [
            int.from_bytes(
                hashlib.blake2b(f"{seed}\0{ident}".encode(), digest_size=8).digest(), "little"
            )
            for ident in example_ids
        ],
        dtype=np.uint64,
    )
    with np.errstate(over="ignore"):
        return _mix(base[examples] + (tokens.astype(np.uint64) + np.uint64(1)) * _GOLDEN)


def eligible_tokens(text: TokenizedText, positions: Positions, include_bos: bool) -> np.ndarray:
    """The counted positions of ``text`` (as :func:`~.batching.position_mask` counts them) that
    have a next token."""
    first = 0 if include_bos else text.n_prefix
    n = len(text.ids)
    if positions == "all":
        return np.arange(first, n - 1, dtype=np.int64)
    if positions == "last":
        return np.zeros(0, dtype=np.int64)  # the last token has no next token
    return np.array([t for t in text.word_final if first <= t < n - 1], dtype=np.int64)


def bottom_k(
    example_ids: Sequence[str], examples: np.ndarray, tokens: np.ndarray, k: int, seed: int
) -> np.ndarray:
    """Indices of the ``k`` pairs with the smallest keys, sorted by (example, position)."""
    if len(examples) > k:
        keys = pair_keys(example_ids, examples, tokens, seed)
        chosen = np.lexsort((tokens, examples, keys))[:k]
    else:
        chosen = np.arange(len(examples))
    return chosen[np.lexsort((tokens[chosen], examples[chosen]))]


def lens_sample(
    example_ids: Sequence[str],
    texts: Sequence[TokenizedText],
    positions: Positions,
    include_bos: bool,
    lens_positions: int,
    seed: int,
) -> tuple[LensWhere, LensTokens]:
    """The lens sample of one language: ``(lens_where, lens_next)`` (see the module docstring)."""
    per_text = [eligible_tokens(text, positions, include_bos) for text in texts]
    examples = np.repeat(np.arange(len(texts)), [len(tokens) for tokens in per_text])
    tokens = np.concatenate(per_text) if per_text else np.zeros(0, dtype=np.int64)
    chosen = bottom_k(example_ids, examples, tokens, lens_positions, seed)
    where = torch.from_numpy(np.stack([examples[chosen], tokens[chosen]], axis=1).astype(np.int64))
    nexts = [texts[e].ids[t + 1] for e, t in where.tolist()]
    return where.reshape(-1, 2), torch.tensor(nexts, dtype=torch.long)


def merge_lens(
    example_ids: Sequence[str],
    parts: Sequence[tuple[Tensor, Tensor, Tensor]],  # (where, resid, next): sizes differ by part
    lens_positions: int,
    seed: int,
) -> tuple[LensWhere, LensResid, LensTokens]:
    """The lens sample of the union of shards: ``parts`` (whose ``lens_where`` already index
    ``example_ids``, the merged examples) pooled and cut back to the ``lens_positions`` smallest
    keys: exactly the sample a single pass over those examples takes."""
    where = torch.cat([part[0].reshape(-1, 2) for part in parts])
    resid = torch.cat([part[1] for part in parts])
    nexts = torch.cat([part[2] for part in parts])
    chosen = bottom_k(example_ids, where[:, 0].numpy(), where[:, 1].numpy(), lens_positions, seed)
    index = torch.from_numpy(chosen).long()
    return where[index], resid[index], nexts[index]

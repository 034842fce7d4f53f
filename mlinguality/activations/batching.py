"""Tokenise texts once, find word-final tokens, and pack length-sorted, padded batches.

Shared by every stage that runs the model over text (collection, evaluation), so that padding,
position ids and the choice of counted positions are handled in one place.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Int
from torch import Tensor

from mlinguality.choices import PaddingSide, Positions
from mlinguality.types import AttentionMask, PositionMask, TokenIds

__all__ = ["PaddingSide", "Positions"]  # re-exported for the modules that use batching


_WORD = re.compile(r"\S+")
logger = logging.getLogger(__name__)


def ensure_eval(model):
    """Put ``model`` in eval mode (dropout off) before reading it, warning when it was training.

    A model left in training mode gives different activations on every call; every stage that
    runs the model over text calls this first. Returns the model.
    """
    if getattr(model, "training", False):
        logger.warning("model was in training mode (dropout on); switched to eval mode")
        model.eval()
    return model


@dataclass
class TokenizedText:
    """One text's token ids and, when asked for, the index of each whitespace word's last token.

    Attributes:
        ids: Token ids, BOS first when the tokenizer adds one.
        has_bos: Whether ``ids`` begin with a leading token: the BOS, or what the tokenizer
            puts in its place (XGLM's ``</s>``); a text without one is given a BOS to be scored.
        word_final: Token index of the last token of each whitespace word (sorted, unique).
        n_bytes: UTF-8 bytes of the text.
        n_prefix: Leading special tokens the tokenizer put in front of the text (BOS, XGLM's
            ``</s>``, language tags): constants, not text. ``None`` means ``int(has_bos)``.
    """

    ids: list[int]
    has_bos: bool
    word_final: list[int] = field(default_factory=list)
    n_bytes: int = 0
    n_prefix: int | None = None

    def __post_init__(self) -> None:
        if self.n_prefix is None:
            self.n_prefix = int(self.has_bos)


def word_end_tokens(text: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """For each whitespace word of ``text``, the index of the token that ends it.

    ``offsets`` are the tokenizer's character spans (special tokens have ``(0, 0)``). A word's
    final token is the last non-special token that starts before the word's end.

    >>> word_end_tokens("ab cd", [(0, 0), (0, 1), (1, 2), (2, 5)])
    [2, 3]
    """
    starts = [start if end > start else None for start, end in offsets]
    result = []
    for match in _WORD.finditer(text):
        candidates = [
            i for i, start in enumerate(starts) if start is not None and start < match.end()
        ]
        if candidates:
            result.append(candidates[-1])
    return result


def word_final_token_indices(text: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Sorted, unique word-final token indices (two words can end in one token when the
    tokenizer merges across a space; the index is then listed once).

    >>> word_final_token_indices("a b", [(0, 0), (0, 3)])
    [1]
    """
    return sorted(set(word_end_tokens(text, offsets)))


def leading_special_count(ids: Sequence[int], special_ids: set[int]) -> int:
    """How many of ``ids`` at the start are special tokens (BOS, ``</s>``, language tags).

    At least one token is always left as text, so a text made only of special-looking ids is
    not emptied. (:func:`tokenize_texts` counts what the tokenizer itself put in front instead:
    a text may begin with a token that is also special, e.g. GPT-2's ``<|endoftext|>``.)

    >>> leading_special_count([2, 1, 57, 1], {1, 2})
    2
    """
    count = 0
    while count < len(ids) - 1 and ids[count] in special_ids:
        count += 1
    return count


def special_token_ids(tokenizer) -> set[int]:
    """The tokenizer's special token ids, except the unknown token (which stands for text)."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special.discard(getattr(tokenizer, "unk_token_id", None))
    return special


def tokenize_texts(
    tokenizer, texts: Sequence[str], word_final: bool = False
) -> list[TokenizedText]:
    """Tokenise ``texts`` once, with what the tokenizer puts in front (BOS, or XGLM's ``</s>``:
    ``n_prefix`` counts it) and without what it puts behind (an EOS is not text).

    The front is what the tokenizer adds to every text
    (:func:`mlinguality.families.added_special_ids`), so ``n_prefix`` never covers a real
    token, even one whose id is also a special token's.

    >>> from mlinguality.model import TinyModelConfig, build_tiny_tokenizer
    >>> [text.n_prefix for text in tokenize_texts(build_tiny_tokenizer(TinyModelConfig()), ["ab"])]
    [1]
    """
    from mlinguality.families import added_special_ids

    encoded = tokenizer(
        list(texts), add_special_tokens=True, return_offsets_mapping=word_final, padding=False
    )
    front, back = added_special_ids(tokenizer)
    bos = tokenizer.bos_token_id
    result = []
    for index, text in enumerate(texts):
        ids = list(encoded["input_ids"][index])
        if back and len(ids) > len(front) + len(back) and tuple(ids[-len(back) :]) == back:
            ids = ids[: -len(back)]
        finals = (
            word_final_token_indices(text, encoded["offset_mapping"][index]) if word_final else []
        )
        n_prefix = len(front) if front and tuple(ids[: len(front)]) == front else 0
        n_prefix = min(n_prefix, max(len(ids) - 1, 0))  # an empty text keeps one position
        has_bos = n_prefix > 0 or (bool(ids) and bos is not None and ids[0] == bos)
        result.append(TokenizedText(ids, has_bos, finals, len(text.encode("utf-8")), n_prefix))
    return result


def default_max_batch_size(batch_tokens: int) -> int:
    """Rows per batch when none is given: ``batch_tokens // 64``, at least 64.

    64 rows at the CPU's default 4,096 tokens; a GPU's 32,768 tokens get 512 rows, so that short
    examples (a verse is ~30 tokens) fill the batch (issue 14: 64 rows left an H100 idle).

    >>> default_max_batch_size(4096), default_max_batch_size(32768)
    (64, 512)
    """
    return max(64, batch_tokens // 64)


def plan_batches(
    lengths: Sequence[int], batch_tokens: int = 4096, max_batch_size: int = 64
) -> list[list[int]]:
    """Group example indices into batches of similar length, longest first.

    Each batch's padded size (``len(batch) * longest``) stays within ``batch_tokens`` (a single
    longer example gets a batch of its own). Deterministic: ties keep the input order.

    >>> plan_batches([3, 10, 4, 9], batch_tokens=20)
    [[1, 3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda index: (-lengths[index], index))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        if current and (
            (len(current) + 1) * longest > batch_tokens or len(current) >= max_batch_size
        ):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


@dataclass
class Batch:
    """Padded token ids of some examples, with what the model and the statistics need."""

    indices: list[int]
    input_ids: TokenIds
    attention_mask: AttentionMask
    position_ids: Int[Tensor, "batch pos"]
    lengths: list[int]
    padding_side: PaddingSide


def pad_token_id(tokenizer) -> int:
    """The id to pad with: the tokenizer's pad token, else EOS, else BOS, else 0.

    Pad positions are masked out of attention, statistics and loss, so any id works.
    """
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def _text_starts(
    lengths: Int[Tensor, " batch"], width: int, padding_side: PaddingSide
) -> Int[Tensor, " batch"]:
    """Column of each row's token 0 in a padded batch ``width`` wide (left padding shifts the
    text right)."""
    return width - lengths if padding_side == "left" else torch.zeros_like(lengths)


def pad_batch(
    texts: Sequence[TokenizedText],
    indices: Sequence[int],
    pad_id: int,
    padding_side: PaddingSide = "right",
    device: str | torch.device = "cpu",
) -> Batch:
    """Pad the chosen examples into one batch; position ids count real tokens only."""
    lengths = [len(texts[index].ids) for index in indices]
    width = max(lengths)
    real = torch.tensor(lengths)
    start = _text_starts(real, width, padding_side)
    column = torch.arange(width)[None, :]
    real_mask = (column >= start[:, None]) & (column < (start + real)[:, None])
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    # the real positions in row-major order are the texts' tokens one after the other
    ids[real_mask] = torch.tensor([token for index in indices for token in texts[index].ids])
    mask = real_mask.long()
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
    return Batch(
        list(indices),
        ids.to(device),
        mask.to(device),
        position_ids.to(device),
        lengths,
        padding_side,
    )


def position_mask(
    batch: Batch,
    texts: Sequence[TokenizedText],
    positions: Positions = "all",
    include_bos: bool = False,
) -> PositionMask:
    """Which padded positions count: never padding; the leading special tokens (BOS, XGLM's
    ``</s>``, language tags: ``n_prefix``) only if ``include_bos``.

    ``all``: every real token; ``last``: the last real token; ``word_final``: the last token of
    each whitespace word.
    """
    n_rows, width = batch.input_ids.shape
    lengths = torch.tensor(batch.lengths)
    offset = _text_starts(lengths, width, batch.padding_side)
    firsts = [0 if include_bos else texts[index].n_prefix for index in batch.indices]
    first = torch.tensor(firsts)
    if positions == "all":  # one comparison for the batch: a Python loop per token cost ~10 us each
        token = torch.arange(width)[None, :] - offset[:, None]
        mask = (token >= first[:, None]) & (token < lengths[:, None])
    elif positions in ("last", "word_final"):
        if positions == "last":
            rows = (lengths > first).nonzero().squeeze(-1)
            tokens = lengths[rows] - 1
        else:
            words = [
                [token for token in texts[index].word_final if token >= start]
                for index, start in zip(batch.indices, firsts, strict=True)
            ]
            rows = torch.repeat_interleave(torch.tensor([len(w) for w in words], dtype=torch.long))
            tokens = torch.tensor([token for w in words for token in w], dtype=torch.long)
        mask = torch.zeros((n_rows, width), dtype=torch.bool)
        mask[rows, tokens + offset[rows]] = True
    else:
        raise ValueError(f"positions: unknown {positions!r}")
    return mask.to(batch.input_ids.device)

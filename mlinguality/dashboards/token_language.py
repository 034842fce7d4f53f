"""The language of a token, from the corpus's own counts.

A token belongs to language ``l`` when at least ``margin`` of its occurrences in the corpus are
in ``l``'s texts and it occurs at least ``min_count`` times; tokens shared across languages
(names, punctuation, shared subwords) or too rare are *unassigned*. Special tokens (BOS, pads)
are never counted. With Gemma's 262k vocabulary many whole words of each language are single
tokens, so common words are assigned cleanly.

>>> from mlinguality.model import TinyModelConfig, build_tiny_tokenizer
>>> tokenizer = build_tiny_tokenizer(TinyModelConfig())
>>> table = token_languages(tokenizer, {"en": ["the the the the"], "fr": ["le le le le"]})
>>> table.language_of(tokenizer(" the", add_special_tokens=False)["input_ids"][0])
'en'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from mlinguality.activations.batching import special_token_ids

# A token is a language's when >= 80% of its occurrences are in that language's texts and it
# occurs >= 3 times: shared subwords and names fall below the first, one-off tokens below the
# second (docs/dashboards.md shows how the shares move with both).
MARGIN = 0.8
MIN_COUNT = 3


@dataclass
class TokenLanguages:
    """Counts of every token id per language, and the language each token is assigned to.

    Attributes:
        langs: The languages, in the order of ``counts``' rows.
        counts: Occurrences of each token id in each language's texts.
        margin: Share of occurrences a language needs to own a token.
        min_count: Occurrences a token needs to be assigned at all.
    """

    langs: list[str]
    counts: Int[Tensor, "lang d_vocab"]
    margin: float = MARGIN
    min_count: int = MIN_COUNT

    @property
    def in_corpus(self) -> Bool[Tensor, " d_vocab"]:
        """Tokens that occur in the corpus at all."""
        return self.counts.sum(dim=0) > 0

    @property
    def assigned(self) -> Int[Tensor, " d_vocab"]:
        """Index into ``langs`` of each token's language, -1 where unassigned."""
        total = self.counts.sum(dim=0)
        best, lang = self.counts.max(dim=0)
        owned = (total >= self.min_count) & (best >= self.margin * total.clamp_min(1))
        return torch.where(owned, lang, torch.full_like(lang, -1))

    def language_of(self, token_id: int) -> str | None:
        """The language of one token id, or None (unassigned)."""
        index = int(self.assigned[token_id])
        return self.langs[index] if index >= 0 else None

    def sizes(self) -> dict[str, int]:
        """Tokens assigned to each language."""
        assigned = self.assigned
        return {lang: int((assigned == i).sum()) for i, lang in enumerate(self.langs)}


def token_languages(
    tokenizer,
    texts: Mapping[str, Sequence[str]],
    margin: float = MARGIN,
    min_count: int = MIN_COUNT,
    vocab_size: int | None = None,
) -> TokenLanguages:
    """Count each token id in each language's texts (special tokens left out)."""
    langs = list(texts)
    size = vocab_size or len(tokenizer)
    counts = torch.zeros((len(langs), size), dtype=torch.long)
    special = special_token_ids(tokenizer)
    for row, lang in enumerate(langs):
        encoded = tokenizer(list(texts[lang]), add_special_tokens=False)["input_ids"]
        ids = torch.tensor(
            [t for text in encoded for t in text if t not in special], dtype=torch.long
        )
        if len(ids):
            counts[row] += torch.bincount(ids, minlength=size)[:size]
    return TokenLanguages(langs, counts, margin, min_count)

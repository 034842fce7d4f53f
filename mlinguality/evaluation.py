"""Stage 5a: padding-correct per-language loss: mean NLL per token, perplexity, bits per byte.

Texts are tokenized once (:func:`encode_texts`) into length-sorted, padded batches that every
condition of an ablation experiment reuses; :func:`evaluate` then runs one forward pass per batch
and sums the loss over real next-token positions only. Pad positions never enter the loss, with
left or right padding (the ids and attention mask are built here, not by the bridge's string
padding, whose ``return_type="loss"`` counts pad positions).

What is counted (the same for every language, so bits per byte compare across them):

- every text is encoded without special tokens and given one BOS token in front; the model
  predicts **every token of the text**, the first one from the BOS alone. Nothing is predicted
  after the last token (no EOS).
- bytes are the UTF-8 bytes of the text string exactly as passed (the corpus stage normalises to
  NFC); so every byte of the text is covered by exactly one predicted token.
- ``bits_per_byte = total NLL (nats) / ln 2 / total bytes``; ``mean_nll = total NLL / predicted
  tokens``; ``perplexity = exp(mean_nll)`` (token perplexity, not comparable across tokenizations
  of different scripts; bits per byte is).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mlinguality.errors import MlingualityError
from mlinguality.types import AttentionMask, LossPerToken, TokenIds

logger = logging.getLogger(__name__)

# Padded tokens per batch. Gemma's logits are batch x pos x 262,144 floats: 512 tokens is
# 0.5 GB of logits (plus about as much inside the loss), which fits beside the model on a laptop.
DEFAULT_BATCH_TOKENS = 512
DEFAULT_MAX_BATCH_SIZE = 32


@dataclass(frozen=True)
class Batch:
    """One padded batch of encoded texts.

    Attributes:
        input_ids: Token ids, BOS first, pad id at pad positions.
        attention_mask: 1 at real tokens, 0 at pads.
        index: Position of each row's text in the list given to :func:`encode_texts`.
    """

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    index: Int[Tensor, " batch"]

    @property
    def n_tokens(self) -> int:
        """Real tokens (BOS included)."""
        return int(self.attention_mask.sum())


@dataclass(frozen=True)
class EncodedTexts:
    """One language's evaluation texts, tokenized once and batched by similar length.

    Attributes:
        lang: Language code (a label only).
        batches: Length-sorted padded batches covering every text once.
        n_bytes: UTF-8 bytes of each text, in input order.
        n_predicted: Predicted tokens of each text (its token count without BOS), in input order.
        padding_side: ``"right"`` or ``"left"``.
    """

    lang: str
    batches: list[Batch]
    n_bytes: Int[Tensor, " text"]
    n_predicted: Int[Tensor, " text"]
    padding_side: str

    @property
    def n_texts(self) -> int:
        return len(self.n_bytes)

    @property
    def total_bytes(self) -> int:
        return int(self.n_bytes.sum())

    @property
    def total_predicted(self) -> int:
        return int(self.n_predicted.sum())

    @property
    def padded_tokens(self) -> int:
        """Positions the forward passes compute, pads included."""
        return sum(batch.input_ids.numel() for batch in self.batches)


@dataclass(frozen=True)
class LanguageLoss:
    """Summed next-token loss of one language's texts under one condition.

    Attributes:
        lang: Language code.
        text_nll: Total NLL (nats) of each text, in input order (float64).
        n_predicted: Predicted tokens per text.
        n_bytes: UTF-8 bytes per text.
    """

    lang: str
    text_nll: Float[Tensor, " text"]
    n_predicted: Int[Tensor, " text"]
    n_bytes: Int[Tensor, " text"]

    @property
    def nll(self) -> float:
        """Total NLL in nats."""
        return float(self.text_nll.sum())

    @property
    def n_tokens(self) -> int:
        return int(self.n_predicted.sum())

    @property
    def total_bytes(self) -> int:
        return int(self.n_bytes.sum())

    @property
    def mean_nll(self) -> float:
        """Mean NLL per predicted token (nats)."""
        return self.nll / max(self.n_tokens, 1)

    @property
    def perplexity(self) -> float:
        """Token perplexity, exp(mean NLL)."""
        return math.exp(self.mean_nll)

    @property
    def bits_per_byte(self) -> float:
        """Total NLL / ln 2 / total UTF-8 bytes."""
        return self.nll / math.log(2) / max(self.total_bytes, 1)

    def to_dict(self) -> dict:
        return {
            "lang": self.lang,
            "nll": self.nll,
            "n_tokens": self.n_tokens,
            "n_bytes": self.total_bytes,
            "mean_nll": self.mean_nll,
            "perplexity": self.perplexity,
            "bits_per_byte": self.bits_per_byte,
        }


def _bos_id(tokenizer) -> int:
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise MlingualityError(
        f"tokenizer {getattr(tokenizer, 'name_or_path', '?')}: no BOS or EOS token to start texts with"
    )


def _pad_id(tokenizer) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0  # pad ids are masked everywhere, so any id works


def encode_texts(
    tokenizer,
    texts: Sequence[str],
    lang: str = "",
    *,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    padding_side: str = "right",
    device: str = "cpu",
) -> EncodedTexts:
    """Tokenize ``texts`` once into length-sorted padded batches of at most ``batch_tokens``.

    Args:
        tokenizer: A Hugging Face tokenizer (``model.tokenizer``).
        texts: Non-empty strings.
        lang: Label carried into the results.
        batch_tokens: Budget of padded positions per batch (rows x longest row); a single text
            longer than this gets a batch of its own.
        max_batch_size: Most rows per batch.
        padding_side: ``"right"`` (default) or ``"left"``; the loss is the same either way.
        device: Where the batch tensors live.

    Raises:
        MlingualityError: on an empty list, an empty text or a bad option.

    >>> from mlinguality import TinyModelConfig, load_model
    >>> model = load_model(TinyModelConfig())
    >>> encoded = encode_texts(model.tokenizer, ["In the beginning.", "Au commencement."], "xx")
    >>> encoded.n_texts, encoded.total_bytes
    (2, 33)
    """
    if padding_side not in ("left", "right"):
        raise MlingualityError(f"padding_side: {padding_side!r} is not 'left' or 'right'")
    if batch_tokens < 1 or max_batch_size < 1:
        raise MlingualityError("batch_tokens and max_batch_size must be >= 1")
    if not texts:
        raise MlingualityError(f"encode_texts({lang!r}): no texts")
    empty = [i for i, text in enumerate(texts) if not text]
    if empty:
        raise MlingualityError(f"encode_texts({lang!r}): text {empty[0]} is empty")
    bos, pad = _bos_id(tokenizer), _pad_id(tokenizer)
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    sequences = [[bos, *ids] for ids in encoded]
    n_bytes = torch.tensor([len(text.encode("utf-8")) for text in texts], dtype=torch.int64)
    n_predicted = torch.tensor([len(seq) - 1 for seq in sequences], dtype=torch.int64)

    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    groups: list[list[int]] = []
    for i in order:  # ascending lengths: the newest row is the longest of its group
        group = groups[-1] if groups else None
        if (
            group is not None
            and len(group) < max_batch_size
            and (len(group) + 1) * len(sequences[i]) <= batch_tokens
        ):
            group.append(i)
        else:
            groups.append([i])

    batches = []
    for group in groups:
        width = max(len(sequences[i]) for i in group)
        ids = torch.full((len(group), width), pad, dtype=torch.int64)
        mask = torch.zeros((len(group), width), dtype=torch.int64)
        for row, i in enumerate(group):
            seq = torch.tensor(sequences[i], dtype=torch.int64)
            span = slice(0, len(seq)) if padding_side == "right" else slice(width - len(seq), width)
            ids[row, span] = seq
            mask[row, span] = 1
        batches.append(
            Batch(ids.to(device), mask.to(device), torch.tensor(group, dtype=torch.int64))
        )
    return EncodedTexts(lang, batches, n_bytes, n_predicted, padding_side)


def token_nll(
    logits: Float[Tensor, "batch pos d_vocab"],
    input_ids: TokenIds,
    attention_mask: AttentionMask,
) -> LossPerToken:
    """NLL (nats) of each next token; 0 where the predicting or the predicted position is a pad.

    Position ``i`` of the result is the loss of token ``i + 1`` given tokens ``<= i``. Only rows
    of real next-token pairs reach the softmax, so pads cost no time either.
    """
    real = attention_mask.bool()
    target_mask = real[:, :-1] & real[:, 1:]
    predicting = logits[:, :-1][target_mask].float()  # [n_real_pairs, d_vocab]
    targets = input_ids[:, 1:][target_mask]
    losses = torch.nn.functional.cross_entropy(predicting, targets, reduction="none")
    out = torch.zeros(target_mask.shape, dtype=losses.dtype, device=losses.device)
    out[target_mask] = losses
    return out


def evaluate(model, encoded: EncodedTexts) -> LanguageLoss:
    """Summed next-token NLL of every text in ``encoded`` under ``model`` as it is now.

    Hooks active on the model (an :func:`mlinguality.ablation.ablate` block) apply to every
    forward pass here: one pass per batch, no other work on the model.
    """
    text_nll = torch.zeros(encoded.n_texts, dtype=torch.float64)
    with torch.no_grad():
        for batch in encoded.batches:
            logits = model(
                batch.input_ids, attention_mask=batch.attention_mask, return_type="logits"
            )
            per_token = token_nll(logits, batch.input_ids, batch.attention_mask)
            del logits
            per_text = einops.reduce(per_token.double(), "batch pos -> batch", "sum")
            text_nll[batch.index] = per_text.cpu()
    return LanguageLoss(encoded.lang, text_nll, encoded.n_predicted, encoded.n_bytes)


def evaluate_languages(model, encoded: dict[str, EncodedTexts]) -> dict[str, LanguageLoss]:
    """:func:`evaluate` for every language of ``encoded``."""
    return {lang: evaluate(model, texts) for lang, texts in encoded.items()}


def encode_languages(
    tokenizer,
    texts: dict[str, Sequence[str]],
    **options,
) -> dict[str, EncodedTexts]:
    """:func:`encode_texts` for every language of ``texts`` (options passed through)."""
    return {
        lang: encode_texts(tokenizer, lang_texts, lang, **options)
        for lang, lang_texts in texts.items()
    }

"""Stage 5a: padding-correct per-language loss: mean NLL per token, perplexity, bits per byte.

Texts are tokenized once (:func:`encode_texts`) into length-sorted, padded batches that every
condition of an ablation experiment reuses; :func:`evaluate` then runs one forward pass per batch
and sums the loss over real next-token positions only. Pad positions never enter the loss, with
left or right padding (the ids and attention mask are built here, not by the bridge's string
padding, whose ``return_type="loss"`` counts pad positions).

What is counted (the same for every language, so bits per byte compare across them):

- every text is encoded with the special tokens its tokenizer puts in front (BOS, or XGLM's
  ``</s>``; a BOS is added where the tokenizer adds none) and no EOS behind; the model predicts
  **every token of the text**, the first one from the leading special tokens alone. Predicting
  a leading special token is never scored: it is a constant with no bytes behind it. Nothing is
  predicted after the last token.
- bytes are the UTF-8 bytes of the text string exactly as passed (the corpus stage normalises to
  NFC); so every byte of the text is covered by exactly one predicted token.
- ``bits_per_byte = total NLL (nats) / ln 2 / total bytes``; ``mean_nll = total NLL / predicted
  tokens``; ``perplexity = exp(mean_nll)`` (token perplexity, not comparable across tokenizations
  of different scripts; bits per byte is).
"""

from __future__ import annotations

import contextlib
import logging
import math
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mlinguality.activations.batching import (
    Batch,
    TokenizedText,
    ensure_eval,
    pad_batch,
    pad_token_id,
    plan_batches,
    position_mask,
    tokenize_texts,
)
from mlinguality.activations.reducer import StopForward
from mlinguality.errors import MlingualityError
from mlinguality.types import (
    AttentionMask,
    HookPoint,
    Logits,
    LossPerToken,
    PositionMask,
    ResidActs,
    TokenIds,
)

logger = logging.getLogger(__name__)

# Padded tokens per batch. Gemma's logits are batch x pos x 262,144 floats: 512 tokens is
# 0.5 GB of logits (plus about as much inside the loss), which fits beside the model on a laptop.
DEFAULT_BATCH_TOKENS = 512
DEFAULT_MAX_BATCH_SIZE = 32
_LSE_CHUNK = 8  # positions per logsumexp on the CPU: 8 x 262k floats = 8 MB of temporaries
_UNEMBED_ROWS = 4096  # scored positions unembedded together (0.04 GB of logits per chunk)
_VOCAB_CHUNK = 2048  # head rows per logits block on the CPU (performance.md: 2048 was fastest)
UNEMBED_INPUT = "unembed.hook_in"
UNEMBED_OUTPUT = "unembed.hook_out"


@dataclass(frozen=True)
class EncodedTexts:
    """One language's evaluation texts, tokenized once and batched by similar length.

    Attributes:
        lang: Language code (a label only).
        texts: Token ids of each text (BOS first), in input order.
        batches: Length-sorted padded batches covering every text once.
        padding_side: ``"right"`` or ``"left"``.
    """

    lang: str
    texts: list[TokenizedText]
    batches: list[Batch]
    padding_side: str

    @property
    def n_texts(self) -> int:
        return len(self.texts)

    @property
    def n_bytes(self) -> Int[Tensor, " text"]:
        """UTF-8 bytes of each text."""
        return torch.tensor([text.n_bytes for text in self.texts], dtype=torch.int64)

    @property
    def n_predicted(self) -> Int[Tensor, " text"]:
        """Predicted tokens of each text: all its tokens but the leading special ones."""
        return torch.tensor(
            [len(text.ids) - text.n_prefix for text in self.texts], dtype=torch.int64
        )

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


def _bos_first(text: TokenizedText, bos: int, eos: int | None) -> TokenizedText:
    """The tokenizer's leading special tokens (or one BOS if it adds none) and no EOS behind,
    so the scored tokens cover exactly the text."""
    ids = list(text.ids)
    if eos is not None and eos != bos and len(ids) > text.n_prefix + 1 and ids[-1] == eos:
        ids = ids[:-1]
    n_prefix = text.n_prefix
    if n_prefix == 0:
        ids, n_prefix = [bos, *ids], 1
    return TokenizedText(ids, ids[0] == bos, [], text.n_bytes, n_prefix)


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

    Tokenization and batching are :mod:`mlinguality.activations.batching`'s (shared with collection); a BOS
    is added where the tokenizer adds none, and a trailing EOS it adds is dropped.

    Args:
        tokenizer: A Hugging Face tokenizer (``model.tokenizer``).
        texts: Non-empty strings.
        lang: Label carried into the results.
        batch_tokens: Budget of padded positions per batch (rows x longest row); a single text
            longer than this gets a batch of its own.
        max_batch_size: Most rows per batch.
        padding_side: ``"right"`` (default) or ``"left"``; the loss is the same either way.
        device: Where the batch tensors live (the model's device).

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
    bos = _bos_id(tokenizer)
    tokenized = [
        _bos_first(text, bos, tokenizer.eos_token_id) for text in tokenize_texts(tokenizer, texts)
    ]
    plan = plan_batches([len(text.ids) for text in tokenized], batch_tokens, max_batch_size)
    pad = pad_token_id(tokenizer)
    batches = [pad_batch(tokenized, rows, pad, padding_side, device) for rows in plan]
    return EncodedTexts(lang, tokenized, batches, padding_side)


def _scored_pairs(
    attention_mask: AttentionMask, targets: PositionMask | None = None
) -> Bool[Tensor, "batch pos-1"]:
    """Column ``i`` is True where real token ``i`` predicts real token ``i + 1`` and that token is
    scored (``targets``, if given, is True at it)."""
    real = attention_mask.bool()
    pairs = real[:, :-1] & real[:, 1:]
    if targets is not None:
        pairs = pairs & targets[:, 1:].to(pairs.device)
    return pairs


def token_nll(
    logits: Logits,
    input_ids: TokenIds,
    attention_mask: AttentionMask,
    targets: PositionMask | None = None,
) -> LossPerToken:
    """NLL (nats) of each next token; 0 where the predicting or the predicted position is a pad,
    and where ``targets`` (if given) is False at the predicted position.

    Position ``i`` of the result is the loss of token ``i + 1`` given tokens ``<= i``. On the CPU
    the log-partition is computed a few positions at a time over each row's span of real pairs
    (no copy of the logits, temporaries that stay in cache, no work on pads): the exponentials
    over a 262k vocabulary are the one cost here that rivals the unembedding.
    """
    pairs = _scored_pairs(attention_mask, targets)
    predicting = logits[:, :-1]
    target_logit = predicting.gather(-1, input_ids[:, 1:, None]).squeeze(-1).float()
    if logits.device.type != "cpu":
        log_partition = torch.logsumexp(predicting.float(), dim=-1)
    else:
        log_partition = torch.zeros(pairs.shape, dtype=torch.float32)
        for row, columns in enumerate(pairs.tolist()):
            if True not in columns:
                continue
            start = columns.index(True)
            end = len(columns) - columns[::-1].index(True)  # real tokens form one block
            for first in range(start, end, _LSE_CHUNK):
                last = min(first + _LSE_CHUNK, end)
                log_partition[row, first:last] = torch.logsumexp(
                    predicting[row, first:last].float(), dim=-1
                )
    return torch.where(pairs, log_partition - target_logit, torch.zeros_like(target_logit))


def evaluate(model, encoded: EncodedTexts | Sequence[str]) -> LanguageLoss:
    """Summed next-token NLL of every text in ``encoded`` under ``model`` as it is now.

    Hooks active on the model (an :func:`mlinguality.ablation.hooks.ablate` block) apply to every
    forward pass here: one pass per batch, no other work on the model. The model is put in
    eval mode first (with a warning if it was training).

    The forward stops at the unembedding's input, and only the positions that predict a scored
    token go through the unembedding (:func:`next_token_nll`): pads and each text's last token never
    pay for the vocabulary's logits, which are most of the cost on Gemma's 262k vocabulary. The
    first call on a model checks that this gives the logits of a full forward, and falls back to
    the full forward (with a warning) where it does not, or where a hook reads the logits.

    Args:
        model: A TransformerBridge.
        encoded: Texts encoded once by :func:`encode_texts` (reuse them across conditions), or
            plain strings (encoded here with ``model.tokenizer`` and the default batching).

    >>> from mlinguality import TinyModelConfig, load_model
    >>> model = load_model(TinyModelConfig(n_layers=2, d_mlp=64))
    >>> loss = evaluate(model, ["Blessed are the peacemakers.", "Amen."])
    >>> loss.n_tokens > 0 and loss.bits_per_byte > 0
    True
    """
    if not isinstance(encoded, EncodedTexts):
        encoded = encode_texts(model.tokenizer, list(encoded), device=_device(model))
    ensure_eval(model)
    if _packed_unembedding_ok(model, encoded.batches[0]):
        return _evaluate_packed(model, encoded)
    text_nll = torch.zeros(encoded.n_texts, dtype=torch.float64)
    with torch.no_grad():
        for batch in encoded.batches:
            scored = position_mask(batch, encoded.texts, "all", include_bos=False)
            logits = _full_logits(model, batch)
            per_token = token_nll(logits, batch.input_ids, batch.attention_mask, scored)
            del logits
            per_text = einops.reduce(per_token.double(), "batch pos -> batch", "sum")
            text_nll[batch.indices] = per_text.cpu()
    return LanguageLoss(encoded.lang, text_nll, encoded.n_predicted, encoded.n_bytes)


def _evaluate_packed(model, encoded: EncodedTexts) -> LanguageLoss:
    """:func:`evaluate` through :func:`next_token_nll`: the forwards stop at the unembedding's
    input, and the scored positions of up to ``_UNEMBED_ROWS`` of them go through the head
    together (the head's weights are read once per block of positions, not once per batch)."""
    text_nll = torch.zeros(encoded.n_texts, dtype=torch.float64)
    pending: list[tuple[Tensor, Tensor, Tensor]] = []

    def flush() -> None:
        resid, target_ids, text = (torch.cat(parts) for parts in zip(*pending, strict=True))
        text_nll.index_add_(0, text.cpu(), next_token_nll(model, resid, target_ids).double().cpu())
        pending.clear()

    with torch.no_grad():
        for batch in encoded.batches:
            scored = position_mask(batch, encoded.texts, "all", include_bos=False)
            rows, columns = _scored_pairs(batch.attention_mask, scored).nonzero(as_tuple=True)
            resid = _final_residual(model, batch)[rows, columns]
            text = torch.tensor(batch.indices, device=rows.device)[rows]
            pending.append((resid, batch.input_ids[rows, columns + 1], text))
            if sum(len(part[0]) for part in pending) >= _UNEMBED_ROWS:
                flush()
        if pending:
            flush()
    return LanguageLoss(encoded.lang, text_nll, encoded.n_predicted, encoded.n_bytes)


def _full_logits(model, batch: Batch) -> Logits:
    return model(
        batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        return_type="logits",
        use_cache=False,
    )


def _final_residual(model, batch: Batch) -> ResidActs:
    """The unembedding's input (the final norm's output); the forward stops there."""
    captured: list[Tensor] = []

    def keep(resid: ResidActs, *, hook: HookPoint) -> None:
        captured.append(resid)
        raise StopForward

    with model.hooks(fwd_hooks=[(UNEMBED_INPUT, keep)]), contextlib.suppress(StopForward):
        _full_logits(model, batch)
    if not captured:
        raise RuntimeError(f"the forward pass ended without reaching {UNEMBED_INPUT}")
    return captured[0]


def _output_head(model) -> torch.nn.Linear | None:
    """The model's output head when it is a plain linear layer (else the full forward is used)."""
    head = getattr(getattr(model, "unembed", None), "original_component", None)
    return head if isinstance(head, torch.nn.Linear) else None


def _softcap(model, logits: Tensor) -> Tensor:
    """Gemma 2's final soft cap, where the model's config sets one."""
    cap = getattr(getattr(model.original_model, "config", None), "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def head_logit_blocks(
    model, resid: Float[Tensor, "n d_model"]
) -> Iterator[tuple[int, Float[Tensor, "n vocab_block"]]]:
    """The logits of ``resid`` (the unembedding's input), Gemma 2's cap applied, as ``(first
    token id, float32 block)`` over ``_VOCAB_CHUNK`` head rows on the CPU (25% faster in cache,
    docs/performance.md; the 262k logits never exist whole), all rows at once elsewhere."""
    head = _output_head(model)
    if head is None:
        raise MlingualityError(f"{type(model).__name__}: the output head is no linear layer")
    weight, bias = head.weight, head.bias
    chunk = _VOCAB_CHUNK if resid.device.type == "cpu" else weight.shape[0]
    for first in range(0, weight.shape[0], chunk):
        part = slice(first, first + chunk)
        logits = torch.nn.functional.linear(
            resid, weight[part], bias[part] if bias is not None else None
        )
        yield first, _softcap(model, logits).float()


def next_token_nll(
    model,
    resid: Float[Tensor, "n d_model"],
    target_ids: Int[Tensor, " n"],
) -> Float[Tensor, " n"]:
    """NLL (nats) of each target token from the unembedding's input at the position predicting it.

    :func:`token_nll` of the full forward's logits (within float rounding) at the scored
    positions only (pads and each text's last token never reach the vocabulary): a running
    logsumexp over :func:`head_logit_blocks`, the target's logit read from its block."""
    log_partition = torch.full((len(resid),), -math.inf, device=resid.device)
    target_logit = torch.zeros(len(resid), device=resid.device)
    rows = torch.arange(len(resid), device=resid.device)
    for first, logits in head_logit_blocks(model, resid):
        log_partition = torch.logaddexp(log_partition, torch.logsumexp(logits, dim=-1))
        here = (target_ids >= first) & (target_ids < first + logits.shape[-1])
        target_logit[here] = logits[rows[here], target_ids[here] - first]
    return log_partition - target_logit


_packed_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _packed_unembedding_ok(model, batch: Batch) -> bool:
    """Whether :func:`next_token_nll` gives what the full forward gives on this model.

    Checked once per model, on the first row of ``batch`` (a short forward both ways): a model
    whose logits are more than its linear output head (a scale, a cap other than Gemma 2's)
    falls back to the full forward with a warning. A hook on the logits (``unembed.hook_out``)
    also takes the full forward, so that it keeps seeing every position.
    """
    logits_hook = model.hook_dict.get(UNEMBED_OUTPUT)
    if _output_head(model) is None or logits_hook is None or logits_hook.fwd_hooks:
        return False
    known = _packed_checked.get(model)
    if known is not None:
        return known
    packed, full = probe_nll(model, batch)
    ok = bool(torch.allclose(packed, full, rtol=1e-4, atol=1e-4))
    if not ok:
        logger.warning(
            "evaluate: the output head alone does not give %s's logits; using full forwards",
            type(model.original_model).__name__,
        )
    _packed_checked[model] = ok
    return ok


def probe_nll(model, batch: Batch) -> tuple[Float[Tensor, " n"], Float[Tensor, " n"]]:
    """Per-token NLL of the first 8 real tokens of ``batch``'s first row, by
    :func:`next_token_nll` (scored positions) and by the full forward (float32 both)."""
    ids = batch.input_ids[0][batch.attention_mask[0].bool()][:8].tolist()
    probe = pad_batch([TokenizedText(ids, False)], [0], 0, "right", batch.input_ids.device)
    with torch.no_grad():
        full = token_nll(_full_logits(model, probe), probe.input_ids, probe.attention_mask)[0]
        packed = next_token_nll(
            model, _final_residual(model, probe)[0, :-1], probe.input_ids[0, 1:]
        )
    return packed, full.float()


def _device(model) -> str:
    """The device of the model's weights (where batch tensors must live)."""
    try:
        return str(next(model.parameters()).device)
    except (AttributeError, StopIteration):
        return "cpu"


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

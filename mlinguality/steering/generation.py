"""Stage 6b: batched generation on a TransformerBridge, with steering hooks active at every step.

:func:`generate` tokenizes the prompts once (one BOS each), packs them into left-padded batches of
similar length, and runs ``TransformerBridge.generate`` on each batch with an explicit attention
mask (so pads are never attended and positions are right), greedy or sampled from a fixed seed
per batch, for at most ``max_new_tokens``. With ``hooks`` (from
:func:`~mlinguality.steering.interventions.steering_hooks`) the intervention is on for every
forward pass of the batch, the prompt pass and each generated token; the hooks' window tells them
which columns are prompt and which are generated; ``hooks.verify()`` runs at the end.

KV cache: with transformers >= 5.2x, the bridge's attention components look for the cache
under ``past_key_values`` while transformers passes it as ``cache``, so the cache stays empty
and every cached step attends to itself alone (silently different tokens).
:func:`check_kv_cache` compares one cached step with the full forward pass; when they differ it
hands the cache to the bridge's components and checks again, and when that fails too generation
runs without the cache (correct, slower) with a warning.

>>> from mlinguality import TinyModelConfig, load_model
>>> model = load_model(TinyModelConfig())
>>> out = generate(model, ["In the beginning", "Au commencement"], max_new_tokens=4, stop_at_eos=False)
>>> [len(ids) for ids in out.new_ids]
[4, 4]
"""

from __future__ import annotations

import logging
import re
import types
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from mlinguality.activations.batching import pad_token_id, tokenize_texts
from mlinguality.errors import MlingualityError
from mlinguality.steering.direction_hooks import DirectionHooks
from mlinguality.steering.interventions import SteeringHooks
from mlinguality.types import AttentionMask, PositionMask, TokenIds

logger = logging.getLogger(__name__)

_KV_STATE = "_mlinguality_kv_cache_ok"  # attribute set on the model after check_kv_cache


@dataclass
class Generations:
    """Generated continuations, in the order of the prompts.

    Attributes:
        prompts: The prompt strings.
        prompt_ids: Token ids fed for each prompt (BOS first, no padding).
        new_ids: Generated token ids of each prompt, up to (not including) the first EOS.
        texts: ``new_ids`` decoded without special tokens (:func:`decode_new_tokens`).
        stopped: Whether each generation ended on EOS before ``max_new_tokens``.
    """

    prompts: list[str]
    prompt_ids: list[list[int]]
    new_ids: list[list[int]]
    texts: list[str]
    stopped: list[bool]

    def __len__(self) -> int:
        return len(self.prompts)


def _prompt_ids(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    out = []
    for text in tokenize_texts(tokenizer, prompts):
        ids = list(text.ids)
        if (
            tokenizer.eos_token_id is not None
            and len(ids) > 1
            and ids[-1] == tokenizer.eos_token_id
        ):
            ids = ids[:-1]
        out.append(ids if text.has_bos or bos is None else [bos, *ids])
    return out


def left_pad(
    rows: Sequence[Sequence[int]], pad: int, has_bos: bool = True
) -> tuple[TokenIds, AttentionMask, PositionMask]:
    """Left-padded ids, their attention mask, and the writable prompt mask (real tokens but BOS).

    >>> ids, attention, writable = left_pad([[2, 5, 6], [2, 7]], pad=0)
    >>> ids.tolist(), attention.tolist(), writable.int().tolist()
    ([[2, 5, 6], [0, 2, 7]], [[1, 1, 1], [0, 1, 1]], [[0, 1, 1], [0, 0, 1]])
    """
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    writable = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
        attention[i, width - len(row) :] = 1
        writable[i, width - len(row) + int(has_bos) :] = True
    return ids, attention, writable


def _hand_cache_to_components(model) -> int:
    """Let the bridge's attention components find the cache transformers passes as ``cache``."""
    patched = 0
    for module in model.modules():
        update = getattr(module, "_update_kv_cache", None)
        if update is None or getattr(update, "_mlinguality", False):
            continue

        def with_cache(self, k, v, _update=update, **kwargs):
            if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
                kwargs["past_key_values"] = kwargs["cache"]
            return _update(k, v, **kwargs)

        with_cache._mlinguality = True  # type: ignore[attr-defined]
        module._update_kv_cache = types.MethodType(with_cache, module)
        patched += 1
    return patched


def _cached_matches_full(model) -> bool:
    """Greedy tokens of a short generation with and without the KV cache agree."""
    ids = torch.tensor([_prompt_ids(model.tokenizer, ["In the beginning God"])[0]])
    ids = ids.to(model.cfg.device)
    runs = [
        model.generate(
            ids,
            max_new_tokens=4,
            do_sample=False,
            stop_at_eos=False,
            use_past_kv_cache=cached,
            verbose=False,
            return_type="tokens",
            output_logits=True,
        )
        for cached in (True, False)
    ]
    cached, full = (torch.stack(run.logits) for run in runs)
    scale = full.abs().max().clamp_min(1e-6)
    return bool(((cached - full).abs().max() / scale) < 1e-3)


def check_kv_cache(model) -> bool:
    """Whether cached generation on ``model`` equals generation without the cache (fixing the
    bridge's cache hand-over once if needed); the answer is remembered on the model."""
    state = getattr(model, _KV_STATE, None)
    if state is not None:
        return state
    with torch.no_grad():
        ok = _cached_matches_full(model)
        if not ok and _hand_cache_to_components(model):
            ok = _cached_matches_full(model)
            if ok:
                logger.info("KV cache: handed transformers' `cache` to the bridge's attention")
    if not ok:
        logger.warning("KV cache gives other logits than the full forward; generating without it")
    setattr(model, _KV_STATE, ok)
    return ok


def generate(
    model,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 32,
    hooks: SteeringHooks | DirectionHooks | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    batch_size: int = 16,
    stop_at_eos: bool = True,
    use_cache: bool = True,
) -> Generations:
    """Continue every prompt, greedy or sampled, with ``hooks`` applied at every step.

    Args:
        model: A TransformerBridge.
        prompts: Non-empty strings.
        max_new_tokens: Most tokens generated per prompt.
        hooks: Steering hooks, of neurons (:func:`~mlinguality.steering.interventions.steering_hooks`)
            or of a direction (:func:`~mlinguality.steering.direction_hooks.direction_hooks`);
            ``positions`` applies (prompt, generated or all columns); they are registered for
            the call and verified after it.
        do_sample: Sample (``temperature``, ``top_k``, ``top_p``) instead of greedy decoding.
        seed: Sampling seed; batch ``b`` draws from ``seed + b`` (the global RNG is restored after).
        batch_size: Prompts per batch (sorted by length, left-padded).
        stop_at_eos: Stop a prompt at its first EOS (the EOS is not part of ``new_ids``).
        use_cache: Use the KV cache when :func:`check_kv_cache` passes.
    """
    if not prompts or any(not p for p in prompts):
        raise MlingualityError("generate: need non-empty prompts")
    if max_new_tokens < 1 or batch_size < 1:
        raise MlingualityError("generate: max_new_tokens and batch_size must be >= 1")
    tokenizer = model.tokenizer
    rows = _prompt_ids(tokenizer, prompts)
    has_bos = tokenizer.bos_token_id is not None and all(
        r[0] == tokenizer.bos_token_id for r in rows
    )
    cached = use_cache and check_kv_cache(model)
    order = sorted(range(len(rows)), key=lambda i: (len(rows[i]), i))
    new_ids: list[list[int]] = [[] for _ in rows]
    stopped = [False] * len(rows)
    eos = tokenizer.eos_token_id
    registered = model.hooks(fwd_hooks=list(hooks)) if hooks is not None else nullcontext()
    with registered, torch.no_grad():
        for number, start in enumerate(range(0, len(order), batch_size)):
            chosen = order[start : start + batch_size]
            ids, attention, writable = left_pad(
                [rows[i] for i in chosen], pad_token_id(tokenizer), has_bos
            )
            device = model.cfg.device
            if hooks is not None:
                hooks.window.begin(writable, cached)
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed + number)
                    out = model.generate(
                        ids.to(device),
                        attention_mask=attention.to(device),
                        max_new_tokens=max_new_tokens,
                        do_sample=do_sample,
                        temperature=temperature,
                        top_k=top_k,
                        top_p=top_p,
                        stop_at_eos=stop_at_eos,
                        use_past_kv_cache=cached,
                        verbose=False,
                        return_type="tokens",
                    )
            finally:
                if hooks is not None:
                    hooks.window.end()
            for row, index in enumerate(chosen):
                tokens = out[row, ids.shape[1] :].tolist()
                if stop_at_eos and eos is not None and eos in tokens:
                    tokens, stopped[index] = tokens[: tokens.index(eos)], True
                new_ids[index] = tokens
    if hooks is not None:
        hooks.verify()
    special = special_token_ids(tokenizer)
    texts = [decode_new_tokens(tokenizer, ids, special) for ids in new_ids]
    return Generations(list(prompts), rows, new_ids, texts, stopped)


_CONTROL = re.compile(r"</?[^<>\s]+>|\[[^\[\]\s]+\]")  # <start_of_image>, </td>, [multimodal]


def special_token_ids(tokenizer) -> frozenset[int]:
    """Ids of the tokens that are not text: the tokenizer's special tokens, every added token
    flagged special, and added tokens that look like control or markup tokens
    (``<start_of_image>``, ``<td>``, ``[multimodal]``: the converted Gemma 3 tokenizer adds
    them unflagged, so ``decode(skip_special_tokens=True)`` keeps them)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    control = {
        int(i)
        for i, token in added.items()
        if getattr(token, "special", False) or _CONTROL.fullmatch(str(token))
    }
    return frozenset(control | set(tokenizer.all_special_ids))


def decode_new_tokens(tokenizer, ids: Sequence[int], special: frozenset[int] | None = None) -> str:
    """Generated ids as text without the tokens of :func:`special_token_ids`: a generation of
    such tokens alone decodes to ``""`` (no language: outcome "other", counted in ``n_empty``),
    not to ``"<start_of_image>" * 12``, which the identifier called English."""
    special = special_token_ids(tokenizer) if special is None else special
    return tokenizer.decode([i for i in ids if i not in special], skip_special_tokens=True)


__all__ = [
    "Generations",
    "check_kv_cache",
    "decode_new_tokens",
    "generate",
    "left_pad",
    "special_token_ids",
]

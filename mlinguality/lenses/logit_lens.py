"""The logit lens: each layer's residual read by the model's own final norm and unembedding.

``lens(resid) = W_U final_norm(resid) (+ b_U)`` at ``blocks.L.hook_resid_post`` of every layer L
(nostalgebraist 2020; Wendler et al. 2024). The final norm is the model's own module, called as
the model calls it (Gemma's RMSNorm with its ``1 + weight`` scale and its division by the
residual's RMS, GPT-2's LayerNorm with its centring and bias), and the head is the model's output
layer through :func:`mlinguality.ablation.evaluation.head_logit_blocks` (Gemma 2's soft cap
included), a block of the vocabulary at a time: on Gemma's 262k vocabulary the logits of a block
of positions never exist whole. The last layer's ``resid_post`` is the final norm's input, so the
last layer's lens is the model's logits.

Per layer, :func:`logit_lens` reports the mean next-token cross-entropy (nats) of the lens with
its standard error, and where the top-1 decoded token belongs: English, the input language,
another language, or no language (a :class:`~mlinguality.dashboards.token_language.TokenLanguages`
table from the corpus's own counts, or a plain ``{token_id: lang}`` mapping). Positions are the
samples the collection pass drew; the standard error treats them as independent (positions of
one text are not quite, so it is a lower bound).

>>> import torch
>>> from mlinguality import TinyModelConfig, load_model
>>> model = load_model(TinyModelConfig(n_layers=2, d_mlp=64))
>>> ids = model.tokenizer(["In the beginning God created"], return_tensors="pt")["input_ids"]
>>> _, cache = model.run_with_cache(ids)
>>> resid = torch.stack([cache[f"blocks.{L}.hook_resid_post"][0, :-1] for L in range(2)], 1)
>>> table = logit_lens(model, resid, ids[0, 1:], {}, "en")
>>> list(table["layer"]), bool((table["share_unassigned"] == 1).all())
([0, 1], True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import einops
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mlinguality.ablation.evaluation import head_logit_blocks
from mlinguality.dashboards.token_language import TokenLanguages
from mlinguality.errors import MlingualityError

__all__ = [
    "LENS_COLUMNS",
    "LensDecoding",
    "final_norm",
    "lens_decode",
    "lens_logits",
    "logit_lens",
    "logit_lens_languages",
    "token_language_index",
]

# (sample, layer) rows per pass through the head: the head's weights are read once per block
# (on the CPU the logits of a block are block x 2048 floats at a time, 32 MB for 4096 rows).
DEFAULT_BLOCK_ROWS = 4096
LENS_COLUMNS = (
    "layer",
    "lang",
    "loss",
    "loss_se",
    "share_en",
    "share_input",
    "share_other",
    "share_unassigned",
    "n",
)


def final_norm(model, resid: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_model"]:
    """The model's final norm applied to ``resid`` as the model applies it (its own module, cast
    to its dtype and device; no hooks run)."""
    norm = getattr(model.ln_final, "original_component", model.ln_final)
    weight = next(norm.parameters(), None)
    if weight is not None:
        resid = resid.to(device=weight.device, dtype=weight.dtype)
    return norm(resid)


def lens_logits(model, resid: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_vocab"]:
    """The whole-vocabulary logit lens of a few residuals (float32); for many positions of a
    large vocabulary use :func:`lens_decode`, which never holds the logits."""
    with torch.no_grad():
        return torch.cat(
            [block for _, block in head_logit_blocks(model, final_norm(model, resid))], -1
        )


@dataclass(frozen=True)
class LensDecoding:
    """Per-sample lens results of one language: NLL of the next token and the top-1 token.

    Attributes:
        nll: Cross-entropy (nats) of the next token under the lens, float64.
        top1: Id of the lens's most likely token (the first of ties, as ``argmax``).
    """

    nll: Float[Tensor, "sample layer"]
    top1: Int[Tensor, "sample layer"]


def _decode_block(
    model, normed: Float[Tensor, "n d_model"], targets: Int[Tensor, " n"]
) -> tuple[Float[Tensor, " n"], Int[Tensor, " n"]]:
    """NLL of ``targets`` and the argmax token in one pass over the head's vocabulary blocks."""
    n = len(normed)
    device = normed.device
    rows = torch.arange(n, device=device)
    log_partition = torch.full((n,), -math.inf, device=device)
    target_logit = torch.zeros(n, device=device)
    best = torch.full((n,), -math.inf, device=device)
    best_id = torch.zeros(n, dtype=torch.long, device=device)
    for first, logits in head_logit_blocks(model, normed):
        log_partition = torch.logaddexp(log_partition, torch.logsumexp(logits, dim=-1))
        here = (targets >= first) & (targets < first + logits.shape[-1])
        target_logit[here] = logits[rows[here], targets[here] - first]
        value, index = logits.max(dim=-1)
        better = value > best  # strictly: an earlier block keeps a tie, as argmax does
        best = torch.where(better, value, best)
        best_id = torch.where(better, index + first, best_id)
    return log_partition - target_logit, best_id


def lens_decode(
    model,
    lens_resid: Float[Tensor, "sample layer d_model"],
    lens_next: Int[Tensor, " sample"],
    *,
    block_size: int = DEFAULT_BLOCK_ROWS,
) -> LensDecoding:
    """The logit lens at every sampled position and layer: next-token NLL and top-1 token.

    Args:
        model: A TransformerBridge (its final norm and output head are used).
        lens_resid: ``blocks.L.hook_resid_post`` at sampled positions, every layer.
        lens_next: The token that follows each sampled position.
        block_size: ``(sample, layer)`` rows per pass through the head.
    """
    n_sample, n_layer, _ = lens_resid.shape
    if lens_next.shape != (n_sample,):
        raise MlingualityError(f"lens_next: {tuple(lens_next.shape)} for {n_sample} samples")
    if block_size < 1:
        raise MlingualityError(f"block_size: {block_size} < 1")
    flat = einops.rearrange(lens_resid, "sample layer d_model -> (sample layer) d_model")
    targets = einops.repeat(lens_next.long(), "sample -> (sample layer)", layer=n_layer)
    nll = torch.zeros(len(flat), dtype=torch.float64)
    top1 = torch.zeros(len(flat), dtype=torch.long)
    with torch.no_grad():
        for start in range(0, len(flat), block_size):
            part = slice(start, start + block_size)
            normed = final_norm(model, flat[part])
            block_nll, block_top = _decode_block(model, normed, targets[part].to(normed.device))
            nll[part] = block_nll.double().cpu()
            top1[part] = block_top.cpu()
    shape = "(sample layer) -> sample layer"
    return LensDecoding(
        einops.rearrange(nll, shape, layer=n_layer), einops.rearrange(top1, shape, layer=n_layer)
    )


def token_language_index(
    token_language: TokenLanguages | Mapping[int, str], d_vocab: int
) -> tuple[list[str], Int[Tensor, " d_vocab"]]:
    """The languages and, per token id, the index of its language in them (-1: unassigned).

    >>> token_language_index({3: "fr", 5: "en"}, 6)
    (['en', 'fr'], tensor([-1, -1, -1,  1, -1,  0]))
    """
    index = torch.full((d_vocab,), -1, dtype=torch.long)
    if isinstance(token_language, TokenLanguages):
        langs = list(token_language.langs)
        assigned = token_language.assigned[:d_vocab]
        index[: len(assigned)] = assigned
        return langs, index
    langs = sorted(set(token_language.values()))
    position = {lang: i for i, lang in enumerate(langs)}
    for token_id, lang in token_language.items():
        if 0 <= int(token_id) < d_vocab:
            index[int(token_id)] = position[lang]
    return langs, index


def _summary(
    decoding: LensDecoding,
    langs: list[str],
    index: Int[Tensor, " d_vocab"],
    input_lang: str,
    english: str,
) -> pd.DataFrame:
    codes = index[decoding.top1]  # (sample, layer): language index of each top-1 token
    en = langs.index(english) if english in langs else -2
    own = langs.index(input_lang) if input_lang in langs else -2
    n = decoding.nll.shape[0]
    rows = []
    for layer in range(decoding.nll.shape[1]):
        nll, code = decoding.nll[:, layer], codes[:, layer]
        rows.append(
            {
                "layer": layer,
                "lang": input_lang,
                "loss": float(nll.mean()) if n else math.nan,
                "loss_se": float(nll.std() / math.sqrt(n)) if n > 1 else math.nan,
                "share_en": float((code == en).double().mean()),
                "share_input": float((code == own).double().mean()),
                "share_other": float(((code >= 0) & (code != en) & (code != own)).double().mean()),
                "share_unassigned": float((code < 0).double().mean()),
                "n": n,
            }
        )
    return pd.DataFrame(rows, columns=list(LENS_COLUMNS))


def logit_lens(
    model,
    lens_resid: Float[Tensor, "sample layer d_model"],
    lens_next: Int[Tensor, " sample"],
    token_language: TokenLanguages | Mapping[int, str],
    input_lang: str,
    *,
    english: str = "en",
    block_size: int = DEFAULT_BLOCK_ROWS,
) -> pd.DataFrame:
    """Per layer: the lens's next-token loss and the language of its top-1 decoded tokens.

    Args:
        model: A TransformerBridge.
        lens_resid: ``blocks.L.hook_resid_post`` of the input language's texts at sampled
            positions, every layer.
        lens_next: The token that follows each sampled position.
        token_language: Each token's language (a ``TokenLanguages`` table or ``{token_id:
            lang}``); tokens it leaves out are unassigned.
        input_lang: The language of the texts (its name in ``token_language``).
        english: The name of English in ``token_language``.
        block_size: ``(sample, layer)`` rows per pass through the head.

    Returns:
        One row per layer with :data:`LENS_COLUMNS`: ``loss`` (mean NLL, nats) and ``loss_se``
        (its standard error over samples), the shares of top-1 tokens that are English
        (``share_en``), the input language's (``share_input``), another language's
        (``share_other``) or nobody's (``share_unassigned``), and ``n`` samples. The shares add
        up to 1, except for English input, where ``share_en`` and ``share_input`` count the
        same tokens.
    """
    decoding = lens_decode(model, lens_resid, lens_next, block_size=block_size)
    seen = int(decoding.top1.max()) + 1 if decoding.top1.numel() else 0
    langs, index = token_language_index(token_language, max(int(model.cfg.d_vocab), seen))
    return _summary(decoding, langs, index, input_lang, english)


def logit_lens_languages(
    model,
    samples: Mapping[str, tuple[Tensor, Tensor]],
    token_language: TokenLanguages | Mapping[int, str],
    *,
    english: str = "en",
    block_size: int = DEFAULT_BLOCK_ROWS,
) -> pd.DataFrame:
    """:func:`logit_lens` for each ``{lang: (lens_resid, lens_next)}``, the tables stacked."""
    tables = [
        logit_lens(model, resid, nxt, token_language, lang, english=english, block_size=block_size)
        for lang, (resid, nxt) in samples.items()
    ]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=LENS_COLUMNS)

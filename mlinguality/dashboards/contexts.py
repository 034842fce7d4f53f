"""What a neuron reads: its top contexts and activation histogram per language.

:func:`read_contexts` runs the model once over each language's texts, in the length-sorted
batches collection uses, with hooks on the chosen neurons' layers only. Each hook keeps the
chosen neurons' activations of the batch (``[batch, pos, n_chosen]``, never all of ``d_mlp``),
and the forward pass stops after the last layer needed. Per batch and neuron it keeps:

- the **top contexts**: each example's largest activation over the counted positions and where
  it is, merged into a running top-k per neuron (``torch.sort`` merges of k + batch
  candidates); ties go to the earlier example of the corpus, so the result does not depend on
  the batching;
- a **histogram** of every counted activation, with fixed bins per neuron
  (:func:`histogram_edges`: from the collected statistics, so languages share the bins).

The positions counted are collection's (``positions``, ``include_bos``): what the neuron was
selected on. The chosen neurons' activations of every text read are kept (tokens x neurons x 4
bytes: 35 MB for the main job's sample of 48 verses x 5 languages and ~880 neurons) for the text
windows around the top contexts, so one pass suffices; read a sample, not a whole corpus.
Oracle: a naive scan of every token of every text gives the same contexts
(``tests/dashboards/test_contexts.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mlinguality.activations import batching
from mlinguality.activations.batching import TokenizedText, tokenize_texts
from mlinguality.activations.collect import forward_to_last_hook
from mlinguality.activations.reducer import StopForward
from mlinguality.activations.stats import ActivationStats
from mlinguality.choices import Positions
from mlinguality.errors import MlingualityError
from mlinguality.types import HookPoint, MlpActs, hook_post_name

logger = logging.getLogger(__name__)

N_BINS = 24  # histogram bins per neuron: fine enough to show a bimodal neuron, small to store
# Histogram range: from the lowest (mean - 4 sd) over languages (0 if higher) to the highest
# maximum; activations outside fall into the end bins.
_SPREAD = 4.0
# Padded tokens per batch of the examples pass on a CPU. A sample of 48 verses fits one
# 4,096-token batch padded to its longest verse; 1,024-token batches group similar lengths: on
# the 2-core machine the pass over 48 verses x 5 languages took 10.8 s instead of 19.2 s
# (Gemma 3 270M fp32; 512: 10.4 s, 2,048: 12.5 s). GPUs keep collection's batches.
CPU_BATCH_TOKENS = 1024


def pass_batch_tokens(device: str, collection_batch_tokens: int) -> int:
    """Batch size of the examples pass: :data:`CPU_BATCH_TOKENS` on a CPU, else collection's.

    >>> pass_batch_tokens("cpu", 4096), pass_batch_tokens("cuda:0", 32768)
    (1024, 32768)
    """
    if str(device).startswith("cpu"):
        return min(CPU_BATCH_TOKENS, collection_batch_tokens)
    return collection_batch_tokens


@dataclass
class Context:
    """One top context: where a neuron fired most in one example."""

    example: int  # index of the example in the texts given
    position: int  # token index in the tokenized text (0: the first token, BOS included)
    activation: float


@dataclass
class NeuronReads:
    """Top contexts and histograms of some neurons, per language.

    Attributes:
        neurons: ``(layer, neuron)`` pairs, in the order of every per-neuron list and row.
        top: Per language, per neuron: its top contexts, best first.
        edges: Histogram bin edges per neuron (``n_bins + 1``).
        counts: Per language: counted activations per neuron and bin.
        n_tokens: Per language: positions counted.
        tokens: Per language: the token ids of every text (BOS included), for windows.
        acts: Per language: every text's activations of the neurons, ``[token, neuron]``.
    """

    neurons: list[tuple[int, int]]
    top: dict[str, list[list[Context]]]
    edges: Float[Tensor, "neuron edge"]
    counts: dict[str, Int[Tensor, "neuron bin"]]
    n_tokens: dict[str, int]
    tokens: dict[str, list[list[int]]] = field(default_factory=dict)
    acts: dict[str, list[Tensor]] = field(default_factory=dict)


def histogram_edges(
    stats: Mapping[str, ActivationStats], neurons: Sequence[tuple[int, int]], n_bins: int = N_BINS
) -> Float[Tensor, "neuron edge"]:
    """Fixed bin edges per neuron, shared by every language (see the module docstring)."""
    layers = torch.tensor([layer for layer, _ in neurons], dtype=torch.long)
    index = torch.tensor([neuron for _, neuron in neurons], dtype=torch.long)
    highs, lows = [], []
    for lang_stats in stats.values():
        mean = lang_stats.mean[layers, index].float()
        sd = lang_stats.var[layers, index].clamp_min(0).sqrt().float()
        highs.append(lang_stats.max[layers, index].float())
        lows.append(mean - _SPREAD * sd)
    high = torch.stack(highs).max(dim=0).values
    low = torch.stack(lows).min(dim=0).values.clamp_max(0.0)
    high = torch.maximum(high, low + 1e-6)
    steps = torch.linspace(0.0, 1.0, n_bins + 1)
    return low[:, None] + (high - low)[:, None] * steps[None, :]


def _bins(
    values: Float[Tensor, "token neuron"], edges: Float[Tensor, "neuron edge"]
) -> Int[Tensor, "token neuron"]:
    n_bins = edges.shape[1] - 1
    low, high = edges[:, 0], edges[:, -1]
    scaled = (values - low) / (high - low) * n_bins
    return scaled.floor().clamp(0, n_bins - 1).long()


def _merge_top(
    best: tuple[Tensor, Tensor, Tensor],
    candidates: tuple[Tensor, Tensor, Tensor],
    k: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Keep the k best of ``(value, example, position)`` per neuron (rows), ties to the
    earlier example."""
    values = torch.cat([best[0], candidates[0]], dim=1)
    examples = torch.cat([best[1], candidates[1]], dim=1)
    positions = torch.cat([best[2], candidates[2]], dim=1)
    by_example = examples.argsort(dim=1, stable=True)
    values, examples, positions = (t.gather(1, by_example) for t in (values, examples, positions))
    order = (-values).argsort(dim=1, stable=True)[:, :k]
    return tuple(t.gather(1, order) for t in (values, examples, positions))  # type: ignore[return-value]


def _capture_hooks(neurons: Sequence[tuple[int, int]], captured: dict[int, Tensor]):
    """Hooks keeping the chosen neurons of each needed layer; the last one stops the pass."""
    layers = sorted({layer for layer, _ in neurons})
    hooks = []
    for layer in layers:
        index = torch.tensor([n for lay, n in neurons if lay == layer], dtype=torch.long)

        def hook(acts: MlpActs, *, hook: HookPoint, layer=layer, index=index) -> None:
            captured[layer] = acts[..., index.to(acts.device)].float().cpu()
            if layer == layers[-1]:
                raise StopForward

        hooks.append((hook_post_name(layer), hook))
    return hooks


def _batches_of_acts(model, texts: list[TokenizedText], indices: list[int], neurons, batch_tokens):
    """Yield ``(batch, acts [batch, pos, neuron])`` over ``indices`` (right padded, so a padded
    column is the token index in its text)."""
    order = {layer: [] for layer, _ in neurons}
    for column, (layer, _) in enumerate(neurons):
        order[layer].append(column)
    columns = torch.tensor([c for layer in sorted(order) for c in order[layer]])
    inverse = torch.empty_like(columns)
    inverse[columns] = torch.arange(len(columns))
    captured: dict[int, Tensor] = {}
    lengths = [len(texts[i].ids) for i in indices]
    plan = batching.plan_batches(
        lengths, batch_tokens, batching.default_max_batch_size(batch_tokens)
    )
    pad_id = batching.pad_token_id(model.tokenizer)
    with torch.inference_mode(), model.hooks(fwd_hooks=_capture_hooks(neurons, captured)):
        for rows in plan:
            batch = batching.pad_batch(texts, [indices[r] for r in rows], pad_id, "right")
            captured.clear()
            forward_to_last_hook(model, batch, model.cfg.device)
            acts = torch.cat([captured[layer] for layer in sorted(order)], dim=-1)
            yield batch, acts[..., inverse]


def read_contexts(
    model,
    texts: Mapping[str, Sequence[str]],
    neurons: Sequence[tuple[int, int]],
    edges: Float[Tensor, "neuron edge"],
    *,
    top_k: int = 8,
    positions: Positions = "all",
    include_bos: bool = False,
    batch_tokens: int = 4096,
) -> NeuronReads:
    """Top contexts and histograms of ``neurons`` on each language's ``texts``.

    Args:
        model: A TransformerBridge (or the tiny test model).
        texts: Per language, the texts (examples in corpus order: ties go to the earlier one).
        neurons: ``(layer, neuron)`` pairs.
        edges: Histogram bin edges per neuron (:func:`histogram_edges`).
        top_k: Contexts kept per neuron and language (one per example at most).
        positions: Which positions count (as in collection).
        include_bos: Count the leading special tokens too.
        batch_tokens: Padded tokens per forward batch (speed, not results).
    """
    if not neurons:
        raise MlingualityError("read_contexts: no neurons given")
    for layer, neuron in neurons:
        if not (0 <= layer < model.cfg.n_layers and 0 <= neuron < model.cfg.d_mlp):
            raise MlingualityError(
                f"neuron L{layer} N{neuron}: outside the model's {model.cfg.n_layers} layers x "
                f"{model.cfg.d_mlp} neurons"
            )
    batching.ensure_eval(model)
    n = len(neurons)
    n_bins = edges.shape[1] - 1
    result = NeuronReads(list(neurons), {}, edges, {}, {}, {}, {})
    for lang, lang_texts in texts.items():
        tokenized = tokenize_texts(
            model.tokenizer, lang_texts, word_final=positions == "word_final"
        )
        result.tokens[lang] = [list(text.ids) for text in tokenized]
        best = (
            torch.full((n, 0), float("-inf")),
            torch.zeros((n, 0), dtype=torch.long),
            torch.zeros((n, 0), dtype=torch.long),
        )
        counts = torch.zeros(n * n_bins, dtype=torch.long)
        counted = 0
        indices = list(range(len(tokenized)))
        kept: list[Tensor | None] = [None] * len(tokenized)
        for batch, acts in _batches_of_acts(model, tokenized, indices, neurons, batch_tokens):
            for row, index in enumerate(batch.indices):
                kept[index] = acts[row, : batch.lengths[row]].clone()
            mask = batching.position_mask(batch, tokenized, positions, include_bos)
            values = acts[mask]  # [token, neuron]
            counted += values.shape[0]
            flat = _bins(values, edges) + torch.arange(n) * n_bins
            counts += torch.bincount(flat.flatten(), minlength=n * n_bins)
            masked = acts.masked_fill(~mask[..., None], float("-inf"))
            peak, where = masked.max(dim=1)  # [batch, neuron]: the first position of the max
            example = torch.tensor(batch.indices)[:, None].expand_as(where)
            candidates = (
                einops.rearrange(peak, "batch neuron -> neuron batch"),
                einops.rearrange(example, "batch neuron -> neuron batch"),
                einops.rearrange(where, "batch neuron -> neuron batch"),
            )
            best = _merge_top(best, candidates, top_k)
        result.counts[lang] = einops.rearrange(counts, "(neuron bin) -> neuron bin", bin=n_bins)
        result.n_tokens[lang] = counted
        result.acts[lang] = kept  # type: ignore[assignment]
        result.top[lang] = [
            [
                Context(int(e), int(p), float(v))
                for v, e, p in zip(*(t[row].tolist() for t in best), strict=True)
                if v != float("-inf")
            ]
            for row in range(n)
        ]
    return result


def context_windows(model, reads: NeuronReads, window: int = 8) -> dict[str, list[list[dict]]]:
    """Per language and neuron, each top context's text window: the tokens ``window`` either
    side of the peak (decoded one by one) and the neuron's activation on each."""
    tokenizer = model.tokenizer
    names: dict[int, str] = {}

    def name(token_id: int) -> str:
        if token_id not in names:
            names[token_id] = tokenizer.decode([token_id])
        return names[token_id]

    out: dict[str, list[list[dict]]] = {}
    for lang, tops in reads.top.items():
        out[lang] = []
        for column, contexts in enumerate(tops):
            cards = []
            for context in contexts:
                ids = reads.tokens[lang][context.example]
                start = max(0, context.position - window)
                stop = min(len(ids), context.position + window + 1)
                values = reads.acts[lang][context.example][start:stop, column]
                cards.append(
                    {
                        "example": context.example,
                        "position": context.position,
                        "activation": context.activation,
                        "tokens": [name(t) for t in ids[start:stop]],
                        "acts": values.tolist(),
                        "focus": context.position - start,
                    }
                )
            out[lang].append(cards)
    return out

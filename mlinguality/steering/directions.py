"""Stage 6e: language directions: the difference of mean residuals between two languages.

The training-free baseline for neuron steering (METHODS.md, "Language directions"). At layer
``L`` the direction from ``source`` to ``target`` is

    d_L = mean(resid_post_L | target-language text) - mean(resid_post_L | source-language text)

where ``resid_post_L`` is ``blocks.{L}.hook_resid_post`` and each mean is pooled over the counted
token positions of every example (a token-weighted mean, the positions being collection's:
``all`` real tokens, the ``last`` one or the ``word_final`` ones, BOS excluded unless
``include_bos``; pads never count). The means are streamed with hooks over length-sorted batches
(never a cache of every layer), and the forward pass stops after the last layer asked for.

:func:`random_direction` is the control: a Gaussian direction, seeded, scaled to the same norm.

>>> from mlinguality import TinyModelConfig, load_model
>>> model = load_model(TinyModelConfig(n_layers=2, d_model=32))
>>> corpus = {"en": ["In the beginning", "Amen"], "fr": ["Au commencement", "Amen"]}
>>> d = language_direction(model, corpus, "en", "fr", layers=1)
>>> tuple(d.shape), bool(random_direction(d, seed=0).norm().isclose(d.norm()))
((32,), True)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import einops
import torch
from torch import Tensor

from mlinguality.activations.batching import (
    default_max_batch_size,
    ensure_eval,
    pad_batch,
    pad_token_id,
    plan_batches,
    position_mask,
    tokenize_texts,
)
from mlinguality.activations.collect import POSITIONS, forward_to_last_hook
from mlinguality.activations.reducer import StopForward, accumulator_dtype
from mlinguality.corpus.adapters import as_corpus
from mlinguality.errors import MlingualityError
from mlinguality.types import HookPoint, LayerResid, ResidActs, ResidVector, resid_post_name

logger = logging.getLogger(__name__)


class DirectionError(MlingualityError):
    """A language direction could not be computed or applied as asked."""


@dataclass
class ResidualMeans:
    """Mean residual stream (``hook_resid_post``) of one language's texts at chosen layers.

    Attributes:
        lang: The language (a label; ``""`` when unknown).
        layers: The layers, in the order of the rows of ``mean``.
        mean: ``[layer, d_model]``: the token-weighted mean over the counted positions (float32).
        n_tokens: Positions averaged (the same at every layer).
    """

    lang: str
    layers: list[int]
    mean: LayerResid
    n_tokens: int

    def at(self, layer: int) -> ResidVector:
        """The mean at ``layer`` (one of :attr:`layers`)."""
        if layer not in self.layers:
            raise DirectionError(
                f"no mean residual of {self.lang or 'this language'} at layer {layer} "
                f"(have layers {self.layers})"
            )
        return self.mean[self.layers.index(layer)]


def resolve_layers(layers: int | Sequence[int], n_layers: int) -> list[int]:
    """Layer indices in ``[0, n_layers)`` (negative ones count from the end), sorted, unique.

    >>> resolve_layers([-1, 0, 3], n_layers=4)
    [0, 3]
    """
    chosen = [layers] if isinstance(layers, int) else list(layers)
    if not chosen:
        raise DirectionError("give at least one layer")
    out = set()
    for layer in chosen:
        if not -n_layers <= layer < n_layers:
            raise DirectionError(f"layer {layer} is out of range for a {n_layers}-layer model")
        out.add(layer % n_layers)
    return sorted(out)


def default_direction_layers(n_layers: int) -> list[int]:
    """The layer sweep when none is given: a quarter, half and three quarters of the depth.

    Studies that steer with mean differences find the middle layers work best; the ends of the
    sweep show how fast that falls off, at three generation runs per alpha instead of one per layer.

    >>> default_direction_layers(18), default_direction_layers(2)
    ([4, 9, 13], [0, 1])
    """
    return sorted({min(int(n_layers * share), n_layers - 1) for share in (0.25, 0.5, 0.75)})


def mean_residuals(
    model,
    texts: Sequence[str],
    layers: int | Sequence[int],
    *,
    lang: str = "",
    positions: str = "all",
    include_bos: bool = False,
    batch_tokens: int = 4096,
    padding_side: str = "right",
) -> ResidualMeans:
    """The mean ``blocks.{L}.hook_resid_post`` over ``texts`` at each of ``layers``.

    Args:
        model: A TransformerBridge.
        texts: The language's texts (the selection split's examples).
        layers: A layer or layers (negative ones count from the end).
        lang: A label for the result.
        positions: ``"all"``, ``"last"`` or ``"word_final"`` (as in collection).
        include_bos: Count the BOS position too.
        batch_tokens: Padded tokens per forward batch (speed, not results).
        padding_side: ``"right"`` or ``"left"``; the means are the same either way.
    """
    if positions not in POSITIONS:
        raise DirectionError(f"positions: unknown {positions!r}; choose one of {POSITIONS}")
    if not texts:
        raise DirectionError(f"mean residuals of {lang or 'a language'}: no texts")
    chosen = resolve_layers(layers, model.cfg.n_layers)
    ensure_eval(model)
    device = torch.device(model.cfg.device)
    dtype = accumulator_dtype(device)
    tokenized = tokenize_texts(model.tokenizer, texts, word_final=positions == "word_final")
    batches = plan_batches(
        [len(t.ids) for t in tokenized], batch_tokens, default_max_batch_size(batch_tokens)
    )
    sums = torch.zeros((len(chosen), model.cfg.d_model), dtype=dtype, device=device)
    count = 0
    state: dict[str, Tensor] = {}
    fired: set[int] = set()

    def hook_for(row: int, layer: int):
        def reduce(resid: ResidActs, *, hook: HookPoint) -> None:
            where = state["mask"].to(resid.dtype)
            sums[row] += einops.einsum(
                resid.to(dtype), where.to(dtype), "batch pos d_model, batch pos -> d_model"
            )
            fired.add(layer)
            if layer == chosen[-1]:
                raise StopForward

        return reduce

    hooks = [(resid_post_name(layer), hook_for(row, layer)) for row, layer in enumerate(chosen)]
    pad_id = pad_token_id(model.tokenizer)
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        for indices in batches:
            batch = pad_batch(tokenized, indices, pad_id, padding_side)  # type: ignore[arg-type]
            mask = position_mask(batch, tokenized, positions, include_bos)  # type: ignore[arg-type]
            state["mask"] = mask.to(device)
            count += int(mask.sum())
            fired.clear()
            forward_to_last_hook(model, batch, device)
            if fired != set(chosen):
                raise DirectionError(f"residual hooks fired on layers {sorted(fired)} only")
    if count == 0:
        raise DirectionError(f"mean residuals of {lang or 'a language'}: no position counted")
    return ResidualMeans(lang, chosen, (sums / count).float().cpu(), count)


def direction_from_means(mean_target: ResidVector, mean_source: ResidVector) -> ResidVector:
    """The language direction from precomputed means: ``mean_target - mean_source``.

    Adding it once (``alpha=1``) to a residual moves the source mean exactly onto the target mean.

    >>> direction_from_means(torch.tensor([3.0, 1.0]), torch.tensor([1.0, 1.0])).tolist()
    [2.0, 0.0]
    """
    if mean_target.shape != mean_source.shape:
        raise DirectionError(
            f"means of different shapes: {tuple(mean_target.shape)} and {tuple(mean_source.shape)}"
        )
    return (mean_target.float() - mean_source.float()).detach().cpu()


def language_direction(
    model,
    corpus,
    source: str,
    target: str,
    layers: int | Sequence[int],
    *,
    positions: str = "all",
    include_bos: bool = False,
    batch_tokens: int = 4096,
) -> ResidVector | dict[int, ResidVector]:
    """The ``source -> target`` direction(s): target-language mean residual minus source's.

    Args:
        model: A TransformerBridge.
        corpus: Parallel data (a corpus, a ``{lang: [texts]}`` dict, ...:
            :func:`mlinguality.corpus.as_corpus`); use the selection split, never the prompts'.
        source: The language steered away from.
        target: The language steered towards.
        layers: One layer (the result is one ``[d_model]`` vector) or several (a dict
            ``{layer: vector}``).
        positions: Which positions count (``"all"``, ``"last"``, ``"word_final"``).
        include_bos: Count the BOS position too.
        batch_tokens: Padded tokens per forward batch.
    """
    if source == target:
        raise DirectionError(f"direction {source}->{target}: same language")
    corpus = as_corpus(corpus)
    means = language_means(
        model,
        corpus,
        [source, target],
        layers,
        positions=positions,
        include_bos=include_bos,
        batch_tokens=batch_tokens,
    )
    out = pair_directions(means, source, target)
    return next(iter(out.values())) if isinstance(layers, int) else out


def language_means(
    model,
    corpus,
    langs: Sequence[str],
    layers: int | Sequence[int],
    *,
    positions: str = "all",
    include_bos: bool = False,
    batch_tokens: int = 4096,
) -> dict[str, ResidualMeans]:
    """:func:`mean_residuals` of each of ``langs`` in ``corpus`` (one pass per language, every
    pair's direction is then a difference: :func:`direction_from_means`)."""
    corpus = as_corpus(corpus)
    return {
        lang: mean_residuals(
            model,
            corpus.texts(lang),
            layers,
            lang=lang,
            positions=positions,
            include_bos=include_bos,
            batch_tokens=batch_tokens,
        )
        for lang in dict.fromkeys(langs)
    }


def random_direction(direction: ResidVector, seed: int) -> ResidVector:
    """A random direction with the norm of ``direction``: isotropic Gaussian, normalised, scaled;
    the same ``seed`` gives the same vector (the global RNG is not touched)."""
    generator = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(direction.shape, generator=generator, dtype=torch.float64)
    scale = direction.detach().double().norm() / noise.norm().clamp_min(1e-12)
    return (noise * scale).float()


def pair_directions(
    means: Mapping[str, ResidualMeans], source: str, target: str
) -> dict[int, ResidVector]:
    """``{layer: direction}`` of one pair from per-language means."""
    for lang in (source, target):
        if lang not in means:
            raise DirectionError(
                f"no mean residuals for language {lang!r} (have {', '.join(means)})"
            )
    return {
        layer: direction_from_means(means[target].at(layer), means[source].at(layer))
        for layer in means[source].layers
    }


__all__ = [
    "DirectionError",
    "ResidualMeans",
    "default_direction_layers",
    "direction_from_means",
    "language_direction",
    "language_means",
    "mean_residuals",
    "pair_directions",
    "random_direction",
    "resolve_layers",
]

"""A permutation null for LAPE: the share of each layer selected when language labels are shuffled.

LAPE (:func:`mlinguality.selectivity.selection.select_lape`) looks at all languages at once, so
its null shuffles the languages **within each verse**: verse ``e`` in language ``l`` is counted
as language ``pi_e(l)``, a random permutation per verse. Under "no neuron cares which language
a verse is in", every relabelling is equally likely. Each draw recomputes the firing rates
(token-weighted per-example firing shares: the gate on gated MLPs), the LAPE selection and the
share of each layer it keeps; the observed share's permutation p-value says whether a layer
holds more language-specific neurons than relabelled text would give it.

A draw's rates are one matrix product: ``rate[l] = sum_e N[src, e] F[src, e] / sum_e N[src, e]``
over the ``(src, e)`` that label ``l`` takes, i.e. a 0/1 matrix ``[lang, lang*example]`` times
the stacked ``N * F`` ``[lang*example, layer*d_mlp]``.
"""

from __future__ import annotations

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from mlinguality.activations.stats import ActivationStats
from mlinguality.errors import MlingualityError
from mlinguality.selectivity.scores import example_firing
from mlinguality.selectivity.selection import lape_select_probs

__all__ = ["lape_layer_share", "lape_share_draws"]

_CHUNK = 8  # permutations per matrix product: [8*lang, lang*example] @ [lang*example, features]


def lape_layer_share(
    probs: Float[Tensor, "lang layer d_mlp"], top_rate: float = 0.01
) -> Float[Tensor, " layer"]:
    """Share of each layer's neurons that LAPE keeps and some language owns."""
    _, owned = lape_select_probs(probs, top_rate)
    return einops.reduce(owned.any(0).double(), "layer d_mlp -> layer", "mean")


def lape_share_draws(
    stats: dict[str, ActivationStats],
    n_permutations: int = 200,
    top_rate: float = 0.01,
    seed: int = 0,
) -> tuple[Float[Tensor, " layer"], Float[Tensor, "perm layer"]]:
    """Observed LAPE share per layer (from per-example firing shares) and its permutation draws.

    Args:
        stats: ``{lang: ActivationStats}`` with per-example statistics over the same verses.
        n_permutations: Within-verse shuffles of the language labels.
        top_rate: LAPE's share of all neurons kept.
        seed: Seeds the shuffles.
    """
    langs = list(stats)
    first = stats[langs[0]]
    for lang in langs:
        if stats[lang].example_ids != first.example_ids or stats[lang].example_n_tokens is None:
            raise MlingualityError(
                f"LAPE permutations need per-example statistics over the same verses; "
                f"stats for {lang} differ from {langs[0]}'s"
            )
    tokens = torch.stack([stats[lang].example_n_tokens.double() for lang in langs])  # [L, E]
    firing = torch.stack([example_firing(stats[lang]).double() for lang in langs])
    n_langs, n_examples = tokens.shape
    weighted = einops.rearrange(
        firing * tokens[:, :, None, None],
        "lang example layer d_mlp -> (lang example) (layer d_mlp)",
    ).float()
    n_layers = firing.shape[2]

    def rates(assign: Tensor) -> Tensor:
        """``assign [draw, lang, lang*example]`` 0/1 -> firing rates ``[draw, lang, layer, d]``."""
        hits = einops.rearrange(assign, "draw lang source -> (draw lang) source") @ weighted
        counts = assign @ einops.rearrange(tokens, "lang example -> (lang example)").float()
        out = hits / counts.reshape(-1, 1).clamp_min(1)  # [(draw lang), (layer d)]
        return einops.rearrange(
            out, "(draw lang) (layer d) -> draw lang layer d", lang=n_langs, layer=n_layers
        )

    source = torch.arange(n_examples)
    identity = torch.zeros(1, n_langs, n_langs * n_examples)
    for lang in range(n_langs):
        identity[0, lang, lang * n_examples + source] = 1
    observed = lape_layer_share(rates(identity)[0].double(), top_rate)
    generator = torch.Generator().manual_seed(seed)
    null = []
    for start in range(0, n_permutations, _CHUNK):
        size = min(_CHUNK, n_permutations - start)
        # perm[d, e, l] = the source language that label l takes in verse e
        perm = torch.rand(size, n_examples, n_langs, generator=generator).argsort(-1)
        assign = torch.zeros(size, n_langs, n_langs * n_examples)
        columns = perm * n_examples + source[None, :, None]  # [draw, example, lang]
        assign.scatter_(2, einops.rearrange(columns, "draw example lang -> draw lang example"), 1)
        for draw in rates(assign):
            null.append(lape_layer_share(draw.double(), top_rate))
    permuted = torch.stack(null) if null else torch.zeros(0, n_layers, dtype=torch.float64)
    return observed, permuted

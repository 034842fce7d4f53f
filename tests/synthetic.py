"""Synthetic activations and the naive ActivationStats built from them (the selectivity oracle).

``random_pair`` builds aligned per-example tensors of one language pair (resampling, profile).

``stats_from_raw`` reduces raw activations ``[example, token, layer, d_mlp]`` with a token mask by
the plainest code there is (masked selection, then sums), independently of the collection stage.
"""

from __future__ import annotations

import torch

from mlinguality.activations.stats import ActivationStats
from mlinguality.selectivity.pairs import PairTensors


def stats_from_raw(
    lang: str,
    acts: torch.Tensor,
    mask: torch.Tensor,
    gate: torch.Tensor | None = None,
    ids: list[str] | None = None,
) -> ActivationStats:
    """ActivationStats of raw activations ``acts [example, token, layer, d_mlp]``.

    Only positions where ``mask [example, token]`` is True count. ``gate`` (same shape as
    ``acts``) is the gate pre-activation; its positive count goes to ``n_gate_positive``.
    """
    acts = acts.double()
    counted = acts[mask]  # [token, layer, d_mlp]
    n_examples = acts.shape[0]
    example_mean = torch.stack([acts[e][mask[e]].mean(0) for e in range(n_examples)])
    example_frac = torch.stack([(acts[e][mask[e]] > 0).double().mean(0) for e in range(n_examples)])
    gate_frac = None
    if gate is not None:
        gate_frac = torch.stack(
            [(gate[e][mask[e]] > 0).double().mean(0) for e in range(n_examples)]
        )
    return ActivationStats(
        lang=lang,
        n_tokens=int(mask.sum()),
        sum=counted.sum(0),
        m2=((counted - counted.mean(0)) ** 2).sum(0),
        n_positive=(counted > 0).sum(0),
        max=counted.max(0).values.float(),
        n_gate_positive=None if gate is None else (gate[mask] > 0).sum(0),
        example_ids=ids if ids is not None else [f"v{e}" for e in range(n_examples)],
        example_n_tokens=mask.sum(1),
        example_mean=example_mean.float(),
        example_frac_positive=example_frac.float(),
        example_frac_gate_positive=None if gate_frac is None else gate_frac.float(),
    )


def random_mask(n_examples: int, n_tokens: int, generator: torch.Generator) -> torch.Tensor:
    """Right-padded mask with 1..n_tokens real tokens per example."""
    lengths = torch.randint(1, n_tokens + 1, (n_examples,), generator=generator)
    return torch.arange(n_tokens)[None, :] < lengths[:, None]


def make_langs(
    langs: list[str],
    n_examples: int = 12,
    n_tokens: int = 5,
    n_layers: int = 4,
    d_mlp: int = 8,
    shift: dict[str, torch.Tensor] | None = None,
    seed: int = 0,
    gated: bool = True,
    baseline_sd: float = 2.0,
) -> dict[str, ActivationStats]:
    """Parallel synthetic languages: a per-neuron baseline shared by every language (as in real
    parallel text), N(0, 1) token noise, plus ``shift[lang] [layer, d_mlp]``."""
    generator = torch.Generator().manual_seed(seed)
    baseline = baseline_sd * torch.randn(n_layers, d_mlp, generator=generator)
    out = {}
    for lang in langs:
        acts = baseline + torch.randn(n_examples, n_tokens, n_layers, d_mlp, generator=generator)
        if shift and lang in shift:
            acts = acts + shift[lang]
        gate = acts + torch.randn(acts.shape, generator=generator) * 0.5 if gated else None
        mask = random_mask(n_examples, n_tokens, generator)
        out[lang] = stats_from_raw(lang, acts, mask, gate)
    return out


def random_pair(
    n_examples: int = 10,
    n_layers: int = 4,
    d_mlp: int = 12,
    seed: int = 0,
    ties: bool = False,
    shift: torch.Tensor | None = None,
) -> PairTensors:
    g = torch.Generator().manual_seed(seed)
    shape = (n_examples, n_layers, d_mlp)
    # a per-neuron baseline shared by both languages (as in real parallel text) plus noise
    baseline = 2 * torch.randn(n_layers, d_mlp, generator=g)
    mean_a = baseline + torch.randn(shape, generator=g)
    mean_b = baseline + torch.randn(shape, generator=g)
    if shift is not None:
        mean_b = mean_b + shift
    if ties:  # one decimal: many exact ties between and within languages
        mean_a, mean_b = mean_a.round(decimals=1), mean_b.round(decimals=1)
    return PairTensors(
        lang_a="aa",
        lang_b="bb",
        mean_a=mean_a,
        mean_b=mean_b,
        frac_a=torch.rand(shape, generator=g),
        frac_b=torch.rand(shape, generator=g),
        n_tokens_a=torch.randint(1, 9, (n_examples,), generator=g).float(),
        n_tokens_b=torch.randint(1, 9, (n_examples,), generator=g).float(),
    )

"""Stage 6g: the direction-steering experiment, the baseline beside neuron steering.

For each (source, target) pair, each layer of the sweep (``direction_layers``) and each strength
(``direction_alphas``), on the same prompts and with the same decoding and seeds as
:func:`mlinguality.steering.experiment.steering_experiment`:

- ``direction``: ``alpha * d_L`` added to ``blocks.L.hook_resid_post``, ``d_L`` the pair's
  difference of mean residuals (:mod:`mlinguality.steering.directions`) on the selection split;
- ``random-direction``: a random direction of the same norm (``n_random`` draws per layer, each
  the same vector at every alpha, as the neuron control's random sets are).

Positions are ``settings.positions``, exactly as neuron steering writes them. The rows are the
shared steering table (:func:`~mlinguality.steering.experiment.result_rows`: target share, LCB
line-level pass, bits per byte under the unsteered model, distinct bigrams) with ``method``,
``layer`` and ``direction_norm`` filled in; the unsteered ``none`` rows are neuron steering's
(``baseline=True`` adds them here too, for a direction-only run).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from mlinguality.errors import MlingualityError
from mlinguality.steering.config import SteeringConfig
from mlinguality.steering.direction_hooks import DirectionIntervention, direction_hooks
from mlinguality.steering.directions import (
    ResidualMeans,
    default_direction_layers,
    pair_directions,
    random_direction,
    resolve_layers,
)
from mlinguality.steering.experiment import (
    control_seed,
    generate_prompts,
    result_rows,
    score_generations,
)
from mlinguality.steering.language_id import LanguageIdentifier

logger = logging.getLogger(__name__)


def direction_layers(settings: SteeringConfig, n_layers: int) -> list[int]:
    """The layers swept: ``settings.direction_layers`` (resolved) or the default sweep."""
    if settings.direction_layers is None:
        return default_direction_layers(n_layers)
    return resolve_layers(settings.direction_layers, n_layers)


def direction_alphas(settings: SteeringConfig) -> list[float]:
    """``settings.direction_alphas``, or neuron steering's ``alphas`` when unset."""
    return list(settings.direction_alphas or settings.alphas)


def direction_experiment(
    model,
    means: Mapping[str, ResidualMeans],
    prompts: Mapping[str, Sequence[str]],
    pairs: Sequence[tuple[str, str]],
    settings: SteeringConfig | None = None,
    identifier: LanguageIdentifier | None = None,
    progress=None,
    seed: int = 0,
    *,
    baseline: bool = False,
) -> list[dict]:
    """One row per (pair, condition, layer, alpha, random draw, prompt): see the module docstring.

    Args:
        model: The model the means come from.
        means: Per-language mean residuals at (at least) the swept layers
            (:func:`mlinguality.steering.directions.language_means` on the selection split).
        prompts: Source-language prompts per source language.
        pairs: ``(source, target)`` pairs.
        settings: The ``steering`` section (``direction_layers``, ``direction_alphas``,
            ``n_random``, ``positions`` and the decoding settings are read).
        identifier: Language identifier (default: py3langid over all its languages).
        progress: Optional callable ``(done, total, label)`` called after each generation run.
        seed: Sampling and random-direction seed (a run passes its ``seed``).
        baseline: Also generate and record the unsteered ``none`` rows.
    """
    settings = settings or SteeringConfig()
    identifier = identifier or LanguageIdentifier()
    layers = direction_layers(settings, model.cfg.n_layers)
    alphas = direction_alphas(settings)
    for source, target in pairs:
        if source == target:
            raise MlingualityError(f"steering pair {source}->{target}: same language")
        if source not in prompts or not prompts[source]:
            raise MlingualityError(f"steering: no prompts for source language {source!r}")
    sources = list(dict.fromkeys(source for source, _ in pairs))
    per_pair = len(layers) * len(alphas) * (1 + settings.n_random)
    total = (len(sources) if baseline else 0) + len(pairs) * per_pair
    done = 0
    rows: list[dict] = []

    def run(source, target, condition, alpha, draw, intervention, layer, norm):
        nonlocal done
        hooks = None
        if intervention is not None:
            hooks = direction_hooks(model, intervention, settings.positions)
        out = generate_prompts(model, list(prompts[source]), settings, hooks, seed)
        scored = score_generations(model, out, identifier)
        targets = [t for s, t in pairs if s == source] if condition == "none" else [target]
        for each in targets:
            rows.extend(
                result_rows(
                    source, each, condition, alpha, draw, scored, layer=layer, direction_norm=norm
                )
            )
        done += 1
        if progress is not None:
            where = "" if layer is None else f" L{layer} alpha={alpha}"
            progress(done, total, f"{source}->{target} {condition}{where}")

    for source in sources:
        if baseline:
            run(source, "*", "none", 0.0, 0, None, None, None)
        for src, target in pairs:
            if src != source:
                continue
            directions = pair_directions(means, source, target)
            missing = [layer for layer in layers if layer not in directions]
            if missing:
                raise MlingualityError(
                    f"direction {source}->{target}: no mean residuals at layer(s) {missing}"
                )
            for layer in layers:
                direction = directions[layer]
                chosen = DirectionIntervention(
                    layer, direction, label=f"{source}->{target} direction L{layer}"
                )
                controls = [
                    DirectionIntervention(
                        layer,
                        random_direction(
                            direction, control_seed(seed, source, target, layer, draw)
                        ),
                        label=f"{source}->{target} random direction L{layer} #{draw}",
                    )
                    for draw in range(settings.n_random)
                ]
                for alpha in alphas:
                    steered = chosen.with_alpha(alpha)
                    run(source, target, "direction", alpha, 0, steered, layer, chosen.norm)
                    for draw, control in enumerate(controls):
                        noise = control.with_alpha(alpha)
                        run(
                            source,
                            target,
                            "random-direction",
                            alpha,
                            draw,
                            noise,
                            layer,
                            control.norm,
                        )
    return rows


__all__ = ["direction_alphas", "direction_experiment", "direction_layers"]

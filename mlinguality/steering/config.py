"""The steering settings: the ``steering`` section of a run config, and what the library takes.

One type serves ``mlinguality run`` (the ``steering`` stage), ``mlinguality steer`` and your own
calls of :func:`mlinguality.steering.experiment.steering_experiment`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mlinguality.choices import Activate, Deactivate, SteeringPositions
from mlinguality.sections import Section


@dataclass
class SteeringConfig(Section):
    """Steering generation with the selected neurons (``mlinguality steer``, docs/steering.md).

    Attributes:
        enabled: Run the steering stage in ``mlinguality run`` (``mlinguality steer`` always runs).
        pairs: ``"en-fr"`` pairs (source-target); ``None``: every ordered pair of corpus.langs.
        alphas: Strengths swept (1 sets the neurons to their targets exactly).
        deactivate: Source neurons go to ``zero``, their ``mean`` on the other languages, or
            nowhere (``null``).
        activate: Target neurons go to their ``mean``, ``max`` or ``quantile`` on target text,
            or nowhere (``null``).
        quantile: For ``activate: quantile``: the quantile of per-verse means.
        positions: Which positions are written: ``all``, ``prompt`` or ``generated``.
        n_prompts: Held-out examples per source language used as prompts.
        prompt_words: Prompts are the first this many words of each example.
        max_new_tokens: Tokens generated per prompt.
        do_sample: Sample instead of greedy decoding.
        temperature: Sampling temperature (> 0; used only with ``do_sample``).
        n_random: Random neuron sets (matched in count per layer) per alpha: the control.
        activity_control: Draw the random sets from neurons of the same firing rate (deciles
            per layer on the selection data), not only the same count per layer.
        batch_size: Prompts per generation batch.
        directions: Also steer with language directions (the difference of mean residuals,
            ``blocks.L.hook_resid_post``, of target and source text over the selection split,
            added as ``alpha * direction`` at the same positions) and with random directions
            of equal norm (``n_random`` per alpha and layer): the ``direction`` and
            ``random-direction`` rows (:mod:`mlinguality.steering.direction_experiment`).
        direction_layers: Layers swept, each steered on its own (negative ones count from the
            end); ``None``: a quarter, half and three quarters of the depth.
        direction_alphas: Strengths of the directions (1 moves the source mean onto the
            target mean); ``None``: the same as ``alphas``, so the methods share an axis.
    """

    _key = "steering"
    enabled: bool = False
    pairs: list[str] | None = None
    alphas: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    deactivate: Deactivate | None = "zero"
    activate: Activate | None = "mean"
    quantile: float = 0.9
    positions: SteeringPositions = "all"
    n_prompts: int = 24  # a few dozen per pair: shares move in steps of 1/24
    prompt_words: int = 5
    max_new_tokens: int = 24  # enough words for the identifier; each token costs a forward pass
    do_sample: bool = False
    temperature: float = 1.0
    n_random: int = 1
    activity_control: bool = True
    batch_size: int = 16
    directions: bool = False
    direction_layers: list[int] | None = None
    direction_alphas: list[float] | None = None

    def validate(self) -> None:
        if not self.alphas:
            self._fail("alphas", "give at least one strength")
        self._check_finite("alphas")
        self._check_finite("temperature", low=0.0, strict=True)
        if self.deactivate is None and self.activate is None:
            self._fail("activate", "deactivate and activate cannot both be null")
        for name in ("n_prompts", "prompt_words", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                self._fail(name, f"must be >= 1, got {getattr(self, name)}")
        if self.n_random < 0:
            self._fail("n_random", f"must be >= 0, got {self.n_random}")
        if not 0.0 <= self.quantile <= 1.0:
            self._fail("quantile", f"must be in [0, 1], got {self.quantile}")
        if self.direction_layers is not None and not self.direction_layers:
            self._fail("direction_layers", "give at least one layer, or null for the default")
        if self.direction_alphas is not None:
            if not self.direction_alphas:
                self._fail("direction_alphas", "give at least one strength, or null for alphas")
            self._check_finite("direction_alphas")
        for pair in self.pairs or []:
            if len(pair.split("-")) != 2 or not all(pair.split("-")):
                self._fail("pairs", f"{pair!r} is not of the form 'en-fr'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

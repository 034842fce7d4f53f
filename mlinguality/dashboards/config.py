"""The ``examples`` section of a run config: which neurons get cards, on how much text."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mlinguality.sections import Section

_NEURON = re.compile(r"^L?(\d+)[:N/](\d+)$", re.IGNORECASE)


def parse_neuron(text: str) -> tuple[int, int]:
    """``"L17N564"``, ``"17:564"`` or ``"17/564"`` -> ``(17, 564)``.

    >>> parse_neuron("L17N564"), parse_neuron("3:7")
    ((17, 564), (3, 7))
    """
    match = _NEURON.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a neuron like L17N564 or 17:564")
    return int(match.group(1)), int(match.group(2))


@dataclass
class ExamplesConfig(Section):
    """Neuron cards: top contexts, histograms and direct logit effects (``neurons.html``).

    Attributes:
        enabled: Run the ``examples`` stage (after ``select``).
        limit: Selection-split examples read per language (a seeded sample; ``None``: all).
            The pass keeps the chosen neurons' activations of every text read.
        top_k: Top contexts kept per neuron and language (one per example at most).
        window: Tokens shown either side of a context's peak.
        n_random: Activity-matched random neuron sets per language (the control of the
            output-language test; 0: none).
        neurons: More neurons to show, e.g. ``["L17N564", "3:7"]``.
    """

    _key = "examples"
    enabled: bool = True
    # 48 verses x 5 languages against collection's 200 x 6 texts: the stage costs ~0.25x of
    # collection (64 verses measured 0.32x on Gemma; docs/performance.md, "Examples stage")
    limit: int | None = 48
    top_k: int = 8
    window: int = 8
    n_random: int = 1
    neurons: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.limit is not None and self.limit < 1:
            self._fail("limit", f"must be >= 1 (or null for all), got {self.limit}")
        for name in ("top_k", "window"):
            if getattr(self, name) < 1:
                self._fail(name, f"must be >= 1, got {getattr(self, name)}")
        if self.n_random < 0:
            self._fail("n_random", f"must be >= 0, got {self.n_random}")
        for text in self.neurons:
            try:
                parse_neuron(text)
            except ValueError as error:
                self._fail("neurons", str(error))

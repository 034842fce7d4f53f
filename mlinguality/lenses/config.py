"""The ``lenses`` section of a run config: the residual-stream views of the layer question."""

from __future__ import annotations

from dataclasses import dataclass

from mlinguality.sections import Section


@dataclass
class LensesConfig(Section):
    """The residual stream, layer by layer: logit lens, probes, cross-lingual similarity.

    The collection pass also records each example's mean ``blocks.L.hook_resid_post`` and the
    residuals at a seeded sample of positions (no second model pass); the ``lenses`` stage reads
    them (``lenses/`` in the run folder, the "Layers seen four ways" section of the report).

    Attributes:
        enabled: Record residuals in the collection pass and run the ``lenses`` stage.
        lens_positions: Positions per language decoded by the logit lens at every layer (a
            seeded sample of collection's counted positions that have a next token). Each costs
            a product with the whole unembedding per layer (Gemma: 18 x 262k x 640).
        folds: The probes' cross-validation folds over the selection examples (grouped by
            example, so a verse's translations are never split between training and test).
        n_boot: Bootstrap resamples of the examples for the similarity intervals and U.
        english: The language counted as "English" by the latent-language shares.
    """

    _key = "lenses"
    enabled: bool = True
    # the whole stage with 128 positions (x 18 layers x 5 languages through the 262k
    # unembedding, probes, similarity): 29 s against collection's 87 s (0.33x) on Gemma, 2
    # threads, load ~1.7; 256 took 0.59x (docs/performance.md, "Lenses stage")
    lens_positions: int = 128
    folds: int = 2
    n_boot: int = 200
    english: str = "en"

    def validate(self) -> None:
        if self.lens_positions < 1:
            self._fail("lens_positions", f"must be >= 1, got {self.lens_positions}")
        if self.folds < 2:
            self._fail("folds", f"must be >= 2, got {self.folds}")
        if self.n_boot < 1:
            self._fail("n_boot", f"must be >= 1, got {self.n_boot}")

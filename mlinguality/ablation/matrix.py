"""Stage 5c: the ablation matrix (whose neurons are ablated x which language is evaluated).

Rows are the languages whose neuron sets are ablated, columns the evaluation languages, cells
bits per byte on held-out text and its change from no ablation. Controls and summaries:

- **matched random control**: for each language A and seed s, a random set with the same number
  of neurons in every layer as A's set, ablated the same way and evaluated on A. The matrix's
  ``random`` row holds, in column A, the mean over seeds of that rise: what ablating "this many
  neurons in these layers" costs A without regard to which.
- **activity-matched random control** (with ``activity``, e.g. the firing rate on the selection
  data): the same count per layer, drawn bin for bin from neurons of the same activity
  (:func:`mlinguality.ablation.random_sets.random_matched_mask`); row ``random_activity``. Selected
  neurons are busy ones, so this is the control that separates *language* from *activity*.
- **diagonal dominance** (:class:`DiagonalDominance`): own-language rise (mean of the diagonal),
  mean cross-language rise (off-diagonal), their ratio, the own rise over the random control, and
  the number of evaluation languages for which their own set is the most harmful row.

Cost: each evaluation language is tokenized once (:func:`mlinguality.ablation.evaluation.encode_texts`)
and reused by every condition; one forward pass per batch and condition, nothing else:
``L`` (baseline, shareable across matrices) + ``L x L`` + ``L x seeds`` language evaluations.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from mlinguality.ablation.evaluation import EncodedTexts, LanguageLoss, evaluate, evaluate_languages
from mlinguality.ablation.hooks import AblationMode, ablate, mean_activation
from mlinguality.ablation.random_sets import firing_rate, random_matched_mask
from mlinguality.activations.stats import ActivationStats
from mlinguality.errors import MlingualityError
from mlinguality.types import LayerNeuron, NeuronMask

logger = logging.getLogger(__name__)

RANDOM_ROW = "random"
ACTIVITY_ROW = "random_activity"


@dataclass(frozen=True)
class DiagonalDominance:
    """How much more a language's own neurons matter to it than to the other languages.

    All rises are changes in bits per byte against no ablation.

    Attributes:
        own_rise: Mean over languages of the rise on the language whose set was ablated.
        cross_rise: Mean over (ablated A, evaluated B != A) pairs of the rise on B.
        ratio: ``own_rise / cross_rise`` (NaN when ``cross_rise`` is 0).
        random_rise: Mean over languages and seeds of the matched random control's rise.
        own_over_random: ``own_rise / random_rise`` (meaningless when ``random_rise`` is within
            noise of 0; read ``own_minus_random``).
        n_diagonal_max: Evaluation languages whose own set is the most harmful row for them.
        n_langs: Languages on the diagonal (those with a non-empty set that are evaluated).
        per_lang: Per language: ``own``, ``cross`` (mean over the other columns), ``random``.
    """

    own_rise: float
    cross_rise: float
    ratio: float
    random_rise: float
    own_over_random: float
    n_diagonal_max: int
    n_langs: int
    per_lang: dict[str, dict[str, float]] = field(default_factory=dict)
    random_activity_rise: float = math.nan

    @property
    def own_minus_random(self) -> float:
        """Own-language rise above the count-matched random control's."""
        return self.own_rise - self.random_rise

    @property
    def own_minus_random_activity(self) -> float:
        """Own-language rise above the activity-matched random control's."""
        return self.own_rise - self.random_activity_rise

    def to_dict(self) -> dict:
        return {
            "own_rise": self.own_rise,
            "cross_rise": self.cross_rise,
            "ratio": self.ratio,
            "random_rise": self.random_rise,
            "own_over_random": self.own_over_random,
            "random_activity_rise": self.random_activity_rise,
            "own_minus_random": self.own_minus_random,
            "own_minus_random_activity": self.own_minus_random_activity,
            "n_diagonal_max": self.n_diagonal_max,
            "n_langs": self.n_langs,
        }


def _div(a: float, b: float) -> float:
    return a / b if b != 0 and math.isfinite(b) else float("nan")


def _mean(values: Sequence[float]) -> float:
    values = [v for v in values if math.isfinite(v)]
    return sum(values) / len(values) if values else float("nan")


@dataclass
class AblationMatrix:
    """Per-language losses under each ablation of one configuration.

    Attributes:
        langs: Evaluation languages (columns).
        rows: Languages whose neuron sets were ablated, in order.
        mode: Ablation mode.
        baseline: Loss per evaluation language without ablation.
        ablated: ``ablated[row][lang]``: loss on ``lang`` with ``row``'s set ablated (rows with
            an empty set are absent).
        random: ``random[lang]``: one loss per seed on ``lang`` with a random set matched to
            ``lang``'s set.
        n_neurons: Size of each row's set.
        meta: The configuration (metric, rate, ...), copied into CSV rows.
        random_activity: Like ``random``, with activity-matched random sets (empty if not run).
        positions: Which positions the ablation wrote (``"all"`` or ``"skip_first"``).
    """

    langs: list[str]
    rows: list[str]
    mode: str
    baseline: dict[str, LanguageLoss]
    ablated: dict[str, dict[str, LanguageLoss]]
    random: dict[str, list[LanguageLoss]]
    n_neurons: dict[str, int]
    meta: dict = field(default_factory=dict)
    random_activity: dict[str, list[LanguageLoss]] = field(default_factory=dict)
    positions: str = "all"

    @property
    def controls(self) -> dict[str, dict[str, list[LanguageLoss]]]:
        """The random-control rows run: ``{row label: {lang: losses per seed}}``."""
        out = {RANDOM_ROW: self.random}
        if self.random_activity:
            out[ACTIVITY_ROW] = self.random_activity
        return out

    @property
    def row_labels(self) -> list[str]:
        return [*self.rows, *self.controls]

    def bits_per_byte(self) -> Float[Tensor, "row lang"]:
        """Bits per byte, rows :attr:`row_labels` (random: mean over seeds); NaN where not run."""
        controls = self.controls
        n_rows = len(self.rows) + len(controls)
        out = torch.full((n_rows, len(self.langs)), float("nan"), dtype=torch.float64)
        for i, row in enumerate(self.rows):
            for j, lang in enumerate(self.langs):
                if lang in self.ablated.get(row, {}):
                    out[i, j] = self.ablated[row][lang].bits_per_byte
        for i, losses in enumerate(controls.values(), start=len(self.rows)):
            for j, lang in enumerate(self.langs):
                if losses.get(lang):
                    out[i, j] = _mean([loss.bits_per_byte for loss in losses[lang]])
        return out

    def baseline_bits_per_byte(self) -> Float[Tensor, " lang"]:
        return torch.tensor(
            [self.baseline[lang].bits_per_byte for lang in self.langs], dtype=torch.float64
        )

    def delta(self) -> Float[Tensor, "row lang"]:
        """Change in bits per byte from no ablation, rows :attr:`row_labels`."""
        return self.bits_per_byte() - self.baseline_bits_per_byte()

    def random_deltas(self, lang: str, kind: str = RANDOM_ROW) -> list[float]:
        """A random control's rise on ``lang``, one per seed (``kind``: ``random`` or
        ``random_activity``)."""
        base = self.baseline[lang].bits_per_byte
        return [loss.bits_per_byte - base for loss in self.controls.get(kind, {}).get(lang, [])]

    def dominance(self) -> DiagonalDominance:
        """The :class:`DiagonalDominance` summary of this matrix."""
        delta = self.delta()
        col = {lang: j for j, lang in enumerate(self.langs)}
        diag = [lang for lang in self.rows if lang in col and lang in self.ablated]
        per_lang, own, cross, random, active = {}, [], [], [], []
        n_max = 0
        for i, row in enumerate(self.rows):
            if row not in self.ablated:
                continue
            others = [float(delta[i, j]) for lang, j in col.items() if lang != row]
            cross += others
            if row in col:
                own_value = float(delta[i, col[row]])
                random_value = _mean(self.random_deltas(row))
                own.append(own_value)
                random += self.random_deltas(row)
                active += self.random_deltas(row, ACTIVITY_ROW)
                per_lang[row] = {
                    "own": own_value,
                    "cross": _mean(others),
                    "random": random_value,
                    "random_activity": _mean(self.random_deltas(row, ACTIVITY_ROW)),
                }
                column = delta[: len(self.rows), col[row]]
                if torch.isfinite(column).any() and int(column.nan_to_num(-math.inf).argmax()) == i:
                    n_max += 1
        own_rise, cross_rise, random_rise = _mean(own), _mean(cross), _mean(random)
        return DiagonalDominance(
            own_rise=own_rise,
            cross_rise=cross_rise,
            ratio=_div(own_rise, cross_rise),
            random_rise=random_rise,
            own_over_random=_div(own_rise, random_rise),
            n_diagonal_max=n_max,
            n_langs=len(diag),
            per_lang=per_lang,
            random_activity_rise=_mean(active),
        )

    def records(self) -> list[dict]:
        """Long-format rows (one per cell and seed) for CSV: config, row, lang, loss fields."""
        out = []

        def add(row: str, lang: str, loss: LanguageLoss, seed: int | None) -> None:
            base = self.baseline[lang].bits_per_byte
            owner = lang if row in self.controls else row  # a random set is matched to lang's
            n_neurons = 0 if row == "none" else self.n_neurons.get(owner, 0)
            out.append(
                {
                    **self.meta,
                    "mode": self.mode,
                    "positions": self.positions,
                    "ablated": row,
                    "seed": "" if seed is None else seed,
                    "n_neurons": n_neurons,
                    **loss.to_dict(),
                    "delta_bits_per_byte": loss.bits_per_byte - base,
                }
            )

        for lang in self.langs:
            add("none", lang, self.baseline[lang], None)
        for row in self.rows:
            for lang, loss in self.ablated.get(row, {}).items():
                add(row, lang, loss, None)
        for kind, control in self.controls.items():
            for lang, losses in control.items():
                for seed, loss in enumerate(losses):
                    add(kind, lang, loss, seed)
        return out


def _seed_for(seed: int, lang: str, index: int) -> int:
    """A seed per (language, repetition) that does not depend on the other languages."""
    return (seed * 1_000_003 + zlib.crc32(lang.encode()) + 7919 * index) % (2**63)


def ablation_matrix(
    model,
    encoded: Mapping[str, EncodedTexts],
    neuron_sets: Mapping[str, NeuronMask],
    mode: AblationMode = "zero",
    *,
    mean: LayerNeuron | None = None,
    n_seeds: int = 3,
    seed: int = 0,
    baseline: Mapping[str, LanguageLoss] | None = None,
    meta: dict | None = None,
    positions: str = "skip_first",
    activity: LayerNeuron | None = None,
    n_bins: int = 10,
    log: bool = True,
) -> AblationMatrix:
    """Evaluate every language under the ablation of every language's neuron set.

    Args:
        model: A TransformerBridge.
        encoded: Held-out evaluation texts per language, tokenized once
            (:func:`mlinguality.ablation.evaluation.encode_languages`); the columns.
        neuron_sets: ``[layer, d_mlp]`` mask per language; the rows. An empty set is skipped
            with a warning (its row stays NaN).
        mode: ``"zero"`` or ``"mean"`` (needs ``mean``, see :func:`mlinguality.ablation.hooks.mean_activation`).
        mean: Mean activation targets for ``mode="mean"``.
        n_seeds: Random matched controls per language (0 for none).
        seed: Base seed of the random controls.
        baseline: Losses without ablation on the same ``encoded`` (computed if None; pass them in
            to share one baseline among several matrices).
        meta: Configuration labels kept with the result.
        positions: ``"skip_first"`` (default: every position but the BOS, what collection
            counted) or ``"all"`` (see :mod:`mlinguality.ablation.hooks`).
        activity: Per-neuron activity (:func:`mlinguality.ablation.random_sets.firing_rate` of the
            selection statistics); when given, an activity-matched random control is run too.
        n_bins: Activity bins per layer of that control.
        log: Log the :func:`log_summary` line (``False`` for a part that
            :func:`join_matrices` joins, which logs the whole matrix's line).

    Raises:
        MlingualityError: no languages, or a baseline missing an evaluation language.
    """
    if not encoded or not neuron_sets:
        raise MlingualityError("ablation_matrix: needs evaluation texts and neuron sets")
    langs = list(encoded)
    if baseline is None:
        baseline = evaluate_languages(model, dict(encoded))
    missing = [lang for lang in langs if lang not in baseline]
    if missing:
        raise MlingualityError(f"ablation_matrix: baseline lacks {', '.join(missing)}")
    options = {"mode": mode, "mean": mean, "positions": positions}
    ablated: dict[str, dict[str, LanguageLoss]] = {}
    random: dict[str, list[LanguageLoss]] = {}
    random_activity: dict[str, list[LanguageLoss]] = {}
    n_neurons = {row: int(mask.sum()) for row, mask in neuron_sets.items()}
    for row, mask in neuron_sets.items():
        if not n_neurons[row]:
            logger.warning("ablation_matrix: %s has no selected neurons; its row is empty", row)
            continue
        with ablate(model, mask, **options):
            ablated[row] = {lang: evaluate(model, encoded[lang]) for lang in langs}
        if row not in encoded:
            continue
        kinds = {RANDOM_ROW: random}
        if activity is not None:
            kinds[ACTIVITY_ROW] = random_activity
        for kind, losses in kinds.items():
            losses[row] = []
            for index in range(n_seeds):
                generator = torch.Generator().manual_seed(_seed_for(seed, row, index))
                matched = (
                    random_matched_mask(mask, generator, activity=activity, n_bins=n_bins)
                    if kind == ACTIVITY_ROW
                    else random_matched_mask(mask, generator)
                )
                with ablate(model, matched, **options):
                    losses[row].append(evaluate(model, encoded[row]))
    matrix = AblationMatrix(
        langs=langs,
        rows=list(neuron_sets),
        mode=mode,
        baseline={lang: baseline[lang] for lang in langs},
        ablated=ablated,
        random=random,
        n_neurons=n_neurons,
        meta=dict(meta or {}),
        random_activity=random_activity,
        positions=positions,
    )
    if log:
        log_summary(matrix)
    return matrix


def log_summary(matrix: AblationMatrix) -> None:
    """One line for a finished matrix: its rows ablated (of all), languages and controls."""
    labels = ", ".join([matrix.mode, *(f"{k}={v}" for k, v in matrix.meta.items())])
    n_random = sum(len(v) for v in matrix.random.values())
    n_random += sum(len(v) for v in matrix.random_activity.values())
    empty = [row for row in matrix.rows if row not in matrix.ablated]
    logger.info(
        "ablation matrix (%s): neurons of %d of %d languages ablated, each evaluated on %d "
        "languages, + %d random-control evaluations%s",
        labels,
        len(matrix.ablated),
        len(matrix.rows),
        len(matrix.langs),
        n_random,
        f" (no selected neurons: {', '.join(empty)})" if empty else "",
    )


def join_matrices(
    parts: Sequence[AblationMatrix],
    rows: Sequence[str],
    baseline: Mapping[str, LanguageLoss],
) -> AblationMatrix:
    """One matrix from parts of the same configuration that each ran some of its cells (its
    :func:`log_summary` line logged once).

    A part is an :func:`ablation_matrix` of some rows (one row per progress step) or of a single
    (row, language) cell (cells spread over processes, ``run/distributed.py``). The joined
    matrix lists rows, cells and controls in the order one :func:`ablation_matrix` call over
    every row and the columns of ``baseline`` would, so its CSV and summary are the same.

    Raises:
        MlingualityError: no parts.
    """
    if not parts:
        raise MlingualityError("join_matrices: no parts to join")
    langs = list(baseline)
    ablated: dict[str, dict[str, LanguageLoss]] = {}
    random: dict[str, list[LanguageLoss]] = {}
    random_activity: dict[str, list[LanguageLoss]] = {}
    n_neurons: dict[str, int] = {}
    for part in parts:
        for row, cells in part.ablated.items():
            ablated.setdefault(row, {}).update(cells)
        random.update(part.random)
        random_activity.update(part.random_activity)
        n_neurons.update(part.n_neurons)
    joined = AblationMatrix(
        langs=langs,
        rows=list(rows),
        mode=parts[0].mode,
        baseline={lang: baseline[lang] for lang in langs},
        ablated={
            row: {lang: ablated[row][lang] for lang in langs if lang in ablated[row]}
            for row in rows
            if row in ablated
        },
        random={row: random[row] for row in rows if row in random},
        n_neurons={row: n_neurons[row] for row in rows if row in n_neurons},
        meta=dict(parts[0].meta),
        random_activity={row: random_activity[row] for row in rows if row in random_activity},
        positions=parts[0].positions,
    )
    log_summary(joined)
    return joined


def compare_selections(
    model,
    encoded: Mapping[str, EncodedTexts],
    stats: Mapping[str, ActivationStats],
    metrics: Sequence[str] = ("lape", "cohens_d"),
    rates: Sequence[float] | Mapping[str, Sequence[float]] = (0.002, 0.01),
    modes: Sequence[AblationMode] = ("zero", "mean"),
    *,
    n_seeds: int = 3,
    seed: int = 0,
    mean_weighting: Literal["language", "token"] = "language",
    positions: Sequence[str] = ("skip_first",),
    activity_control: bool = True,
) -> list[AblationMatrix]:
    """One :func:`ablation_matrix` per (selection metric, rate, mode, positions), sharing one
    baseline; with ``activity_control``, each has the activity-matched random row too (activity:
    :func:`mlinguality.ablation.random_sets.firing_rate` of ``stats``).

    Neurons are selected from ``stats`` (collected on the ``select`` split) with
    ``mlinguality.selectivity.selection.select_language_neurons(stats, metric=..., top_rate=rate)``; the
    mean of ``mode="mean"`` is :func:`mlinguality.ablation.hooks.mean_activation` of ``stats``.
    Evaluate on ``encoded`` built from the held-out ``eval`` split, never the select texts.
    ``rates`` may differ per metric (``{"lape": [0.01], "cohens_d": [0.002]}``): LAPE's
    ``top_rate`` is a share of all neurons shared out among languages, the other metrics' a share
    per language.
    """
    from mlinguality.selectivity.selection import select_language_neurons

    baseline = evaluate_languages(model, dict(encoded))
    mean = mean_activation(stats, mean_weighting)
    activity = firing_rate(stats) if activity_control else None
    matrices = []
    for metric in metrics:
        for rate in rates[metric] if isinstance(rates, Mapping) else rates:
            sets = select_language_neurons(dict(stats), metric=metric, top_rate=rate)
            sets = {lang: sets[lang] for lang in encoded if lang in sets}
            for mode in modes:
                for where in positions:
                    matrices.append(
                        ablation_matrix(
                            model,
                            encoded,
                            sets,
                            mode,
                            mean=mean if mode == "mean" else None,
                            n_seeds=n_seeds,
                            seed=seed,
                            baseline=baseline,
                            meta={"metric": metric, "rate": rate},
                            positions=where,
                            activity=activity,
                        )
                    )
    return matrices

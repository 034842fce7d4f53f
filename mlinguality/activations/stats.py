"""Per-language sufficient statistics of MLP neuron activations (the contract between stages).

:class:`ActivationStats` is what collection produces and what selectivity, ablation and the
runner consume. Everything in it merges by addition, so shards computed apart (another process,
another machine) combine exactly, and it saves to a single safetensors file with its metadata.

Which activation each field counts (see docs/method.md):

- ``sum``, ``m2``, ``max``, ``n_positive``: ``blocks.L.mlp.hook_post`` (for gated MLPs
  ``act(gate) * up``, which can be negative on either factor);
- ``n_gate_positive`` (and the per-example ``example_frac_gate_positive``):
  ``blocks.L.mlp.hook_pre > 0``, the gate pre-activation, i.e. ``act(gate) > 0`` for GELU/SiLU
  gates: the count LAPE-style metrics use (Tang et al. 2024). ``None`` for non-gated MLPs.
- ``example_resid_mean`` and the lens sample (``lens_resid``, ``lens_next``, ``lens_where``):
  ``blocks.L.hook_resid_post``, collected with ``residual=True``
  (:mod:`mlinguality.activations.residual`); ``None`` otherwise.

The spread is kept as ``m2``, the sum of squared deviations from the mean, not as a raw sum of
squares: ``sum_sq - sum**2 / n`` loses every digit when the mean is large against the standard
deviation (at mean/sd = 400 a float32 sum of squares leaves no correct digit of the variance).
Shards combine by Chan et al.'s pairwise update, ``m2 = m2_a + m2_b + delta**2 * n_a * n_b / n``.

:meth:`ActivationStats.merge` refuses statistics whose provenance differs (model, dtype,
positions, BOS, hook, ...; see :data:`PROVENANCE`) with a one-line error naming the field.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mlinguality.activations.sampling import LENS_TENSORS, merge_lens
from mlinguality.errors import MlingualityError
from mlinguality.types import (
    ExampleLayerNeuron,
    LayerNeuron,
    LayerNeuronCount,
    LensResid,
    LensTokens,
    LensWhere,
    ResidPerExample,
)

_FORMAT = 2  # 2: m2 (centred sum of squares) replaces format 1's raw sum_sq; 1 still loads

# Metadata keys that must agree for two statistics to describe the same measurement.
PROVENANCE = (
    "model",
    "n_layers",
    "d_mlp",
    "dtype",
    "positions",
    "include_bos",
    "hook",
    "gate_hook",
    "per_example",
    "corpus",  # fingerprint of the whole corpus, set on shards (activations/distributed.py)
    "residual",  # the keys below are set only by residual=True collections
    "resid_hook",
    "lens_positions",
    "lens_seed",
)


# The per-example tensors: one row per entry of ``example_ids``.
EXAMPLE_TENSORS = (
    "example_n_tokens",
    "example_mean",
    "example_frac_positive",
    "example_frac_gate_positive",
    "example_resid_mean",
)


class ProvenanceError(MlingualityError):
    """Statistics (shards, checkpoints) of different models, settings or corpora."""


@dataclass
class ActivationStats:
    """Streamed statistics for one language over every (layer, neuron).

    Attributes:
        lang: ISO 639-1 code of the language.
        n_tokens: Number of counted token positions (the same for every neuron).
        sum: Sum of activations, float64 so merges are exact to rounding.
        m2: Sum of squared deviations from the mean, ``sum((x - mean)**2)``, float64.
        n_positive: Count of activation > 0.
        max: Running maximum activation (``-inf`` where nothing was counted).
        n_gate_positive: Count of gate pre-activation > 0 (gated MLPs only).
        example_ids: Corpus ids of the examples, in the order of the per-example tensors.
        example_n_tokens: Counted positions per example.
        example_mean: Per-example mean activation (when collected per example).
        example_frac_positive: Per-example share of positions with activation > 0.
        example_frac_gate_positive: Per-example share of positions with gate pre-activation > 0
            (gated MLPs, when collected per example).
        example_resid_mean: Per-example mean of ``blocks.L.hook_resid_post`` over the counted
            positions (``residual=True``).
        lens_resid: Residual at every layer of the sampled positions (``residual=True``).
        lens_next: Next token id at each sampled position (the logit lens's target).
        lens_where: ``(example index, token position)`` of each sampled position, sorted.
        meta: Free-form provenance (model, positions, versions, corpus).
    """

    lang: str
    n_tokens: int
    sum: LayerNeuron
    m2: LayerNeuron
    n_positive: LayerNeuronCount
    max: LayerNeuron
    n_gate_positive: LayerNeuronCount | None = None
    example_ids: list[str] = field(default_factory=list)
    example_n_tokens: Int[Tensor, " example"] | None = None
    example_mean: ExampleLayerNeuron | None = None
    example_frac_positive: ExampleLayerNeuron | None = None
    example_frac_gate_positive: ExampleLayerNeuron | None = None
    example_resid_mean: ResidPerExample | None = None
    lens_resid: LensResid | None = None
    lens_next: LensTokens | None = None
    lens_where: LensWhere | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def empty(
        cls, lang: str, n_layers: int, d_mlp: int, gated: bool, meta: dict | None = None
    ) -> ActivationStats:
        """Zero statistics for ``n_layers`` x ``d_mlp`` neurons."""
        shape = (n_layers, d_mlp)
        return cls(
            lang=lang,
            n_tokens=0,
            sum=torch.zeros(shape, dtype=torch.float64),
            m2=torch.zeros(shape, dtype=torch.float64),
            n_positive=torch.zeros(shape, dtype=torch.int64),
            max=torch.full(shape, float("-inf"), dtype=torch.float32),
            n_gate_positive=torch.zeros(shape, dtype=torch.int64) if gated else None,
            meta=dict(meta or {}),
        )

    # --- derived quantities -----------------------------------------------------------------

    @property
    def n_layers(self) -> int:
        return self.sum.shape[0]

    @property
    def d_mlp(self) -> int:
        return self.sum.shape[1]

    @property
    def mean(self) -> LayerNeuron:
        """Mean activation per neuron (float64)."""
        return self.sum / max(self.n_tokens, 1)

    @property
    def var(self) -> LayerNeuron:
        """Unbiased variance per neuron (float64; 0 with fewer than two tokens)."""
        if self.n_tokens < 2:
            return torch.zeros_like(self.sum)
        return (self.m2 / (self.n_tokens - 1)).clamp_min(0.0)

    @property
    def sum_sq(self) -> LayerNeuron:
        """Raw sum of squared activations (float64), derived from ``m2``: for reading only."""
        return self.m2 + self.sum**2 / max(self.n_tokens, 1)

    @property
    def p_positive(self) -> LayerNeuron:
        """Share of counted positions where hook_post > 0."""
        return self.n_positive.double() / max(self.n_tokens, 1)

    @property
    def p_gate_positive(self) -> LayerNeuron:
        """Share of positions where the gate pre-activation > 0 (hook_post > 0 if not gated)."""
        counts = self.n_gate_positive if self.n_gate_positive is not None else self.n_positive
        return counts.double() / max(self.n_tokens, 1)

    # --- merging ----------------------------------------------------------------------------

    def check_compatible(self, other: ActivationStats) -> None:
        """Raise :class:`ProvenanceError` (one line, naming the field) unless ``other`` measured
        the same thing: same language, shape and :data:`PROVENANCE` metadata."""
        mine = {"lang": self.lang, "shape": tuple(self.sum.shape)}
        theirs = {"lang": other.lang, "shape": tuple(other.sum.shape)}
        mine.update({key: self.meta.get(key) for key in PROVENANCE})
        theirs.update({key: other.meta.get(key) for key in PROVENANCE})
        for key, value in mine.items():
            if theirs[key] != value:
                raise ProvenanceError(
                    f"cannot merge {self.lang} statistics: {key} differs "
                    f"({value!r} vs {theirs[key]!r})"
                )

    def merge(self, other: ActivationStats) -> ActivationStats:
        """Statistics of the union of both shards' examples.

        Counts, sums and maxima add exactly; ``m2`` combines by Chan et al.'s update (exact up to
        float64 rounding). Per-example rows are concatenated; the lens samples (residual
        collections) are pooled and cut back to ``lens_positions`` by their keys, which gives
        exactly the sample of a single pass over both shards' examples. Raises
        :class:`ProvenanceError` for statistics of another model, dtype, position rule, BOS rule,
        hook or residual setting, and for shards sharing an example id.
        """
        self.check_compatible(other)
        overlap = set(self.example_ids) & set(other.example_ids)
        if overlap:
            raise ProvenanceError(
                f"cannot merge shards sharing example ids, e.g. {sorted(overlap)[0]!r}"
            )

        def cat(a: Tensor | None, b: Tensor | None) -> Tensor | None:
            return None if a is None or b is None else torch.cat([a, b])

        gate = None
        if self.n_gate_positive is not None and other.n_gate_positive is not None:
            gate = self.n_gate_positive + other.n_gate_positive
        return ActivationStats(
            lang=self.lang,
            n_tokens=self.n_tokens + other.n_tokens,
            sum=self.sum + other.sum,
            m2=combine_m2(self.n_tokens, self.sum, self.m2, other.n_tokens, other.sum, other.m2),
            n_positive=self.n_positive + other.n_positive,
            max=torch.maximum(self.max, other.max),
            n_gate_positive=gate,
            example_ids=self.example_ids + other.example_ids,
            example_n_tokens=cat(self.example_n_tokens, other.example_n_tokens),
            example_mean=cat(self.example_mean, other.example_mean),
            example_frac_positive=cat(self.example_frac_positive, other.example_frac_positive),
            example_frac_gate_positive=cat(
                self.example_frac_gate_positive, other.example_frac_gate_positive
            ),
            example_resid_mean=cat(self.example_resid_mean, other.example_resid_mean),
            **self._merged_lens(other),
            meta=dict(self.meta),
        )

    def _merged_lens(self, other: ActivationStats) -> dict:
        """The lens fields of ``self.merge(other)`` (both shards' samples pooled)."""
        if self.lens_where is None or other.lens_where is None:
            return {}
        shifted = other.lens_where.clone()
        shifted[:, 0] += len(self.example_ids)
        where, resid, nexts = merge_lens(
            self.example_ids + other.example_ids,
            [
                (self.lens_where, self.lens_resid, self.lens_next),
                (shifted, other.lens_resid, other.lens_next),
            ],
            int(self.meta["lens_positions"]),
            int(self.meta["lens_seed"]),
        )
        return {"lens_where": where, "lens_resid": resid, "lens_next": nexts}

    __add__ = merge

    def reorder(self, order: Sequence[int]) -> ActivationStats:
        """The same statistics with the examples (ids and per-example rows) in ``order``."""
        fields = {"example_ids": [self.example_ids[index] for index in order]}
        for name in EXAMPLE_TENSORS:
            value = getattr(self, name)
            fields[name] = value[list(order)] if value is not None else None
        if self.lens_where is not None:  # new example indices (dropped examples' rows go)
            new_index = torch.full((len(self.example_ids),), -1, dtype=torch.long)
            new_index[torch.as_tensor(list(order), dtype=torch.long)] = torch.arange(len(order))
            where = self.lens_where.clone()
            where[:, 0] = new_index[where[:, 0]]
            rows = [
                row
                for row in sorted(range(where.shape[0]), key=lambda row: where[row].tolist())
                if where[row, 0] >= 0
            ]
            fields["lens_where"] = where[rows].reshape(-1, 2)
            fields["lens_resid"] = self.lens_resid[rows]
            fields["lens_next"] = self.lens_next[rows]
        return dataclasses.replace(self, **fields)

    # --- persistence ------------------------------------------------------------------------

    _TENSORS = ("sum", "m2", "n_positive", "max", "n_gate_positive", *EXAMPLE_TENSORS)
    _TENSORS += LENS_TENSORS  # absent from files of MLP-only collections (and older ones)

    def save(self, path: str | Path) -> Path:
        """Write one safetensors file atomically (temp file, then rename)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            name: getattr(self, name).contiguous()
            for name in self._TENSORS
            if getattr(self, name) is not None
        }
        header = {
            "format": str(_FORMAT),
            "lang": self.lang,
            "n_tokens": str(self.n_tokens),
            "example_ids": json.dumps(self.example_ids),
            "meta": json.dumps(self.meta),
        }
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=header)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ActivationStats:
        """Read a file written by :meth:`save`."""
        from safetensors import safe_open

        path = Path(path)
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            if header.get("format") not in ("1", str(_FORMAT)):
                raise MlingualityError(
                    f"{path}: not an mlinguality stats file (format {header.get('format')})"
                )
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        if header["format"] == "1":  # raw sum of squares -> centred (as precise as format 1 was)
            n_tokens = max(int(header["n_tokens"]), 1)
            tensors["m2"] = (tensors.pop("sum_sq") - tensors["sum"] ** 2 / n_tokens).clamp_min(0)
        return cls(
            lang=header["lang"],
            n_tokens=int(header["n_tokens"]),
            example_ids=json.loads(header["example_ids"]),
            meta=json.loads(header["meta"]),
            **{name: tensors.get(name) for name in cls._TENSORS},
        )


def combine_m2(
    n_a: int,
    sum_a: Float[Tensor, "*shape"],
    m2_a: Float[Tensor, "*shape"],
    n_b: int,
    sum_b: Float[Tensor, "*shape"],
    m2_b: Float[Tensor, "*shape"],
) -> Float[Tensor, "*shape"]:
    """Centred sum of squares of the union of two groups (Chan, Golub & LeVeque 1979).

    >>> a, b = torch.tensor([1.0, 2.0]), torch.tensor([4.0])
    >>> combine_m2(2, a.sum(), ((a - a.mean()) ** 2).sum(), 1, b.sum(), torch.tensor(0.0))
    tensor(4.6667)
    """
    if n_a == 0 or n_b == 0:
        return m2_a + m2_b
    delta = sum_b / n_b - sum_a / n_a
    return m2_a + m2_b + delta.square() * (n_a * n_b / (n_a + n_b))


def save_stats(stats: dict[str, ActivationStats], folder: str | Path) -> None:
    """Save one file per language: ``folder/{lang}.safetensors``."""
    for lang, lang_stats in stats.items():
        lang_stats.save(Path(folder) / f"{lang}.safetensors")


def load_stats(folder: str | Path, langs: list[str] | None = None) -> dict[str, ActivationStats]:
    """Load ``folder/{lang}.safetensors`` for ``langs`` (default: every file there)."""
    folder = Path(folder)
    if langs is None:
        langs = sorted(
            path.name.removesuffix(".safetensors") for path in folder.glob("*.safetensors")
        )
    missing = [lang for lang in langs if not (folder / f"{lang}.safetensors").exists()]
    if missing:
        raise FileNotFoundError(f"{folder}: no stats for {', '.join(missing)}")
    return {lang: ActivationStats.load(folder / f"{lang}.safetensors") for lang in langs}

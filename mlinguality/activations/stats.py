"""Per-language sufficient statistics of MLP neuron activations (the contract between stages).

:class:`ActivationStats` is what collection produces and what selectivity, ablation and the
runner consume. Everything in it merges by addition, so shards computed apart (another process,
another machine) combine exactly, and it saves to a single safetensors file with its metadata.

Which activation each field counts (see docs/method.md):

- ``sum``, ``sum_sq``, ``max``, ``n_positive``: ``blocks.L.mlp.hook_post`` (for gated MLPs
  ``act(gate) * up``, which can be negative on either factor);
- ``n_gate_positive``: ``blocks.L.mlp.hook_pre > 0``, the gate pre-activation, i.e.
  ``act(gate) > 0`` for GELU/SiLU gates: the count LAPE-style metrics use (Tang et al. 2024).
  ``None`` for non-gated MLPs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

_FORMAT = 1


@dataclass
class ActivationStats:
    """Streamed statistics for one language over every (layer, neuron).

    Attributes:
        lang: ISO 639-1 code of the language.
        n_tokens: Number of counted token positions (the same for every neuron).
        sum: Sum of activations, float64 so merges are exact to rounding.
        sum_sq: Sum of squared activations, float64.
        n_positive: Count of activation > 0.
        max: Running maximum activation (``-inf`` where nothing was counted).
        n_gate_positive: Count of gate pre-activation > 0 (gated MLPs only).
        example_ids: Corpus ids of the examples, in the order of the per-example tensors.
        example_n_tokens: Counted positions per example.
        example_mean: Per-example mean activation (when collected per example).
        example_frac_positive: Per-example share of positions with activation > 0.
        meta: Free-form provenance (model, positions, versions, corpus).
    """

    lang: str
    n_tokens: int
    sum: Float[Tensor, "layer d_mlp"]
    sum_sq: Float[Tensor, "layer d_mlp"]
    n_positive: Int[Tensor, "layer d_mlp"]
    max: Float[Tensor, "layer d_mlp"]
    n_gate_positive: Int[Tensor, "layer d_mlp"] | None = None
    example_ids: list[str] = field(default_factory=list)
    example_n_tokens: Int[Tensor, " example"] | None = None
    example_mean: Float[Tensor, "example layer d_mlp"] | None = None
    example_frac_positive: Float[Tensor, "example layer d_mlp"] | None = None
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
            sum_sq=torch.zeros(shape, dtype=torch.float64),
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
    def mean(self) -> Float[Tensor, "layer d_mlp"]:
        """Mean activation per neuron (float64)."""
        return self.sum / max(self.n_tokens, 1)

    @property
    def var(self) -> Float[Tensor, "layer d_mlp"]:
        """Unbiased variance per neuron (float64; 0 with fewer than two tokens)."""
        if self.n_tokens < 2:
            return torch.zeros_like(self.sum)
        centred = self.sum_sq - self.sum**2 / self.n_tokens
        return (centred / (self.n_tokens - 1)).clamp_min(0.0)

    @property
    def p_positive(self) -> Float[Tensor, "layer d_mlp"]:
        """Share of counted positions where hook_post > 0."""
        return self.n_positive.double() / max(self.n_tokens, 1)

    @property
    def p_gate_positive(self) -> Float[Tensor, "layer d_mlp"]:
        """Share of positions where the gate pre-activation > 0 (hook_post > 0 if not gated)."""
        counts = self.n_gate_positive if self.n_gate_positive is not None else self.n_positive
        return counts.double() / max(self.n_tokens, 1)

    # --- merging ----------------------------------------------------------------------------

    def merge(self, other: ActivationStats) -> ActivationStats:
        """Statistics of the union of both shards' examples (exact: every field adds)."""
        if other.lang != self.lang or other.sum.shape != self.sum.shape:
            raise ValueError(
                f"cannot merge stats for {other.lang} {tuple(other.sum.shape)} "
                f"into {self.lang} {tuple(self.sum.shape)}"
            )
        overlap = set(self.example_ids) & set(other.example_ids)
        if overlap:
            raise ValueError(
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
            sum_sq=self.sum_sq + other.sum_sq,
            n_positive=self.n_positive + other.n_positive,
            max=torch.maximum(self.max, other.max),
            n_gate_positive=gate,
            example_ids=self.example_ids + other.example_ids,
            example_n_tokens=cat(self.example_n_tokens, other.example_n_tokens),
            example_mean=cat(self.example_mean, other.example_mean),
            example_frac_positive=cat(self.example_frac_positive, other.example_frac_positive),
            meta=dict(self.meta),
        )

    __add__ = merge

    # --- persistence ------------------------------------------------------------------------

    _TENSORS = (
        "sum",
        "sum_sq",
        "n_positive",
        "max",
        "n_gate_positive",
        "example_n_tokens",
        "example_mean",
        "example_frac_positive",
    )

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
            if header.get("format") != str(_FORMAT):
                raise ValueError(
                    f"{path}: not an mlinguality stats file (format {header.get('format')})"
                )
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        return cls(
            lang=header["lang"],
            n_tokens=int(header["n_tokens"]),
            example_ids=json.loads(header["example_ids"]),
            meta=json.loads(header["meta"]),
            **{name: tensors.get(name) for name in cls._TENSORS},
        )


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

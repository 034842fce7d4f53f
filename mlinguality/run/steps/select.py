"""The ``select`` step: language-specific neurons -> ``selectivity.csv``, the masks, the tidy
``selected_neurons.csv``/``.json``, and ``language_overlap.csv``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from jaxtyping import Bool
from torch import Tensor

from mlinguality.files import json_safe
from mlinguality.run.inputs import StageContext
from mlinguality.run.steps.collect import load_run_stats


def select(ctx: StageContext) -> None:
    """Language-specific neurons -> ``selectivity.csv`` (per language and layer), the masks,
    and the tidy ``selected_neurons.csv``/``.json`` (one row per lang, layer, neuron, score),
    and which languages share neurons -> ``language_overlap.csv``."""
    from safetensors.torch import save_file

    from mlinguality.selectivity.neurons import neuron_table
    from mlinguality.selectivity.overlap import language_overlap
    from mlinguality.selectivity.selection import select_language_neurons

    config, run_dir = ctx.config, ctx.run_dir
    stats = load_run_stats(config, run_dir)
    language_overlap(stats).to_csv(run_dir / "language_overlap.csv", index=False)
    metric = config.selectivity.select_metric
    masks = select_language_neurons(stats, metric=metric, top_rate=config.selectivity.top_rate)
    write_neurons(neuron_table(masks, stats, metric), run_dir, metric, config.selectivity.top_rate)
    with (run_dir / "selectivity.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["lang", "layer", "n_selected", "share_of_layer"])
        for lang, mask in masks.items():
            for layer, count in enumerate(mask.sum(dim=1).tolist()):
                writer.writerow([lang, layer, count, count / mask.shape[1]])
    tensors = {lang: mask.to(torch.uint8).contiguous() for lang, mask in masks.items()}
    save_file(tensors, str(run_dir / "selected_neurons.safetensors"))


def write_neurons(table, run_dir: Path, metric: str, top_rate: float) -> None:
    """``selected_neurons.csv`` (the tidy table) and ``selected_neurons.json`` (with metadata)."""
    from mlinguality.selectivity.neurons import SCORE_MEANING

    table.to_csv(run_dir / "selected_neurons.csv", index=False)
    record = {
        "metric": metric,
        "top_rate": top_rate,
        "score": SCORE_MEANING.get(metric, metric),
        "columns": list(table.columns),
        "neurons": json_safe(table.astype(object).values.tolist()),
    }
    (run_dir / "selected_neurons.json").write_text(json.dumps(record))


def load_masks(run_dir: str | Path) -> dict[str, Bool[Tensor, "layer d_mlp"]]:
    """The masks written by :func:`select` (safetensors keeps them in sorted key order)."""
    from safetensors.torch import load_file

    path = Path(run_dir) / "selected_neurons.safetensors"
    return {lang: mask.bool() for lang, mask in load_file(str(path)).items()}

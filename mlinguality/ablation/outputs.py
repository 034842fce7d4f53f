"""Outputs of ablation matrices: the long CSV, the one-line-per-configuration table, heatmaps."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from mlinguality.ablation.matrix import ACTIVITY_ROW, RANDOM_ROW, AblationMatrix
from mlinguality.errors import MlingualityError

__all__ = ["comparison_table", "plot_matrices", "write_csv"]


def write_csv(matrices: Sequence[AblationMatrix], path: str | Path) -> Path:
    """All cells of all matrices in one long CSV (see :meth:`AblationMatrix.records`)."""
    rows = [record for matrix in matrices for record in matrix.records()]
    if not rows:
        raise MlingualityError("write_csv: no matrices")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


_CONTROL_LABELS = {RANDOM_ROW: "random (count)", ACTIVITY_ROW: "random (activity)"}


def _label(matrix: AblationMatrix) -> str:
    parts = [f"{key}={value}" for key, value in matrix.meta.items()]
    return ", ".join([*parts, f"mode={matrix.mode}", f"positions={matrix.positions}"])


def comparison_table(matrices: Sequence[AblationMatrix]) -> str:
    """A Markdown table with one line per matrix: its configuration and diagonal dominance."""
    keys = list(dict.fromkeys(key for matrix in matrices for key in matrix.meta))
    header = [
        *keys,
        "mode",
        "positions",
        "neurons/lang",
        "own",
        "cross",
        "own/cross",
        "random",
        "random (activity)",
        "own - random (activity)",
        "diag max",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for matrix in matrices:
        dom = matrix.dominance()
        sizes = [n for n in matrix.n_neurons.values()]
        cells = [str(matrix.meta.get(key, "")) for key in keys]
        cells += [
            matrix.mode,
            matrix.positions,
            f"{sum(sizes) / max(len(sizes), 1):.1f}",
            f"{dom.own_rise:+.4f}",
            f"{dom.cross_rise:+.4f}",
            f"{dom.ratio:.2f}",
            f"{dom.random_rise:+.4f}",
            f"{dom.random_activity_rise:+.4f}",
            f"{dom.own_minus_random_activity:+.4f}",
            f"{dom.n_diagonal_max}/{dom.n_langs}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_matrices(matrices: Sequence[AblationMatrix], path: str | Path, ncols: int = 2) -> Path:
    """Heatmaps of the change in bits per byte, one panel per matrix, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not matrices:
        raise MlingualityError("plot_matrices: no matrices")
    ncols = min(ncols, len(matrices))
    nrows = math.ceil(len(matrices) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.6 * ncols, 3.9 * nrows), squeeze=False, constrained_layout=True
    )
    for ax, matrix in zip(axes.flat, matrices, strict=False):
        delta = matrix.delta().numpy()
        limit = float(abs(delta[~(delta != delta)]).max()) if (delta == delta).any() else 1.0
        image = ax.imshow(delta, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        for i in range(delta.shape[0]):
            for j in range(delta.shape[1]):
                if delta[i, j] == delta[i, j]:
                    ax.text(j, i, f"{delta[i, j]:+.2f}", ha="center", va="center", fontsize=7)
        base = matrix.baseline_bits_per_byte().tolist()
        ax.set_xticks(range(len(matrix.langs)))
        ax.set_xticklabels(
            [f"{lang}\n{b:.2f}" for lang, b in zip(matrix.langs, base, strict=True)], fontsize=7
        )
        ax.set_yticks(range(len(matrix.row_labels)))
        ax.set_yticklabels(
            [f"{row} ({matrix.n_neurons.get(row, 0)})" for row in matrix.rows]
            + [_CONTROL_LABELS[kind] for kind in matrix.controls],
            fontsize=7,
        )
        ax.set_title(_label(matrix), fontsize=8)
        ax.set_xlabel("evaluated language (baseline bits/byte)", fontsize=7)
        ax.set_ylabel("ablated neurons of", fontsize=7)
        fig.colorbar(image, ax=ax, shrink=0.8, label="Δ bits/byte")
    for ax in list(axes.flat)[len(matrices) :]:
        ax.axis("off")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

"""Outputs of ablation matrices: the long CSV, the one-line-per-configuration table, heatmaps."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from jaxtyping import Float

from mlinguality.ablation.matrix import ACTIVITY_ROW, RANDOM_ROW, AblationMatrix
from mlinguality.errors import MlingualityError

__all__ = ["CONTROL_LABELS", "comparison_table", "plot_matrices", "write_csv"]


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


# The random controls' names in heatmaps and in report.md (run/report.py reads them from here).
CONTROL_LABELS = {
    RANDOM_ROW: "count-matched random",  # the same number of neurons per layer
    ACTIVITY_ROW: "activity-matched random",  # the same count per layer and firing-rate bin
}


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


def _limit(delta: Float[np.ndarray, "row lang"]) -> float:
    """The colour scale's half-range: the largest finite |cell| (1 where there is none)."""
    finite = abs(delta[delta == delta])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def _digits(limit: float) -> int:
    """Decimals that keep two significant digits of the largest cell (0.52 -> 2, 0.004 -> 4)."""
    return max(2, 1 - math.floor(math.log10(limit)))


def plot_matrices(matrices: Sequence[AblationMatrix], path: str | Path, ncols: int = 2) -> Path:
    """Heatmaps of the change in bits per byte, one panel per matrix, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not matrices:
        raise MlingualityError("plot_matrices: no matrices")
    ncols = min(ncols, len(matrices))
    nrows = math.ceil(len(matrices) / ncols)
    deltas = [matrix.delta().numpy() for matrix in matrices]
    digits = [_digits(_limit(delta)) for delta in deltas]
    # room for each cell's text ("+0.52": 5 characters, "+0.0040": 7) beside the row labels
    cells = zip(digits, matrices, strict=True)
    width = max(4.6, *(2.7 + 0.09 * (d + 3) * len(matrix.langs) for d, matrix in cells))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, 3.9 * nrows), squeeze=False, constrained_layout=True
    )
    for ax, matrix, delta, places in zip(axes.flat, matrices, deltas, digits, strict=False):
        limit = _limit(delta)
        image = ax.imshow(delta, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        for i in range(delta.shape[0]):
            for j in range(delta.shape[1]):
                if delta[i, j] == delta[i, j]:
                    dark = abs(delta[i, j]) > 0.6 * limit  # white text on the deep colours
                    ax.text(
                        j,
                        i,
                        f"{delta[i, j]:+.{places}f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if dark else "black",
                    )
        base = matrix.baseline_bits_per_byte().tolist()
        ax.set_xticks(range(len(matrix.langs)))
        ax.set_xticklabels(
            [f"{lang}\n{b:.2f}" for lang, b in zip(matrix.langs, base, strict=True)], fontsize=7
        )
        ax.set_yticks(range(len(matrix.row_labels)))
        ax.set_yticklabels(
            [f"{row} ({matrix.n_neurons.get(row, 0)})" for row in matrix.rows]
            + [CONTROL_LABELS[kind] for kind in matrix.controls],
            fontsize=7,
        )
        ax.set_title(_label(matrix), fontsize=8)
        ax.set_xlabel("evaluated language (baseline bits/byte)", fontsize=7)
        ax.set_ylabel("ablated set (neurons)", fontsize=7)
        fig.colorbar(image, ax=ax, shrink=0.8, label="Δ bits/byte")
    for ax in list(axes.flat)[len(matrices) :]:
        ax.axis("off")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

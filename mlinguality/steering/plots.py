"""Plots of a steering experiment's summary (:func:`mlinguality.steering.experiment.summarize`):
language share and fluency against alpha, the source x target heatmap, and the methods (neurons,
directions, their random controls) side by side."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from mlinguality.errors import MlingualityError


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean(values) -> float:
    values = [v for v in values if v == v]
    return sum(values) / len(values) if values else math.nan


def plot_alpha(
    summary: Sequence[dict], path: str | Path, control: str = "activity-matched random"
) -> Path:
    """Target share, source share and bits per byte against alpha, mean over pairs, for the
    selected neurons (``steer``) and the random control (``control`` names it: the
    activity-matched or count-matched random neurons); the unsteered level dashed."""
    if not summary:
        raise MlingualityError("plot_alpha: empty summary")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), constrained_layout=True)
    panels = (("share_target", "target-language share"), ("share_source", "source-language share"))
    panels += (("bits_per_byte", "bits/byte (unsteered model)"),)
    alphas = sorted({row["alpha"] for row in summary if row["condition"] != "none"})
    for ax, (key, title) in zip(axes, panels, strict=True):
        for condition, style in (("steer", "o-"), ("random", "s--")):
            ys = [
                _mean(
                    row[key]
                    for row in summary
                    if row["condition"] == condition and row["alpha"] == alpha
                )
                for alpha in alphas
            ]
            if any(y == y for y in ys):
                label = "selected neurons" if condition == "steer" else control
                ax.plot(alphas, ys, style, label=label)
        base = _mean(row[key] for row in summary if row["condition"] == "none")
        if base == base:
            ax.axhline(base, color="gray", linestyle=":", label="no intervention")
        ax.set_xlabel("alpha")
        ax.set_ylabel("share of generations" if key.startswith("share") else "bits per byte")
        ax.set_title(title, fontsize=9)
        if key.startswith("share"):
            ax.set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=7)
    return _save(fig, path, plt)


def plot_heatmap(summary: Sequence[dict], alpha: float, path: str | Path) -> Path:
    """Source x target heatmap of the target-language share under steering at ``alpha``; each
    cell also shows the random control's share and the unsteered share in brackets."""
    plt = _pyplot()
    cells = {
        (row["source"], row["target"], row["condition"]): row
        for row in summary
        if row["alpha"] == alpha or row["condition"] == "none"
    }
    sources = sorted({row["source"] for row in summary})
    targets = sorted({row["target"] for row in summary})
    if not any(key[2] == "steer" for key in cells):
        raise MlingualityError(f"plot_heatmap: no steering rows at alpha={alpha}")
    grid = [
        [
            cells[(s, t, "steer")]["share_target"] if (s, t, "steer") in cells else math.nan
            for t in targets
        ]
        for s in sources
    ]
    fig, ax = plt.subplots(
        figsize=(1.3 * len(targets) + 2, 1.0 * len(sources) + 1.5), constrained_layout=True
    )
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i, s in enumerate(sources):
        for j, t in enumerate(targets):
            if (s, t, "steer") not in cells:
                continue
            rand = cells.get((s, t, "random"), {}).get("share_target", math.nan)
            none = cells.get((s, t, "none"), {}).get("share_target", math.nan)
            text = f"{grid[i][j]:.2f}\n(r {rand:.2f}, 0: {none:.2f})"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="w")
    ax.set_xticks(range(len(targets)), targets)
    ax.set_yticks(range(len(sources)), sources)
    ax.set_xlabel("target language")
    ax.set_ylabel("source language (prompts)")
    ax.set_title(f"target-language share, alpha={alpha:g}", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _save(fig, path, plt)


_METHOD_STYLE = {  # neurons in blue, directions in orange; the random controls dashed
    "neurons": ("C0", "o-"),
    "random-neurons": ("C0", "s--"),
    "direction": ("C1", "o-"),
    "random-direction": ("C1", "s--"),
}


def _method_curves(summary: Sequence[dict]) -> dict[tuple[str, object], dict[float, list[dict]]]:
    """``{(method, layer): {alpha: rows}}`` for every steered method (layer None for neurons)."""
    curves: dict[tuple[str, object], dict[float, list[dict]]] = {}
    for row in summary:
        if row.get("method", "none") in _METHOD_STYLE:
            key = (row["method"], row.get("layer"))
            curves.setdefault(key, {}).setdefault(row["alpha"], []).append(row)
    return curves


def plot_methods(summary: Sequence[dict], path: str | Path) -> Path:
    """Neuron steering against direction steering (each with its random control): the
    target-language share against alpha, and against bits per byte (fluency under the
    unsteered model: up and to the left is better), mean over pairs, one curve per method and
    direction layer; the unsteered level dotted."""
    curves = _method_curves(summary)
    if not curves:
        raise MlingualityError("plot_methods: no steered rows in the summary")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    layers = sorted({layer for _, layer in curves if layer is not None})
    shades = {layer: 0.35 + 0.65 * (i + 1) / len(layers) for i, layer in enumerate(layers)}
    for (method, layer), by_alpha in sorted(curves.items(), key=lambda kv: str(kv[0])):
        color, style = _METHOD_STYLE[method]
        alphas = sorted(by_alpha)
        share = [_mean(r["share_target"] for r in by_alpha[a]) for a in alphas]
        bpb = [_mean(r["bits_per_byte"] for r in by_alpha[a]) for a in alphas]
        label = method if layer is None else f"{method} L{layer}"
        alpha_channel = 1.0 if layer is None else shades[layer]
        axes[0].plot(alphas, share, style, color=color, alpha=alpha_channel, label=label)
        axes[1].plot(bpb, share, style, color=color, alpha=alpha_channel, label=label)
    none = [row for row in summary if row.get("method", row["condition"]) == "none"]
    base_share = _mean(row["share_target"] for row in none)
    base_bpb = _mean(row["bits_per_byte"] for row in none)
    if base_share == base_share:
        axes[0].axhline(base_share, color="gray", linestyle=":", label="no intervention")
        if base_bpb == base_bpb:
            axes[1].plot([base_bpb], [base_share], "k*", label="no intervention")
    axes[0].set_xlabel("alpha")
    axes[1].set_xlabel("bits per byte (unsteered model)")
    for ax in axes:
        ax.set_ylabel("target-language share")
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_title("target share vs strength", fontsize=9)
    axes[1].set_title("target share vs fluency (one point per alpha)", fontsize=9)
    axes[0].legend(fontsize=6)
    return _save(fig, path, plt)


def _save(fig, path: str | Path, plt) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["plot_alpha", "plot_heatmap", "plot_methods"]

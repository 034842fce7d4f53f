"""PNG figures of per-layer selectivity profiles (matplotlib, Agg backend: no display needed).

Each panel shows one metric: one line per language pair with its bootstrap band, the
permutation-null mean as a dashed line of the same colour (the chance level of that layer), the
analytic chance level where there is one (top-k overlap), the edge quarters that the U-shape
statistic compares with the middle half shaded, and each line labelled at its right end with
the pair, its U and p-value, so no legend is needed. Filled markers: layer q < ``alpha``
(Benjamini-Hochberg; p where there are no q-values). Same-language control pairs (two
translations of one language) are drawn in black, dash-dotted: the same-language floor the
other lines must rise above. Every panel's y axis names its score (:data:`AXIS_LABELS`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlinguality.errors import MlingualityError
from mlinguality.selectivity.profile import SelectivityProfile
from mlinguality.selectivity.u_shape import u_shape_layers

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# The name of the same-language control (two translations of one language) in plots and reports.
FLOOR_LABEL = "same-language floor"

METRIC_LABELS = {
    "mean_diff": "mean |mean_A - mean_B| (per-example means)",
    "cohens_d": "mean |Cohen's d| (per-example means)",
    "prob_diff": "mean |P_A(act>0) - P_B(act>0)|",
    "auroc": "mean |2 AUROC - 1| (per-example means)",
    "topk": "1 - IoU of top-k neurons",
    "rank_corr": "1 - Spearman rho of neuron ranks",
    "lape": "share of neurons selected by LAPE",
    "concentration": "1 - activation flatness (normalised entropy)",
    "verse_distance": f"mean |x_A - x_B| / sd per verse (p: above the {FLOOR_LABEL})",
}
# The y axis of each metric's panel (larger = more language-specific, except where noted).
AXIS_LABELS = {
    "mean_diff": "mean |mean_A - mean_B|",
    "cohens_d": "mean |d|",
    "prob_diff": "mean |P_A - P_B|",
    "auroc": "mean |2 AUROC - 1|",
    "topk": "1 - IoU",
    "rank_corr": "1 - Spearman rho",
    "lape": "share of neurons",
    "concentration": "1 - flatness",
    "verse_distance": "distance / sd",
}


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _u_label(u_rows: pd.DataFrame, metric: str, pair: str) -> str:
    row = u_rows[(u_rows.metric == metric) & (u_rows.pair == pair)]
    if row.empty:
        return pair
    u, p = float(row.u.iloc[0]), float(row.p_value.iloc[0])
    low, high = float(row.ci_low.iloc[0]), float(row.ci_high.iloc[0])
    label = f"{pair}  U={u:.2f}"
    if not math.isnan(low):
        label += f" ({low:.2f}-{high:.2f})"
    return label + ("" if math.isnan(p) else f" p={p:.3g}")


def draw_layer_profile(
    ax: Axes, profile: SelectivityProfile, metric: str, alpha: float = 0.05
) -> list[str]:
    """Draw one metric's profile on ``ax``; returns the line labels (one per pair)."""
    rows = profile.layers[profile.layers.metric == metric]
    if rows.empty:
        raise MlingualityError(
            f"profile has no rows for metric {metric!r} (has {sorted(set(profile.layers.metric))})"
        )
    n_layers = int(rows.layer.max()) + 1
    edges, _ = u_shape_layers(n_layers)
    for layer in edges:
        ax.axvspan(layer - 0.5, layer + 0.5, color="0.93", zorder=0, lw=0)
    labels: list[str] = []
    ends: list[tuple[float, str, Any]] = []
    colours = _pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    is_control = rows["control"] if "control" in rows else pd.Series(False, index=rows.index)
    controls = set(rows.pair[is_control.astype(bool)])
    for i, (pair, group) in enumerate(rows.groupby("pair", sort=False)):
        group = group.sort_values("layer")
        control = pair in controls
        colour = "black" if control else colours[i % len(colours)]
        layers = group.layer.to_numpy()
        ax.plot(layers, group.value, color=colour, lw=1.6, zorder=3, ls="-." if control else "-")
        if group.ci_low.notna().any():
            ax.fill_between(layers, group.ci_low, group.ci_high, color=colour, alpha=0.18, lw=0)
        if group.null_mean.notna().any():
            ax.plot(layers, group.null_mean, color=colour, lw=0.9, ls="--", alpha=0.8)
        tests = group.q_value if "q_value" in group and group.q_value.notna().any() else None
        significant = ((group.p_value if tests is None else tests) < alpha).to_numpy()
        ax.scatter(layers[significant], group.value[significant], color=colour, s=14, zorder=4)
        ax.scatter(
            layers[~significant],
            group.value[~significant],
            facecolor="white",
            edgecolor=colour,
            s=14,
            zorder=4,
        )
        label = _u_label(profile.u_shape, metric, str(pair))  # the floor: black, see caption
        ends.append((float(group.value.iloc[-1]), label, colour))
        labels.append(label)
    chance = rows.chance.dropna()
    if not chance.empty:
        ax.axhline(float(chance.iloc[0]), color="0.4", lw=0.9, ls=":")
        ax.annotate(
            "chance: random top-k sets",
            (0, float(chance.iloc[0])),
            fontsize=7,
            color="0.4",
            va="bottom",
        )
    ax.set_xlim(-0.5, n_layers - 0.5)
    _label_line_ends(ax, ends, n_layers - 1)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
    ax.set_xlabel("layer")
    ax.set_ylabel(AXIS_LABELS.get(metric, metric))
    ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    return labels


def _label_line_ends(ax: Axes, ends: list[tuple[float, str, Any]], x: float | int) -> None:
    """Write each line's label right of its last point, nudged apart so none overlap."""
    low, high = ax.get_ylim()
    span = (high - low) or 1.0
    placed = sorted(((y - low) / span, label, colour) for y, label, colour in ends)
    gap = 0.08  # axes fraction between label centres, about one 7-pt line on a 4-inch panel
    ys = [frac for frac, _, _ in placed]
    for i in range(1, len(ys)):
        ys[i] = max(ys[i], ys[i - 1] + gap)
    if ys and ys[-1] > 1.0:  # pushed above the panel: pack downwards from the top instead
        ys[-1] = 1.0
        for i in range(len(ys) - 2, -1, -1):
            ys[i] = min(ys[i], ys[i + 1] - gap)
    for frac, (_, label, colour) in zip(ys, placed, strict=True):
        ax.annotate(
            label,
            (x, frac),
            xycoords=ax.get_xaxis_transform(),  # x in data, y in axes fraction
            xytext=(6, 0),
            textcoords="offset points",
            color=colour,
            fontsize=7,
            va="center",
            annotation_clip=False,
        )


def plot_layer_profile(
    profile: SelectivityProfile,
    metric: str,
    path: str | Path,
    title: str | None = None,
    alpha: float = 0.05,
) -> Path:
    """One metric's per-layer profile as a PNG at ``path``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    try:
        draw_layer_profile(ax, profile, metric, alpha)
        _caption(fig, title, alpha)
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_profile_grid(
    profile: SelectivityProfile,
    path: str | Path,
    metrics: Sequence[str] | None = None,
    title: str | None = None,
    alpha: float = 0.05,
) -> Path:
    """Every metric's profile as small multiples in one PNG."""
    metrics = list(dict.fromkeys(profile.layers.metric)) if metrics is None else list(metrics)
    cols = 2
    rows = math.ceil(len(metrics) / cols)
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(14, 3.3 * rows), squeeze=False)
    try:
        for ax, metric in zip(axes.flat, metrics, strict=False):
            draw_layer_profile(ax, profile, metric, alpha)
        for ax in list(axes.flat)[len(metrics) :]:
            ax.set_visible(False)
        _caption(fig, title, alpha)
        fig.subplots_adjust(wspace=0.9)  # room for the left column's line-end labels
        return _save(fig, path)
    finally:
        plt.close(fig)


def _caption(fig: Figure, title: str | None, alpha: float) -> None:
    note = (
        f"band: 95% bootstrap CI; dashed: permutation-null mean; filled marker: q < {alpha} "
        f"(BH)\nblack dash-dot: {FLOOR_LABEL}; grey columns: edge quarters of U"
    )
    fig.suptitle(f"{title}\n{note}" if title else note, fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.93, 1))


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    return path


__all__ = [
    "AXIS_LABELS",
    "FLOOR_LABEL",
    "METRIC_LABELS",
    "draw_layer_profile",
    "plot_layer_profile",
    "plot_profile_grid",
]

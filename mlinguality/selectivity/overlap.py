"""Which languages share neurons: the language x language overlap per layer band, clustered.

For every language ``l`` and neuron ``n`` the **firing excess** is ``p_l(n) - mean_l' p_l'(n)``,
``p`` the firing rate (the gate on gated MLPs, ``hook_post > 0`` on plain ones; the rate LAPE
uses). Per layer band (first quarter, middle half, last quarter of the layers, the bands of the
U statistic):

- ``iou``: overlap of the languages' top-``k`` neurons by firing excess in each layer of the band
  (``k`` = 1% of d_mlp per layer), pooled over the band: ``|S_A ∩ S_B| / |S_A ∪ S_B|``;
- ``correlation``: Pearson correlation of the two languages' firing-excess vectors over the
  band's neurons (1 = the same neurons are more and less active than average).

:func:`cluster_languages` groups languages by average linkage on ``1 - correlation``; in the
docs the groups are compared with the known families (Romance, Slavic, Indo-Aryan, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import einops
import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from mlinguality.activations.stats import ActivationStats
from mlinguality.errors import MlingualityError
from mlinguality.selectivity.scores import check_stats

__all__ = [
    "FAMILIES",
    "cluster_languages",
    "firing_excess",
    "layer_bands",
    "language_overlap",
    "mean_within",
    "overlap_matrix",
    "plot_language_overlap",
]


# Language families of the Bible's languages (Glottolog), for comparing with the clustering.
FAMILIES: dict[str, tuple[str, ...]] = {
    "Romance": ("fr", "es", "it", "pt", "ro"),
    "Germanic": ("en", "de"),
    "Slavic": ("ru", "pl", "uk"),
    "Indo-Aryan": ("hi", "bn"),
    "Austronesian": ("id", "tl"),
}


def layer_bands(n_layers: int) -> dict[str, list[int]]:
    """``first`` quarter, ``middle`` half and ``last`` quarter of the layers (by depth).

    >>> layer_bands(8)
    {'first': [0, 1], 'middle': [2, 3, 4, 5], 'last': [6, 7]}
    """
    depth = [(i + 0.5) / n_layers for i in range(n_layers)]
    return {
        "first": [i for i, t in enumerate(depth) if t < 0.25],
        "middle": [i for i, t in enumerate(depth) if 0.25 <= t <= 0.75],
        "last": [i for i, t in enumerate(depth) if t > 0.75],
    }


def firing_excess(stats: dict[str, ActivationStats]) -> Float[Tensor, "lang layer d_mlp"]:
    """``p_l(n) - mean_l' p_l'(n)`` in the order of ``stats`` (gate firing where there is one)."""
    check_stats(stats)
    rates = torch.stack([s.p_gate_positive for s in stats.values()])
    return rates - einops.reduce(rates, "lang layer d_mlp -> 1 layer d_mlp", "mean")


def overlap_matrix(
    excess: Float[Tensor, "lang layer d_mlp"], layers: Sequence[int], k: int
) -> tuple[Float[Tensor, "lang lang"], Float[Tensor, "lang lang"]]:
    """``(iou, correlation)`` between every two languages over ``layers`` (module docstring)."""
    band = excess[:, list(layers)]
    top = band.topk(k, dim=-1).indices
    chosen = torch.zeros_like(band, dtype=torch.bool).scatter_(-1, top, True)
    flat = einops.rearrange(chosen, "lang layer d_mlp -> lang (layer d_mlp)").double()
    inter = flat @ flat.T
    size = flat.sum(1)
    iou = inter / (size[:, None] + size[None, :] - inter)
    values = einops.rearrange(band, "lang layer d_mlp -> lang (layer d_mlp)").double()
    correlation = torch.corrcoef(values)
    return iou, correlation


def language_overlap(stats: dict[str, ActivationStats], k: int | None = None) -> pd.DataFrame:
    """Rows ``band, layers, lang_a, lang_b, iou, correlation`` for every ordered language pair
    and layer band (``k``: top neurons per layer, default 1% of d_mlp)."""
    if len(stats) < 2:
        raise MlingualityError(f"language overlap needs at least 2 languages, got {sorted(stats)}")
    excess = firing_excess(stats)
    n_layers, d_mlp = excess.shape[1:]
    k = max(1, round(0.01 * d_mlp)) if k is None else k
    langs = list(stats)
    rows = []
    for band, layers in layer_bands(n_layers).items():
        if not layers:
            continue
        iou, correlation = overlap_matrix(excess, layers, k)
        for i, a in enumerate(langs):
            for j, b in enumerate(langs):
                rows.append(
                    {
                        "band": band,
                        "layers": f"{layers[0]}-{layers[-1]}",
                        "lang_a": a,
                        "lang_b": b,
                        "iou": float(iou[i, j]),
                        "correlation": float(correlation[i, j]),
                    }
                )
    return pd.DataFrame(rows)


def _square(table: pd.DataFrame, band: str, value: str) -> pd.DataFrame:
    rows = table[table["band"] == band]
    order = list(dict.fromkeys(rows["lang_a"]))
    return rows.pivot(index="lang_a", columns="lang_b", values=value).loc[order, order]


def cluster_languages(table: pd.DataFrame, band: str) -> tuple[list[str], str]:
    """Average-linkage clustering of one band's languages on ``1 - correlation``.

    Returns:
        The languages in dendrogram order, and the tree as nested brackets, e.g.
        ``"((fr, it), (ru, uk))"``.
    """
    from scipy.cluster.hierarchy import dendrogram, linkage, to_tree
    from scipy.spatial.distance import squareform

    square = _square(table, band, "correlation")
    langs = list(square.index)
    if len(langs) < 3:
        return langs, "(" + ", ".join(langs) + ")"
    distance = (1 - square.to_numpy()).clip(min=0)
    np.fill_diagonal(distance, 0)
    tree = linkage(squareform((distance + distance.T) / 2, checks=False), method="average")
    order = [langs[i] for i in dendrogram(tree, no_plot=True)["leaves"]]

    def brackets(node) -> str:
        if node.is_leaf():
            return langs[node.id]
        return f"({brackets(node.get_left())}, {brackets(node.get_right())})"

    return order, brackets(to_tree(tree))


def plot_language_overlap(
    table: pd.DataFrame, path: str | Path, value: str = "correlation"
) -> Path:
    """One heatmap per layer band, languages in dendrogram order, with the dendrogram above.

    The dendrogram (average linkage on ``1 - correlation``) has its leaves labelled with the
    language codes and sits exactly above the heatmap's columns (same width, one leaf per
    column); its y axis is the linkage distance.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import dendrogram, linkage
    from scipy.spatial.distance import squareform

    bands = list(dict.fromkeys(table["band"]))
    fig, axes = plt.subplots(
        2,
        len(bands),
        figsize=(5.2 * len(bands), 7.2),
        squeeze=False,
        gridspec_kw={"height_ratios": [1.2, 3.2]},
        constrained_layout=True,
    )
    for column, band in enumerate(bands):
        square = _square(table, band, value)
        langs = list(square.index)
        top, ax = axes[0, column], axes[1, column]
        order = langs
        if len(langs) >= 3:
            distance = (1 - _square(table, band, "correlation").to_numpy()).clip(min=0)
            np.fill_diagonal(distance, 0)
            tree = linkage(squareform((distance + distance.T) / 2, checks=False), "average")
            leaves = dendrogram(
                tree, ax=top, labels=langs, color_threshold=0, leaf_font_size=7, leaf_rotation=90
            )
            order = list(leaves["ivl"])
            # scipy puts leaf i at x = 10 i + 5: this limit lines the leaves up with the columns
            top.set_xlim(0, 10 * len(order))
            top.set_ylabel("distance (1 - correlation)", fontsize=7)
            top.tick_params(axis="y", labelsize=7)
            top.spines[["top", "right"]].set_visible(False)
        else:
            top.axis("off")
        data = square.loc[order, order].to_numpy()
        off = data[~np.eye(len(order), dtype=bool)]
        limit = float(np.abs(off).max()) if off.size and np.isfinite(off).any() else 1.0
        image = ax.imshow(data, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(len(order)), order, rotation=90, fontsize=7)
        ax.set_yticks(range(len(order)), order, fontsize=7)
        ax.set_xlabel("language", fontsize=7)
        ax.set_ylabel("language", fontsize=7)
        layers = table[table["band"] == band]["layers"].iloc[0]
        top.set_title(f"{band} layers ({layers}): average linkage on 1 - correlation", fontsize=9)
        ax.set_title(f"{value} of the firing excess", fontsize=9)
        # one colour bar for the column, so the dendrogram and the heatmap keep one width
        fig.colorbar(image, ax=[top, ax], shrink=0.6, location="right", label=value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def mean_within(table: pd.DataFrame, band: str, groups: dict[str, Sequence[str]]) -> dict:
    """Mean correlation within each group of languages (two or more present) and between
    languages of different groups, for one band: do families share neurons?"""
    square = _square(table, band, "correlation")
    langs = set(square.index)
    member = {lang: name for name, group in groups.items() for lang in group if lang in langs}
    within: dict[str, list[float]] = {}
    between: list[float] = []
    for a in member:
        for b in member:
            if a >= b:
                continue
            value = float(square.loc[a, b])
            if member[a] == member[b]:
                within.setdefault(member[a], []).append(value)
            else:
                between.append(value)
    out = {name: sum(v) / len(v) for name, v in within.items()}
    out["between families"] = sum(between) / len(between) if between else math.nan
    return out

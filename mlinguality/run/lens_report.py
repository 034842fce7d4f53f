"""Layers seen four ways, in the report: the neuron-level score over the floor, the language-ID
probe, the cross-lingual similarity over the floor and the logit lens's latent language, on one
layer axis (``plots/layers_four_ways.png``), with a table of where each has its minimum and how
strong its U is.

Read from the ``lenses`` stage's files (``lenses/*.csv``) and the ``score`` stage's profile; a run
without the lenses stage gets no section.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import torch

from mlinguality.run.markdown import fmt, table
from mlinguality.run.verdicts import num
from mlinguality.selectivity.u_shape import u_shape_layers, u_shape_statistic

FOLDER = "lenses"
PLOT = "plots/layers_four_ways.png"
SATURATED = 0.99  # probe accuracy at every layer at or above this: the accuracy says nothing


def _read(run_dir: Path, name: str) -> pd.DataFrame | None:
    path = run_dir / FOLDER / name
    return pd.read_csv(path) if path.is_file() else None


def _u(curve: pd.Series) -> float:
    """Edge layers' mean over the middle layers' (the seed paper's U, as for the neurons)."""
    return u_shape_statistic(torch.tensor(curve.to_numpy(dtype=float)))


def four_way_curves(run_dir: Path, headline: str, english: str = "en") -> pd.DataFrame | None:
    """Per layer: ``neurons`` (the headline metric minus the same-language floor, mean over
    pairs), ``probe`` (the language-ID probe's compression: uniform over online code length),
    ``similarity`` (1 - CKA minus the floor's, mean over pairs), ``lens_input`` and ``lens_en``
    (the share of top-1 logit-lens tokens in the input language / in English, mean over the
    non-English languages)."""
    probes = _read(run_dir, "probes.csv")
    similarity = _read(run_dir, "similarity.csv")
    lens = _read(run_dir, "logit_lens.csv")
    if probes is None or similarity is None or lens is None:
        return None
    frame = pd.DataFrame(index=pd.Index(sorted(probes["layer"].unique()), name="layer"))
    profile_path = run_dir / "layer_profile.csv"
    if profile_path.is_file():
        profile = pd.read_csv(profile_path)
        rows = profile[(profile["metric"] == headline) & ~profile["control"].astype(bool)]
        if "excess" in rows and rows["excess"].notna().any():
            frame["neurons"] = rows.groupby("layer")["excess"].mean()
        elif len(rows):
            frame["neurons"] = rows.groupby("layer")["value"].mean()
    frame["probe"] = probes.set_index("layer")["compression"]
    pairs = similarity[(similarity["metric"] == "cka") & ~similarity["control"].astype(bool)]
    if pairs["excess"].notna().any():
        frame["similarity"] = pairs.groupby("layer")["excess"].mean()
    else:  # no same-language pair in the corpus: the dissimilarity itself
        frame["similarity"] = 1 - pairs.groupby("layer")["value"].mean()
    others = lens[lens["lang"] != english]
    if len(others):
        frame["lens_input"] = others.groupby("layer")["share_input"].mean()
        frame["lens_en"] = others.groupby("layer")["share_en"].mean()
    frame["lens_loss"] = lens.groupby("layer")["loss"].mean()
    return frame.reset_index()


LABELS = {
    "neurons": "neurons: {headline} over the same-language floor",
    "probe": "probe: compression (uniform / online code bits)",
    "similarity": "similarity: (1 - CKA) over the same-language floor",
    "lens_input": "logit lens: share of top-1 tokens in the input language",
    "lens_en": "logit lens: share of top-1 tokens in English (non-English input)",
}


def plot_four_ways(curves: pd.DataFrame, path: Path, headline: str, title: str = "") -> Path:
    """Four panels on one layer axis: neurons, probe, similarity, logit lens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("neurons", ["neurons"]),
        ("probe", ["probe"]),
        ("similarity", ["similarity"]),
        ("logit lens", ["lens_input", "lens_en"]),
    ]
    panels = [(name, [c for c in cols if c in curves]) for name, cols in panels]
    panels = [(name, cols) for name, cols in panels if cols]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.0 * len(panels) + 0.6), sharex=True)
    axes = [axes] if len(panels) == 1 else list(axes)
    edges, middle = u_shape_layers(len(curves))
    for axis, (name, columns) in zip(axes, panels, strict=True):
        axis.axvspan(middle[0] - 0.5, middle[-1] + 0.5, color="0.93", zorder=0)
        for column in columns:
            label = LABELS[column].format(headline=headline)
            axis.plot(curves["layer"], curves[column], marker="o", ms=3, label=label)
        if name in ("neurons", "similarity"):
            axis.axhline(0, color="0.5", lw=0.8, ls="--")
        axis.legend(fontsize=7, loc="best", frameon=False)
        axis.set_ylabel(name, fontsize=8)
        axis.tick_params(labelsize=7)
    from matplotlib.ticker import MaxNLocator

    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlabel("layer (shaded: the middle half, U's denominator)", fontsize=8)
    if title:
        axes[0].set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _neuron_u(run_dir: Path, headline: str) -> tuple[float, float, float]:
    path = run_dir / "u_shape.csv"
    if not path.is_file():
        return (math.nan,) * 3
    u = pd.read_csv(path)
    rows = u[(u["metric"] == headline) & ~u["control"].astype(bool)]
    if "u_over_floor" not in rows or rows["u_over_floor"].isna().all():
        return float(rows["u"].mean()), float(rows["ci_low"].mean()), float(rows["ci_high"].mean())
    return (
        float(rows["u_over_floor"].mean()),
        float(rows["u_over_floor_ci_low"].mean()),
        float(rows["u_over_floor_ci_high"].mean()),
    )


def _similarity_u(run_dir: Path) -> tuple[float, float, float]:
    frame = _read(run_dir, "similarity_u.csv")
    if frame is None or not len(frame):
        return (math.nan,) * 3
    rows = frame[(frame["metric"] == "cka") & ~frame["control"].astype(bool)]
    return (
        float(rows["u_over_floor"].mean()),
        float(rows["u_over_floor_ci_low"].mean()),
        float(rows["u_over_floor_ci_high"].mean()),
    )


def _with_ci(u: float, low: float, high: float) -> str:
    if math.isnan(low) or math.isnan(high):
        return fmt(u, ".2f")
    return f"{fmt(u, '.2f')} [{fmt(low, '.2f')}, {fmt(high, '.2f')}]"


def lens_section(run_dir: Path, headline: str, english: str, plots: bool) -> list[str]:
    """The "Layers seen four ways" section of report.md."""
    curves = four_way_curves(run_dir, headline, english)
    if curves is None:
        return []
    lines = ["", "## Layers seen four ways", ""]
    lines.append(
        "The seed paper's layer claim read from the residual stream as well as from the neurons "
        "(`lenses/`; docs/lenses.md). Each curve is a language-specificity score, higher = more "
        "language-specific: the neuron metric over the same-language floor; the language-ID "
        "probe's compression (the online code length of Voita & Titov against the uniform code, "
        "on held-out examples); 1 - linear CKA of parallel examples' mean residuals, over the "
        "same-language floor (two translations of one language); and the logit lens's share of top-1 "
        "decoded tokens in the input language. U: the edge layers' mean over the middle half's "
        "(> 1: the seed paper's U)."
    )
    if plots:
        lines += ["", f"![layers four ways]({PLOT})"]
    lines += [""]
    rows = []
    intervals = {"neurons": _neuron_u(run_dir, headline), "similarity": _similarity_u(run_dir)}
    for column in ("neurons", "probe", "similarity", "lens_input", "lens_en"):
        if column not in curves or curves[column].isna().all():
            continue
        curve = curves.set_index("layer")[column]
        u, low, high = intervals.get(column, (_u(curve), math.nan, math.nan))
        rows.append(
            [
                LABELS[column].format(headline=headline),
                int(curve.idxmin()),
                int(curve.idxmax()),
                _with_ci(u, low, high),
            ]
        )
    lines += table(["view", "layer of minimum", "layer of maximum", "U [95% CI]"], rows)
    probes = _read(run_dir, "probes.csv")
    if probes is not None and "accuracy" in probes:
        lines += [
            "",
            f"Probe accuracy on held-out examples: {fmt(probes['accuracy'].min(), '.3f')} to "
            f"{fmt(probes['accuracy'].max(), '.3f')} over layers (shuffled-label control "
            f"{fmt(probes['control_accuracy'].mean(), '.3f')} on average, chance "
            f"{fmt(probes['chance'].iloc[0], '.3f')})"
            + (
                ": it saturates, which is why the curve above is the code length."
                if probes["accuracy"].min() >= SATURATED
                else "."
            ),
        ]
    lens = _read(run_dir, "logit_lens.csv")
    if lens is not None:
        last = int(lens["layer"].max())
        loss = lens.groupby("layer")["loss"].mean()
        lines += [
            "",
            f"Logit-lens next-token loss (mean over languages): layer 0 {fmt(loss.iloc[0], '.2f')}"
            f", middle layer {fmt(loss.iloc[len(loss) // 2], '.2f')}, layer {last} (the model's "
            f"own output) {fmt(loss.iloc[-1], '.2f')} nats; "
            f"{int(lens['n'].iloc[0])} sampled positions per language and layer.",
        ]
    return lines


def write_lens_plot(run_dir: Path, headline: str, english: str, title: str = "") -> Path | None:
    """``plots/layers_four_ways.png`` when the run has the lenses stage's files."""
    curves = four_way_curves(run_dir, headline, english)
    if curves is None:
        return None
    return plot_four_ways(curves, run_dir / PLOT, headline, title)


def lens_summary(run_dir: Path, english: str = "en") -> dict | None:
    """The ``lenses`` namespace of ``summary.json`` (and W&B): the probe's range, the U of the
    similarity over the floor with its interval, the lens's English peak on non-English input."""
    probes = _read(run_dir, "probes.csv")
    similarity_u = _read(run_dir, "similarity_u.csv")
    lens = _read(run_dir, "logit_lens.csv")
    if probes is None or similarity_u is None or lens is None:
        return None
    out: dict = {
        "probe_accuracy_min": num(probes["accuracy"].min()),
        "probe_compression_u": num(_u(probes.set_index("layer")["compression"])),
    }
    own = similarity_u[~similarity_u["control"].astype(bool)]
    for metric, rows in own.groupby("metric", sort=False):
        out[f"{metric}_u_over_floor"] = {
            str(row.pair): [
                num(row.u_over_floor),
                num(row.u_over_floor_ci_low),
                num(row.u_over_floor_ci_high),
            ]
            for row in rows.itertuples()
        }
    others = lens[lens["lang"] != english]
    if len(others):
        curve = others.groupby("layer")["share_en"].mean()
        out["lens_english_peak_layer"] = int(curve.idxmax())
        out["lens_english_peak_share"] = num(curve.max())
        out["lens_input_share_at_peak"] = num(
            others[others["layer"] == curve.idxmax()]["share_input"].mean()
        )
    return out

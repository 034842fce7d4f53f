"""The last stage: ``summary.json``, ``report.md`` and its plots, from a run folder's files.

Everything here reads the files the earlier stages wrote (never their in-memory objects), so a
report can be rebuilt from any finished run folder: ``write_report(config, run_dir, ...)``. The
numbers and the verdicts on the claims are :mod:`mlinguality.run.summary`'s; each section of
``report.md`` is one function, composed in :func:`write_report`: the header, the headline (a
verdict per claim, a one-line conclusion, the evidence), the slot for "What the neurons are",
then the tables and plots.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mlinguality.ablation.matrix import ACTIVITY_ROW, RANDOM_ROW
from mlinguality.ablation.outputs import CONTROL_LABELS
from mlinguality.run.config import RunConfig
from mlinguality.run.lens_report import lens_section, write_lens_plot
from mlinguality.run.markdown import fmt, table
from mlinguality.run.neuron_report import neuron_section, write_browser_page
from mlinguality.run.summary import build_summary, read_output
from mlinguality.run.verdicts import FDR_Q, conclusion
from mlinguality.selectivity.plots import FLOOR_LABEL

# One name per control, everywhere in report.md; the plots use the same constants.
FLOOR = FLOOR_LABEL  # two translations of one language
COUNT_MATCHED = CONTROL_LABELS[RANDOM_ROW]  # random, same count per layer
ACTIVITY_MATCHED = CONTROL_LABELS[ACTIVITY_ROW]  # random, same count per layer and firing-rate bin
# Scores of neuron rankings: two translations of one language show their U too (docs/results.md).
RANKING_METRICS = ("topk", "rank_corr")

logger = logging.getLogger(__name__)


@dataclass
class RunFiles:
    """The outputs of a run folder that the report reads (None: that stage did not run)."""

    run_dir: Path
    profile: pd.DataFrame | None
    u_shape: pd.DataFrame | None
    chosen: pd.DataFrame | None
    ablation: dict | None
    corpus: dict
    overlap: pd.DataFrame | None

    @classmethod
    def read(cls, run_dir: Path) -> RunFiles:
        return cls(
            run_dir,
            profile=read_output(run_dir, "layer_profile.csv"),
            u_shape=read_output(run_dir, "u_shape.csv"),
            chosen=read_output(run_dir, "selectivity.csv"),
            ablation=read_output(run_dir, "ablation.json"),
            corpus=read_output(run_dir, "corpus.json") or {},
            overlap=read_output(run_dir, "language_overlap.csv"),
        )

    @property
    def many_languages(self) -> bool:
        """Three or more languages: the overlap section and its dendrogram are shown."""
        return self.overlap is not None and self.overlap["lang_a"].nunique() >= 3


# --- plots -------------------------------------------------------------------------------------


def plot_selected(chosen: pd.DataFrame, path: Path) -> Path:
    """Language-specific neurons per layer, a line per language."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 3.2), constrained_layout=True)
    for lang, group in chosen.groupby("lang", sort=False):
        ax.plot(group["layer"], group["n_selected"], marker="o", ms=3, label=str(lang))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("selected neurons")
    ax.set_title("Language-specific neurons per layer", fontsize=9)
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    config: RunConfig, run_dir: Path, stages: dict, origins: dict, total_s: float
) -> dict[str, Any]:
    """Write ``summary.json``, the plots and ``report.md``; return the summary."""
    summary = build_summary(config, run_dir, stages, origins, total_s)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    files = RunFiles.read(run_dir)
    if config.plots:
        write_plots(config, files)
    write_browser_page(run_dir)
    lines = [
        *_header(config, files, summary),
        *_headline(config, files, summary),
        *neuron_section(files.run_dir),
        *_u_shape_table(config, files, summary),
        *_profile_section(config, files),
        *lens_section(
            files.run_dir, config.selectivity.metrics[0], config.lenses.english, config.plots
        ),
        *_neurons_section(config, files),
        *_overlap_section(config, files),
        *_ablation_section(config, files),
        *_run_section(summary, stages, origins),
    ]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary


def write_plots(config: RunConfig, files: RunFiles) -> None:
    """The report's PNGs under ``plots/``, and the ablation heatmap ``ablation.png``."""
    run_dir = files.run_dir
    if files.profile is not None and len(files.profile):
        from mlinguality.selectivity.plots import plot_profile_grid
        from mlinguality.selectivity.profile import SelectivityProfile

        plot_profile_grid(
            SelectivityProfile(files.profile, files.u_shape),
            run_dir / "plots" / "layer_profile.png",
            title=f"{config.model.spec}: per-layer language selectivity",
        )
    write_lens_plot(
        run_dir,
        config.selectivity.metrics[0],
        config.lenses.english,
        title=f"{config.model.spec}: layers seen four ways",
    )
    if files.chosen is not None and len(files.chosen):
        plot_selected(files.chosen, run_dir / "plots" / "selected_neurons.png")
    if files.many_languages:
        from mlinguality.selectivity.overlap import plot_language_overlap

        plot_language_overlap(files.overlap, run_dir / "plots" / "language_overlap.png")
    if files.ablation is not None:
        from mlinguality.run.ablation_plot import plot_ablation

        meta = {"metric": config.selectivity.select_metric, "top_rate": config.selectivity.top_rate}
        plot_ablation(files.ablation, meta, run_dir)


def _header(config: RunConfig, files: RunFiles, summary: dict) -> list[str]:
    """Title, what ran on what, how to reproduce it."""
    run_dir, corpus = files.run_dir, files.corpus
    lines: list[str] = []
    lines += [
        f"# mlinguality run `{run_dir.name}`",
        "",
        f"Model `{config.model.spec}` ({config.model.dtype}); corpus `{config.corpus.source}`"
        + (f" ({config.corpus.books})" if config.corpus.books else "")
        + f", languages {', '.join(config.corpus.langs)}; {corpus.get('n_select', '?')} aligned "
        f"examples select neurons, {summary['run']['n_eval'] or '?'} held-out ones evaluate "
        f"ablations. Positions: `{config.collection.positions}`. Reproduce: "
        f"`mlinguality run {run_dir / 'config.yaml'}`.",
    ]
    if corpus.get("translations"):
        names = ", ".join(f"{lang}: {name}" for lang, name in corpus["translations"].items())
        lines += ["", f"Translations: {names}."]
    return lines


def _headline(config: RunConfig, files: RunFiles, summary: dict) -> list[str]:
    """The verdict on each claim, a one-line conclusion, then the evidence."""
    found = summary["verdicts"]
    lines: list[str] = ["", "## Headline", "", "Verdicts:", ""]
    lines += [
        f"- {entry['claim']}: **{entry['verdict']}** — {entry['reason']}."
        for entry in found.values()
    ]
    lines += ["", f"**Conclusion:** {conclusion(found)}", "", "Evidence:", ""]
    lines += _evidence(config, files, summary)
    return lines


def _evidence(config: RunConfig, files: RunFiles, summary: dict) -> list[str]:
    """The numbers behind each verdict (and the selected neurons), a bullet each."""
    sel, ablation, found = summary["selectivity"], files.ablation, summary["verdicts"]
    lines: list[str] = []
    if "verse_distance_u_over_floor" in sel:
        cells = ", ".join(
            f"{pair} {fmt(u, '.2f')} [{fmt(low, '.2f')}, {fmt(high, '.2f')}]"
            for pair, (u, low, high) in sel["verse_distance_u_over_floor"].items()
        )
        lines.append(
            f"- U shape: U of the per-verse distance minus the {FLOOR} (> 1: the language "
            f"difference beyond rewording is larger at the edges; bootstrap 95% CI): {cells}. "
            f"Rule: {found['u_shape']['rule']}."
        )
    if "layers_above_floor" in sel:
        n_layers = sel.get("n_layers", "?")
        counts = ", ".join(
            f"{pair} {n} of {n_layers}" for pair, n in sel["layers_above_floor"].items()
        )
        lines.append(
            f"- Every layer: layers where a pair's per-verse distance exceeds the {FLOOR}, "
            f"verse by verse (paired sign-flip test, BH q < {FDR_Q:g}): {counts}. "
            f"Rule: {found['above_floor']['rule']}."
        )
    if ablation is not None:
        dom = ablation["dominance"]
        lines.append(
            f"- Ablation ({ablation['mode']}, positions `{ablation.get('positions', 'all')}`): "
            f"own-language rise **{fmt(dom['own_rise'], '+.4f')}** bits/byte vs "
            f"cross-language {fmt(dom['cross_rise'], '+.4f')} (ratio "
            f"{fmt(dom['ratio'], '.2f')}); {COUNT_MATCHED} control "
            f"{fmt(dom['random_rise'], '+.4f')}, {ACTIVITY_MATCHED} control "
            f"{fmt(dom.get('random_activity_rise'), '+.4f')}; own minus {ACTIVITY_MATCHED}: "
            f"**{fmt(dom.get('own_minus_random_activity'), '+.4f')}**; own set most harmful "
            f"for {dom['n_diagonal_max']}/{dom['n_langs']} languages. "
            f"Rule: {found['ablation']['rule']}."
        )
    if "n_selected" in sel:
        counts = ", ".join(f"{lang} {n}" for lang, n in sel["n_selected"].items())
        lines.append(
            f"- Language-specific neurons (`{config.selectivity.select_metric}`, top rate "
            f"{config.selectivity.top_rate}): {counts}."
        )
    return lines


def _u_shape_table(config: RunConfig, files: RunFiles, summary: dict) -> list[str]:
    """The U-shape statistic of every metric and pair, led by the first metric's mean U."""
    u_shape, sel = files.u_shape, summary["selectivity"]
    lines: list[str] = []
    if u_shape is None or not len(u_shape):
        return lines
    lines += ["", "### U-shape by metric and pair", ""]
    if "u_shape" in sel:
        metric = sel["headline_metric"]
        floor = _floor_u(u_shape, metric)
        lines += [
            f"`{metric}` (the first metric), averaged over pairs: U {fmt(sel['u_shape'])} "
            f"(largest permutation p over pairs {fmt(sel['u_shape_max_p'])})"
            + (f", U over the {FLOOR} {fmt(sel['u_over_floor'])}" if "u_over_floor" in sel else "")
            + ". "
            + (
                "Not evidence about language by itself: a U of neuron-ranking scores is a "
                "property of the layers that two translations of one language share"
                + (f" (the {FLOOR}'s own U here: {floor})" if floor else "")
                + ", and the permutation null has a U of its own (docs/results.md). "
                if metric in RANKING_METRICS
                else ""
            )
            + f"The verdict on the U shape rests on the per-verse distance over the {FLOOR} "
            "(Headline).",
            "",
        ]
    lines += [
        "U = mean score of the first and last quarter of layers / mean of the middle half "
        "(first, last: each quarter alone); null mean U: the mean U of the permuted profiles; "
        "p: share of permutations with a U at least as large; q: its BH q-value. Excess U: U "
        "of (score minus its permutation-null mean, per layer), the shape left once the shape "
        "chance gives each layer is removed. It is a ratio of the edges' mean excess to the "
        "middle's, so it is shown only where both are above 0; where the null mean exceeds "
        "the score at the edges or in the middle (e.g. LAPE, whose relabelled-data null is not "
        "centred on the data) the ratio is no shape and the cell reads `dropped`. U over "
        f"floor: U of (score minus the {FLOOR}'s score, per layer).",
        "",
    ]
    meaningful = _excess_is_a_shape(files.profile)
    lines += table(
        ["metric", "pair", "U", "first", "last", "null mean U", "excess U", "p", "q"]
        + ["U over floor"],
        [
            [
                r.metric,
                r.pair + (f" ({FLOOR})" if getattr(r, "control", False) else ""),
                fmt(r.u),
                fmt(getattr(r, "u_first", None)),
                fmt(getattr(r, "u_last", None)),
                fmt(r.null_u_mean),
                fmt(getattr(r, "u_excess", None))
                if meaningful.get((r.metric, r.pair), True)
                else "dropped",
                fmt(r.p_value),
                fmt(getattr(r, "q_value", None)),
                fmt(getattr(r, "u_over_floor", None)),
            ]
            for r in u_shape.itertuples()
        ],
    )
    return lines


def _floor_u(u_shape: pd.DataFrame, metric: str) -> str:
    """The U of ``metric`` on the same-language floor's pairs, e.g. ``"en-en:WEB 1.16"``."""
    if "control" not in u_shape:
        return ""
    rows = u_shape[u_shape["control"].astype(bool) & (u_shape["metric"] == metric)]
    return ", ".join(f"{r.pair} {fmt(r.u)}" for r in rows.itertuples() if math.isfinite(r.u))


def _excess_is_a_shape(profile: pd.DataFrame | None) -> dict[tuple[str, str], bool]:
    """Per (metric, pair): is the mean of score minus null mean positive both over the edge
    layers and over the middle half (the two terms of the excess U)?"""
    from mlinguality.selectivity.u_shape import u_shape_layers

    if profile is None or not len(profile) or "null_mean" not in profile:
        return {}
    edges, middle = u_shape_layers(int(profile["layer"].max()) + 1)
    out = {}
    for (metric, pair), group in profile.groupby(["metric", "pair"], sort=False):
        excess = (group["value"] - group["null_mean"]).groupby(group["layer"]).mean()
        if excess.isna().all():
            continue
        out[(str(metric), str(pair))] = bool(
            excess.reindex(edges).mean() > 0 and excess.reindex(middle).mean() > 0
        )
    return out


def _profile_section(config: RunConfig, files: RunFiles) -> list[str]:
    """The per-layer profile, with the same-language floor."""
    profile = files.profile
    lines: list[str] = []
    if profile is not None and len(profile):
        lines += ["", "## Per-layer profile", ""]
        if config.plots:
            lines += ["![per-layer profile](plots/layer_profile.png)", ""]
        is_control = profile["control"].astype(bool) if "control" in profile else False
        pairs = profile[~is_control] if "control" in profile else profile
        wide = pairs.groupby(["layer", "metric"], sort=False)["value"].mean().unstack("metric")
        if "control" in profile and profile["control"].any():
            floor = profile[is_control].groupby(["layer", "metric"], sort=False)["value"].mean()
            floor = floor.unstack("metric").add_suffix(f" ({FLOOR})")
            wide = wide.join(floor)[sorted([*wide.columns, *floor.columns])]
            lines.append(
                f"Score per layer (mean over pairs); columns marked `({FLOOR})`: the pairs of "
                "two translations of one language (`selectivity.control_pairs`), the level each "
                "pair must rise above:"
            )
        else:
            lines.append("Score per layer (mean over pairs):")
        lines.append("")
        lines += table(
            ["layer", *map(str, wide.columns)],
            [
                [layer, *(fmt(v) for v in row)]
                for layer, row in zip(wide.index, wide.values, strict=True)
            ],
        )
    return lines


def _neurons_section(config: RunConfig, files: RunFiles) -> list[str]:
    """Language-specific neurons per layer and language."""
    chosen = files.chosen
    lines: list[str] = []
    if chosen is not None and len(chosen):
        lines += ["", "## Language-specific neurons", ""]
        if config.plots:
            lines += ["![selected neurons per layer](plots/selected_neurons.png)", ""]
        wide = chosen.pivot(index="layer", columns="lang", values="n_selected")
        wide = wide[[lang for lang in config.corpus.langs if lang in wide.columns]]
        lines += table(
            ["layer", *map(str, wide.columns)],
            [[layer, *map(int, row)] for layer, row in zip(wide.index, wide.values, strict=True)],
        )
    return lines


def _overlap_section(config: RunConfig, files: RunFiles) -> list[str]:
    """Which languages share neurons (three or more languages)."""
    overlap = files.overlap
    lines: list[str] = []
    if files.many_languages:
        from mlinguality.selectivity.overlap import FAMILIES, cluster_languages, mean_within

        lines += ["", "## Which languages share neurons", ""]
        if config.plots:
            lines += ["![language overlap](plots/language_overlap.png)", ""]
        lines.append(
            "Correlation of the languages' firing excess (firing rate minus the mean over "
            "languages) per layer band; languages clustered by average linkage on 1 - "
            "correlation. Within/between: mean correlation of languages of one family / of "
            "different families."
        )
        lines.append("")
        rows = []
        for band in dict.fromkeys(overlap["band"]):
            _, tree = cluster_languages(overlap, band)
            within = mean_within(overlap, band, FAMILIES)
            families = ", ".join(f"{k} {v:.2f}" for k, v in within.items())
            rows.append([band, tree, families])
        lines += table(["band", "clustering", "within / between families"], rows)
    return lines


def _ablation_section(config: RunConfig, files: RunFiles) -> list[str]:
    """The ablation matrix of changes in bits per byte."""
    ablation = files.ablation
    lines: list[str] = []
    if ablation is not None:
        lines += ["", "## Ablation: change in bits per byte", ""]
        if config.plots:
            lines += ["![ablation heatmap](ablation.png)", ""]
        langs = ablation["langs"]
        lines.append(
            f"Rows: whose neurons were ablated (count), then the {COUNT_MATCHED} control (the "
            f"same number of neurons per layer, drawn at random) and the {ACTIVITY_MATCHED} "
            "control (the same count per layer, drawn within firing-rate bins), each evaluated "
            "on the language it is matched to; columns: evaluated language. Baseline bits per "
            "byte: "
            + ", ".join(f"{lang} {fmt(ablation['baseline_bits_per_byte'][lang])}" for lang in langs)
            + "."
        )
        lines.append("")
        lines += table(
            ["ablated \\ evaluated", *langs],
            [
                [
                    CONTROL_LABELS.get(row) or f"{row} ({ablation['n_neurons'].get(row, '?')})",
                    *(fmt(v, "+.4f") for v in cells),
                ]
                for row, cells in zip(
                    ablation["rows"], ablation["delta_bits_per_byte"], strict=True
                )
            ],
        )
    return lines


def _run_section(summary: dict, stages: dict, origins: dict) -> list[str]:
    """Stages, their origins and times."""
    perf = summary["perf"]
    lines: list[str] = []
    lines += ["", "## Run", ""]
    lines += table(
        ["stage", "origin", "seconds"],
        [
            [name, origins.get(name, ""), fmt(entry["seconds"], ".1f")]
            for name, entry in stages.items()
        ],
    )
    lines += ["", f"Total wall time: {fmt(perf['total_s'], '.1f')} s."]
    if "collect_tokens_per_s" in perf:
        lines.append(
            f"Collection: {perf['collect_tokens']} counted tokens, "
            f"{fmt(perf['collect_tokens_per_s'], '.0f')} tokens/s."
        )
    return lines

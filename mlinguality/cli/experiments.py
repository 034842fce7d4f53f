"""The stand-alone experiments of docs/results.md as subcommands: ``ablation-matrix``,
``profile`` and ``word-final``.

Each is a short composition of library calls on a Bible sample, outside the run pipeline (no run
folder, no stage cache, no W&B): they compare settings that one run config cannot express (many
selection metrics, rates and modes against one collection; the U-shape test with more
permutations; one-pass ``word_final`` against the per-prefix loop). The scripts under
``experiments/`` call these commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

from mlinguality.errors import MlingualityError

logger = logging.getLogger(__name__)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _model(spec: str, threads: int):
    from mlinguality.model import load_model, set_threads

    set_threads(threads)
    return load_model(spec)


def parse_rates(text: str) -> list[float] | dict[str, list[float]]:
    """``"0.01,0.05"`` (every metric) or ``"lape=0.01,0.05;cohens_d=0.002"`` (per metric).

    >>> parse_rates("lape=0.01,0.05;cohens_d=0.002")
    {'lape': [0.01, 0.05], 'cohens_d': [0.002]}
    """
    try:
        if "=" not in text:
            return [float(rate) for rate in _csv(text)]
        pairs = (part.split("=") for part in text.split(";") if part.strip())
        return {metric.strip(): [float(rate) for rate in _csv(rates)] for metric, rates in pairs}
    except ValueError as error:
        raise MlingualityError(
            f"--rates {text!r}: expected '0.01,0.05' or 'lape=0.01,0.05;cohens_d=0.002' ({error})"
        ) from None


# --- ablation-matrix -----------------------------------------------------------------------------


def ablation_matrix(args: argparse.Namespace) -> int:
    """Collect once on ``--select`` verses, then one ablation matrix per selection metric x rate
    x mode x positions on ``--eval`` held-out verses, with count- and activity-matched random
    controls; writes matrix.csv, summary.md, summary.json and heatmaps.png into ``--out``."""
    from mlinguality.ablation.evaluation import encode_languages
    from mlinguality.ablation.matrix import compare_selections
    from mlinguality.ablation.outputs import comparison_table, plot_matrices, write_csv
    from mlinguality.activations.collect import collect
    from mlinguality.activations.stats import save_stats
    from mlinguality.corpus import load_corpus

    langs, out = _csv(args.langs), Path(args.out)
    rates = parse_rates(args.rates)
    start = time.perf_counter()
    model = _model(args.model, args.threads)
    corpus = load_corpus("bible", langs, books=args.books)
    select, held_out = corpus.split(eval_fraction=0.5)
    select = select.sample(args.select, seed=0)
    short = [ex for ex in held_out if len(ex.texts[langs[0]]) <= args.max_chars]
    if not short:
        raise MlingualityError(f"--max-chars {args.max_chars}: no held-out verse is that short")
    held_out = dataclasses.replace(held_out, examples=short).sample(args.eval, seed=0)

    stats = collect(model, select, langs, positions="all", progress=False)
    save_stats(stats, out / "stats")
    collected = time.perf_counter()
    encoded = encode_languages(model.tokenizer, {lang: held_out.texts(lang) for lang in langs})
    matrices = compare_selections(
        model,
        encoded,
        stats,
        metrics=_csv(args.metrics),
        rates=rates,
        modes=_csv(args.modes),
        n_seeds=args.seeds,
        positions=_csv(args.positions),
    )
    done = time.perf_counter()

    write_csv(matrices, out / "matrix.csv")
    plot_matrices(matrices, out / "heatmaps.png", ncols=4)
    table = comparison_table(matrices)
    baseline = matrices[0].baseline
    summary = {
        "args": {k: v for k, v in vars(args).items() if k != "handler"},
        "select_verses": len(select),
        "eval_verses": len(held_out),
        "eval_tokens": {lang: loss.n_tokens for lang, loss in baseline.items()},
        "eval_bytes": {lang: loss.total_bytes for lang, loss in baseline.items()},
        "baseline_bits_per_byte": {lang: loss.bits_per_byte for lang, loss in baseline.items()},
        "seconds": {"collect": collected - start, "matrices": done - collected},
        "configs": [
            {
                **m.meta,
                "mode": m.mode,
                "positions": m.positions,
                "n_neurons": m.n_neurons,
                **m.dominance().to_dict(),
                "per_lang": m.dominance().per_lang,
            }
            for m in matrices
        ],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (out / "summary.md").write_text(table + "\n", encoding="utf-8")
    sys.stdout.write(table + "\n")
    baseline_bpb = {k: round(v, 3) for k, v in summary["baseline_bits_per_byte"].items()}
    sys.stdout.write(f"baseline bits/byte: {baseline_bpb}\nwritten: {out}\n")
    return 0


# --- profile -------------------------------------------------------------------------------------


def _markdown_u_table(u_shape) -> str:
    lines = [
        "| metric | pair | U | 95% CI | U first / last quarter | permutation p | null U | "
        "U of excess over null [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in u_shape.itertuples():
        lines.append(
            f"| {row.metric} | {row.pair} | {row.u:.2f} | [{row.ci_low:.2f}, {row.ci_high:.2f}] | "
            f"{row.u_first:.2f} / {row.u_last:.2f} | {row.p_value:.3g} | {row.null_u_mean:.2f} | "
            f"{row.u_excess:.2f} [{row.excess_ci_low:.2f}, {row.excess_ci_high:.2f}] |"
        )
    return "\n".join(lines)


def _markdown_layer_table(layers, metric: str) -> str:
    from mlinguality.run.markdown import markdown_table

    wide = layers[layers.metric == metric].pivot(index="layer", columns="pair", values="value")
    return "\n".join(markdown_table(wide.reset_index(), floatfmt=".3f"))


def _plot_profile(profile, img: Path, title: str) -> None:
    from mlinguality.selectivity.plots import plot_layer_profile, plot_profile_grid

    plot_profile_grid(profile, img / "selectivity_profile_grid.png", title=title)
    for metric in ("cohens_d", "topk", "rank_corr"):
        if metric in set(profile.layers.metric):
            plot_layer_profile(profile, metric, img / f"selectivity_{metric}.png", title=title)


def profile(args: argparse.Namespace) -> int:
    """Per-example statistics on ``--verses`` Bible verses (cached in ``--out``/stats), the
    per-layer profile with permutation p-values and bootstrap intervals, layer_profile.csv,
    u_shape.csv, lape_per_layer.json, plots in ``--img`` and Markdown tables on stdout."""
    import pandas as pd

    from mlinguality.activations.stats import load_stats, save_stats
    from mlinguality.selectivity.profile import SelectivityProfile, selectivity_profile
    from mlinguality.selectivity.selection import select_language_neurons

    langs, out = _csv(args.langs), Path(args.out)
    img = Path(args.img) if args.img else out
    title = f"{args.model}, Bible, {args.verses} verses, positions=all, {args.permutations} perm."
    if args.replot:
        missing = [n for n in ("layer_profile.csv", "u_shape.csv") if not (out / n).is_file()]
        if missing:
            raise MlingualityError(f"--replot: {out / missing[0]} not found (run without --replot)")
        profile = SelectivityProfile(
            pd.read_csv(out / "layer_profile.csv"), pd.read_csv(out / "u_shape.csv")
        )
        _plot_profile(profile, img, title)
        return 0
    stats_dir = out / "stats"
    if all((stats_dir / f"{lang}.safetensors").exists() for lang in langs):
        stats = load_stats(stats_dir, langs)
        logger.info("statistics reused from %s", stats_dir)
    else:
        from mlinguality.activations.collect import collect
        from mlinguality.corpus import load_corpus

        corpus = load_corpus("bible", langs, limit=args.verses, seed=args.seed)
        model = _model(args.model, args.threads)
        start = time.perf_counter()
        stats = collect(
            model,
            corpus,
            langs,
            positions="all",
            per_example=True,
            checkpoint_dir=out / "checkpoint",
            progress=False,
        )
        elapsed = time.perf_counter() - start
        tokens = sum(s.n_tokens for s in stats.values())
        logger.info(
            "collected %d tokens in %.0f s (%.0f tokens/s)", tokens, elapsed, tokens / elapsed
        )
        save_stats(stats, stats_dir)

    profile = selectivity_profile(
        stats, n_permutations=args.permutations, n_bootstrap=args.bootstrap, seed=args.seed
    )
    profile.layers.to_csv(out / "layer_profile.csv", index=False)
    profile.u_shape.to_csv(out / "u_shape.csv", index=False)
    masks = select_language_neurons(stats, "lape")
    per_layer = {lang: mask.sum(1).tolist() for lang, mask in masks.items()}
    (out / "lape_per_layer.json").write_text(json.dumps(per_layer), encoding="utf-8")
    _plot_profile(profile, img, title)

    parts = ["## U-shape statistics\n", _markdown_u_table(profile.u_shape)]
    for metric in dict.fromkeys(profile.layers.metric):
        parts += [f"\n## {metric} per layer\n", _markdown_layer_table(profile.layers, metric)]
    parts.append("\n## LAPE-selected neurons per layer\n")
    parts += [
        f"{lang}: total {sum(counts)}; per layer {counts}" for lang, counts in per_layer.items()
    ]
    sys.stdout.write("\n".join(parts) + "\n")
    return 0


# --- word-final ----------------------------------------------------------------------------------


def word_final(args: argparse.Namespace) -> int:
    """Per language: the words compared, the share whose prefix tokenizes like the full verse
    (where one-pass ``word_final`` and the per-prefix loop must agree up to float noise), the
    largest activation differences, and a few mismatching prefixes (JSON lines)."""
    from mlinguality.activations.collect import word_final_agreement
    from mlinguality.corpus import load_corpus

    langs = _csv(args.langs)
    try:
        layers = [int(layer) for layer in _csv(args.layers)]
    except ValueError:
        raise MlingualityError(f"--layers {args.layers!r}: expected integers like 0,4,8") from None
    model = _model(args.model, args.threads)
    bad = [layer for layer in layers if not 0 <= layer < model.cfg.n_layers]
    if bad:
        raise MlingualityError(
            f"--layers: {bad[0]} is not a layer of {args.model} (0..{model.cfg.n_layers - 1})"
        )
    corpus = load_corpus("bible", langs, limit=args.verses, seed=0)
    lines = [
        "| lang | words | same tokens | max abs diff (same tokens) | max abs diff (others) |",
        "|---|---|---|---|---|",
    ]
    reports = {lang: word_final_agreement(model, corpus.texts(lang), layers) for lang in langs}
    for lang, report in reports.items():
        share = report["same_tokens"] / max(report["words"], 1)
        lines.append(
            f"| {lang} | {report['words']} | {report['same_tokens']} ({share:.1%}) | "
            f"{report['max_abs_diff_same_tokens']:.2e} | {report['max_abs_diff_other']:.2e} |"
        )
    for lang, report in reports.items():
        lines += [f"{lang} {json.dumps(ex, ensure_ascii=False)}" for ex in report["examples"]]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


# --- the parsers ---------------------------------------------------------------------------------


def _plain(doc: str) -> str:
    """A docstring's first paragraph as --help text (no reST markup)."""
    return " ".join(doc.split("\n\n")[0].split()).replace("``", "")


def _common(command: argparse.ArgumentParser, langs: str, threads: int) -> None:
    command.add_argument(
        "--model", default="gemma-3-270m", help="model spec (default: gemma-3-270m; 'tiny')"
    )
    command.add_argument(
        "--langs", default=langs, help=f"Bible languages, comma-separated (default: {langs})"
    )
    command.add_argument(
        "--threads", type=int, default=threads, help=f"torch CPU threads (default: {threads})"
    )


def add_experiment_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``ablation-matrix``, ``profile`` and ``word-final`` to the subcommands."""
    matrix = commands.add_parser(
        "ablation-matrix",
        help="ablation matrices for many selection metrics, rates, modes and positions",
        description=_plain(ablation_matrix.__doc__),
    )
    _common(matrix, "en,fr,ru,zh,hi", 1)
    matrix.add_argument("--books", default=None, help="Bible books, e.g. NT (default: all)")
    matrix.add_argument(
        "--select", type=int, default=200, help="verses to select neurons on (default: 200)"
    )
    matrix.add_argument(
        "--eval", type=int, default=12, help="held-out verses to evaluate on (default: 12)"
    )
    matrix.add_argument(
        "--max-chars",
        type=int,
        default=120,
        help="longest held-out verse, in characters of the first language (default: 120)",
    )
    matrix.add_argument(
        "--metrics", default="lape,cohens_d", help="selection metrics (default: lape,cohens_d)"
    )
    matrix.add_argument(
        "--rates",
        default="lape=0.01,0.05;cohens_d=0.002,0.01",
        help="'0.002,0.01' for every metric, or per metric 'lape=0.01,0.05;cohens_d=0.002' "
        "(default: lape=0.01,0.05;cohens_d=0.002,0.01)",
    )
    matrix.add_argument("--modes", default="zero,mean", help="zero, mean (default: zero,mean)")
    matrix.add_argument(
        "--positions", default="skip_first", help="skip_first, all (default: skip_first)"
    )
    matrix.add_argument(
        "--seeds", type=int, default=2, help="random-control draws of each kind (default: 2)"
    )
    matrix.add_argument(
        "--out", default="runs/ablation", help="output folder (default: runs/ablation)"
    )
    matrix.set_defaults(handler=ablation_matrix)

    prof = commands.add_parser(
        "profile",
        help="per-layer selectivity profile and U-shape test on Bible verses",
        description=_plain(profile.__doc__),
    )
    _common(prof, "en,fr,de,ru,zh,hi", 2)
    prof.add_argument("--verses", type=int, default=300, help="Bible verses (default: 300)")
    prof.add_argument("--seed", type=int, default=0, help="sample and permutation seed")
    prof.add_argument(
        "--permutations", type=int, default=1000, help="permutations per p-value (default: 1000)"
    )
    prof.add_argument(
        "--bootstrap", type=int, default=100, help="bootstrap resamples (default: 100)"
    )
    prof.add_argument(
        "--out",
        default="runs/selectivity_profile",
        help="output folder (default: runs/selectivity_profile)",
    )
    prof.add_argument("--img", default=None, help="folder of the PNG plots (default: --out)")
    prof.add_argument(
        "--replot", action="store_true", help="only redraw the plots from --out's CSV files"
    )
    prof.set_defaults(handler=profile)

    final = commands.add_parser(
        "word-final",
        help="one-pass word_final against the per-prefix loop of the seed authors",
        description=_plain(word_final.__doc__),
    )
    _common(final, "en,fr,ru,zh", 2)
    final.add_argument("--verses", type=int, default=10, help="verses per language (default: 10)")
    final.add_argument(
        "--layers", default="0,4,8,12,17", help="layers compared (default: 0,4,8,12,17)"
    )
    final.set_defaults(handler=word_final)

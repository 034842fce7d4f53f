"""Merge `mlinguality steer` outputs run in pieces (e.g. one source language per command, to
keep each under the machine's time limit) into one summary, plots and a Markdown table.

    for src in en fr de ru hi; do
        mlinguality steer RUN_DIR --from $src --out runs/steer-gemma/$src
    done
    python experiments/steering_merge.py runs/steer-gemma --alpha 1
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from mlinguality.steering.experiment import summarize, write_rows
from mlinguality.steering.plots import plot_alpha, plot_heatmap

_NUMBERS = {"alpha": float, "n_neurons": int, "draw": int, "n_new_tokens": int}


def _read(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="holds one steer output folder per piece")
    parser.add_argument("--alpha", type=float, default=1.0, help="alpha of the heatmap")
    args = parser.parse_args()
    pieces = sorted(p.parent for p in args.folder.glob("*/steering.csv"))
    rows, accuracy = [], {}
    for piece in pieces:
        for row in _read(piece / "steering.csv"):
            for key, kind in _NUMBERS.items():
                row[key] = kind(row[key])
            for key in ("bits_per_byte", "distinct_2", "lang_prob"):
                row[key] = float(row[key]) if row[key] not in ("", "nan") else float("nan")
            rows.append(row)
        for row in _read(piece / "identifier.csv"):
            accuracy[row["lang"]] = float(row["accuracy_cut"])
    summary = summarize(rows, accuracy)
    write_rows(rows, args.folder / "steering.csv")
    write_rows(summary, args.folder / "steering_summary.csv")
    plot_alpha(summary, args.folder / "steering_alpha.png")
    plot_heatmap(summary, args.alpha, args.folder / "steering_heatmap.png")
    print(f"{len(pieces)} pieces, {len(rows)} generations -> {args.folder}/steering_summary.csv")
    print(
        "| source | target | condition | alpha | n | target | source | other | bits/byte | distinct-2 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s in summary:
        print(
            f"| {s['source']} | {s['target']} | {s['condition']} | {s['alpha']:g} | {s['n']} "
            f"| {s['share_target']:.2f} | {s['share_source']:.2f} | {s['share_other']:.2f} "
            f"| {s['bits_per_byte']:.2f} | {s['distinct_2']:.2f} |"
        )
    print("identifier accuracy (held-out text cut to the generated length):", accuracy)


if __name__ == "__main__":
    main()

"""What the neurons are, in the report: each language's most selective neurons with what they
read and write, the output-language test against the random neurons, and ``neurons.html``.

Read from the ``examples`` stage's files (``neurons/neurons.json``, ``output_language.csv``);
a run without that stage gets neither the section nor the page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from mlinguality.run.markdown import fmt, table

N_PER_LANGUAGE = 3  # neurons shown per language in report.md (all are in neurons.html)


def _record(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "neurons" / "neurons.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _peak(entry: dict[str, Any], lang: str) -> str:
    """The token a neuron fires most on in ``lang``, with a little context."""
    contexts = entry["contexts"].get(lang) or []
    if not contexts:
        return "—"
    best = contexts[0]
    focus = best["focus"]
    before = "".join(best["tokens"][max(0, focus - 3) : focus])
    after = "".join(best["tokens"][focus + 1 : focus + 3])
    text = f"{before}[[{best['tokens'][focus]}]]{after}"
    return "`" + " ".join(text.replace("`", "'").split()) + f"` {best['activation']:.2f}"


def neuron_section(run_dir: Path) -> list[str]:
    """The "What the neurons are" section of report.md."""
    record = _record(run_dir)
    if record is None:
        return []
    lines = ["", "## What the neurons are", ""]
    lines.append(
        f"Per language its {N_PER_LANGUAGE} most selective neurons "
        f"(`{record['metric']}`): the context they fire most on in their own language "
        "(peak token in [[ ]], activation), and the tokens they promote most (direct logit "
        "effect through the final norm and the unembedding, among tokens seen in the corpus; "
        "the token's language in brackets). Every neuron, with its top contexts in every "
        "language and its histograms, is in [neurons.html](neurons.html)."
    )
    lines.append("")
    rows = []
    selected = [e for e in record["neurons"] if e["set"] == "selected"]
    for lang in record["langs"]:
        mine = sorted(
            (e for e in selected if e["lang"] == lang), key=lambda e: -(e["score"] or 0.0)
        )
        for entry in mine[:N_PER_LANGUAGE]:
            promoted = ", ".join(
                f"`{' '.join(token.replace('`', chr(39)).split()) or repr(token)}`"
                + (f" ({token_lang})" if token_lang else "")
                for token, _, token_lang in entry["promoted"][:5]
            )
            rows.append(
                [
                    lang,
                    f"L{entry['layer']} N{entry['neuron']}",
                    fmt(entry["score"], ".3g"),
                    fmt(entry["firing"].get(lang), ".2f"),
                    _peak(entry, lang),
                    promoted,
                ]
            )
    if rows:
        header = ["lang", "neuron", "score", "firing", "fires most on", "promotes"]
        lines += table(header, rows)
    output = run_dir / "neurons" / "output_language.csv"
    if output.is_file():
        lines += ["", *_output_language_lines(pd.read_csv(output), record)]
    return lines


def _output_language_lines(frame: pd.DataFrame, record: dict[str, Any]) -> list[str]:
    """Do a language's neurons write its language? Selected against activity-matched random."""
    margin = record.get("token_languages", {}).get("margin", 0.8)
    lines = [
        "Do a language's neurons write that language? Share of each neuron's top 20 promoted "
        "tokens that are the language's own (a token is a language's when "
        f"{margin:.0%} of its corpus occurrences are in it), and the mean direct effect on the "
        "language's tokens minus the other languages' (> 0: pushes its language), for the "
        "selected neurons and for activity-matched random neurons (same count per layer and "
        "firing-rate bins):",
        "",
    ]
    rows = []
    for lang in record["langs"]:
        mine = frame[frame["lang"] == lang]
        cells = {kind: mine[mine["set"] == kind] for kind in ("selected", "random")}
        if cells["selected"].empty:
            continue
        values = [
            [fmt(c["own_share"].iloc[0], ".3f"), fmt(c["own_minus_other_effect"].iloc[0], "+.4f")]
            if not c.empty
            else ["n/a", "n/a"]
            for c in cells.values()
        ]
        rows.append([lang, int(cells["selected"]["n_neurons"].iloc[0]), *values[0], *values[1]])
    header = [
        "lang",
        "neurons",
        "own share (selected)",
        "own - other effect (selected)",
        "own share (activity-matched random)",
        "own - other effect (activity-matched random)",
    ]
    return lines + table(header, rows)


def write_browser_page(run_dir: Path) -> Path | None:
    """``neurons.html`` from ``neurons/neurons.json`` (None without the examples stage)."""
    record = _record(run_dir)
    if record is None:
        return None
    from mlinguality.dashboards.browser import write_browser

    return write_browser(record, run_dir / "neurons.html")

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
from mlinguality.selectivity.neurons import specificity_key

N_PER_LANGUAGE = 3  # neurons shown per language in report.md (all are in neurons.html)
# neurons.html shows each neuron's best 5 contexts per language, 6 tokens either side of the
# peak (neurons.json keeps examples.top_k and examples.window): the main job's ~880 cards then
# fit in a few MB (docs/dashboards.md gives the bound)
PAGE_TOP_K = 5
PAGE_WINDOW = 6


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
            (e for e in selected if e["lang"] == lang),
            key=lambda e: specificity_key(record["metric"], e["score"]),
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
        "firing-rate bins), with permutation p-values of selected against random (set labels "
        "shuffled over the language's neurons, 2,000 draws):",
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
        chosen = cells["selected"]
        p_values = [
            fmt(chosen[key].iloc[0], ".3g") if key in chosen else "n/a"
            for key in ("p_share", "p_effect")
        ]
        rows.append([lang, int(chosen["n_neurons"].iloc[0]), *values[0], *values[1], *p_values])
    header = [
        "lang",
        "neurons",
        "own share (selected)",
        "own - other effect (selected)",
        "own share (activity-matched random)",
        "own - other effect (activity-matched random)",
        "p share",
        "p effect",
    ]
    return lines + table(header, rows)


def page_contexts(context: dict[str, Any], window: int = PAGE_WINDOW) -> dict[str, Any]:
    """A context cut to ``window`` tokens either side of its peak.

    >>> page_contexts({"tokens": list("abcdefg"), "acts": list(range(7)), "focus": 5}, 1)
    {'tokens': ['e', 'f', 'g'], 'acts': [4, 5, 6], 'focus': 1}
    """
    focus = context["focus"]
    start = max(0, focus - window)
    stop = focus + window + 1
    return {
        **context,
        "tokens": context["tokens"][start:stop],
        "acts": context["acts"][start:stop],
        "focus": focus - start,
    }


def write_browser_page(run_dir: Path) -> Path | None:
    """``neurons.html`` from ``neurons/neurons.json`` (None without the examples stage), with
    :data:`PAGE_TOP_K` contexts per language of :data:`PAGE_WINDOW` tokens either side."""
    record = _record(run_dir)
    if record is None:
        return None
    from mlinguality.dashboards.browser import write_browser

    neurons = [
        {
            **entry,
            "contexts": {
                lang: [page_contexts(c) for c in contexts[:PAGE_TOP_K]]
                for lang, contexts in entry["contexts"].items()
            },
        }
        for entry in record["neurons"]
    ]
    page = {**record, "top_k": min(PAGE_TOP_K, record["top_k"]), "neurons": neurons}
    return write_browser(page, run_dir / "neurons.html")

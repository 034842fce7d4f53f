"""A card per neuron: what it reads (top contexts, histograms, firing rates) and what it writes
(direct logit effect, the language of the tokens it promotes), in Python, as text and as HTML.

:func:`build_cards` makes cards for any neurons from a model, texts and their statistics (no run
folder needed); the run's ``examples`` stage calls it for the selected neurons, an
activity-matched random set of the same size per language, and any neurons a user lists.
:func:`output_language` is the output-side test of the seed claim ("do French neurons write
French?"): per language, the share of a neuron's top promoted tokens that are that language's,
for the selected neurons against the activity-matched random ones.

>>> from mlinguality.model import TinyModelConfig, load_model
>>> from mlinguality.corpus.adapters import as_corpus
>>> from mlinguality.activations.collect import collect
>>> model = load_model(TinyModelConfig(n_layers=2, d_mlp=64))
>>> texts = {"en": ["Jesus wept.", "God is love."], "fr": ["Jésus pleura.", "Dieu est amour."]}
>>> stats = collect(model, as_corpus(texts), ["en", "fr"])
>>> (card,) = build_cards(model, texts, [NeuronSpec(1, 5)], stats, top_k=2)
>>> card.top_examples("fr").shape[0]
2
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from mlinguality.activations.stats import ActivationStats
from mlinguality.choices import Positions
from mlinguality.dashboards.contexts import context_windows, histogram_edges, read_contexts
from mlinguality.dashboards.logits import centred_logit_effect
from mlinguality.dashboards.token_language import TokenLanguages, token_languages

N_PROMOTED = 20  # tokens listed per direction, and the top the own-language share is taken over


def _round(value: float) -> float:
    """4 significant digits: what a card shows, at a third of the JSON size."""
    return float(f"{value:.4g}")


@dataclass(frozen=True)
class NeuronSpec:
    """Which neuron, and why it is shown.

    Attributes:
        layer: Its layer.
        neuron: Its index in the layer's MLP.
        set: ``"selected"`` (language-specific), ``"random"`` (the activity-matched control of a
            language's set) or ``"listed"`` (asked for by the user).
        lang: The language it was selected for (random: the language whose set it matches).
        score: Its selection score (None for random and listed neurons).
    """

    layer: int
    neuron: int
    set: str = "listed"
    lang: str | None = None
    score: float | None = None


class NeuronCard:
    """One neuron's card; ``data`` is its entry of ``neurons.json`` (the browser's schema)."""

    def __init__(self, data: dict[str, Any], langs: Sequence[str]) -> None:
        self.data = data
        self.langs = list(langs)

    @property
    def layer(self) -> int:
        return int(self.data["layer"])

    @property
    def neuron(self) -> int:
        return int(self.data["neuron"])

    @property
    def title(self) -> str:
        """``L17 N564 — fr (selected, score 0.12)``."""
        head = f"L{self.layer} N{self.neuron}"
        kind = self.data.get("set", "listed")
        lang = self.data.get("lang")
        score = self.data.get("score")
        detail = kind + (f", score {score:.3g}" if isinstance(score, (int, float)) else "")
        return f"{head} — {lang} ({detail})" if lang else f"{head} ({detail})"

    def top_examples(self, lang: str) -> pd.DataFrame:
        """The top contexts on ``lang``: example id, token position, activation, and the text
        window with the peak token marked ``[[...]]``."""
        rows = []
        for context in self.data["contexts"].get(lang, []):
            tokens = list(context["tokens"])
            tokens[context["focus"]] = f"[[{tokens[context['focus']]}]]"
            rows.append(
                {
                    "example": context["example"],
                    "position": context["position"],
                    "activation": context["activation"],
                    "text": "".join(tokens),
                }
            )
        return pd.DataFrame(rows, columns=["example", "position", "activation", "text"])

    def histogram(self, lang: str) -> pd.DataFrame:
        """Counts of the counted activations on ``lang`` per fixed bin."""
        edges = self.data["hist"]["edges"]
        counts = self.data["hist"]["counts"][lang]
        return pd.DataFrame({"low": edges[:-1], "high": edges[1:], "count": counts})

    def logit_effect(self) -> pd.DataFrame:
        """Top promoted and suppressed tokens (among tokens seen in the corpus), their centred
        direct effect on the logit and their language (None: unassigned)."""
        rows = [
            {"direction": direction, "token": token, "effect": effect, "token_lang": token_lang}
            for direction in ("promoted", "suppressed")
            for token, effect, token_lang in self.data[direction]
        ]
        return pd.DataFrame(rows, columns=["direction", "token", "effect", "token_lang"])

    def to_text(self, top: int = 5) -> str:
        """The card as plain text (``mlinguality neurons``)."""
        lines = [self.title]
        firing = ", ".join(f"{lang} {rate:.3f}" for lang, rate in self.data["firing"].items())
        lines.append(f"  firing rate: {firing}")
        for lang in self.langs:
            contexts = self.top_examples(lang).head(top)
            if not len(contexts):
                continue
            lines.append(f"  top contexts ({lang}):")
            for row in contexts.itertuples():
                text = " ".join(row.text.split())
                lines.append(f"    {row.activation:7.3f}  {row.example}: {text}")
        for direction in ("promoted", "suppressed"):
            tokens = ", ".join(
                f"{token!r} {effect:+.3f}" + (f" ({lang})" if lang else "")
                for token, effect, lang in self.data[direction][:top]
            )
            lines.append(f"  {direction}: {tokens}")
        share = self.data.get("own_share")
        if share is not None:
            lines.append(f"  own-language share of the top {N_PROMOTED} promoted: {share:.2f}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return card_html(self.data, self.langs)

    def __repr__(self) -> str:
        return f"<NeuronCard {self.title}>"


def _colour(value: float, scale: float) -> str:
    share = 0.0 if scale <= 0 else max(-1.0, min(1.0, value / scale))
    if share >= 0:
        return f"rgba(220,80,30,{share:.2f})"
    return f"rgba(40,110,220,{-share:.2f})"


def card_html(data: dict[str, Any], langs: Sequence[str], top: int | None = None) -> str:
    """One card as HTML with inline styles only (a notebook cell, a W&B table cell); ``top``
    contexts per language (default: all)."""
    card = NeuronCard(data, langs)
    scale = max(
        [abs(v) for contexts in data["contexts"].values() for c in contexts for v in c["acts"]]
        or [1.0]
    )
    parts = [
        '<div style="font-family:sans-serif;font-size:13px;border:1px solid #ccc;'
        'border-radius:6px;padding:8px;max-width:900px">',
        f"<b>{html.escape(card.title)}</b><br>",
        "firing rate: "
        + ", ".join(f"{html.escape(k)} {v:.3f}" for k, v in data["firing"].items())
        + "<br>",
    ]
    for lang in langs:
        contexts = data["contexts"].get(lang, [])[:top]
        if not contexts:
            continue
        parts.append(f'<div style="margin-top:6px"><i>{html.escape(lang)}</i></div>')
        for context in contexts:
            spans = []
            for index, (token, value) in enumerate(
                zip(context["tokens"], context["acts"], strict=True)
            ):
                weight = (
                    "font-weight:bold;outline:1px solid #333;" if index == context["focus"] else ""
                )
                spans.append(
                    f'<span title="{value:.3f}" style="background:{_colour(value, scale)};'
                    f'{weight}white-space:pre">{html.escape(token)}</span>'
                )
            parts.append(
                f'<div style="font-family:monospace">{context["activation"]:.3f} '
                + "".join(spans)
                + "</div>"
            )
    for direction in ("promoted", "suppressed"):
        tokens = ", ".join(
            f"<code>{html.escape(repr(token))}</code> {effect:+.3f}"
            + (f" ({html.escape(lang)})" if lang else "")
            for token, effect, lang in data[direction][:10]
        )
        parts.append(f"<div><b>{direction}</b>: {tokens}</div>")
    parts.append("</div>")
    return "".join(parts)


def _writes(
    model, specs: Sequence[NeuronSpec], table: TokenLanguages, n_promoted: int
) -> list[dict[str, Any]]:
    """Per neuron: top promoted/suppressed corpus tokens, the own-language share and the mean
    centred effect on each language's tokens."""
    tokenizer = model.tokenizer
    corpus_ids = table.in_corpus.nonzero().flatten()
    corpus_ids = corpus_ids[corpus_ids < model.cfg.d_vocab]
    owner = table.assigned[corpus_ids]  # language index of each corpus token, -1: unassigned
    members = torch.stack([(owner == i).float() for i in range(len(table.langs))])
    sizes = members.sum(dim=1)
    lang_of = [table.langs[int(i)] if i >= 0 else None for i in owner.tolist()]
    names: dict[int, str] = {}

    def listed(columns: Tensor, row: Tensor) -> list[list]:
        out = []
        for column in columns.tolist():
            token = int(corpus_ids[column])
            if token not in names:
                names[token] = tokenizer.decode([token])
            out.append([names[token], _round(float(row[column])), lang_of[column]])
        return out

    k = min(n_promoted, len(corpus_ids))
    out = []
    # one product over the corpus tokens only: 876 neurons x ~10k tokens = 35 MB for Gemma
    effect = centred_logit_effect(model, [(s.layer, s.neuron) for s in specs], corpus_ids)
    by_lang = (effect @ members.T) / sizes.clamp_min(1)  # [neuron, lang]: mean per language
    for spec, row, means in zip(specs, effect, by_lang, strict=True):
        up = row.topk(k).indices
        down = (-row).topk(k).indices
        own = None
        if spec.lang in table.langs:
            own = float((owner[up] == table.langs.index(spec.lang)).float().mean())
        out.append(
            {
                "promoted": listed(up, row),
                "suppressed": listed(down, row),
                "own_share": own,
                "lang_effect": {
                    lang: _round(float(means[i])) if sizes[i] > 0 else None
                    for i, lang in enumerate(table.langs)
                },
            }
        )
    return out


def build_cards(
    model,
    texts: Mapping[str, Sequence[str]],
    specs: Sequence[NeuronSpec],
    stats: Mapping[str, ActivationStats],
    *,
    example_ids: Sequence[str] | None = None,
    top_k: int = 8,
    window: int = 8,
    positions: Positions = "all",
    include_bos: bool = False,
    batch_tokens: int = 4096,
    token_table: TokenLanguages | None = None,
    n_promoted: int = N_PROMOTED,
) -> list[NeuronCard]:
    """Cards for ``specs`` on ``texts`` (per language, the same examples in the same order).

    Args:
        model: The model the statistics come from.
        texts: Per language, the texts to read contexts from.
        specs: The neurons (:class:`NeuronSpec`).
        stats: Per-language statistics of these (or more) texts: firing rates and histogram
            ranges.
        example_ids: Ids of the examples (default ``"0"``, ``"1"``, ...).
        top_k: Contexts per neuron and language.
        window: Tokens either side of each context's peak.
        positions: Which positions count (as in collection).
        include_bos: Count the leading special tokens too.
        batch_tokens: Padded tokens per forward batch.
        token_table: The language of each token (default: counted on ``texts``).
        n_promoted: Promoted and suppressed tokens listed per neuron.
    """
    langs = list(texts)
    neurons = [(spec.layer, spec.neuron) for spec in specs]
    ids = list(example_ids) if example_ids is not None else None
    table = token_table or token_languages(model.tokenizer, texts, vocab_size=model.cfg.d_vocab)
    edges = histogram_edges({lang: stats[lang] for lang in langs}, neurons)
    reads = read_contexts(
        model,
        texts,
        neurons,
        edges,
        top_k=top_k,
        positions=positions,
        include_bos=include_bos,
        batch_tokens=batch_tokens,
    )
    windows = context_windows(model, reads, window=window)
    writes = _writes(model, specs, table, n_promoted)
    cards = []
    for column, spec in enumerate(specs):
        firing = {
            lang: _round(float(stats[lang].p_gate_positive[spec.layer, spec.neuron]))
            for lang in langs
        }
        contexts = {}
        for lang in langs:
            contexts[lang] = [
                {
                    **c,
                    "example": ids[c["example"]] if ids else str(c["example"]),
                    "activation": _round(c["activation"]),
                    "acts": [_round(v) for v in c["acts"]],
                }
                for c in windows[lang][column]
            ]
        data = {
            "layer": spec.layer,
            "neuron": spec.neuron,
            "set": spec.set,
            "lang": spec.lang,
            "score": None if spec.score is None or not math.isfinite(spec.score) else spec.score,
            "firing": firing,
            **writes[column],
            "hist": {
                "edges": [_round(v) for v in edges[column].tolist()],
                "counts": {lang: reads.counts[lang][column].tolist() for lang in langs},
            },
            "contexts": contexts,
        }
        cards.append(NeuronCard(data, langs))
    return cards


N_PERMUTATIONS = 2000  # smallest attainable two-sided p-value 1/2001


def _margin(data: dict[str, Any], lang: str) -> float | None:
    own = data["lang_effect"].get(lang)
    others = [v for k, v in data["lang_effect"].items() if k != lang and v is not None]
    return own - sum(others) / len(others) if own is not None and others else None


def permutation_p(
    a: Sequence[float], b: Sequence[float], n_permutations: int = N_PERMUTATIONS, seed: int = 0
) -> float:
    """Two-sided permutation p-value of the difference of means of ``a`` and ``b`` (set labels
    shuffled; the observed split counts as one permutation).

    >>> permutation_p([5.0, 6.0, 7.0], [0.0, 1.0, 2.0], 500) < 0.2
    True
    """
    import numpy as np

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not len(a) or not len(b):
        return float("nan")
    pooled = np.concatenate([a, b])
    observed = abs(a.mean() - b.mean())
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_permutations):
        order = rng.permutation(len(pooled))
        diff = abs(pooled[order[: len(a)]].mean() - pooled[order[len(a) :]].mean())
        hits += diff >= observed - 1e-12 * max(1.0, abs(observed))
    return float((hits + 1) / (n_permutations + 1))


def output_language(cards: Sequence[NeuronCard]) -> pd.DataFrame:
    """Per language and set (selected, random): neurons, the mean own-language share of their
    top promoted tokens, and the mean centred effect on the language's own tokens minus the
    mean over the other languages' tokens (> 0: the neurons push their own language). On the
    selected rows, ``p_share`` and ``p_effect``: permutation p-values of the difference from the
    language's random neurons (:func:`permutation_p`)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for card in cards:
        if card.data.get("lang") and card.data["set"] in ("selected", "random"):
            groups.setdefault((card.data["lang"], card.data["set"]), []).append(card.data)

    def values(lang: str, kind: str) -> tuple[list[float], list[float]]:
        members = groups.get((lang, kind), [])
        shares = [m["own_share"] for m in members if m["own_share"] is not None]
        margins = [v for m in members if (v := _margin(m, lang)) is not None]
        return shares, margins

    rows = []
    for lang, kind in groups:
        shares, margins = values(lang, kind)
        row = {
            "lang": lang,
            "set": kind,
            "n_neurons": len(groups[(lang, kind)]),
            "own_share": sum(shares) / len(shares) if shares else float("nan"),
            "own_minus_other_effect": sum(margins) / len(margins) if margins else float("nan"),
            "p_share": float("nan"),
            "p_effect": float("nan"),
        }
        if kind == "selected" and (lang, "random") in groups:
            random_shares, random_margins = values(lang, "random")
            row["p_share"] = permutation_p(shares, random_shares)
            row["p_effect"] = permutation_p(margins, random_margins)
        rows.append(row)
    columns = [
        "lang",
        "set",
        "n_neurons",
        "own_share",
        "own_minus_other_effect",
        "p_share",
        "p_effect",
    ]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["lang", "set"], key=lambda c: c.map(str)).reset_index(drop=True)


def neuron_table(cards: Sequence[NeuronCard]) -> pd.DataFrame:
    """One row per card: set, language, layer, neuron, score, firing rate per language, the
    own-language share and the top promoted tokens."""
    rows = []
    for card in cards:
        data = card.data
        rows.append(
            {
                "set": data["set"],
                "lang": data["lang"],
                "layer": data["layer"],
                "neuron": data["neuron"],
                "score": data["score"],
                **{f"firing_{lang}": rate for lang, rate in data["firing"].items()},
                "own_share": data.get("own_share"),
                "top_promoted": " ".join(repr(t) for t, _, _ in data["promoted"][:5]),
            }
        )
    return pd.DataFrame(rows)


__all__ = [
    "NeuronCard",
    "NeuronSpec",
    "build_cards",
    "card_html",
    "neuron_table",
    "output_language",
]

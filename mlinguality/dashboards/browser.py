"""``neurons.html``: one self-contained page to browse language neurons, offline.

The page has a header (run, model, languages, selection metric, how to read it), a sortable,
filterable table with a row per neuron, and a card per neuron: its firing rate per language, its
top contexts per language (each token shaded by its activation), an activation histogram per
language and the tokens whose logits it raises and lowers most. CSS and vanilla JS are inline
and the data is embedded as JSON, so the file opens from disk with no network at all. Cards are
drawn the first time they scroll into view, so ~900 of them stay fast; every card's
``<section class="card">`` shell is in the HTML from the start.

Input schema (what :func:`write_browser` takes)::

    {"run": str, "model": str, "langs": [str], "metric": str, "top_k": int,
     "neurons": [{"layer": int, "neuron": int, "set": "selected" | "random" | "listed",
                  "lang": str | None,  # language it was selected for (random: whose set it matches)
                  "score": float | None,
                  "firing": {lang: float},  # firing rate per language
                  "own_share": float | None,  # share of top promoted tokens in its own language
                  "promoted": [[token, effect, token_lang | None], ...],  # top 20
                  "suppressed": [[token, effect, token_lang | None], ...],
                  "hist": {"edges": [float] * (n_bins + 1), "counts": {lang: [int] * n_bins}},
                  "contexts": {lang: [{"example": str, "position": int, "activation": float,
                                       "tokens": [str], "acts": [float], "focus": int}, ...]}},
                 ...]}

``focus`` is the index in ``tokens`` of the max-activating token; ``tokens``/``acts`` are the
text window around it. Numpy scalars are accepted wherever a number is.

Embedded form (compact; :func:`read_browser_data` turns it back into the schema above):

- every float rounded to 3 significant digits, an integral one written as an int, NaN and
  infinities as null (:func:`rounded` gives the input as the page stores it);
- each distinct token string stored once, in the top-level list ``"v"`` (most frequent
  first, so common tokens get short indices), and referred to by its index there;
- per neuron, short keys: ``l`` layer, ``n`` neuron, ``s`` set, ``g`` lang, ``sc`` score,
  ``f`` firing, ``o`` own_share, ``p`` promoted and ``x`` suppressed (``[token index, effect,
  token_lang]``), ``h`` hist (``{"e": edges, "c": counts}``), ``c`` contexts
  (``{lang: [[example, position, activation, [token index, ...], [act, ...], focus], ...]}``);
- ``<``, ``>`` and ``&`` written as ``\\u003c``-style JSON escapes, so no token (``</script>``,
  ``<!--``) can end the ``<script type="application/json" id="data">`` element.

Size (:func:`browser_size_bound`): for the main job (876 neurons: 438 selected and as many
random controls, 5 languages, top 8 contexts, windows of 8 tokens each side) the bound is
22 MB, with every float at its longest (``-1.23e-05``) and all of Gemma 3's 262,144 tokens on
the page. A page with Zipf-distributed tokens and Gemma-like activations of those sizes takes
about 10.3 kB a neuron, 9 MB in all: 45 % of it the contexts' activations, 19 % their token
indices.
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mlinguality.dashboards.browser_page import CSS as _CSS
from mlinguality.dashboards.browser_page import JS as _JS
from mlinguality.dashboards.browser_page import TEMPLATE as _TEMPLATE
from mlinguality.errors import MlingualityError

logger = logging.getLogger(__name__)

SIG_DIGITS = 3  # floats on the page: 3 significant digits are more than a colour scale shows
_NEURON_KEYS = ("layer", "neuron", "set", "lang", "score", "firing", "own_share", "promoted")
_NEURON_KEYS += ("suppressed", "hist", "contexts")
_TOP_KEYS = ("run", "model", "langs", "metric", "top_k", "neurons")
# the page's CSS, JS and template, plus a header (run, model, languages) of up to 2 kB
PAGE_BYTES = len((_TEMPLATE + _CSS + _JS).encode()) + 2_000


def _num(x: Any) -> float | int | None:
    """``x`` rounded to :data:`SIG_DIGITS` significant digits: an int if integral (and below
    10^6: no long digit strings), None if NaN or infinite."""
    if x is None:
        return None
    value = float(x)
    if not math.isfinite(value):
        return None
    value = float(f"{value:.{SIG_DIGITS}g}")
    return int(value) if value.is_integer() and abs(value) < 1e6 else value


def rounded(data: dict) -> dict:
    """``data`` as the page stores it (what :func:`read_browser_data` returns): every float
    rounded by :func:`_num`, numpy scalars made Python numbers.

    >>> rounded({"run": "r", "model": "m", "langs": ["fr"], "metric": "lape", "top_k": 8,
    ...          "neurons": []})["top_k"]
    8
    """
    out = _header(data)
    out["neurons"] = [decode_neuron(encode_neuron(n)) for n in data["neurons"]]
    return out


def _header(data: dict) -> dict:
    missing = [key for key in _TOP_KEYS if key not in data]
    if missing:
        raise MlingualityError(f"neuron browser: the data has no {', '.join(missing)}")
    header = {key: str(data[key]) for key in ("run", "model", "metric")}
    header.update(langs=[str(lang) for lang in data["langs"]], top_k=int(data["top_k"]))
    return header


def encode_neuron(neuron: dict) -> dict:
    """One neuron in the page's compact form (module docstring), its tokens still strings
    (:func:`map_tokens` turns them into vocabulary indices)."""
    missing = [key for key in _NEURON_KEYS if key not in neuron]
    if missing:
        where = f"L{neuron.get('layer')} N{neuron.get('neuron')}"
        raise MlingualityError(f"neuron browser: neuron {where} has no {', '.join(missing)}")

    def effects(rows: list) -> list:
        return [[str(t), _num(effect), lang] for t, effect, lang in rows]

    hist = neuron["hist"]
    return {
        "l": int(neuron["layer"]),
        "n": int(neuron["neuron"]),
        "s": str(neuron["set"]),
        "g": neuron["lang"],
        "sc": _num(neuron["score"]),
        "f": {lang: _num(rate) for lang, rate in neuron["firing"].items()},
        "o": _num(neuron["own_share"]),
        "p": effects(neuron["promoted"]),
        "x": effects(neuron["suppressed"]),
        "h": {
            "e": [_num(edge) for edge in hist["edges"]],
            "c": {lang: [int(c) for c in counts] for lang, counts in hist["counts"].items()},
        },
        "c": {
            lang: [
                [
                    str(c["example"]),
                    int(c["position"]),
                    _num(c["activation"]),
                    [str(t) for t in c["tokens"]],
                    [_num(a) for a in c["acts"]],
                    int(c["focus"]),
                ]
                for c in contexts
            ]
            for lang, contexts in neuron["contexts"].items()
        },
    }


def map_tokens(compact: dict, token: Callable[[Any], Any]) -> dict:
    """``compact`` (a neuron as :func:`encode_neuron` writes it) with ``token`` applied to each
    of its tokens: string to vocabulary index on the way in, index to string on the way out."""
    out = dict(compact)
    out["p"] = [[token(t), effect, lang] for t, effect, lang in compact["p"]]
    out["x"] = [[token(t), effect, lang] for t, effect, lang in compact["x"]]
    out["c"] = {
        lang: [
            [ex, pos, act, [token(t) for t in toks], acts, focus]
            for ex, pos, act, toks, acts, focus in ctxs
        ]
        for lang, ctxs in compact["c"].items()
    }
    return out


def decode_neuron(compact: dict) -> dict:
    """The inverse of :func:`encode_neuron`: a neuron in the input schema."""
    return {
        "layer": compact["l"],
        "neuron": compact["n"],
        "set": compact["s"],
        "lang": compact["g"],
        "score": compact["sc"],
        "firing": compact["f"],
        "own_share": compact["o"],
        "promoted": compact["p"],
        "suppressed": compact["x"],
        "hist": {"edges": compact["h"]["e"], "counts": compact["h"]["c"]},
        "contexts": {
            lang: [
                {
                    "example": example,
                    "position": position,
                    "activation": activation,
                    "tokens": tokens,
                    "acts": acts,
                    "focus": focus,
                }
                for example, position, activation, tokens, acts, focus in contexts
            ]
            for lang, contexts in compact["c"].items()
        },
    }


def _tokens(compact: dict) -> Iterator[str]:
    """Every token of a neuron in the compact form, repeats included."""
    yield from (row[0] for row in compact["p"] + compact["x"])
    for ctxs in compact["c"].values():
        for ctx in ctxs:
            yield from ctx[3]


def _script_json(payload: dict) -> str:
    """Compact JSON that is safe inside ``<script>``: no ``<``, ``>`` or ``&`` left raw."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _card_ids(neurons: list[dict]) -> list[str]:
    """``L{layer}N{neuron}``; a neuron that appears again (two languages, two sets) gets ``-2``..."""
    seen: dict[str, int] = {}
    ids = []
    for neuron in neurons:
        base = f"L{int(neuron['layer'])}N{int(neuron['neuron'])}"
        seen[base] = seen.get(base, 0) + 1
        ids.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return ids


def _title(neuron: dict, metric: str) -> str:
    score = _num(neuron["score"])
    detail = neuron["set"] if score is None else f"{neuron['set']}, {metric} {score:g}"
    return f"L{neuron['layer']} N{neuron['neuron']} — {neuron['lang'] or '—'} ({detail})"


def write_browser(data: dict, path: str | Path) -> Path:
    """Write ``neurons.html``, the neuron browser, and return its path.

    Args:
        data: The neurons and the run they come from, in the schema of the module docstring.
        path: The HTML file to write (a name ending ``.html``) or a folder to write
            ``neurons.html`` into (created if missing).

    Returns:
        The file written.

    Raises:
        MlingualityError: ``data`` lacks a key of the schema.
    """
    payload = _header(data)
    path = Path(path)
    if path.suffix != ".html":
        path = path / "neurons.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = [encode_neuron(n) for n in data["neurons"]]
    counts = Counter(t for n in plain for t in _tokens(n))
    vocab = {t: i for i, (t, _) in enumerate(counts.most_common())}  # common tokens: short indices
    neurons = [map_tokens(n, vocab.__getitem__) for n in plain]
    payload.update(v=list(vocab), neurons=neurons)
    metric = payload["metric"]
    shells = "\n".join(
        f'<section class="card" id="{card_id}" data-i="{i}" data-lang="{html.escape(n["lang"] or "")}"'
        f' data-layer="{int(n["layer"])}" data-set="{html.escape(str(n["set"]))}">'
        f'<h2>{html.escape(_title(n, metric))}</h2><div class="body"></div></section>'
        for i, (n, card_id) in enumerate(
            zip(data["neurons"], _card_ids(data["neurons"]), strict=True)
        )
    )
    langs = ", ".join(payload["langs"])
    parts = {
        "TITLE": html.escape(f"{payload['run']} — neurons"),
        "RUN": html.escape(payload["run"]),
        "META": html.escape(f"{payload['model']} · {langs} · {metric} · top {payload['top_k']}"),
        "TOTAL": str(len(neurons)),
        "CARDS": shells,
        "CSS": _CSS,
        "JS": _JS,
        "DATA": _script_json(payload),
    }
    page = re.sub(r"%(TITLE|RUN|META|TOTAL|CARDS|CSS|JS|DATA)%", lambda m: parts[m[1]], _TEMPLATE)
    path.write_text(page, encoding="utf-8", errors="replace")
    logger.info("neuron browser: %d neurons, %.1f MB -> %s", len(neurons), len(page) / 1e6, path)
    return path


def read_browser_data(path: str | Path) -> dict:
    """The data embedded in a page :func:`write_browser` wrote, in the input schema (rounded as
    :func:`rounded` says)."""
    text = Path(path).read_text(encoding="utf-8")
    start = text.index(">", text.index('<script type="application/json" id="data"')) + 1
    payload = json.loads(text[start : text.index("</script>", start)])
    vocab = payload.pop("v")
    payload["neurons"] = [
        decode_neuron(map_tokens(n, vocab.__getitem__)) for n in payload["neurons"]
    ]
    return payload


def browser_size_bound(
    n_neurons: int,
    n_langs: int,
    top_k: int,
    window: int,
    *,
    n_effects: int = 20,
    n_bins: int = 50,
    token_bytes: int = 16,
    vocab_size: int = 262_144,
) -> int:
    """An upper bound, in bytes, on the size of ``neurons.html``.

    Each item is counted at its longest: a float at 10 bytes (``-1.23e-05,``; magnitudes below
    10^6, as activations, effects and rates are), a token index at
    ``digits(vocab_size) + 1``, a count at 11, a position at 8, a language key at 11 (codes of
    up to 8 characters), an example id at 41 (up to 38 characters), a card's HTML shell at
    260. The vocabulary holds at most ``min(token occurrences, vocab_size)`` distinct tokens of
    ``token_bytes + 3`` bytes each (``token_bytes``: their mean size as UTF-8 JSON, escapes
    included). The page's own CSS, JS and header add a fixed :data:`PAGE_BYTES`.

    Per neuron, with ``t = 2 * window + 1`` tokens a context and ``d`` bytes a token index::

        120 + 260 + 21 * n_langs + 2 * (10 + 30 * n_effects)         # keys, shell, firing, effects
        + 10 * (n_bins + 1) + n_langs * (13 + 11 * n_bins)           # histogram
        + n_langs * (13 + top_k * (70 + t * (d + 10)))               # contexts

    Args:
        n_neurons: Neurons on the page.
        n_langs: Languages.
        top_k: Top contexts per language.
        window: Tokens each side of the max-activating one.
        n_effects: Promoted (and suppressed) tokens per neuron.
        n_bins: Histogram bins.
        token_bytes: Mean size of a distinct token, UTF-8 JSON.
        vocab_size: The model's vocabulary size (Gemma 3: 262,144).

    >>> browser_size_bound(876, 5, 8, 8) // 1_000_000
    22
    """
    tokens = 2 * window + 1
    index_bytes = len(str(vocab_size)) + 1
    per_neuron = (
        120
        + 260
        + 21 * n_langs
        + 2 * (10 + 30 * n_effects)
        + 10 * (n_bins + 1)
        + n_langs * (13 + 11 * n_bins)
        + n_langs * (13 + top_k * (70 + tokens * (index_bytes + 10)))
    )
    occurrences = n_neurons * (n_langs * top_k * tokens + 2 * n_effects)
    vocab = min(occurrences, vocab_size) * (token_bytes + 3)
    return PAGE_BYTES + n_neurons * per_neuron + vocab

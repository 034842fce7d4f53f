"""The neuron browser's page: its HTML template, CSS and vanilla JS (no library, no network).

:func:`mlinguality.dashboards.browser.write_browser` fills the template's ``%NAME%`` slots in
one pass: ``TITLE``, ``RUN``, ``META`` (model, languages, metric), ``TOTAL`` (neurons),
``CARDS`` (a ``<section class="card">`` shell per neuron), ``CSS``, ``JS`` and ``DATA`` (the
compact JSON described in that module). The JS reads the data, builds the table, sorts and
filters it, and draws a card's body the first time the card scrolls into view.
"""

from __future__ import annotations

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%TITLE%</title>
<style>%CSS%</style>
</head>
<body>
<header>
<h1>%RUN%</h1>
<p class="meta">%META%</p>
<p class="how"><b>How to read this.</b> Each row is one MLP neuron (layer L, index N):
<i>selected</i> by the metric for a language, a <i>random</i> control matched to a selected set
(its language is that set's), or <i>listed</i> by hand. <i>fires</i>: the share of a language's
tokens on which the neuron fires; <i>own share</i>: the share of its top promoted tokens (direct
logit effect through the unembedding) that belong to its own language. Click a row for its card:
the top contexts per language, each token shaded by its activation relative to the card's largest
|activation| (orange positive, blue negative, the peak token outlined, hover for the value;
<span class="ws">&middot;</span> marks a space, <span class="ws">&#8629;</span> a newline);
activation histograms per language; and the tokens whose logits it raises and lowers most,
<span class="chip own">green</span> in the neuron's own language,
<span class="chip other">grey</span> in another, <span class="chip none">dashed</span> unassigned
(&mdash;). Click a column header to sort; the filters hide rows and cards alike.</p>
</header>
<noscript><p class="how">This page needs JavaScript to draw the table and the cards.</p></noscript>
<div id="controls">
<label>language <select id="f-lang"><option value="">all</option></select></label>
<label>layer <input id="f-layer" type="text" inputmode="numeric" size="9"
 placeholder="17, 10-12"></label>
<label>set <select id="f-set"><option value="">all</option><option value="selected">selected</option>
<option value="random">random</option><option value="listed">listed</option></select></label>
<label>promoted token <input id="f-token" type="search" size="14" placeholder="substring">
</label>
<span><b id="count">%TOTAL%</b> of %TOTAL% neurons shown</span>
</div>
<div id="table-pane"><table id="neurons"><thead></thead><tbody></tbody></table></div>
<main id="cards">
%CARDS%
</main>
<script type="application/json" id="data">%DATA%</script>
<script>%JS%</script>
</body>
</html>
"""

CSS = """
html, body { height: 100%; margin: 0; }
body { display: flex; flex-direction: column; color: #1b1b1b; background: #f4f4f2;
  font: 13px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; }
header { padding: 8px 16px 2px; background: #fff; }
h1 { font-size: 18px; margin: 0; }
.meta { color: #555; margin: 2px 0; }
.how { margin: 4px 0 6px; max-width: 125ch; color: #333; }
#controls { display: flex; flex-wrap: wrap; gap: 6px 16px; align-items: center; padding: 6px 16px;
  background: #fff; border-top: 1px solid #e2e2e2; border-bottom: 1px solid #d4d4d4; }
#controls input.bad { outline: 2px solid #d33; }
#table-pane { flex: 0 0 auto; max-height: 36vh; overflow: auto; background: #fff;
  border-bottom: 2px solid #c8c8c8; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th { position: sticky; top: 0; z-index: 1; background: #ececea; cursor: pointer; user-select: none;
  text-align: left; padding: 3px 8px; white-space: nowrap; border-bottom: 1px solid #c8c8c8; }
th:hover { background: #e0e0dc; }
th.asc::after { content: " \\25B2"; } th.desc::after { content: " \\25BC"; }
td { padding: 2px 8px; border-bottom: 1px solid #eee; white-space: nowrap; }
td.num { text-align: right; }
tbody tr { cursor: pointer; } tbody tr:hover { background: #fff3e8; }
tbody tr.current { background: #ffe3cc; }
#cards { flex: 1 1 auto; overflow: auto; padding: 10px 16px; }
.card { background: #fff; border: 1px solid #dcdcdc; border-radius: 6px; margin: 0 0 12px;
  padding: 8px 14px 10px; }
.card { content-visibility: auto; contain-intrinsic-size: auto 360px; }  /* cheap off screen */
.card:not(.done) { min-height: 360px; }
.card.current { border-color: #ec621c; box-shadow: 0 0 0 2px #fbd3bc; }
.card h2 { font-size: 15px; margin: 0 0 4px; }
.card h3 { font-size: 12px; margin: 8px 0 3px; color: #444; }
h3 small, figcaption small { font-weight: normal; color: #777; }
.top { display: flex; flex-wrap: wrap; gap: 4px 32px; }
.fr { display: grid; grid-template-columns: 3em 110px 4.5em; gap: 6px; align-items: center; }
.fr .bar { height: 8px; background: #eee; border-radius: 2px; }
.fr .bar span { display: block; height: 100%; background: #9a9a9a; border-radius: 2px; }
.fr.own .bar span { background: #ec621c; } .fr.own .lab { font-weight: 600; }
.fr .val { text-align: right; font-variant-numeric: tabular-nums; }
.hists .row { display: flex; flex-wrap: wrap; gap: 4px 14px; }
figure { margin: 0; } figcaption { font-size: 11px; }
.hist rect { fill: #a3acb3; } .hist.own rect { fill: #ec621c; }
.hist text { font-size: 9px; fill: #666; } .hist line { stroke: #444; stroke-dasharray: 2 2; }
.chip { display: inline-block; margin: 1px 4px 3px 0; padding: 0 5px; border-radius: 3px;
  border: 1px solid #ccc; background: #f1f1f1; white-space: nowrap; }
.chip.own { background: #e2f3df; border-color: #86c47e; }
.chip.none { background: #fff; border-style: dashed; color: #555; }
.chip b { font-weight: 500; } .chip small { color: #6c6c6c; }
td .chip { display: inline; margin: 0 3px 0 0; padding: 0 4px; }  /* inline: a cheaper table layout */
.ws { color: #9c9c9c; font-style: normal; }
details { margin: 3px 0; } summary { cursor: pointer; color: #333; }
.ctx { display: flex; gap: 10px; align-items: baseline; margin: 2px 0; }
.ctx .act { flex: 0 0 4em; text-align: right; color: #666; font-variant-numeric: tabular-nums; }
.line { line-height: 1.75; overflow-wrap: anywhere; }
.t { padding: 1px 0; border-radius: 2px; box-shadow: inset -1px 0 0 rgba(0, 0, 0, 0.07); }
.t.mx { font-weight: 700; outline: 1.5px solid #222; outline-offset: 0; }
"""

JS = r"""
"use strict";
(() => {
const D = JSON.parse(document.getElementById("data").textContent);
const V = D.v, N = D.neurons, LANGS = D.langs, NONE = "\u2014";
// SentencePiece (Gemma) marks a leading space "\u2581"; GPT-2's byte-level BPE "\u0120"
const SP = V.some((t) => t.includes("\u2581"));
const cards = Array.from(document.querySelectorAll("section.card"));
const pane = document.getElementById("cards");
const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ESC[c]);
function fmt(x) {
  if (x === null || x === undefined) return NONE;
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(2);
  return String(Number(x.toPrecision(3)));
}
const pct = (x) => (x === null || x === undefined ? NONE : fmt(100 * x) + "%");
const WS = { " ": "\u00b7", "\n": "\u21b5", "\t": "\u2192", "\r": "\u240d" };
function plain(raw) {
  if (SP) return raw.replace(/\u2581/g, " ");
  return raw.replace(/\u0120/g, " ").replace(/\u010a/g, "\n").replace(/\u0109/g, "\t");
}
function tok(raw) {
  const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(raw);
  const s = byte ? String.fromCharCode(parseInt(byte[1], 16)) : plain(raw);
  if (byte && !WS[s]) return `<i class="ws">${esc(raw)}</i>`;
  if (s === "") return '<i class="ws">\u2205</i>';
  return esc(s).replace(/[ \n\t\r]/g, (c) => `<i class="ws">${WS[c]}</i>`);
}
function shade(a, m) {
  if (a === null || !m) return "#fff";
  const k = Math.min(1, Math.abs(a) / m);
  const rgb = a >= 0 ? [236, 98, 28] : [37, 118, 196];
  return `rgb(${rgb.map((c) => Math.round(255 + (c - 255) * k)).join(",")})`;
}
const kind = (tl, own) => (tl === null || tl === undefined ? "none" : tl === own ? "own" : "other");
function chip([t, e, tl], own) {
  const title = `effect ${fmt(e)}; token language ${tl ?? NONE}`;
  return `<span class="chip ${kind(tl, own)}" title="${esc(title)}">${tok(V[t])} ` +
    `<b>${fmt(e)}</b> <small>${esc(tl ?? NONE)}</small></span>`;
}
function cardLangs(d) {
  const order = d.g && LANGS.includes(d.g) ? [d.g, ...LANGS.filter((l) => l !== d.g)] : LANGS;
  return [...new Set([...order, ...Object.keys(d.c)])];
}
function firingHtml(d, langs) {
  const top = Math.max(1e-12, ...langs.map((l) => d.f[l] ?? 0));
  const rows = langs.map((l) => {
    const f = d.f[l] ?? null, w = f === null ? 0 : (100 * f) / top;
    return `<div class="fr${l === d.g ? " own" : ""}"><span class="lab">${esc(l)}</span>` +
      `<span class="bar"><span style="width:${w.toFixed(1)}%"></span></span>` +
      `<span class="val">${pct(f)}</span></div>`;
  });
  return `<div class="firing"><h3>fires <small>(bars: relative to the highest)</small></h3>` +
    `${rows.join("")}</div>`;
}
function histHtml(d, langs) {
  const e = d.h.e, W = 170, H = 52, span = e[e.length - 1] - e[0] || 1;
  const x = (v) => (W * (v - e[0])) / span;
  let top = 0;
  for (const l of langs) for (const c of d.h.c[l] || []) top = Math.max(top, Math.log10(1 + c));
  const panels = langs.filter((l) => d.h.c[l]).map((l) => {
    const counts = d.h.c[l], n = counts.length;
    const bars = counts.map((c, j) => {
      const h = top ? (H * Math.log10(1 + c)) / top : 0, w = Math.max(0.6, x(e[j + 1]) - x(e[j]) - 0.4);
      return `<rect x="${x(e[j]).toFixed(1)}" y="${(H - h).toFixed(1)}" width="${w.toFixed(1)}" ` +
        `height="${h.toFixed(1)}"><title>[${fmt(e[j])}, ${fmt(e[j + 1])}): ${c}</title></rect>`;
    });
    const zero = e[0] < 0 && e[n] > 0 ? `<line x1="${x(0)}" x2="${x(0)}" y1="0" y2="${H}"/>` : "";
    const total = counts.reduce((a, b) => a + b, 0);
    return `<figure class="hist${l === d.g ? " own" : ""}"><figcaption><b>${esc(l)}</b> ` +
      `<small>${total} tokens</small></figcaption><svg width="${W}" height="${H + 12}" ` +
      `viewBox="0 0 ${W} ${H + 12}">${bars.join("")}${zero}<text x="0" y="${H + 10}">` +
      `${fmt(e[0])}</text><text x="${W}" y="${H + 10}" text-anchor="end">${fmt(e[n])}</text>` +
      `</svg></figure>`;
  });
  return `<div class="hists"><h3>activations <small>(bar height: log\u2081\u2080(1 + count), ` +
    `one scale per card; dashed: 0)</small></h3><div class="row">${panels.join("")}</div></div>`;
}
function effectsHtml(title, rows, own) {
  const chips = rows.map((r) => chip(r, own)).join("");
  return `<div class="effects"><h3>${title} <small>(direct logit effect, token language)` +
    `</small></h3>${chips || "<em>none</em>"}</div>`;
}
function cardMax(d) {  // the card's largest |activation|: the colour scale of its contexts
  let m = 0;
  for (const l in d.c) for (const c of d.c[l]) for (const a of c[4]) if (a !== null) m = Math.max(m, Math.abs(a));
  return m;
}
function linesHtml(d, l, m) {
  const lines = d.c[l].map(([ex, pos, act, toks, acts, focus]) => {
    const spans = toks.map((t, j) => `<span class="t${j === focus ? " mx" : ""}" ` +
      `style="background:${shade(acts[j], m)}" title="${fmt(acts[j])}">${tok(V[t])}</span>`);
    return `<div class="ctx"><span class="act" title="${esc(`example ${ex}, token ${pos}`)}">` +
      `${fmt(act)}</span><span class="line">${spans.join("")}</span></div>`;
  });
  return lines.join("") || "<em>none</em>";
}
function contextsHtml(d, langs, m) {
  // the neuron's own language open; the others drawn when first opened (a toggle event)
  const blocks = langs.filter((l) => d.c[l]).map((l) => {
    const ctx = d.c[l], open = !d.g || l === d.g;
    const best = ctx.length ? fmt(Math.max(...ctx.map((c) => c[2] ?? -Infinity))) : NONE;
    return `<details data-lang="${esc(l)}"${open ? " open" : ""}><summary><b>${esc(l)}</b> ` +
      `\u2014 ${ctx.length} contexts, max ${best}, fires ${pct(d.f[l] ?? null)}</summary>` +
      `${open ? linesHtml(d, l, m) : ""}</details>`;
  });
  return `<div class="contexts"><h3>top contexts <small>(shade: activation / ${fmt(m)}, the ` +
    `card's largest |activation|; outlined: the peak token)</small></h3>${blocks.join("")}</div>`;
}
function render(i) {
  const card = cards[i];
  if (card.classList.contains("done")) return;
  const d = N[i], langs = cardLangs(d);
  card.querySelector(".body").innerHTML = `<div class="top">${firingHtml(d, langs)}` +
    `${histHtml(d, langs)}</div>${effectsHtml("promotes", d.p, d.g)}` +
    `${effectsHtml("suppresses", d.x, d.g)}${contextsHtml(d, langs, cardMax(d))}`;
  card.classList.add("done");
}
pane.addEventListener("toggle", (ev) => {  // toggle does not bubble: caught on the way down
  const box = ev.target;
  if (!box.open || box.dataset.drawn || box.querySelector(".ctx")) return;
  const d = N[Number(box.closest(".card").dataset.i)];
  box.insertAdjacentHTML("beforeend", linesHtml(d, box.dataset.lang, cardMax(d)));
  box.dataset.drawn = "1";
}, true);

// the table
const cols = [
  { key: "set", label: "set", get: (d) => d.s },
  { key: "lang", label: "lang", get: (d) => d.g },
  { key: "layer", label: "layer", get: (d) => d.l, num: true },
  { key: "neuron", label: "neuron", get: (d) => d.n, num: true },
  { key: "score", label: D.metric, get: (d) => d.sc, num: true },
  ...LANGS.map((l) => ({ key: "fires-" + l, label: "fires " + l, get: (d) => d.f[l] ?? null, num: true, fmt: pct })),
  { key: "own", label: "own share", get: (d) => d.o, num: true, fmt: pct },
  { key: "top", label: "top promoted", get: (d) => (d.p.length ? plain(V[d.p[0][0]]) : null),
    html: (d) => d.p.slice(0, 5).map(([t, , tl]) => `<span class="chip ${kind(tl, d.g)}">${tok(V[t])}</span>`).join("") },
];
const thead = document.querySelector("#neurons thead"), tbody = document.querySelector("#neurons tbody");
thead.innerHTML = "<tr>" + cols.map((c) => `<th data-key="${esc(c.key)}">${esc(c.label)}</th>`).join("") + "</tr>";
tbody.innerHTML = N.map((d, i) => `<tr data-i="${i}">` + cols.map((c) => {
  const v = c.get(d);
  const cell = c.html ? c.html(d) : esc(v === null || v === undefined ? NONE : c.fmt ? c.fmt(v) : c.num ? fmt(v) : v);
  return `<td${c.num ? ' class="num"' : ""}>${cell}</td>`;
}).join("") + "</tr>").join("");
const rows = Array.from(tbody.rows), ths = Array.from(thead.rows[0].cells);
let sortKey = null, sortDir = 1;
function sortBy(key) {
  sortDir = key === sortKey ? -sortDir : 1;
  sortKey = key;
  const col = cols.find((c) => c.key === key);
  const order = N.map((_, i) => i).sort((a, b) => {
    const x = col.get(N[a]), y = col.get(N[b]);
    if (x === null || x === undefined || y === null || y === undefined) {  // missing values last
      return (x === null || x === undefined) - (y === null || y === undefined) || a - b;
    }
    const c = col.num ? x - y : String(x).localeCompare(String(y));
    return sortDir * c || N[a].l - N[b].l || N[a].n - N[b].n || a - b;
  });
  tbody.append(...order.map((i) => rows[i]));
  pane.append(...order.map((i) => cards[i]));  // the cards follow the table's order
  for (const th of ths) {
    const on = th.dataset.key === key;
    th.classList.toggle("asc", on && sortDir > 0);
    th.classList.toggle("desc", on && sortDir < 0);
    th.setAttribute("aria-sort", on ? (sortDir > 0 ? "ascending" : "descending") : "none");
  }
}
thead.addEventListener("click", (ev) => { const th = ev.target.closest("th"); if (th) sortBy(th.dataset.key); });

// the filters
const fLang = document.getElementById("f-lang"), fLayer = document.getElementById("f-layer");
const fSet = document.getElementById("f-set"), fToken = document.getElementById("f-token");
fLang.insertAdjacentHTML("beforeend", LANGS.map((l) => `<option value="${esc(l)}">${esc(l)}</option>`).join(""));
const tokenText = N.map((d) => d.p.map(([t]) => V[t] + "\n" + plain(V[t])).join("\n").toLowerCase());
function layerTest(text) {
  const parts = text.split(/[\s,]+/).filter(Boolean).map((p) => {
    const r = /^(\d+)(?:-(\d+))?$/.exec(p);
    return r ? [Number(r[1]), Number(r[2] ?? r[1])] : null;
  });
  fLayer.classList.toggle("bad", parts.includes(null));
  return (l) => parts.length === 0 || parts.some((p) => p && l >= p[0] && l <= p[1]);
}
function applyFilters() {
  const lang = fLang.value, set = fSet.value, q = fToken.value.toLowerCase(), layer = layerTest(fLayer.value);
  let shown = 0;
  N.forEach((d, i) => {
    const ok = (!lang || d.g === lang) && (!set || d.s === set) && layer(d.l) && (!q || tokenText[i].includes(q));
    rows[i].style.display = cards[i].style.display = ok ? "" : "none";
    shown += ok;
  });
  document.getElementById("count").textContent = String(shown);
}
for (const el of [fLang, fSet]) el.addEventListener("change", applyFilters);
for (const el of [fLayer, fToken]) el.addEventListener("input", applyFilters);

// cards: drawn when first near the view; a click on a row shows its card
function show(i) {
  render(i);
  for (const el of document.querySelectorAll(".current")) el.classList.remove("current");
  rows[i].classList.add("current");
  cards[i].classList.add("current");
  cards[i].scrollIntoView({ block: "start" });
}
tbody.addEventListener("click", (ev) => { const tr = ev.target.closest("tr"); if (tr) show(Number(tr.dataset.i)); });
if ("IntersectionObserver" in window) {
  const io = new IntersectionObserver((entries) => {
    for (const en of entries) if (en.isIntersecting) { render(Number(en.target.dataset.i)); io.unobserve(en.target); }
  }, { root: pane, rootMargin: "300px 0px" });
  cards.forEach((c) => io.observe(c));
} else {
  cards.forEach((_, i) => render(i));
}
const target = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
if (target && target.classList.contains("card")) show(Number(target.dataset.i));
})();
"""

"""neurons.html: the embedded data (pure Python) and the page itself in a real headless Chromium.

The browser tests need Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them);
without them they skip here and fail in CI (``CI`` set), so a missing install cannot pass for a
green run. ``MLINGUALITY_SCREENSHOT_DIR`` set: a screenshot of the page (table and one open card)
is saved there as ``neuron-browser.png``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from mlinguality.dashboards.browser import (
    browser_size_bound,
    read_browser_data,
    rounded,
    write_browser,
)
from mlinguality.errors import MlingualityError

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
LANGS = ["en", "ru", "hi"]
TOP_K, WINDOW, N_BINS, N_EFFECTS = 4, 8, 30, 20
# tokens that could break the page: HTML specials, a closing script tag, SentencePiece's space
# mark alone and leading, GPT-2's, byte fallbacks, non-Latin scripts
TRICKY = ["<", "&", "</script>", "<!--", '"q"', "\u2581", "\u2581<b>", "\u0120hello", "<0x0A>"]
WORDS = {
    "en": ["\u2581the", "\u2581cat", "\u2581sat", "ing", "\u2581on", ".", "\u2581mat"],
    "ru": ["\u2581Привет", "\u2581мир", "ский", "\u2581и", "\u2581в", "ого"],
    "hi": ["\u2581हिन्दी", "\u2581भाषा", "\u2581है", "ों", "\u2581और", "।"],
}


def _context(rng, lang: str, tokens: list[str] | None = None) -> dict:
    pool = WORDS[lang] + TRICKY
    tokens = tokens or [str(rng.choice(pool)) for _ in range(2 * WINDOW + 1)]
    acts = rng.normal(0.0, 0.3, len(tokens)).astype(np.float32)
    focus = int(rng.integers(len(tokens)))
    acts[focus] = abs(acts[focus]) + rng.uniform(1.0, 5.0)
    return {
        "example": f"{lang}:{int(rng.integers(10_000))}",
        "position": int(rng.integers(512)),
        "activation": acts[focus],  # a numpy scalar, as the data code may pass
        "tokens": tokens,
        "acts": [float(a) for a in acts],
        "focus": focus,
    }


def synthetic_data(n_neurons: int = 40, seed: int = 0) -> dict:
    """``n_neurons`` neurons over 3 languages: 20 selected, 16 random, 4 listed (one of them
    the first selected neuron again, one with no language and no score)."""
    rng = np.random.default_rng(seed)
    neurons = []
    for i in range(n_neurons):
        kind = "selected" if i < 20 else "random" if i < 36 else "listed"
        lang = LANGS[int(rng.integers(3))] if i != n_neurons - 1 else None
        edges = np.linspace(-0.5, 5.0, N_BINS + 1)

        def effects(sign: float):
            return [
                [str(rng.choice(WORDS.get(tl, []) + TRICKY)), sign * rng.gamma(2.0), tl]
                for tl in rng.choice([*LANGS, None], N_EFFECTS)
            ]

        neurons.append(
            {
                "layer": int(rng.integers(18)),
                "neuron": int(rng.integers(2048)),
                "set": kind,
                "lang": lang,
                "score": None if lang is None else float(rng.uniform(0, 1)),
                "firing": {lg: float(rng.uniform(0, 0.3)) for lg in LANGS},
                "own_share": None if lang is None else float(rng.uniform(0, 1)),
                "promoted": sorted(effects(1.0), key=lambda row: -row[1]),
                "suppressed": sorted(effects(-1.0), key=lambda row: row[1]),
                "hist": {
                    "edges": [float(e) for e in edges],
                    "counts": {lg: [int(c) for c in rng.poisson(50, N_BINS)] for lg in LANGS},
                },
                "contexts": {lg: [_context(rng, lg) for _ in range(TOP_K)] for lg in LANGS},
            }
        )
    neurons[36].update(layer=neurons[0]["layer"], neuron=neurons[0]["neuron"])  # listed again
    # neuron 0: values whose rounding is known by hand, and a context holding the tricky tokens
    first = neurons[0]
    first.update(lang="en", score=0.123456, own_share=float("nan"))
    first["suppressed"][0] = ["\u2581cat", -1234.5, "en"]
    first["contexts"]["en"][0] = _context(rng, "en", TRICKY + ["\u2581Привет", "\u2581हिन्दी"])
    first["contexts"]["en"][0]["acts"][0] = 1.23456e-5
    first["promoted"][0] = ["\u2581Привет", 0.98765, "ru"]
    return {
        "run": "synthetic <run> & co",
        "model": "tiny-test",
        "langs": LANGS,
        "metric": "lape",
        "top_k": TOP_K,
        "neurons": neurons,
    }


@pytest.fixture(scope="module")
def data() -> dict:
    return synthetic_data()


@pytest.fixture(scope="module")
def page(data, tmp_path_factory) -> Path:
    return write_browser(data, tmp_path_factory.mktemp("browser"))


# --- the file, no browser ---


def test_the_page_is_one_self_contained_file(page):
    text = page.read_text(encoding="utf-8")
    assert page.name == "neurons.html"
    assert "http://" not in text and "https://" not in text
    assert re.search(r"""(src|href)\s*=\s*["']?\s*//""", text) is None
    assert re.search(r"<(link|img|iframe|object|embed)\b", text) is None
    assert re.search(r"<script\b[^>]*\bsrc\s*=", text) is None
    # only the two script elements' own closing tags: the token "</script>" is escaped
    assert text.count("</script>") == 2


def test_the_embedded_data_round_trips(data, page):
    back = read_browser_data(page)
    assert back == rounded(data)
    json.dumps(back, allow_nan=False)  # nothing non-finite left
    first = back["neurons"][0]
    # rounding to 3 significant digits, by hand
    assert first["score"] == 0.123
    assert first["own_share"] is None  # NaN
    assert first["suppressed"][0] == ["\u2581cat", -1230, "en"]
    assert isinstance(first["suppressed"][0][1], int)
    assert first["contexts"]["en"][0]["acts"][0] == 1.23e-05
    assert first["promoted"][0] == ["\u2581Привет", 0.988, "ru"]
    assert first["contexts"]["en"][0]["tokens"][:9] == TRICKY
    assert back["run"] == "synthetic <run> & co"


def test_the_size_stays_within_the_bound(data, page):
    size = page.stat().st_size
    bound = browser_size_bound(len(data["neurons"]), len(LANGS), TOP_K, WINDOW, n_bins=N_BINS)
    assert size <= bound
    assert bound < 10 * size  # a bound, not a ceiling nobody could reach


def test_write_browser_takes_a_file_name_and_refuses_missing_keys(data, tmp_path):
    assert write_browser(data, tmp_path / "x.html") == tmp_path / "x.html"
    assert (tmp_path / "x.html").stat().st_size > 0
    with pytest.raises(MlingualityError, match="contexts"):
        broken = {
            **data,
            "neurons": [{k: v for k, v in data["neurons"][0].items() if k != "contexts"}],
        }
        write_browser(broken, tmp_path)
    with pytest.raises(MlingualityError, match="langs"):
        write_browser({k: v for k, v in data.items() if k != "langs"}, tmp_path)


# --- the page in headless Chromium ---


@pytest.fixture(scope="module")
def browser():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        reason = f"no {', '.join(missing)}: apt-get install chromium chromium-driver; pip install selenium"
        if os.environ.get("CI"):
            pytest.fail(f"browser tests in CI: {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1100")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def loaded(browser, page):
    browser.get_log("browser")  # drain: each test reads only its own page load's messages
    browser.get(page.as_uri())  # a fresh load: table in data order, no filter, no card drawn
    return browser


def _visible_cards(driver) -> int:
    return driver.execute_script(
        "return [...document.querySelectorAll('section.card')]"
        ".filter((c) => getComputedStyle(c).display !== 'none').length"
    )


def _count(driver) -> int:
    return int(driver.find_element("id", "count").text)


def test_the_page_loads_without_errors_or_requests(loaded, data):
    severe = [entry for entry in loaded.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []
    assert loaded.execute_script("return performance.getEntriesByType('resource').length") == 0
    rows = loaded.execute_script("return document.querySelectorAll('#neurons tbody tr').length")
    assert rows == len(data["neurons"])  # the script ran to the end
    assert loaded.title == "synthetic <run> & co — neurons"


def test_a_card_per_neuron_drawn_lazily(loaded, data):
    n = len(data["neurons"])
    ids = loaded.execute_script(
        "return [...document.querySelectorAll('section.card')].map((c) => c.id)"
    )
    assert len(ids) == n and len(set(ids)) == n
    first = data["neurons"][0]
    assert ids[0] == f"L{first['layer']}N{first['neuron']}" and ids[36] == f"{ids[0]}-2"
    drawn = loaded.execute_script("return document.querySelectorAll('section.card.done').length")
    assert 0 < drawn < n
    assert _visible_cards(loaded) == _count(loaded) == n


def test_the_filters_hide_rows_and_cards(loaded, data):
    from selenium.webdriver.support.ui import Select

    neurons = data["neurons"]
    language, kind = (
        Select(loaded.find_element("id", "f-lang")),
        Select(loaded.find_element("id", "f-set")),
    )
    for lang in LANGS:
        language.select_by_value(lang)
        expected = sum(n["lang"] == lang for n in neurons)
        assert _visible_cards(loaded) == _count(loaded) == expected
    kind.select_by_value("random")
    assert _count(loaded) == sum(n["lang"] == LANGS[-1] and n["set"] == "random" for n in neurons)
    language.select_by_value("")
    kind.select_by_value("")
    assert _visible_cards(loaded) == _count(loaded) == len(neurons)

    layer = neurons[5]["layer"]
    loaded.find_element("id", "f-layer").send_keys(str(layer))
    assert _visible_cards(loaded) == _count(loaded) == sum(n["layer"] == layer for n in neurons)
    loaded.find_element("id", "f-layer").clear()
    loaded.find_element("id", "f-layer").send_keys(f"0-{layer}")
    assert _count(loaded) == sum(n["layer"] <= layer for n in neurons)
    loaded.execute_script("const f = document.getElementById('f-layer'); f.value = '';")

    loaded.find_element("id", "f-token").send_keys("привет")
    expected = sum(any("привет" in t.lower() for t, _, _ in n["promoted"]) for n in neurons)
    assert 0 < expected < len(neurons)
    assert _visible_cards(loaded) == _count(loaded) == expected
    rows = loaded.execute_script(
        "return [...document.querySelectorAll('#neurons tbody tr')]"
        ".filter((r) => r.style.display !== 'none').length"
    )
    assert rows == expected


def test_sorting_by_layer_orders_the_rows(loaded, data):
    def layers():
        return loaded.execute_script(
            "return [...document.querySelectorAll('#neurons tbody tr')]"
            ".map((r) => Number(r.cells[2].textContent))"
        )

    assert layers() == [n["layer"] for n in data["neurons"]]  # data order, not sorted yet
    assert layers() != sorted(layers())
    header = loaded.find_element("css selector", 'th[data-key="layer"]')
    header.click()
    assert layers() == sorted(n["layer"] for n in data["neurons"])
    header.click()
    assert layers() == sorted((n["layer"] for n in data["neurons"]), reverse=True)
    assert "desc" in header.get_attribute("class")


def test_a_row_opens_its_card_with_the_tricky_tokens(loaded, data):
    from selenium.webdriver.support.ui import WebDriverWait

    first = data["neurons"][0]
    card_id = f"L{first['layer']}N{first['neuron']}"
    last = loaded.find_element(
        "id", f"L{data['neurons'][-1]['layer']}N{data['neurons'][-1]['neuron']}"
    )
    assert "done" not in last.get_attribute("class")  # far below: not drawn yet
    loaded.execute_script("document.querySelector('#neurons tbody tr[data-i=\"39\"]').click()")
    assert "done" in last.get_attribute("class")

    loaded.find_element("css selector", '#neurons tbody tr[data-i="0"]').click()
    card = loaded.find_element("id", card_id)
    text = card.text
    assert text.startswith(
        f"L{first['layer']} N{first['neuron']} — {first['lang']} (selected, lape 0.123)"
    )
    for shown in ("</script>", "<!--", "&", "<b>", "\u00b7Привет", "\u00b7हिन्दी", "\u0120hello"):
        assert shown in text, shown
    assert "\u2581" not in text  # SentencePiece's space mark shown as a light dot
    # one outlined peak token a context; only the own language's contexts drawn until opened
    assert len(card.find_elements("css selector", ".t.mx")) == TOP_K
    card.find_element("css selector", 'details[data-lang="ru"] summary').click()
    WebDriverWait(loaded, 10).until(  # the toggle event comes as a task of its own
        lambda _: len(card.find_elements("css selector", ".t.mx")) > TOP_K
    )
    assert len(card.find_elements("css selector", ".t.mx")) == 2 * TOP_K
    assert "\u00b7мир" in card.find_element("css selector", 'details[data-lang="ru"]').text
    assert card.find_elements("css selector", ".hist svg rect")
    assert (
        loaded.execute_script(
            f"return document.getElementById('{card_id}').getBoundingClientRect().top"
        )
        < 700
    )
    assert [e for e in loaded.get_log("browser") if e["level"] == "SEVERE"] == []

    if os.environ.get("MLINGUALITY_SCREENSHOT_DIR"):
        folder = Path(os.environ["MLINGUALITY_SCREENSHOT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        loaded.set_window_size(1400, 1500)
        loaded.execute_script(f"document.getElementById('{card_id}').scrollIntoView()")
        loaded.save_screenshot(str(folder / "neuron-browser.png"))


def test_gpt2_tokens_show_their_spaces(browser, tmp_path):
    """No "\u2581" on the page: GPT-2's byte-level marks ("\u0120" space, "\u010a" newline)."""
    data = synthetic_data()
    gpt2 = ["\u0120hello", "\u0120world", "\u010a", "<", "\u0120", "ly"]
    for neuron in data["neurons"]:
        for contexts in neuron["contexts"].values():
            for context in contexts:
                context["tokens"] = [gpt2[j % len(gpt2)] for j in range(len(context["tokens"]))]
        neuron["promoted"] = [[t, 1.0, None] for t in gpt2]
        neuron["suppressed"] = [[t, -1.0, None] for t in gpt2]
    browser.get(write_browser(data, tmp_path).as_uri())
    browser.find_element("css selector", '#neurons tbody tr[data-i="0"]').click()
    text = browser.find_element("css selector", "section.card").text
    assert "\u00b7hello\u00b7world\u21b5<\u00b7ly" in text
    assert "\u0120" not in text and "\u010a" not in text

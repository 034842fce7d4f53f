"""The ``examples`` stage in a run: cards for the selected, random and listed neurons, back in
Python (``Run.neuron``), in the shell (``mlinguality neurons``) and reused from the cache."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mlinguality.errors import MlingualityError
from mlinguality.run.results import Run
from mlinguality.run.runner import run_experiment
from tests.run.test_runner import _config, _write_corpus


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    _write_corpus(root / "corpus.jsonl")
    config = _config(root, tracking={"wandb": "disabled"}, ablation={"enabled": False})
    config = config.with_overrides(["examples.neurons=L0N1,3:63", "examples.top_k=3"])
    return config, run_experiment(config)


def test_cards_cover_the_selected_random_and_listed_neurons(run):
    config, run_dir = run
    record = json.loads((run_dir / "neurons" / "neurons.json").read_text())
    selected = pd.read_csv(run_dir / "selected_neurons.csv")
    kinds = [entry["set"] for entry in record["neurons"]]
    assert kinds.count("selected") == len(selected)
    assert kinds.count("random") == len(selected)  # one activity-matched set per language
    assert [(e["layer"], e["neuron"]) for e in record["neurons"] if e["set"] == "listed"] == [
        (0, 1),
        (3, 63),
    ]
    per_lang = selected.groupby("lang").size().to_dict()
    randoms = pd.Series([e["lang"] for e in record["neurons"] if e["set"] == "random"])
    assert randoms.value_counts().to_dict() == per_lang
    for entry in record["neurons"]:
        for contexts in entry["contexts"].values():
            assert len(contexts) <= 3
    n_select = len(json.loads((run_dir / "corpus.json").read_text())["example_ids"]["select"])
    assert record["n_examples"] == min(config.examples.limit, n_select)


def test_run_load_gives_cards_and_tables(run):
    _, run_dir = run
    loaded = Run.load(run_dir)
    first = loaded.neuron_cards("selected")[0]
    card = loaded.neuron(first.layer, first.neuron)
    assert card.data["set"] == "selected"
    assert card._repr_html_().startswith("<div")
    assert len(loaded.neuron_table()) == len(loaded.neuron_cards())
    table = loaded.output_language
    assert set(table["set"]) == {"selected", "random"}
    have = {(c.layer, c.neuron) for c in loaded.neuron_cards()}
    missing = next(n for n in range(64) if (0, n) not in have)
    with pytest.raises(MlingualityError, match=f"no card for L0 N{missing} "):
        loaded.neuron(0, missing)


def test_the_neurons_command_prints_cards(run, capsys):
    import mlinguality.cli.main as cli

    _, run_dir = run
    with pytest.raises(SystemExit) as exit_:
        cli.main(["neurons", str(run_dir), "--set", "listed", "--top", "2"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("L0 N1 (listed)") and "L3 N63 (listed)" in out and "[[" in out


def test_another_top_k_recomputes_only_the_examples_stage(run):
    config, run_dir = run
    again = run_experiment(config.with_overrides(["examples.top_k=2"]))
    origins = {k: v["origin"] for k, v in json.loads((again / "stages.json").read_text()).items()}
    assert origins["examples"] == "computed"
    assert all(origins[k].startswith("cache:") for k in ("collect", "score", "select"))

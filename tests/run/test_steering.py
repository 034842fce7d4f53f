"""The steering stage of a run and ``mlinguality steer`` on a tiny model and a tiny corpus."""

from __future__ import annotations

import csv
import json

import pytest

from mlinguality.errors import MlingualityError
from mlinguality.run.steps.steer import read_prompt_file
from tests.run.test_runner import _config, _write_corpus
from tests.wandb_reader import read_offline_run

STEERING = {
    "enabled": True,
    "pairs": "en-fr",
    "alphas": "[2.0]",
    "n_prompts": 2,
    "prompt_words": 2,
    "max_new_tokens": 3,
    "n_random": 1,
}


def _rows(path):
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def steered_run(tmp_path_factory):
    from mlinguality.run.runner import run_experiment

    root = tmp_path_factory.mktemp("steer")
    _write_corpus(root / "corpus.jsonl")
    config = _config(root, ablation={"enabled": False})
    config = config.with_overrides([f"steering.{key}={value}" for key, value in STEERING.items()])
    return root, config, run_experiment(config)


def test_run_with_a_steering_section_writes_the_stage(steered_run):
    _, config, run_dir = steered_run
    out = run_dir / "steering"
    rows = _rows(out / "steering.csv")
    assert len(rows) == (1 + 1 + 1) * 2  # none, steer, random; 2 prompts
    assert {r["condition"] for r in rows} == {"none", "steer", "random"}
    held_out = json.loads((run_dir / "corpus.json").read_text())["example_ids"]["eval"]
    assert len(held_out) >= 2
    english = {line.split()[0] for line in [r["prompt"] for r in rows]}
    assert all(len(r["prompt"].split()) <= 2 for r in rows) and english
    summary = _rows(out / "steering_summary.csv")
    assert [s["condition"] for s in summary] == ["none", "steer", "random"]
    assert float(summary[1]["id_accuracy_target"]) >= 0.0
    assert {r["lang"] for r in _rows(out / "identifier.csv")} == set(config.corpus.langs)
    assert (out / "steering_alpha.png").exists() and (out / "steering_heatmap.png").exists()
    stages = json.loads((run_dir / "stages.json").read_text())
    assert stages["steer"]["origin"] == "computed"
    run = read_offline_run(next((run_dir / "wandb").glob("offline-run-*")))
    assert run.summary["steering/summary/_type"] == "table-file"
    assert run.summary["steering/samples/_type"] == "table-file"
    assert "steering/share_target_steer" in run.summary
    assert isinstance(run.summary["steering/alpha"], (int, float))  # one key, one meaning
    assert run.summary["steering/plot_alpha/_type"] == "image-file"


def test_steer_command_on_a_finished_run_with_a_prompt_file(steered_run, tmp_path, capsys):
    from mlinguality.cli.main import main

    _, _, run_dir = steered_run
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("fr\tAu commencement\nLa paix\n", encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_code:
        main(
            [
                "steer",
                str(run_dir),
                "--from",
                "fr",
                "--to",
                "ru,en",
                "--alpha",
                "1",
                "--prompts",
                str(prompts),
                "--out",
                str(out),
                "--wandb",
                "disabled",
                "--set",
                "steering.n_random=0",
            ]
        )
    assert exit_code.value.code == 0
    rows = _rows(out / "steering.csv")
    assert {(r["target"], r["condition"]) for r in rows} == {
        ("ru", "none"),
        ("ru", "steer"),
        ("en", "none"),
        ("en", "steer"),
    }
    assert [r["prompt"] for r in rows[:2]] == ["Au commencement", "La paix"]
    assert "steering_summary.csv" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        main(["steer", str(tmp_path), "--from", "en", "--to", "fr"])
    assert bad.value.code == 2


def test_prompt_file_languages(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("en\tIn the\nfr\tAu\nBoth\n", encoding="utf-8")
    assert read_prompt_file(path, ["en", "fr"]) == {"en": ["In the", "Both"], "fr": ["Au", "Both"]}
    tagged = tmp_path / "tagged.tsv"
    tagged.write_text("en\tIn the\n", encoding="utf-8")
    with pytest.raises(MlingualityError, match="no prompt for source language 'ru'"):
        read_prompt_file(tagged, ["ru"])


def test_steering_directions_add_method_rows_beside_the_neuron_rows(steered_run, tmp_path):
    """``steering.directions: true`` adds direction and random-direction rows (one layer each)
    to the same tables, the means file, the methods plot and per-layer headline keys; the
    neuron rows are those of the run without directions."""
    from mlinguality.cli.main import main

    _, _, run_dir = steered_run
    out = tmp_path / "out"
    args = ["steer", str(run_dir), "--from", "en", "--to", "fr", "--out", str(out)]
    args += ["--wandb", "disabled", "--set", "steering.directions=true"]
    args += ["--set", "steering.direction_layers=[-1]", "--set", "steering.direction_alphas=[4.0]"]
    with pytest.raises(SystemExit) as exit_code:
        main(args)
    assert exit_code.value.code == 0
    rows = _rows(out / "steering.csv")
    methods = [r["method"] for r in rows]
    assert set(methods) == {"none", "neurons", "random-neurons", "direction", "random-direction"}
    assert methods.count("direction") == methods.count("random-direction") == 2  # 2 prompts
    layers = {r["layer"] for r in rows if r["method"].endswith("direction")}
    assert len(layers) == 1 and {r["layer"] for r in rows if r["method"] == "neurons"} == {""}
    assert {r["line_pass"] for r in rows} <= {"True", "False"}
    before = _rows(run_dir / "steering" / "steering.csv")
    # the neuron rows are unchanged by directions (the run's alpha 2.0, the same prompts)
    assert [r["text"] for r in rows if r["method"] in ("none", "neurons")] == [
        r["text"] for r in before if r["condition"] in ("none", "steer")
    ]
    summary = _rows(out / "steering_summary.csv")
    assert [s["method"] for s in summary] == [
        "none",
        "neurons",
        "random-neurons",
        "direction",
        "random-direction",
    ]
    assert all(0.0 <= float(s["line_pass_rate"]) <= 1.0 for s in summary)
    assert (out / "steering_methods.png").exists() and (
        out / "direction_means.safetensors"
    ).exists()
    headline = json.loads((out / "steering.json").read_text())["headline"]
    assert headline["direction_alpha"] == 4.0
    assert f"share_target_direction_L{layers.pop()}" in headline
    assert "line_pass_rate_steer" in headline

"""report.md's numbers against the CSVs and JSON it reads, and a report rebuilt from the folder."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from mlinguality.run.report import RunFiles, markdown_table, write_report
from mlinguality.run.runner import run_experiment
from tests.run.test_runner import LANGS, _config, _write_corpus


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    _write_corpus(root / "corpus.jsonl")
    config = _config(root, tracking={"wandb": "disabled"}, plots=False)
    return config, run_experiment(config)


def _table(report: str, heading: str) -> list[list[str]]:
    """The cells of the first Markdown table after ``heading``."""
    lines = report.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return [row for row in rows[2:]]  # header and rule dropped


def test_ablation_table_is_the_json_delta(run):
    _, run_dir = run
    record = json.loads((run_dir / "ablation.json").read_text())
    rows = _table((run_dir / "report.md").read_text(), "## Ablation: change in bits per byte")
    assert [row[0].split(" (")[0] for row in rows] == record["rows"]
    for row, cells in zip(rows, record["delta_bits_per_byte"], strict=True):
        assert row[1:] == ["n/a" if v is None else format(v, "+.4f") for v in cells]


def test_neuron_counts_are_the_selectivity_csv(run):
    config, run_dir = run
    chosen = pd.read_csv(run_dir / "selectivity.csv")
    rows = _table((run_dir / "report.md").read_text(), "## Language-specific neurons")
    for row in rows:
        layer = int(row[0])
        expected = [
            int(chosen[(chosen["lang"] == lang) & (chosen["layer"] == layer)]["n_selected"].iloc[0])
            for lang in config.corpus.langs
        ]
        assert [int(cell) for cell in row[1:]] == expected
    headline = (run_dir / "report.md").read_text().split("## Headline", 1)[1]
    for lang in LANGS:
        total = int(chosen[chosen["lang"] == lang]["n_selected"].sum())
        assert f"{lang} {total}" in headline


def test_profile_table_is_the_mean_over_pairs(run):
    _, run_dir = run
    profile = pd.read_csv(run_dir / "layer_profile.csv")
    pairs = profile[~profile["control"].astype(bool)]
    rows = _table((run_dir / "report.md").read_text(), "## Per-layer profile")
    header = (run_dir / "report.md").read_text().split("## Per-layer profile", 1)[1]
    columns = next(line for line in header.splitlines() if line.startswith("| layer"))
    names = [cell.strip() for cell in columns.strip("|").split("|")][1:]
    for row in rows:
        layer = int(row[0])
        for name, cell in zip(names, row[1:], strict=True):
            if name.endswith(" floor"):
                continue
            mean = pairs[(pairs["layer"] == layer) & (pairs["metric"] == name)]["value"].mean()
            assert cell == format(mean, ".3f"), (layer, name)


def test_u_shape_headline_is_the_csv_mean(run):
    config, run_dir = run
    u_shape = pd.read_csv(run_dir / "u_shape.csv")
    first = config.selectivity.metrics[0]
    rows = u_shape[(u_shape["metric"] == first) & ~u_shape["control"].astype(bool)]
    headline = (run_dir / "report.md").read_text().split("## Headline", 1)[1]
    assert f"**{rows['u'].mean():.3f}**" in headline
    assert f"largest permutation p over pairs: {rows['p_value'].max():.3f}" in headline


def test_a_report_rebuilt_from_the_folder_is_the_same(run, tmp_path):
    config, run_dir = run
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    (copy / "report.md").unlink()
    stages = json.loads((run_dir / "stages.json").read_text())
    origins = {name: entry["origin"] for name, entry in stages.items()}
    summary = json.loads((run_dir / "summary.json").read_text())
    write_report(config, copy, stages, origins, summary["perf"]["total_s"])
    original = (run_dir / "report.md").read_text().replace(str(run_dir), str(copy))
    assert (copy / "report.md").read_text() == original


def test_sections_of_stages_that_did_not_run_are_left_out(run, tmp_path):
    config, run_dir = run
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    for name in ("ablation.json", "ablation.csv"):
        (copy / name).unlink()
    assert RunFiles.read(copy).ablation is None
    stages = json.loads((run_dir / "stages.json").read_text())
    stages.pop("ablate")
    write_report(config, copy, stages, {}, 1.0)
    report = (copy / "report.md").read_text()
    assert "## Ablation" not in report and "## Per-layer profile" in report


def test_markdown_table_writes_missing_values_as_n_a():
    frame = pd.DataFrame({"a": [1.5, None], "b": ["x", "y"]})
    assert markdown_table(frame) == [
        "| a   | b   |",
        "|-----|-----|",
        "| 1.5 | x   |",
        "| n/a | y   |",
    ]

"""report.md's numbers against the CSVs and JSON it reads, and a report rebuilt from the folder."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest

from mlinguality.ablation.outputs import CONTROL_LABELS
from mlinguality.run.markdown import markdown_table
from mlinguality.run.report import RunFiles, write_report
from mlinguality.run.runner import run_experiment
from mlinguality.run.summary import wandb_payload
from mlinguality.run.verdicts import (
    conclusion,
    verdicts,
)
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
    expected = [
        CONTROL_LABELS.get(row) or f"{row} ({record['n_neurons'].get(row, '?')})"
        for row in record["rows"]
    ]
    assert [row[0] for row in rows] == expected
    assert expected[-2:] == ["count-matched random", "activity-matched random"]
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
    headline = _section((run_dir / "report.md").read_text(), "## Headline")
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
            if name.endswith(" (same-language floor)"):
                continue
            mean = pairs[(pairs["layer"] == layer) & (pairs["metric"] == name)]["value"].mean()
            assert cell == format(mean, ".3f"), (layer, name)


def test_first_metric_u_leads_the_u_shape_section_not_the_headline(run):
    config, run_dir = run
    u_shape = pd.read_csv(run_dir / "u_shape.csv")
    first = config.selectivity.metrics[0]
    rows = u_shape[(u_shape["metric"] == first) & ~u_shape["control"].astype(bool)]
    report = (run_dir / "report.md").read_text()
    lead = _section(report, "### U-shape by metric and pair").strip().split("\n\n")[0]
    assert lead.startswith(f"`{first}` (the first metric), averaged over pairs: U ")
    assert f"U {rows['u'].mean():.3f} " in lead
    assert f"largest permutation p over pairs {rows['p_value'].max():.3f}" in lead
    assert "Not evidence about language by itself" in lead  # topk ranks neurons
    assert f"U {rows['u'].mean():.3f}" not in _section(report, "## Headline")


def _section(report: str, heading: str) -> str:
    """The text from ``heading`` up to the next heading of any level."""
    body = report.split(heading + "\n", 1)[1]
    return re.split(r"^#+ ", body, maxsplit=1, flags=re.M)[0]


def test_headline_is_the_verdicts_then_a_conclusion_then_the_evidence(run):
    _, run_dir = run
    summary = json.loads((run_dir / "summary.json").read_text())
    found = summary["verdicts"]
    assert list(found) == ["u_shape", "above_floor", "ablation"]
    # the verdicts in summary.json are those the rules give on the summary's own numbers
    assert {k: v["verdict"] for k, v in found.items()} == {
        k: v.verdict for k, v in verdicts(summary).items()
    }
    headline = _section((run_dir / "report.md").read_text(), "## Headline")
    blocks = headline.strip().split("\n\n")
    assert blocks[0] == "Verdicts:"
    assert blocks[1].splitlines() == [
        f"- {v['claim']}: **{v['verdict']}** — {v['reason']}." for v in found.values()
    ]
    assert blocks[2] == f"**Conclusion:** {conclusion(found)}"
    assert "\n" not in blocks[2]  # one line
    assert blocks[3] == "Evidence:"
    # the W&B mirror logs each verdict beside the numbers
    flat = wandb_payload(run_dir, summary)["summary"]
    assert {key: flat[f"verdicts/{key}"] for key in found} == {
        key: entry["verdict"] for key, entry in found.items()
    }
    evidence = blocks[4].splitlines()
    assert [line.split(":", 1)[0] for line in evidence[:3]] == [
        "- U shape",
        "- Every layer",
        f"- Ablation ({json.loads((run_dir / 'ablation.json').read_text())['mode']}, positions "
        "`skip_first`)",
    ]
    for line, entry in zip(evidence, found.values(), strict=False):
        assert line.endswith(f"Rule: {entry['rule']}.")


def test_evidence_numbers_are_the_files(run):
    _, run_dir = run
    summary = json.loads((run_dir / "summary.json").read_text())
    u_shape = pd.read_csv(run_dir / "u_shape.csv")
    profile = pd.read_csv(run_dir / "layer_profile.csv")
    dominance = json.loads((run_dir / "ablation.json").read_text())["dominance"]
    evidence = _section((run_dir / "report.md").read_text(), "## Headline").split("Evidence:")[1]
    verse = u_shape[(u_shape["metric"] == "verse_distance") & ~u_shape["control"].astype(bool)]
    for row in verse.itertuples():
        cell = (
            f"{row.pair} {row.u_over_floor:.2f} "
            f"[{row.u_over_floor_ci_low:.2f}, {row.u_over_floor_ci_high:.2f}]"
        )
        assert cell in evidence
    distance = profile[(profile["metric"] == "verse_distance") & ~profile["control"]]
    n_layers = profile["layer"].nunique()
    assert summary["selectivity"]["n_layers"] == n_layers
    for pair, group in distance.groupby("pair"):
        assert f"{pair} {int((group['q_value'] < 0.05).sum())} of {n_layers}" in evidence
    assert (
        f"own minus activity-matched random: **{dominance['own_minus_random_activity']:+.4f}**"
        in (evidence)
    )
    assert f"count-matched random control {dominance['random_rise']:+.4f}" in evidence


# --- one name per control -------------------------------------------------------------------


def test_each_control_has_one_name_in_the_report(run):
    _, run_dir = run
    report = (run_dir / "report.md").read_text()
    for synonym in (
        "random (matched)",
        "random (count)",
        "random (activity)",
        "random_activity",
        "same-language control",
        "matched random sets",
    ):
        assert synonym not in report, synonym
    # "count-matched" and "activity-matched" only ever as "... random"
    assert re.findall(r"(count|activity)-matched(?! random)", report) == []
    assert re.findall(r"(?<![-\w])matched random", report) == []
    # "floor" only as the same-language floor or in the statistic "U over floor"
    rest = report.replace("same-language floor", "").replace("U over floor", "")
    assert "floor" not in rest.lower()
    assert report.count("count-matched random") >= 2  # headline and ablation table
    assert report.count("activity-matched random") >= 3  # verdict, evidence and table


def test_excess_u_is_dropped_where_it_is_not_a_shape(run):
    _, run_dir = run
    profile = pd.read_csv(run_dir / "layer_profile.csv")
    u_shape = pd.read_csv(run_dir / "u_shape.csv")
    report = (run_dir / "report.md").read_text()
    assert "`dropped`" in _section(report, "### U-shape by metric and pair")  # the caption
    rows = _table(report, "### U-shape by metric and pair")
    n_layers = profile["layer"].nunique()
    edges = [i for i in range(n_layers) if not 0.25 <= (i + 0.5) / n_layers <= 0.75]
    for cells, row in zip(rows, u_shape.itertuples(), strict=True):
        group = profile[(profile["metric"] == row.metric) & (profile["pair"] == row.pair)]
        group = group.sort_values("layer")
        if group["null_mean"].isna().all():  # no permutations (verse distance): no excess
            assert cells[6] == "n/a"
            continue
        excess = (group["value"] - group["null_mean"]).to_numpy()
        at_edges = excess[edges].mean()
        middle = excess[[i for i in range(n_layers) if i not in edges]].mean()
        shape = at_edges > 0 and middle > 0
        assert cells[6] == (format(row.u_excess, ".3f") if shape else "dropped"), row


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


def test_what_the_neurons_are_is_the_cards_and_the_output_test(run):
    _, run_dir = run
    record = json.loads((run_dir / "neurons" / "neurons.json").read_text())
    report = (run_dir / "report.md").read_text()
    rows = _table(report, "## What the neurons are")
    expected = []
    for lang in record["langs"]:
        mine = [e for e in record["neurons"] if e["set"] == "selected" and e["lang"] == lang]
        mine.sort(key=lambda e: e["score"])  # LAPE: the lowest entropy is the most specific
        expected += [(lang, f"L{e['layer']} N{e['neuron']}") for e in mine[:3]]
    assert [(row[0], row[1]) for row in rows] == expected
    output = pd.read_csv(run_dir / "neurons" / "output_language.csv")
    after = report.split("Do a language's neurons write that language?", 1)[1]
    for row in _table(after, "2,000 draws):"):
        lang = row[0]
        mine = output[output["lang"] == lang].set_index("set")
        assert row[2] == format(mine.loc["selected", "own_share"], ".3f")
        assert row[4] == format(mine.loc["random", "own_share"], ".3f")
    assert (run_dir / "neurons.html").stat().st_size > 10_000  # the browser, from the same file


def test_every_shipped_sweep_metric_is_a_key_the_summary_logs(run):
    """A sweep's ``metric.name`` must be a key of the flattened summary W&B receives, or the
    sweep optimises nothing (rate_mode.yaml: the own-language rise minus the activity-matched
    control, a difference, not the ratio ``diagonal_dominance``)."""
    from pathlib import Path

    import yaml

    from mlinguality.run.summary import flatten

    _, run_dir = run
    logged = flatten(json.loads((run_dir / "summary.json").read_text()))
    folder = Path(__file__).resolve().parents[2] / "experiments" / "sweeps"
    sweeps = sorted(folder.glob("*.yaml"))
    assert sweeps
    for path in sweeps:
        metric = yaml.safe_load(path.read_text())["metric"]["name"]
        assert metric in logged, (path.name, metric)
    rate_mode = yaml.safe_load((folder / "rate_mode.yaml").read_text())
    assert rate_mode["metric"]["name"] == "ablation/own_minus_random_activity"

"""Local sweeps: W&B sweep files, grid/random expansion, agent-style commands, the sweep table."""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from mlinguality.errors import MlingualityError
from mlinguality.run.config import RunConfig
from mlinguality.run.overrides import agent_overrides
from mlinguality.run.sweep import (
    agent_command,
    expand,
    load_sweep,
    parse_sweep,
    run_name,
    run_sweep,
)

REPO = Path(__file__).resolve().parents[2]


def _grid(**parameters):
    return parse_sweep(
        {"program": "p.py", "method": "grid", "parameters": parameters, "command": ["${args}"]}
    )


def test_grid_expands_to_the_exact_product():
    spec = _grid(
        **{
            "selectivity.top_rate": {"values": [0.005, 0.01, 0.02]},
            "ablation.mode": {"values": ["zero", "mean"]},
            "corpus.langs": {"values": [["en", "ru"], ["en", "hi", "zh"]]},
            "model.spec": {"value": "tiny"},
        }
    )
    runs = expand(spec)
    expected = [
        {"selectivity.top_rate": r, "ablation.mode": m, "corpus.langs": langs, "model.spec": "tiny"}
        for r in (0.005, 0.01, 0.02)
        for m in ("zero", "mean")
        for langs in (["en", "ru"], ["en", "hi", "zh"])
    ]
    assert runs == expected  # every combination once, first parameter slowest
    assert expand(spec, count=4) == expected[:4]


def test_random_draws_within_the_distributions_and_repeat_with_the_seed():
    spec = parse_sweep(
        {
            "program": "p.py",
            "method": "random",
            "run_cap": 200,
            "parameters": {
                "selectivity.top_rate": {
                    "distribution": "log_uniform_values",
                    "min": 0.001,
                    "max": 0.1,
                },
                "ablation.n_random": {"min": 1, "max": 3},
                "ablation.mode": {"values": ["zero", "mean"], "probabilities": [0.9, 0.1]},
                "corpus.eval_fraction": {"min": 0.2, "max": 0.8},
            },
        }
    )
    runs = expand(spec)
    assert len(runs) == 200
    rates = [run["selectivity.top_rate"] for run in runs]
    assert all(0.001 <= r <= 0.1 for r in rates)
    # log-uniform: about half the draws fall below the geometric midpoint 0.01
    assert 70 < sum(r < 0.01 for r in rates) < 130
    assert {run["ablation.n_random"] for run in runs} == {1, 2, 3}
    assert all(isinstance(run["ablation.n_random"], int) for run in runs)
    assert 150 < sum(run["ablation.mode"] == "zero" for run in runs) < 200
    assert all(0.2 <= run["corpus.eval_fraction"] <= 0.8 for run in runs)
    assert expand(spec, seed=0) == runs and expand(spec, seed=1) != runs
    assert len(expand(spec, count=3)) == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"method": "bayes"}, "method 'bayes' needs the W&B sweep server"),
        ({"method": "hyperband"}, "not a valid W&B sweep: 'hyperband' is not one of"),
        ({"program": None}, None),
        ({"metric": {"name": "x", "goal": "maximise"}}, "not a valid W&B sweep: 'maximise'"),
        (
            {"method": "random", "parameters": {"a": {"min": 1.0, "max": 0.5}}},
            "not a valid W&B sweep: parameters.a: min 1.0 is not less than max 0.5",
        ),
        (
            {"parameters": {"a": {"min": 0.0, "max": 1.0}}},
            "parameters.a: grid sweeps need value or values",
        ),
        (
            {"method": "random", "parameters": {"a": {"distribution": "beta", "a": 2}}},
            "parameters.a: distribution 'beta'",
        ),
        (
            {"parameters": {"s": {"parameters": {"top_rate": {"value": 1}}}}},
            "parameters.s: nested parameters",
        ),
        ({"command": ["${program}"]}, "command: pass the parameters with one of ${args}"),
        ({"early_terminat": {}}, "not a valid W&B sweep: Additional properties are not allowed"),
    ],
)
def test_bad_sweep_files(data, message):
    base = {"program": "p.py", "method": "grid", "parameters": {"a": {"values": [1]}}}
    base.update(data)
    if base["program"] is None:
        del base["program"]
        message = "program: missing, but the command uses ${program}"
    with pytest.raises(MlingualityError) as error:
        parse_sweep(base)
    assert str(error.value).startswith(message)


def test_random_without_count_asks_for_one():
    spec = parse_sweep(
        {"program": "p.py", "method": "random", "parameters": {"a": {"values": [1]}}}
    )
    with pytest.raises(MlingualityError, match="--count"):
        expand(spec)


def test_agent_command_is_what_the_program_parses():
    """The argv built with wandb's own formatting parses back into the intended config."""
    spec = parse_sweep(
        {
            "program": "experiments/run.py",
            "method": "grid",
            "parameters": {"a": {"value": 1}},
            "command": [
                "${env}",
                "${interpreter}",
                "${program}",
                "experiments/configs/paper.yaml",
                "${args}",
            ],
        }
    )
    params = {"selectivity.top_rate": 0.02, "ablation.mode": "mean", "corpus.langs": ["en", "ru"]}
    argv = agent_command(spec, params, {"tracking.group": "g", "name": "s-000"})
    assert argv[:4] == [
        "/usr/bin/env",
        sys.executable,
        "experiments/run.py",
        "experiments/configs/paper.yaml",
    ]
    assert "--selectivity.top_rate=0.02" in argv
    config = RunConfig.load(argv[3]).with_overrides(agent_overrides(argv[4:]))
    assert config.selectivity.top_rate == 0.02
    assert config.ablation.mode == "mean"
    assert config.corpus.langs == ["en", "ru"]
    assert config.tracking.group == "g" and config.name == "s-000"


def test_args_without_hyphens_reach_the_config(tmp_path, capsys):
    """W&B accepts ${args_no_hyphens}; `mlinguality run` reads section.key=value as overrides."""
    import mlinguality.cli.main as cli

    spec = parse_sweep(
        {
            "method": "grid",
            "parameters": {"a": {"value": 1}},
            "command": ["mlinguality", "run", "${args_no_hyphens}"],
        }
    )
    argv = agent_command(spec, {"selectivity.top_rate": 0.03, "corpus.langs": ["en", "ru"]}, {})
    assert argv[:4] == [sys.executable, "-m", "mlinguality", "run"]
    assert argv[4] == "selectivity.top_rate=0.03"
    with pytest.raises(SystemExit):
        cli.main([*argv[3:], "--dry-run"])
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["selectivity"]["top_rate"] == 0.03 and shown["corpus"]["langs"] == ["en", "ru"]


def test_run_names_come_from_the_swept_values():
    params = {"selectivity.top_rate": 0.005, "ablation.mode": "mean"}
    assert run_name("rate_mode", 7, params) == "rate_mode-007-top_rate=0.005-mode=mean"
    RunConfig().with_overrides([f"name={run_name('m', 0, {'model.spec': 'Qwen/Q-0.5B'})}"])


@pytest.mark.parametrize("path", sorted((REPO / "experiments" / "sweeps").glob("*.yaml")), ids=str)
def test_shipped_sweeps_expand_into_valid_configs(path):
    """Every run of every shipped sweep parses into a valid RunConfig, as the agent would pass it,
    with the installed console script (no repository path in the command)."""
    spec = load_sweep(path)
    assert spec.metric_name and spec.command[:2] == ["mlinguality", "run"]
    runs = expand(spec, count=None if spec.method == "grid" else 5)
    assert len(runs) >= 2
    for params in runs:
        argv = agent_command(spec, params, {})
        RunConfig().with_overrides(agent_overrides(argv[argv.index("run") + 1 :]))


_FAKE_PROGRAM = textwrap.dedent(
    """
    # Stands in for experiments/run.py: parses the agent-style args with the real config code
    # and writes a run folder with a summary.json, without loading any model.
    import json, sys
    from pathlib import Path
    from mlinguality.run.config import RunConfig
    from mlinguality.run.overrides import agent_overrides

    config = RunConfig().with_overrides(agent_overrides(sys.argv[1:]))
    if config.ablation.mode == "mean" and config.selectivity.top_rate > 0.015:
        sys.exit(3)  # a failing run: the sweep records it and goes on
    run_dir = Path(config.output_dir) / f"{config.name}-20260101-000000"
    run_dir.mkdir(parents=True)
    summary = {"selectivity": {"top_rate": config.selectivity.top_rate},
               "ablation": {"mode": config.ablation.mode,
                            "diagonal_dominance": 10 * config.selectivity.top_rate},
               "group": config.tracking.group,
               "wandb": config.tracking.wandb}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    """
)


def test_run_sweep_runs_every_point_and_writes_the_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    (tmp_path / "fake.py").write_text(_FAKE_PROGRAM)
    (tmp_path / "s.yaml").write_text(
        yaml.safe_dump(
            {
                "program": "fake.py",
                "method": "grid",
                "name": "unit",
                "metric": {"name": "ablation/diagonal_dominance", "goal": "maximize"},
                "parameters": {
                    "selectivity.top_rate": {"values": [0.01, 0.02]},
                    "ablation.mode": {"value": "mean"},
                },
                "command": ["${env}", "${interpreter}", "${program}", "${args}"],
            },
            sort_keys=False,
        )
    )
    table = run_sweep(tmp_path / "s.yaml", output_dir=tmp_path / "runs", wandb_mode="disabled")
    rows = list(csv.DictReader(table.open()))
    assert [(r["selectivity.top_rate"], r["ablation.mode"], r["status"]) for r in rows] == [
        ("0.01", "mean", "0"),
        ("0.02", "mean", "3"),
    ]
    group = table.parent.name
    assert group.startswith("sweep-unit-")
    for row in rows[:1]:  # the program saw the sweep's group, mode and folder
        summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
        assert summary["group"] == group and summary["wandb"] == "disabled"
        assert float(row["selectivity/top_rate"]) == float(row["selectivity.top_rate"])
        assert Path(row["run_dir"]).parent == table.parent
    assert rows[1]["run_dir"] == ""
    assert list(rows[0])[:6] == [
        "run",
        "selectivity.top_rate",
        "ablation.mode",
        "status",
        "seconds",
        "ablation/diagonal_dominance",  # the sweep's metric, first after the run's columns
    ]
    assert float(rows[0]["ablation/diagonal_dominance"]) == pytest.approx(0.1)
    assert (table.parent / "sweep.yaml").exists()

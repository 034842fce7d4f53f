"""The stage declaration: what each stage writes is what it declares, and the runner, the cache
and ``stages.json`` follow the list."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mlinguality.run import stages
from mlinguality.run.runner import run_experiment
from tests.run.test_runner import _config, _write_corpus


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    _write_corpus(root / "corpus.jsonl")
    config = _config(root, tracking={"wandb": "disabled"}).with_overrides(
        [
            "steering.enabled=true",
            "steering.n_prompts=2",
            "steering.max_new_tokens=2",
            "steering.alphas=[1.0]",
        ]
    )
    return run_experiment(config)


def test_every_stage_writes_exactly_its_declared_outputs(run_dir):
    record = json.loads((run_dir / "stages.json").read_text())
    assert list(record) == [stage.name for stage in stages.STAGES]
    for stage in stages.STAGES:
        written = {name.split("/")[0] for name in record[stage.name]["files"]}
        assert written == set(stage.outputs), stage.name
    declared = {name for stage in stages.STAGES for name in stage.outputs}
    assert len(declared) == sum(len(stage.outputs) for stage in stages.STAGES)  # no file twice


def test_reads_name_earlier_stages_only():
    seen: set[str] = set()
    for stage in stages.STAGES:
        assert set(stage.reads) <= seen, stage.name
        seen.add(stage.name)


def test_a_declared_stage_is_run_by_the_runner(tmp_path, monkeypatch):
    """Adding a stage is one entry: the runner runs it, records it and caches it."""

    def count(context):
        n = len(json.loads((context.run_dir / "corpus.json").read_text())["example_ids"]["select"])
        (context.run_dir / "count.txt").write_text(str(n))

    extra = stages.Stage("count", count, ("count.txt",), settings=lambda c: {}, reads=("collect",))
    monkeypatch.setattr(stages, "STAGES", (*stages.STAGES[:1], extra))
    _write_corpus(tmp_path / "corpus.jsonl")
    config = _config(tmp_path, tracking={"wandb": "disabled"}, ablation={"enabled": False})
    run_dir = run_experiment(config)
    record = json.loads((run_dir / "stages.json").read_text())
    assert list(record) == ["collect", "count"]
    assert (run_dir / "count.txt").read_text() == "6"  # half of 12 verses select
    assert (tmp_path / "cache" / f"count-{record['count']['key']}" / "count.txt").is_file()
    again = run_experiment(config)
    assert json.loads((again / "stages.json").read_text())["count"]["origin"].startswith("cache:")


def test_a_disabled_stage_is_not_run():
    names = [stage.name for stage in stages.enabled_stages(_config_for_enabled())]
    assert names == ["collect", "score", "select", "examples", "lenses"]  # ablate off, steer off


def _config_for_enabled():
    from mlinguality.run.config import RunConfig

    return RunConfig.from_dict({"ablation": {"enabled": False}})


def test_stage_named():
    assert stages.stage_named("ablate").reads == ("select",)
    with pytest.raises(KeyError):
        stages.stage_named("nope")
    assert dataclasses.is_dataclass(stages.stage_named("collect"))

"""``Run.load``: a run folder back in Python, every view equal to the file it comes from."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mlinguality.errors import MlingualityError
from mlinguality.run.config import RunConfig
from mlinguality.run.results import Run
from mlinguality.run.runner import run_experiment
from tests.run.test_runner import _config, _write_corpus


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    _write_corpus(root / "corpus.jsonl")
    config = _config(root, tracking={"wandb": "disabled"}, plots=False, ablation={"enabled": False})
    return run_experiment(config)


def test_every_view_is_its_file(run_dir):
    run = Run.load(run_dir)
    assert run.config == RunConfig.load(run_dir / "config.yaml")
    assert run.summary == json.loads((run_dir / "summary.json").read_text())
    pd.testing.assert_frame_equal(run.profile, pd.read_csv(run_dir / "layer_profile.csv"))
    pd.testing.assert_frame_equal(run.u_shape, pd.read_csv(run_dir / "u_shape.csv"))
    table = pd.read_csv(run_dir / "selected_neurons.csv")
    assert run.neurons[["lang", "layer", "neuron"]].values.tolist() == (
        table[["lang", "layer", "neuron"]].values.tolist()
    )
    assert run.neurons_meta["metric"] == "lape" and run.neurons_meta["top_rate"] == 0.05
    assert run.name == run_dir.name and run.langs == ["en", "fr", "ru"]


def test_a_stage_that_did_not_run_is_none(run_dir):
    assert Run.load(run_dir).ablation is None


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    with pytest.raises(
        MlingualityError, match="^run .*: no config.yaml there \\(not a run folder\\)$"
    ):
        Run.load(tmp_path)

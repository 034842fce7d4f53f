"""Slow acceptance: the whole runner on Gemma 3 270M and a small Bible corpus (< 2 minutes)."""

from __future__ import annotations

import json
import math
import time

import pandas as pd
import pytest

from mlinguality.run.config import RunConfig
from mlinguality.run.runner import run_experiment
from tests.wandb_reader import check_run_mirror

pytestmark = pytest.mark.slow


def test_run_on_gemma_and_bible(gemma, tmp_path):
    config = RunConfig().with_overrides(
        [
            "name=gemma-small",
            f"output_dir={tmp_path / 'runs'}",
            "cache_dir=null",
            "corpus.langs=en,ru,hi",  # two non-Latin scripts
            "corpus.books=Matthew",
            "corpus.limit=24",
            "selectivity.n_permutations=50",
            "ablation.eval_limit=6",
            "ablation.n_random=1",
            "tracking.wandb=offline",
        ]
    )
    start = time.perf_counter()
    run_dir = run_experiment(config, model=gemma)
    seconds = time.perf_counter() - start

    report = (run_dir / "report.md").read_text()
    assert "![per-layer profile](plots/layer_profile.png)" in report
    assert "![ablation heatmap](ablation.png)" in report
    for name in ("plots/layer_profile.png", "plots/selected_neurons.png", "ablation.png"):
        assert (run_dir / name).stat().st_size > 10_000, name

    profile = pd.read_csv(run_dir / "layer_profile.csv")
    assert sorted(profile["layer"].unique()) == list(range(18))
    assert set(profile["pair"]) >= {"en-ru", "en-hi"}
    # with 50 permutations every p-value is a multiple of 1/51 (observed draw included) or NaN
    p_values = profile["p_value"].dropna()
    assert len(p_values) and ((p_values * 51).round(6) % 1 == 0).all()

    record = json.loads((run_dir / "ablation.json").read_text())
    baseline = record["baseline_bits_per_byte"]
    # a trained model: far below the ~4.5 bits/byte of a uniform guess over 262k tokens of ~4 bytes
    assert 0.3 < baseline["en"] < 2.5, baseline
    assert all(0.1 < value < 4.0 for value in baseline.values()), baseline
    for i, row in enumerate(record["rows"][:-1]):  # every ablated set changed the loss somewhere
        if record["n_neurons"].get(row):
            assert any(abs(d) > 1e-6 for d in record["delta_bits_per_byte"][i] if d is not None), (
                row
            )

    summary = json.loads((run_dir / "summary.json").read_text())
    assert math.isfinite(summary["selectivity"]["u_shape"])
    assert summary["run"]["n_select"] >= 8 and summary["run"]["n_eval"] == 6
    mirrored = check_run_mirror(run_dir)  # live progress, artifacts, unambiguous summary keys
    assert mirrored.summary["selectivity/u_shape"] == pytest.approx(
        summary["selectivity"]["u_shape"]
    )
    print(
        f"runner on Gemma: {seconds:.1f} s; stages {json.loads((run_dir / 'stages.json').read_text())}"
    )

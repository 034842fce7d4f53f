"""The ``lenses`` stage in a run: its files against independent computations from the run's own
statistics, the report's four-way section against those files, and the collect stage's key
covering the residuals (a run without them is never reused by one that needs them)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from mlinguality.activations.stats import load_stats
from mlinguality.run.lens_report import four_way_curves
from mlinguality.run.runner import run_experiment
from tests.run.test_runner import LANGS, _config, _write_corpus


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lenses")
    _write_corpus(root / "corpus.jsonl")
    config = _config(root, tracking={"wandb": "disabled"}, ablation={"enabled": False})
    return root, config, run_experiment(config)


def _stages(run_dir) -> dict:
    return json.loads((run_dir / "stages.json").read_text())


def _naive_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA as HSIC with explicit centring matrices (Kornblith et al. 2019, eq. 1)."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h)

    return hsic(k, l_) / math.sqrt(hsic(k, k) * hsic(l_, l_))


def test_the_stage_writes_every_view(run):
    _, config, run_dir = run
    folder = run_dir / "lenses"
    names = {path.name for path in folder.iterdir()}
    assert names == {
        "logit_lens.csv",
        "probes.csv",
        "probes_by_fold.csv",
        "similarity.csv",
        "similarity_u.csv",
    }
    lens = pd.read_csv(folder / "logit_lens.csv")
    n_layers = 4
    assert sorted(lens["lang"].unique()) == sorted(LANGS)
    assert (lens.groupby("lang")["layer"].nunique() == n_layers).all()
    shares = lens[["share_input", "share_other", "share_unassigned"]].sum(axis=1)
    assert np.allclose(shares[lens["lang"] != "en"] + lens["share_en"][lens["lang"] != "en"], 1)
    probes = pd.read_csv(folder / "probes.csv")
    assert list(probes["layer"]) == list(range(n_layers))
    by_fold = pd.read_csv(folder / "probes_by_fold.csv")
    assert sorted(by_fold["fold"].unique()) == list(range(config.lenses.folds))
    # the table is the folds' mean
    assert np.allclose(by_fold.groupby("layer")["accuracy"].mean(), probes["accuracy"])
    assert _stages(run_dir)["lenses"]["status"] == "done"


def test_similarity_equals_a_naive_cka_of_the_runs_residuals(run):
    """similarity.csv's CKA per layer and pair = HSIC with centring matrices over the saved
    per-example mean residuals (float64, numpy)."""
    _, config, run_dir = run
    stats = load_stats(run_dir / "stats", list(config.collection_langs))
    table = pd.read_csv(run_dir / "lenses" / "similarity.csv")
    cka = table[table["metric"] == "cka"]
    checked = 0
    for row in cka.itertuples():
        first, second = row.pair.split("-", 1)
        x = stats[first].example_resid_mean[:, row.layer].double().numpy()
        y = stats[second].example_resid_mean[:, row.layer].double().numpy()
        assert row.value == pytest.approx(_naive_cka(x, y), abs=1e-6), row
        checked += 1
    pairs = {row.pair for row in cka.itertuples()}
    assert pairs == {*(f"en-{lang}" for lang in LANGS if lang != "en"), "en-en:alt"}, pairs
    assert checked == 4 * len(pairs)


def test_the_report_section_reads_the_files(run):
    """The four curves: the neuron metric's excess over the floor (mean over pairs), the probe's
    compression, CKA's dissimilarity over the floor, the lens's input-language share; the U
    column of the similarity row is similarity_u.csv's mean U over the floor."""
    _, config, run_dir = run
    report = (run_dir / "report.md").read_text()
    assert "## Layers seen four ways" in report
    assert (run_dir / "plots" / "layers_four_ways.png").stat().st_size > 10_000
    curves = four_way_curves(run_dir, "topk", "en").set_index("layer")
    profile = pd.read_csv(run_dir / "layer_profile.csv")
    own = profile[(profile["metric"] == "topk") & ~profile["control"]]
    assert np.allclose(curves["neurons"], own.groupby("layer")["excess"].mean())
    probes = pd.read_csv(run_dir / "lenses" / "probes.csv").set_index("layer")
    assert np.allclose(curves["probe"], probes["uniform_bits"] / probes["codelength_bits"])
    sim = pd.read_csv(run_dir / "lenses" / "similarity.csv")
    sim = sim[(sim["metric"] == "cka") & ~sim["control"]]
    assert np.allclose(
        curves["similarity"], (sim["floor"] - sim["value"]).groupby(sim["layer"]).mean()
    )
    lens = pd.read_csv(run_dir / "lenses" / "logit_lens.csv")
    assert np.allclose(
        curves["lens_input"], lens[lens["lang"] != "en"].groupby("layer")["share_input"].mean()
    )
    u = pd.read_csv(run_dir / "lenses" / "similarity_u.csv")
    u = u[(u["metric"] == "cka") & ~u["control"]]
    row = next(line for line in report.splitlines() if line.startswith("| similarity"))
    assert f"{u['u_over_floor'].mean():.2f} [" in row


def test_lenses_off_collects_no_residuals_and_on_recollects(run, tmp_path):
    """With lenses off the stats hold no residuals and no lenses stage runs; turning them on
    with the same cache recollects (the collect key covers the residuals) instead of reusing
    statistics the lenses cannot read; a third run reuses the second's."""
    root, _, _ = run
    off = _config(
        root, tracking={"wandb": "disabled"}, ablation={"enabled": False}, lenses={"enabled": False},
        output_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"), plots=False,
        examples={"enabled": False},
    )  # fmt: skip
    first = run_experiment(off)
    assert "lenses" not in _stages(first)
    assert not (first / "lenses").exists()
    assert load_stats(first / "stats", ["en"])["en"].example_resid_mean is None
    on = off.with_overrides(["lenses.enabled=true"])
    second = run_experiment(on)
    assert _stages(second)["collect"]["origin"] == "computed"
    assert (second / "lenses" / "probes.csv").is_file()
    third = run_experiment(on)
    assert _stages(third)["collect"]["origin"].startswith("cache:collect-")
    assert _stages(third)["lenses"]["origin"].startswith("cache:lenses-")


def test_the_summary_carries_the_lenses_numbers(run):
    """summary.json's ``lenses``: the English peak of the lens recomputed from logit_lens.csv,
    the probe's minimum accuracy, each pair's U over the floor from similarity_u.csv."""
    _, _, run_dir = run
    summary = json.loads((run_dir / "summary.json").read_text())["lenses"]
    lens = pd.read_csv(run_dir / "lenses" / "logit_lens.csv")
    curve = lens[lens["lang"] != "en"].groupby("layer")["share_en"].mean()
    assert summary["lens_english_peak_layer"] == int(curve.idxmax())
    assert summary["lens_english_peak_share"] == pytest.approx(curve.max())
    probes = pd.read_csv(run_dir / "lenses" / "probes.csv")
    assert summary["probe_accuracy_min"] == pytest.approx(probes["accuracy"].min())
    u = pd.read_csv(run_dir / "lenses" / "similarity_u.csv")
    row = u[(u["metric"] == "cka") & (u["pair"] == "en-fr")].iloc[0]
    assert summary["cka_u_over_floor"]["en-fr"][0] == pytest.approx(row["u_over_floor"])

"""Tests for mlinguality/steering/experiment.py and plots.py on the tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from mlinguality.activations.stats import ActivationStats
from mlinguality.steering.config import SteeringConfig
from mlinguality.steering.experiment import (
    random_intervention,
    steering_experiment,
    summarize,
    text_bits_per_byte,
    write_rows,
)
from mlinguality.steering.plots import plot_alpha, plot_heatmap

PROMPTS = {
    "en": ["In the beginning", "Blessed are the", "And God said"],
    "fr": ["Au commencement", "Heureux ceux qui", "Dieu dit"],
}


def _stats(lang: str, seed: int) -> ActivationStats:
    generator = torch.Generator().manual_seed(seed)
    stats = ActivationStats.empty(lang, n_layers=2, d_mlp=64, gated=True)
    stats.n_tokens = 100
    stats.sum = torch.rand(2, 64, generator=generator, dtype=torch.float64) * 300
    stats.n_positive = (torch.rand(2, 64, generator=generator) * 100).long()
    stats.n_gate_positive = (torch.rand(2, 64, generator=generator) * 100).long()
    stats.max = torch.full((2, 64), 9.0)
    return stats


@pytest.fixture(scope="module")
def setup():
    stats = {"en": _stats("en", 1), "fr": _stats("fr", 2)}
    masks = {lang: torch.zeros(2, 64, dtype=torch.bool) for lang in stats}
    masks["en"][0, :4] = True
    masks["en"][1, 10:13] = True
    masks["fr"][1, 20:26] = True
    return stats, masks


def test_bits_per_byte_of_texts_equals_a_manual_nll(tiny_model):
    texts = ["Au commencement", "", "Dieu dit"]
    bpb = text_bits_per_byte(tiny_model, texts)
    assert math.isnan(bpb[1])
    ids = tiny_model.tokenizer(["Dieu dit"], return_tensors="pt")["input_ids"]  # BOS first
    with torch.no_grad():
        logits = tiny_model.original_model(ids).logits[0, :-1].double()
    nll = -logits.log_softmax(-1).gather(-1, ids[0, 1:, None]).sum()
    assert bpb[2] == pytest.approx(float(nll) / math.log(2) / len(b"Dieu dit"), rel=1e-4)


def test_random_control_is_matched_in_count_per_layer(setup):
    stats, masks = setup
    settings = SteeringConfig()
    control = random_intervention(
        stats, masks, "en", "fr", settings, torch.Generator().manual_seed(0)
    )
    union = masks["en"] | masks["fr"]
    assert control.mask.sum(dim=1).tolist() == union.sum(dim=1).tolist()
    assert not torch.equal(control.mask, union)
    assert control.n_target == 6 and control.n_source == 7


def test_experiment_rows_conditions_and_summary(tiny_model, setup, tmp_path):
    stats, masks = setup
    settings = SteeringConfig(alphas=[4.0], max_new_tokens=4, n_random=1, batch_size=3)
    calls = []
    rows = steering_experiment(
        tiny_model,
        stats,
        masks,
        PROMPTS,
        [("en", "fr"), ("fr", "en")],
        settings,
        progress=lambda done, total, label: calls.append((done, total)),
    )
    # per pair: none + 1 alpha x (steer + random), 3 prompts each
    assert len(rows) == 2 * (1 + 2) * 3
    assert calls[-1] == (6, 6)
    by = {(r["source"], r["condition"], r["alpha"], r["prompt_index"]): r for r in rows}
    assert by[("en", "none", 0.0, 0)]["prompt"] == "In the beginning"
    steered = [by[("en", "steer", 4.0, i)]["text"] for i in range(3)]
    plain = [by[("en", "none", 0.0, i)]["text"] for i in range(3)]
    assert steered != plain, "alpha=4 on 13 neurons must change the tiny model's output"
    assert all(r["n_new_tokens"] <= 4 for r in rows)
    summary = summarize(rows, {"en": 1.0, "fr": 0.5})
    assert len(summary) == 2 * 3
    row = next(
        s
        for s in summary
        if s["source"] == "en" and s["condition"] == "steer" and s["alpha"] == 4.0
    )
    chosen = [
        r for r in rows if r["source"] == "en" and r["condition"] == "steer" and r["alpha"] == 4.0
    ]
    assert row["share_target"] == sum(r["outcome"] == "target" for r in chosen) / 3
    assert row["share_target"] + row["share_source"] + row["share_other"] == pytest.approx(1.0)
    assert row["n_neurons"] == 13 and row["id_accuracy_target"] == 0.5
    write_rows(rows, tmp_path / "s.csv")
    assert (tmp_path / "s.csv").read_text(encoding="utf-8").count("\n") == len(rows) + 1
    assert plot_alpha(summary, tmp_path / "a.png").stat().st_size > 1000
    assert plot_heatmap(summary, 4.0, tmp_path / "h.png").stat().st_size > 1000


def test_settings_are_checked():
    from mlinguality.errors import MlingualityError

    with pytest.raises(
        MlingualityError, match="^steering.activate: deactivate and activate cannot"
    ):
        SteeringConfig.from_dict({"deactivate": None, "activate": None})
    with pytest.raises(MlingualityError, match="^steering.positions: expected one of 'all'"):
        SteeringConfig.from_dict({"positions": "last"})


def test_experiment_random_control_is_activity_matched(tiny_model, setup, monkeypatch):
    """The experiment's random sets come from the selected neurons' firing-rate deciles
    (a count-only draw would land in other deciles); activity_control=False draws by count."""
    import mlinguality.steering.experiment as experiment
    from mlinguality.ablation.random_sets import activity_bins, firing_rate

    stats, masks = setup
    drawn = []
    original = experiment.random_intervention

    def spy(*args, **kwargs):
        control = original(*args, **kwargs)
        drawn.append((args[6] if len(args) > 6 else kwargs.get("activity"), control.mask))
        return control

    monkeypatch.setattr(experiment, "random_intervention", spy)
    settings = SteeringConfig(alphas=[1.0], max_new_tokens=1, n_random=1, batch_size=3)
    steering_experiment(tiny_model, stats, masks, PROMPTS, [("en", "fr")], settings)
    activity, mask = drawn[-1]
    assert activity is not None and torch.equal(activity, firing_rate(stats))
    bins = activity_bins(activity, 10)
    union = masks["en"] | masks["fr"]
    for layer in range(2):
        assert sorted(bins[layer][mask[layer]].tolist()) == sorted(
            bins[layer][union[layer]].tolist()
        )
    drawn.clear()
    plain = SteeringConfig(
        alphas=[1.0], max_new_tokens=1, n_random=1, batch_size=3, activity_control=False
    )
    steering_experiment(tiny_model, stats, masks, PROMPTS, [("en", "fr")], plain)
    assert drawn[-1][0] is None

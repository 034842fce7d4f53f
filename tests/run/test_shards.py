"""`mlinguality collect --shard I/N` + `mlinguality merge` equal the unsharded collection."""

from __future__ import annotations

import pytest
import torch

from mlinguality.activations.collect import collect
from mlinguality.activations.stats import load_stats
from mlinguality.errors import MlingualityError
from mlinguality.run.cli import main
from tests.run.test_runner import LANGS, _config, _splits, _write_corpus
from tests.utils import assert_close


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    _write_corpus(root / "corpus.jsonl")
    config = _config(root, tracking={"wandb": "disabled"})
    config.dump(root / "cfg.yaml")
    for shard in range(3):
        with pytest.raises(SystemExit) as done:
            main(
                ["collect", str(root / "cfg.yaml"), "--shard", f"{shard}/3"]
                + ["--out", str(root / f"shard{shard}"), "--quiet"]
            )
        assert done.value.code == 0
    return root, config


@pytest.fixture(scope="module")
def tiny4():
    from mlinguality import TinyModelConfig, load_model

    # model.spec "tiny" (run/runner.py): 4 layers, d_mlp 64, seeded by config.seed
    return load_model(
        TinyModelConfig(architecture="gemma3", n_layers=4, d_model=32, d_mlp=64, seed=0)
    )


def test_merged_shards_equal_the_unsharded_collection(shards, tiny4):
    root, config = shards
    parts = [load_stats(root / f"shard{shard}") for shard in range(3)]
    assert all(0 < len(part["en"].example_ids) < 8 for part in parts)  # really split
    with pytest.raises(SystemExit):
        main(["merge", *(str(root / f"shard{s}") for s in range(3)), "--out", str(root / "all")])
    merged = load_stats(root / "all")
    select = _splits(root)[0]
    whole = collect(tiny4, select, LANGS, per_example=True, batch_tokens=256, progress=False)
    for lang in LANGS:
        a, b = whole[lang], merged[lang]
        assert b.example_ids == sorted(a.example_ids)
        order = [a.example_ids.index(example) for example in b.example_ids]
        assert a.n_tokens == b.n_tokens
        assert torch.equal(a.n_positive, b.n_positive)
        assert torch.equal(a.n_gate_positive, b.n_gate_positive)
        assert torch.equal(a.max, b.max)
        assert_close(b.sum, a.sum, "fp32")
        assert_close(b.m2, a.m2, "fp32")
        assert_close(b.example_mean, a.example_mean[order], "fp32")


def test_merge_refuses_a_shard_of_other_settings_naming_the_field(shards, tmp_path):
    root, _ = shards
    with pytest.raises(SystemExit):
        main(
            ["collect", str(root / "cfg.yaml"), "--shard", "1/3", "--quiet"]
            + ["--out", str(tmp_path / "last"), "--set", "collection.positions=last"]
        )
    with pytest.raises(MlingualityError, match="^cannot merge en statistics: positions differs"):
        from mlinguality.run.shards import merge_folders

        merge_folders([root / "shard0", tmp_path / "last"], tmp_path / "out")


def test_run_starts_from_merged_statistics(shards):
    from mlinguality.run.runner import run_experiment

    root, config = shards
    merged = root / "all"
    if not merged.exists():
        from mlinguality.run.shards import merge_folders

        merge_folders([root / f"shard{s}" for s in range(3)], merged)
    config = _config(
        root / "from-merged",
        corpus={"source": str(root / "corpus.jsonl")},
        collection={"batch_tokens": 256, "stats": str(merged)},
        tracking={"wandb": "disabled"},
    )
    run_dir = run_experiment(config)
    used = load_stats(run_dir / "stats")
    for lang, stats in load_stats(merged).items():
        assert torch.equal(used[lang].sum, stats.sum)
    assert (run_dir / "ablation.csv").exists()
    # statistics of another corpus are refused
    other = _config(
        root / "other",
        corpus={"source": str(root / "corpus.jsonl"), "limit": 6},
        collection={"stats": str(merged)},
        tracking={"wandb": "disabled"},
    )
    with pytest.raises(MlingualityError, match="corpus differs from the config"):
        run_experiment(other)


def test_ablation_in_bfloat16_stays_close_to_float32(shards):
    """ablation.dtype=bfloat16 evaluates a bf16 copy of the model: each cell moves by bf16
    rounding only (here within 0.05 bits per byte of ~7), and the run's own model is untouched."""
    import csv

    from mlinguality.run.runner import run_experiment

    root, _ = shards

    def cells(dtype):
        config = _config(
            root / f"dtype-{dtype}",
            corpus={"source": str(root / "corpus.jsonl")},
            ablation={"mode": "zero", "n_random": 1, "dtype": dtype},
            tracking={"wandb": "disabled"},
        )
        with (run_experiment(config) / "ablation.csv").open() as handle:
            return {
                (row["ablated"], row["seed"], row["lang"]): float(row["bits_per_byte"])
                for row in csv.DictReader(handle)
            }

    fp32, bf16 = cells(None), cells("bfloat16")
    assert fp32.keys() == bf16.keys()
    diffs = [abs(bf16[key] - value) for key, value in fp32.items()]
    assert 0 < max(diffs) < 0.05  # bf16 did run (some cell moved), and only by rounding

"""`mlinguality collect --shard I/N` + `mlinguality merge` equal the unsharded collection."""

from __future__ import annotations

import pytest
import torch

from mlinguality.activations.collect import collect
from mlinguality.activations.stats import load_stats
from mlinguality.cli.main import main
from mlinguality.errors import MlingualityError
from mlinguality.run.runner import run_experiment
from mlinguality.run.shards import merge_folders
from tests.run.test_distributed import ablation_cells
from tests.run.test_runner import _config, _splits, _write_corpus
from tests.utils import assert_close

ALL_LANGS = ["en", "fr", "ru", "en:alt"]  # corpus.langs and the control's en:alt


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Three shards of the runner's tiny config, collected by the command line, and merged."""
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
    with pytest.raises(SystemExit) as done:
        main(["merge", *(str(root / f"shard{s}") for s in range(3)), "--out", str(root / "all")])
    assert done.value.code == 0
    return root, config


def test_merged_shards_equal_the_unsharded_collection(shards, tiny4):
    root, _ = shards
    parts = [load_stats(root / f"shard{shard}") for shard in range(3)]
    assert sorted(parts[0]) == sorted(ALL_LANGS)
    assert all(0 < len(part["en"].example_ids) < 8 for part in parts)  # really split
    merged = load_stats(root / "all")
    select = _splits(root)[0]
    whole = collect(tiny4, select, ALL_LANGS, per_example=True, batch_tokens=256, progress=False)
    for lang in ALL_LANGS:
        a, b = whole[lang], merged[lang]
        assert b.example_ids == sorted(a.example_ids)
        order = [a.example_ids.index(example) for example in b.example_ids]
        assert a.n_tokens == b.n_tokens
        assert torch.equal(a.n_positive, b.n_positive)
        assert torch.equal(a.n_gate_positive, b.n_gate_positive)
        assert torch.equal(a.max, b.max)
        assert torch.equal(a.example_n_tokens[order], b.example_n_tokens)
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
        merge_folders([root / "shard0", tmp_path / "last"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MlingualityError, match="holds no statistics"):
        merge_folders([root / "shard0", tmp_path / "empty"], tmp_path / "out")


def test_a_bad_shard_argument_is_one_line(shards, capsys):
    root, _ = shards
    with pytest.raises(SystemExit) as done:
        main(["collect", str(root / "cfg.yaml"), "--shard", "3/3", "--out", str(root / "x")])
    assert done.value.code == 2
    assert capsys.readouterr().err == "mlinguality: error: --shard: need 0 <= I < N, got '3/3'\n"


def test_run_starts_from_merged_statistics_in_corpus_order(shards, tiny4):
    root, _ = shards
    config = _config(
        root / "from-merged",
        corpus={"source": str(root / "corpus.jsonl")},
        collection={"batch_tokens": 256, "stats": str(root / "all")},
        tracking={"wandb": "disabled"},
    )
    run_dir = run_experiment(config)
    used = load_stats(run_dir / "stats")
    select = _splits(root)[0]
    whole = collect(tiny4, select, ALL_LANGS, per_example=True, batch_tokens=256, progress=False)
    for lang, stats in load_stats(root / "all").items():
        assert torch.equal(used[lang].sum, stats.sum)
        # the run's statistics list the examples as a collection in one process does
        assert used[lang].example_ids == whole[lang].example_ids == list(select.ids)
        assert_close(used[lang].example_mean, whole[lang].example_mean, "fp32")
    assert (run_dir / "ablation.csv").exists()


def test_run_refuses_merged_statistics_of_another_corpus_or_a_partial_merge(shards):
    root, _ = shards

    def run(folder, **corpus):
        config = _config(
            root / "refused",
            corpus={"source": str(root / "corpus.jsonl"), **corpus},
            collection={"stats": str(folder)},
            tracking={"wandb": "disabled"},
        )
        return run_experiment(config)

    with pytest.raises(MlingualityError, match="corpus differs from the config"):
        run(root / "all", limit=6)
    with pytest.raises(MlingualityError, match="merge every shard first"):
        run(root / "shard0")
    with pytest.raises(MlingualityError, match="no such folder"):
        run(root / "nowhere")
    assert not list((root / "refused" / "runs").glob("*"))  # refused: no run folder left


def test_ablation_in_bfloat16_stays_close_to_float32(shards):
    """ablation.dtype=bfloat16 evaluates a bf16 copy of the model: each cell moves by bf16
    rounding only (here within 0.05 bits per byte of ~7), and the run's own model is untouched."""
    root, _ = shards

    def cells(dtype):
        config = _config(
            root / f"dtype-{dtype}",
            corpus={"source": str(root / "corpus.jsonl")},
            ablation={"mode": "zero", "n_random": 1, "dtype": dtype},
            tracking={"wandb": "disabled"},
            cache_dir=str(root / "dtype-cache"),  # the bf16 run reuses collect, score, select
        )
        return ablation_cells(run_experiment(config))

    fp32, bf16 = cells(None), cells("bfloat16")
    assert fp32.keys() == bf16.keys()
    diffs = [abs(bf16[key] - value) for key, value in fp32.items()]
    assert 0 < max(diffs) < 0.05  # bf16 did run (some cell moved), and only by rounding
    moved = [key for key in bf16 if key[0] in ("fr", "ru") and key[2] == key[0]]
    assert moved and all(bf16[key] != bf16[("none", "", key[2])] for key in moved)  # hooks act


@pytest.mark.parametrize(
    ("capability", "dtype", "warns"),
    [("AVX2", "bfloat16", True), ("DEFAULT", "float16", True), ("AVX512", "bfloat16", False),
     ("AMX", "bfloat16", False), ("AVX2", "float32", False)],
)  # fmt: skip
def test_half_precision_ablation_on_a_cpu_without_half_matmuls_is_flagged(
    monkeypatch, capability, dtype, warns
):
    """bf16 forwards on an AVX2 CPU are emulated: ~7x slower than fp32 (performance.md)."""
    from mlinguality.run.steps import ablate

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert ablate._cpu_lacks_bf16(dtype) is warns

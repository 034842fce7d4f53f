"""torchrun runs: 2 gloo processes on CPU with the tiny model equal the one-process run.

The processes are real (``python -m torch.distributed.run --standalone``), so these tests also
cover the process group set-up, the task loop of the serving rank and the one-line errors.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mlinguality.activations.distributed import ShardError, shard_examples
from mlinguality.activations.stats import load_stats
from tests.run.test_runner import _config, _write_corpus
from tests.utils import assert_close

_ENV = dict(
    os.environ,
    PYTHONPATH=str(Path(__file__).resolve().parents[2]),  # this checkout's package
    OMP_NUM_THREADS="1",
    MLINGUALITY_DIST_TIMEOUT_S="120",  # a test that would hang fails instead
)


def _torchrun(n: int, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nnodes", "1", "--nproc-per-node", str(n), *args]
    return subprocess.run(command, env=_ENV, capture_output=True, text=True, timeout=timeout)


def one_and_two_ranks(one: Path, two: Path, timeout: float = 600) -> None:
    """Run config file ``one`` in one process and ``two`` with 2 gloo ranks (torchrun)."""
    single = subprocess.run(
        [sys.executable, "-m", "mlinguality", "run", str(one)],
        env=_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    team = _torchrun(2, "-m", "mlinguality", "run", str(two), timeout=timeout)
    assert team.returncode == 0, team.stderr[-3000:]


def ablation_cells(run: Path) -> dict[tuple[str, str, str], float]:
    """Bits per byte of every (ablated, seed, lang) row of a run's ablation.csv."""
    with (run / "ablation.csv").open() as handle:
        return {
            (row["ablated"], row["seed"], row["lang"]): float(row["bits_per_byte"])
            for row in csv.DictReader(handle)
        }


def _write_config(root: Path, name: str) -> Path:
    config = _config(
        root / name,
        corpus={"source": str(root / "corpus.jsonl")},
        tracking={"wandb": "disabled"},
        model={"spec": "tiny", "threads": 1},
    )
    path = root / f"{name}.yaml"
    config.dump(path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same tiny run with 1 process and with 2 gloo processes (torchrun)."""
    root = tmp_path_factory.mktemp("distributed")
    _write_corpus(root / "corpus.jsonl")
    one_and_two_ranks(_write_config(root, "one"), _write_config(root, "two"))
    (run_one,) = (root / "one" / "runs").iterdir()
    (run_two,) = (root / "two" / "runs").iterdir()
    return run_one, run_two


def test_two_ranks_collect_the_statistics_of_one_process(runs):
    one, two = (load_stats(run / "stats") for run in runs)
    assert list(one) == list(two)
    for lang in one:
        a, b = one[lang], two[lang]
        assert a.n_tokens == b.n_tokens and a.example_ids == b.example_ids
        assert torch.equal(a.n_positive, b.n_positive)  # counts: exactly
        assert torch.equal(a.n_gate_positive, b.n_gate_positive)
        assert torch.equal(a.example_n_tokens, b.example_n_tokens)
        assert torch.equal(a.max, b.max)
        # sums: other batch compositions, float32 within a batch (tests/utils.py "fp32")
        assert_close(b.sum, a.sum, "fp32")
        assert_close(b.m2, a.m2, "fp32")
        assert_close(b.example_mean, a.example_mean, "fp32")
        assert_close(b.example_frac_gate_positive, a.example_frac_gate_positive, "fp32")


def test_two_ranks_select_and_ablate_like_one_process(runs):
    one, two = runs
    for name in ("selectivity.csv", "selected_neurons.csv"):
        assert (one / name).read_text() == (two / name).read_text(), name
    a, b = ablation_cells(one), ablation_cells(two)
    assert a.keys() == b.keys() and len(a) > 5
    assert {key[0] for key in a} >= {"random", "random_activity"}  # both controls ran
    for key, value in a.items():
        assert b[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    summary = [json.loads((run / "ablation.json").read_text())["dominance"] for run in runs]
    assert summary[0].keys() == summary[1].keys()


def test_ranks_started_with_other_configs_stop_with_one_line(tmp_path):
    script = tmp_path / "mismatch.py"
    script.write_text(
        "import os, sys\n"
        "from mlinguality.cli.main import main\n"
        "seed = os.environ['RANK']\n"
        f"main(['run', {str(tmp_path / 'cfg.yaml')!r}, '--set', 'seed=' + seed])\n"
    )
    _write_corpus(tmp_path / "corpus.jsonl")
    config = _config(tmp_path, corpus={"source": str(tmp_path / "corpus.jsonl")})
    config.dump(tmp_path / "cfg.yaml")
    result = _torchrun(2, str(script), timeout=300)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("mlinguality: error")]
    assert lines, result.stderr[-2000:]
    assert lines[0] == (
        "mlinguality: error: torchrun: rank 1 was started with another config than rank 0 "
        "(seed differs)"
    )


_KILL_RANK_1 = """
import os, signal, sys

if os.environ["RANK"] == "1":  # rank 1 dies (SIGKILL: no cleanup) after its first checkpoint
    import importlib

    collect = importlib.import_module("mlinguality.activations.collect")

    real_save = collect._save_checkpoint

    def save(*args, **kwargs):
        real_save(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    collect._save_checkpoint = save

from mlinguality.cli.main import main

main(sys.argv[1:])
"""


def test_a_rank_killed_mid_collection_stops_the_run_and_it_resumes_to_the_same_csvs(runs):
    """Rank 1 is SIGKILLed after its first language's checkpoint: torchrun stops rank 0 (no
    hang: the collective timeout is 120 s here, the test's limit 400 s), and the same torchrun
    command with ``--resume RUN_DIR`` finishes from the checkpoints with the CSVs of an
    uninterrupted two-rank run."""
    _, uninterrupted = runs
    root = uninterrupted.parents[2]
    config = _write_config(root, "killed")
    driver = root / "kill_rank_1.py"
    driver.write_text(_KILL_RANK_1)
    killed = _torchrun(2, str(driver), "run", str(config), timeout=400)
    assert killed.returncode != 0
    assert "Signal 9 (SIGKILL)" in killed.stderr, killed.stderr[-3000:]
    # rank 0 either gets torchrun's SIGTERM first or sees the connection to rank 1 close
    (stopped,) = [line for line in killed.stderr.splitlines() if line.startswith("mlinguality:")]
    assert stopped.startswith(
        (
            "mlinguality: interrupted at stage collect",
            "mlinguality: error: torchrun: another rank stopped (",
        )
    ), stopped
    assert "resume with the same torchrun command" in stopped and "pair.cc" not in stopped
    (run_dir,) = (root / "killed" / "runs").iterdir()
    status = json.loads((run_dir / "stages.json").read_text())["collect"]["status"]
    assert status in ("interrupted", "failed")
    checkpoints = list((root / "killed" / "cache").glob(".partial-collect-*/rank1-of-2/*"))
    assert [path.name for path in checkpoints] == ["en.safetensors"], checkpoints

    resumed = _torchrun(2, "-m", "mlinguality", "run", "--resume", str(run_dir), timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming en from" in resumed.stderr
    for name in ("layer_profile.csv", "selectivity.csv", "selected_neurons.csv"):
        assert (run_dir / name).read_text() == (uninterrupted / name).read_text(), name
    a, b = ablation_cells(uninterrupted), ablation_cells(run_dir)
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert b[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert list((root / "killed" / "cache").glob(".partial-collect-*-b*")) == []  # taken up


def test_shards_are_balanced_by_tokens_and_deterministic():
    weights = [37, 5, 22, 22, 9, 41, 3, 18, 30, 12]
    shards = shard_examples(weights, 3)
    assert sorted(i for shard in shards for i in shard) == list(range(10))
    loads = [sum(weights[i] for i in shard) for shard in shards]
    assert max(loads) - min(loads) <= max(weights)  # greedy bound
    assert loads == [68, 67, 64]
    assert shard_examples(weights, 3) == shards
    with pytest.raises(ShardError, match="3 shards \\(ranks\\) for 2 examples"):
        shard_examples([4, 5], 3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_nccl_ranks_without_a_gpu_stop_with_one_line(tmp_path):
    """``model.device=cuda`` under torchrun on a CPU machine: one line per rank, no traceback."""
    config = _write_config(tmp_path, "cuda")
    _write_corpus(tmp_path / "corpus.jsonl")
    result = _torchrun(2, "-m", "mlinguality", "run", str(config), "--set", "model.device=cuda")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("mlinguality: error")]
    assert lines, result.stderr[-2000:]
    assert lines[0].endswith("this machine has 0 CUDA device(s); use model.device=cpu (gloo)")
    for frame in ("mlinguality/run/", "torch/cuda/"):  # torchrun's own summary follows
        assert frame not in result.stderr
    assert not (tmp_path / "cuda" / "runs").exists()


def test_more_nccl_ranks_than_gpus_is_one_line(monkeypatch):
    from mlinguality.errors import MlingualityError
    from mlinguality.run.config import RunConfig
    from mlinguality.run.preflight import check_device
    from mlinguality.run.team import start_team

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    config = RunConfig.from_dict({"model": {"device": "cuda"}})
    with pytest.raises(MlingualityError) as raised:
        start_team(config)  # raises before any process group or CUDA call
    assert str(raised.value) == (
        "torchrun: model.device=cuda gives each rank its own GPU (cuda:LOCAL_RANK), but "
        "LOCAL_RANK 1 has none: this machine has 1 CUDA device(s); "
        "start at most 1 per node (--nproc-per-node 1)"
    )
    with pytest.raises(MlingualityError, match=r"^model.device=cuda:1: this machine has 1 CUDA "):
        check_device("cuda:1")
    check_device("cuda:0")
    check_device("cuda")

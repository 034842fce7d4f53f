"""Fault injection: SIGKILL a real tiny-model run at every stage boundary and in the middle of
every stage, resume it each time with ``mlinguality run --resume DIR``, and check the CSVs are
byte-identical to those of an uninterrupted run.

The run is a subprocess started through a small driver that wraps the runner's stage steps to
kill its own process (SIGKILL: no cleanup runs) at one named point, then calls the real CLI.
"""

from __future__ import annotations

import signal
import textwrap

from tests.run.faults import CSVS, cli, config_dict, run_dirs, stages, write_config, write_corpus

_DRIVER = textwrap.dedent(
    """
    import os, signal, sys

    point = os.environ["KILL_AT"]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    from mlinguality.run import stage_cache

    real_run = stage_cache.StageLog.run

    def run(self, stage, key, names, compute):
        if point == f"before:{stage}":
            die()

        def computing():
            compute()
            if point == f"during:{stage}":  # outputs written, one half-written, not recorded
                path = self.run_dir / list(names)[-1]
                if path.is_dir():  # a stage folder: half-write its first file
                    path = sorted(p for p in path.rglob("*") if p.is_file())[0]
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
                die()

        return real_run(self, stage, key, names, computing)

    stage_cache.StageLog.run = run
    if point == "mid:collect":  # after the first language's checkpoint
        import importlib

        collect = importlib.import_module("mlinguality.activations.collect")

        real_save = collect._save_checkpoint

        def save(*args, **kwargs):
            real_save(*args, **kwargs)
            die()

        collect._save_checkpoint = save
    if point == "before:report":
        import mlinguality.run.report as report

        report.write_report = lambda *args, **kwargs: die()

    from mlinguality.cli.main import main

    main(sys.argv[1:])
    """
)


# (where the run is killed, the stages finished by then): before and during every stage the
# config runs, in the declared order, then before the report
def _points() -> list[tuple[str, list[str]]]:
    from mlinguality.run.config import RunConfig
    from mlinguality.run.stages import enabled_stages

    names = [
        stage.name
        for stage in enabled_stages(RunConfig.from_dict({"steering": {"enabled": False}}))
    ]
    points = [("mid:collect", [])]
    for index, name in enumerate(names):
        points += [(f"before:{name}", names[:index]), (f"during:{name}", names[:index])]
    points.remove(("before:collect", []))
    return [*points, ("before:report", names)]


_POINTS = _points()


def test_sigkill_at_every_stage_boundary_and_mid_stage_resumes_to_identical_csvs(tmp_path):
    from mlinguality.run.config import RunConfig
    from mlinguality.run.runner import run_experiment

    write_corpus(tmp_path / "corpus.jsonl")
    data = config_dict(tmp_path, cache_dir=None)
    reference = run_experiment(RunConfig.from_dict({**data, "name": "reference"}))
    expected = {name: (reference / name).read_bytes() for name in CSVS}
    write_config(tmp_path / "tiny.yaml", data)
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)

    run_dir = None
    for point, done in _POINTS:
        target = str(tmp_path / "tiny.yaml") if run_dir is None else f"--resume={run_dir}"
        killed = cli("run", target, cwd=tmp_path, script=driver, extra_env={"KILL_AT": point})
        assert killed.rc == -signal.SIGKILL, (point, killed.err[-2000:])
        if point == "during:collect":  # the run after mid:collect took up its checkpoint
            assert "resuming en from" in killed.err
        if run_dir is None:
            (run_dir,) = [d for d in run_dirs(tmp_path) if d.name.startswith("tiny-")]
        record = stages(run_dir) if (run_dir / "stages.json").exists() else {}
        finished = [name for name, entry in record.items() if entry["status"] == "done"]
        assert finished == done, point
        if point == "mid:collect":
            (partial,) = run_dir.glob(".partial-collect-*-b256")
            assert [p.name for p in partial.iterdir()] == ["en.safetensors"]
        if point.startswith("during:"):
            assert record[point.split(":")[1]]["status"] == "running"  # SIGKILL: no cleanup
    resumed = cli("run", "--resume", str(run_dir), cwd=tmp_path)
    assert resumed.rc == 0, resumed.err[-2000:]
    for name in CSVS:
        assert (run_dir / name).read_bytes() == expected[name], name
    record = stages(run_dir)
    assert all(entry["status"] == "done" for entry in record.values())
    assert sorted(p.name for p in run_dir.glob(".*")) == []  # no checkpoint, lock or temp left
    assert "## Ablation" in (run_dir / "report.md").read_text()


def test_other_batch_tokens_after_a_killed_collection_starts_afresh(tmp_path):
    """batch_tokens is a speed knob: after a run killed mid-collection, a rerun with another
    batch size neither fails on the old checkpoint nor blocks later runs."""
    write_corpus(tmp_path / "corpus.jsonl")
    write_config(tmp_path / "tiny.yaml", config_dict(tmp_path, ablation={"enabled": False}))
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    killed = cli("run", str(tmp_path / "tiny.yaml"), cwd=tmp_path, script=driver,
                 extra_env={"KILL_AT": "mid:collect"})  # fmt: skip
    assert killed.rc == -signal.SIGKILL
    (old,) = (tmp_path / "cache").glob(".partial-collect-*-b256")
    rerun = cli("run", str(tmp_path / "tiny.yaml"), "--set", "collection.batch_tokens=128",
                "--set", "name=other", cwd=tmp_path)  # fmt: skip
    assert rerun.rc == 0, rerun.err[-2000:]
    assert "made with other settings" not in rerun.err and not old.exists()
    (run_dir,) = (tmp_path / "runs").glob("other-*")
    assert stages(run_dir)["collect"]["origin"] == "computed"
    assert list((tmp_path / "cache").glob(".partial-collect-*-b*")) == []  # done: removed


def test_concurrent_runs_with_the_same_settings(tmp_path):
    """Two runs of the same config at once: both finish with identical CSVs (one checkpoints in
    the cache, the other in its own folder; the stage cache is stored once)."""
    import subprocess
    import sys

    from tests.run.faults import env

    write_corpus(tmp_path / "corpus.jsonl")
    write_config(tmp_path / "tiny.yaml", config_dict(tmp_path))
    command = [sys.executable, "-m", "mlinguality", "run", str(tmp_path / "tiny.yaml")]
    processes = [
        subprocess.Popen(command, cwd=tmp_path, env=env(), stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errors = [process.communicate(timeout=600)[1] for process in processes]
    assert [p.returncode for p in processes] == [0, 0], [e[-1500:] for e in errors]
    first, second = run_dirs(tmp_path)
    for name in CSVS:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert len(list((tmp_path / "cache").glob("collect-*"))) == 1
    assert not list((tmp_path / "cache").glob(".*.tmp-*"))

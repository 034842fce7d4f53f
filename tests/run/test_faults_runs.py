"""Fault cases around finished runs (issue 14), run as a user would: ``python -m mlinguality`` in
a subprocess with the tiny model. Each asserts the exit status, one ``mlinguality:`` line, no
traceback, nothing left behind, and that the result is right: a refused resume leaves the
finished run byte-identical, a resume elsewhere reads the run's own inputs, an edited input or
output is never served stale.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.run.faults import (
    CSVS,
    TEXTS,
    assert_user_error,
    cli,
    config_dict,
    env,
    run_dirs,
    stages,
    write_config,
    write_corpus,
)


def _write_tsv(path: Path, texts: dict[str, list[str]] = TEXTS) -> Path:
    rows = ["example_id\t" + "\t".join(texts)]
    rows += [
        f"v{i}\t" + "\t".join(texts[lang][i] for lang in texts) for i in range(len(texts["en"]))
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _finished(result, root: Path) -> Path:
    assert result.rc == 0, result.err[-3000:]
    assert "Traceback" not in result.err
    return Path(result.out.strip().removeprefix("report: ")).parent


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _origins(run_dir: Path) -> dict[str, str]:
    return {name: entry["origin"] for name, entry in stages(run_dir).items()}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A finished tiny run made by the command line (TSV corpus, the default control pairs:
    none on a file), its config file and its stage cache."""
    root = tmp_path_factory.mktemp("runs")
    _write_tsv(root / "corpus.tsv")
    data = config_dict(root, corpus={"source": str(root / "corpus.tsv"), "langs": list(TEXTS)})
    del data["selectivity"]["control_pairs"]  # the default: the Bible's pair on the Bible only
    write_config(root / "tiny.yaml", data)
    return root, _finished(cli("run", "tiny.yaml", cwd=root), root)


# --- case 1: stage keys cover the corpus file's bytes --------------------------------------------


def test_an_edited_corpus_file_recomputes_collect(tmp_path):
    """Same config, same cache, one Russian text edited in the TSV between two runs: the second
    run recomputes collect (a new key) and selects other neurons."""
    tsv = _write_tsv(tmp_path / "corpus.tsv")
    data = config_dict(tmp_path, corpus={"source": str(tsv), "langs": list(TEXTS)})
    data["ablation"]["enabled"] = False
    data["examples"] = {"enabled": False}
    write_config(tmp_path / "tiny.yaml", data)
    first = _finished(cli("run", "tiny.yaml", "--set", "name=before", cwd=tmp_path), tmp_path)
    edited = {**TEXTS, "ru": [*TEXTS["ru"][:-1], "Истина, истина говорю вам: любите друг друга."]}
    _write_tsv(tsv, edited)
    second = _finished(cli("run", "tiny.yaml", "--set", "name=after", cwd=tmp_path), tmp_path)
    assert stages(second)["collect"]["origin"] == "computed"
    assert stages(second)["collect"]["key"] != stages(first)["collect"]["key"]
    assert (first / "stats" / "ru.safetensors").read_bytes() != (
        second / "stats" / "ru.safetensors"
    ).read_bytes()
    assert (first / "selected_neurons.csv").read_text() != (
        second / "selected_neurons.csv"
    ).read_text()


# --- case 2: a resume from another folder reads the run's own files -------------------------------


def test_resume_from_another_directory_reads_the_runs_own_corpus(tmp_path):
    """A run started with relative paths saves them absolute; resumed from another folder that
    holds another corpus.jsonl, it still reads its own (before: the other one, under the same
    name, so the resumed stages came from another corpus)."""
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    start.mkdir(), elsewhere.mkdir()
    write_corpus(start / "corpus.jsonl")
    write_corpus(elsewhere / "corpus.jsonl", {**TEXTS, "fr": TEXTS["ru"], "ru": TEXTS["fr"]})
    data = config_dict(start, output_dir="runs", cache_dir=None)
    data["corpus"]["source"] = "corpus.jsonl"
    data["ablation"]["enabled"] = False
    write_config(start / "tiny.yaml", data)
    run_dir = _finished(cli("run", "tiny.yaml", cwd=start), start)
    saved = (run_dir / "config.yaml").read_text()
    assert f"source: {start / 'corpus.jsonl'}" in saved and f"output_dir: {start / 'runs'}" in saved
    before = {name: (run_dir / name).read_bytes() for name in CSVS[:3]}
    stats = run_dir / "stats" / "en.safetensors"
    stats.write_bytes(stats.read_bytes()[:100])  # damaged: the resume recomputes collect
    resumed = cli("run", "--resume", str(run_dir.resolve()), cwd=elsewhere)
    assert resumed.rc == 0, resumed.err[-3000:]
    assert stages(run_dir)["collect"]["origin"] == "computed"
    assert {name: (run_dir / name).read_bytes() for name in CSVS[:3]} == before
    assert run_dirs(elsewhere) == []


# --- case 3: a resume continues the run's own config; --from starts a new run ---------------------


def test_resume_with_another_config_is_refused_and_from_starts_a_new_run(prepared, tmp_path):
    """Before: ``run t.yaml --resume FINISHED --set selectivity.top_rate=0.05`` exited 0 and
    rewrote the finished run's files; ``run other.yaml --resume R`` ignored other.yaml."""
    root, run_dir = prepared
    intact = _snapshot(run_dir)
    line = assert_user_error(
        cli("run", "tiny.yaml", "--resume", str(run_dir), "--set", "selectivity.top_rate=0.1", cwd=root),
        f"--resume {run_dir}: selectivity.top_rate would change from 0.05 (its config.yaml) to 0.1",
        f"`--from {run_dir}` instead of `--resume`",
    )  # fmt: skip
    assert "\n" not in line
    other = config_dict(root, corpus={"source": str(root / "corpus.tsv"), "langs": list(TEXTS)})
    del other["selectivity"]["control_pairs"]
    other["ablation"]["mode"] = "mean"
    write_config(root / "other.yaml", other)
    assert_user_error(
        cli("run", "other.yaml", "--resume", str(run_dir), cwd=root),
        "ablation.mode would change from 'zero' (its config.yaml) to 'mean'",
    )
    assert_user_error(
        cli("run", "--resume", str(run_dir), "--from", str(run_dir), cwd=root),
        "--resume and --from: give one",
    )
    for args in (["--resume", str(run_dir)], ["tiny.yaml", "--resume", str(run_dir)]):
        again = cli("run", *args, cwd=root)
        assert again.rc == 0, again.err[-3000:]
        assert f"run {run_dir} is finished; nothing to resume" in again.err
    assert _snapshot(run_dir) == intact  # refused or finished: not one byte rewritten
    assert run_dirs(root) == [run_dir]
    # the same change as a new run from the finished one: its stages copied, select recomputed
    wider = _finished(
        cli("run", "--from", str(run_dir), "--set", "selectivity.top_rate=0.1",
            "--set", "cache_dir=null", "--set", "name=wider", cwd=root),
        root,
    )  # fmt: skip
    assert wider.parent == run_dir.parent and wider.name.startswith("wider-")
    origins = _origins(wider)
    assert origins["collect"] == origins["score"] == f"run:{run_dir.name}"
    assert origins["select"] == origins["ablate"] == "computed"
    assert (wider / "selectivity.csv").read_bytes() != (run_dir / "selectivity.csv").read_bytes()
    assert (wider / "layer_profile.csv").read_bytes() == intact["layer_profile.csv"]
    assert _snapshot(run_dir) == intact
    assert not list(root.rglob("*.lock")), "a lock file was left"  # weak case: lock files


# --- case 8: plots: false -------------------------------------------------------------------------


def test_plots_false_writes_no_heatmap_and_plots_true_adds_it_without_recomputing(prepared):
    """Before: ablation.png was written (and embedded in report.md) with ``plots: false``. The
    heatmap is the report's now, so switching plots on reuses every stage as it is."""
    root, run_dir = prepared
    assert not (run_dir / "ablation.png").exists() and not list(run_dir.rglob("*.png"))
    assert "ablation.png" not in (run_dir / "report.md").read_text()
    plotted = _finished(
        cli("run", "--from", str(run_dir), "--set", "plots=true", "--set", "cache_dir=null",
            "--set", "name=plotted", cwd=root),
        root,
    )  # fmt: skip
    assert set(_origins(plotted).values()) == {f"run:{run_dir.name}"}  # nothing recomputed
    assert (plotted / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![ablation heatmap](ablation.png)" in (plotted / "report.md").read_text()
    assert (plotted / "plots" / "layer_profile.png").is_file()
    from mlinguality.run.results import Run

    Run.load(plotted)  # every recorded checksum matches


# --- case 9: Run.load checks the checksums stages.json records ----------------------------------


def test_a_hand_edited_run_is_refused_by_run_load_and_compare(prepared, tmp_path):
    """Before: ``ru,1,51`` edited to ``ru,1,99`` in selected_neurons.csv loaded silently:
    neuron 99 of a 64-wide layer, while ``run.masks`` still held neuron 51."""
    from mlinguality.errors import MlingualityError
    from mlinguality.run.results import Run

    _, run_dir = prepared
    edited = tmp_path / "edited"
    shutil.copytree(run_dir, edited)
    lines = (edited / "selected_neurons.csv").read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("ru,"))
    lang, layer, neuron, *rest = lines[index].split(",")
    lines[index] = ",".join([lang, layer, "99", *rest])
    (edited / "selected_neurons.csv").write_text("\n".join(lines) + "\n")
    needle = f"run {edited}: stage select's selected_neurons.csv has "
    line = assert_user_error(cli("compare", str(run_dir), str(edited), cwd=tmp_path), needle)
    assert "Run.load(path, verify=False)" in line and f"--resume {edited}" in line
    with pytest.raises(MlingualityError, match="stage select's selected_neurons.csv has"):
        Run.load(edited)
    loose = Run.load(edited, verify=False)  # asked for: the files as they are
    assert 99 in set(loose.neurons["neuron"]) and 99 not in set(Run.load(run_dir).neurons["neuron"])
    # the resume the line suggests recomputes the edited stage from the intact statistics
    resumed = cli("run", "--resume", str(edited), cwd=tmp_path)
    assert resumed.rc == 0, resumed.err[-3000:]
    assert (edited / "selected_neurons.csv").read_bytes() == (
        run_dir / "selected_neurons.csv"
    ).read_bytes()
    Run.load(edited)


def test_corrupt_outputs_and_records_name_their_file(prepared, tmp_path):
    """Before: ``compare`` on a corrupt JSON said "internal error ..." without the file, and a
    stages.json with ``"files": "nope"`` gave "AttributeError at the report (a bug?)"."""
    _, run_dir = prepared
    cut = tmp_path / "cut"
    shutil.copytree(run_dir, cut)
    (cut / "ablation.json").write_text((run_dir / "ablation.json").read_text()[:40])
    assert_user_error(
        cli("compare", str(run_dir), str(cut), cwd=tmp_path),
        "stage ablate's ablation.json has 40 bytes",
    )
    (cut / "stages.json").unlink()  # nothing to check against: the parse error names the file
    (cut / "layer_profile.csv").write_text('layer,metric\n1,"topk\n')
    assert_user_error(
        cli("compare", str(run_dir), str(cut), cwd=tmp_path),
        f"{cut / 'layer_profile.csv'}: not a readable CSV",
    )
    (cut / "layer_profile.csv").write_bytes((run_dir / "layer_profile.csv").read_bytes())
    assert_user_error(
        cli("compare", str(run_dir), str(cut), cwd=tmp_path),
        f"{cut / 'ablation.json'}: not valid JSON",
    )
    nope = tmp_path / "nope"
    shutil.copytree(run_dir, nope)
    record = stages(nope)
    record["score"]["files"] = "nope"
    (nope / "stages.json").write_text(json.dumps(record))
    resumed = cli("run", "--resume", str(nope), cwd=tmp_path)
    assert resumed.rc == 0, resumed.err[-3000:]
    assert "stage score in" in resumed.err and "its record of files is str" in resumed.err
    assert stages(nope)["score"]["files"] != "nope"
    assert {n: (nope / n).read_bytes() for n in CSVS} == {
        n: (run_dir / n).read_bytes() for n in CSVS
    }


def test_merge_refuses_to_overwrite_one_of_its_shards(prepared, tmp_path):
    """Before: ``merge a b --out a`` wrote the merged statistics over shard a."""
    _, run_dir = prepared
    for name in ("a", "b"):
        shutil.copytree(run_dir / "stats", tmp_path / name)
    intact = _snapshot(tmp_path / "a")
    assert_user_error(
        cli("merge", "a", "b", "--out", str(tmp_path / "a"), cwd=tmp_path),
        f"merge: --out {tmp_path / 'a'} is one of the shard folders merged",
    )
    assert _snapshot(tmp_path / "a") == intact


# --- weak cases: one process per run folder; errors between stages -------------------------------

_GATED = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from mlinguality.run import stage_cache

    real_run = stage_cache.StageLog.run

    def run(self, stage, key, names, compute):
        if stage == "score":  # hold the run folder until the test opens the gate
            Path(os.environ["WAITING"]).write_text(str(self.run_dir))
            end = time.monotonic() + 120
            while not Path(os.environ["GATE"]).exists() and time.monotonic() < end:
                time.sleep(0.05)
        return real_run(self, stage, key, names, compute)

    stage_cache.StageLog.run = run
    from mlinguality.cli.main import main

    main(sys.argv[1:])
    """
)


def test_a_run_folder_is_run_by_one_process_at_a_time(prepared, tmp_path):
    """Before: two simultaneous ``--resume`` of one run both computed every stage. A second
    process stops at once with one line, and the lock file goes with the first."""
    root, _ = prepared
    driver = tmp_path / "gated.py"
    driver.write_text(_GATED)
    waiting, gate = tmp_path / "waiting", tmp_path / "gate"
    args = ["run", str(root / "tiny.yaml"), "--set", f"output_dir={tmp_path / 'runs'}"]
    args += ["--set", f"cache_dir={tmp_path / 'cache'}", "--set", "ablation.enabled=false"]
    process = subprocess.Popen(
        [sys.executable, str(driver), *args], cwd=tmp_path,
        env={**env(), "WAITING": str(waiting), "GATE": str(gate)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        end = time.monotonic() + 120
        while not waiting.exists():
            assert process.poll() is None and time.monotonic() < end, process.communicate()
            time.sleep(0.05)
        run_dir = Path(waiting.read_text())
        line = assert_user_error(
            cli("run", "--resume", str(run_dir), cwd=tmp_path),
            f"run {run_dir}: process {process.pid} is running it now; wait for it to finish",
        )
        assert "\n" not in line
    finally:
        gate.write_text("")
        out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    assert stages(run_dir)["score"]["status"] == "done"
    assert not list(tmp_path.rglob("*.lock")), "a lock file was left"


def test_an_error_between_stages_says_before_the_first_stage(tmp_path):
    """Before: a fault outside a stage said "at the report" even before the first stage ran,
    and left a fresh folder holding only config.yaml."""
    from mlinguality.errors import RunFault
    from mlinguality.run.config import RunConfig
    from mlinguality.run.failures import stop_run
    from mlinguality.run.stage_cache import StageLog

    run_dir = tmp_path / "fresh"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("name: fresh\n")
    log = StageLog(run_dir, None)
    with pytest.raises(RunFault, match=r"^ValueError before the first stage: boom \(a bug\?"):
        stop_run(ValueError("boom"), RunConfig(), run_dir, log, fresh=True)
    assert not run_dir.exists()  # nothing to resume: nothing left behind
    kept = tmp_path / "kept"
    kept.mkdir()
    log = StageLog(kept, None)
    log.started = True
    with pytest.raises(RunFault, match=r"^ValueError at the report: boom .*--resume"):
        stop_run(ValueError("boom"), RunConfig(), kept, log, fresh=True)
    assert kept.exists()

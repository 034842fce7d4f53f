"""Fault cases of the command line (issue 13), each run as a user would: ``python -m mlinguality``
in a subprocess with the tiny model. Every case asserts the exit status, one ``mlinguality:`` line
naming what was wrong, no traceback, nothing left behind, and (for faults) that the next run
resumes or rebuilds. The kill-and-resume cases are in ``test_fault_injection.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

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

# --- input errors caught before torch is imported (about a second each) -----------------------

_BAD_CONFIGS = [
    # (case, YAML text, what the line must name)
    ("repeated key", "corpus:\n  limit: 3\nseed: 1\ncorpus:\n  langs: [en, fr]\n",
     ["key 'corpus' appears twice (lines 1 and 4)"]),
    ("repeated nested key", "corpus:\n  limit: 3\n  limit: 4\n",
     ["key 'limit' appears twice (lines 2 and 3)"]),
    ("unknown key", "selectivity:\n  top_rat: 0.1\n",
     ["unknown key 'selectivity.top_rat'", "did you mean 'selectivity.top_rate'"]),
    ("wrong type", "selectivity:\n  top_rate: lots\n", ["selectivity.top_rate: expected a number"]),
    ("out of range", "selectivity:\n  top_rate: 5\n", ["selectivity.top_rate: must be in (0, 1]"]),
    ("bad choice", "ablation:\n  mode: half\n", ["ablation.mode: expected one of"]),
    ("invalid YAML", "ablation: [unclosed\n", ["line 2 not valid YAML"]),
    ("a list, not a mapping", "- a\n- b\n", ["expected a mapping"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "text", "needles"), _BAD_CONFIGS, ids=[c[0] for c in _BAD_CONFIGS]
)
def test_bad_config_files(tmp_path, case, text, needles):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    line = assert_user_error(cli("run", str(path), cwd=tmp_path), f"config {path}", *needles)
    assert "\n" not in line
    assert not (tmp_path / "runs").exists()


def test_bad_paths_and_arguments(tmp_path):
    """Missing or unreadable config, a folder as config, bad --set, bad --resume folder."""
    assert_user_error(cli("run", "absent.yaml", cwd=tmp_path), "absent.yaml: no such file")
    assert_user_error(cli("run", str(tmp_path), cwd=tmp_path), "is a directory, not a YAML file")
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert_user_error(cli("run", "latin1.yaml", cwd=tmp_path), "latin1.yaml: not UTF-8")
    assert_user_error(cli("run", "--set", "seed", cwd=tmp_path), "expected section.key=value")
    assert_user_error(cli("run", "--resume", str(tmp_path), cwd=tmp_path), "no config.yaml there")
    assert not (tmp_path / "runs").exists()


def _sweep_file(path: Path, **changes) -> Path:
    data = {
        "program": "experiments/run.py",
        "method": "grid",
        "parameters": {"selectivity.top_rate": {"values": [0.01, 0.02, 0.05]}},
        "command": ["${env}", "${interpreter}", "${program}", "${args}"],
    }
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return path


def test_bad_sweeps_are_refused_before_any_run(tmp_path):
    good = _sweep_file(tmp_path / "s.yaml")
    for count in ("-1", "0"):
        assert_user_error(
            cli("sweep", str(good), "--count", count, cwd=tmp_path),
            f"--count: must be a positive number of runs, got {count}",
        )
    typo = _sweep_file(tmp_path / "t.yaml", parameters={"selectivity.toprate": {"value": 0.1}})
    assert_user_error(
        cli("sweep", str(typo), cwd=tmp_path),
        "parameters.selectivity.toprate",
        "did you mean 'selectivity.top_rate'",
        "sweep parameters must be config keys",
    )
    bad_value = _sweep_file(
        tmp_path / "v.yaml", parameters={"ablation.mode": {"values": ["zero", "half"]}}
    )
    assert_user_error(cli("sweep", str(bad_value), cwd=tmp_path), "run 1", "ablation.mode")
    bayes = _sweep_file(tmp_path / "b.yaml", method="bayes")
    assert_user_error(cli("sweep", str(bayes), cwd=tmp_path), "needs the W&B sweep server")
    (tmp_path / "d.yaml").write_text(good.read_text() + "method: random\n")
    assert_user_error(cli("sweep", "d.yaml", cwd=tmp_path), "key 'method' appears twice")
    assert not (tmp_path / "runs").exists()


# --- one prepared tiny run, shared --------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A finished tiny run (in this process), its config file and its stage cache."""
    from mlinguality.run.config import RunConfig
    from mlinguality.run.runner import run_experiment

    root = tmp_path_factory.mktemp("faults")
    write_corpus(root / "corpus.jsonl")
    data = config_dict(root)
    write_config(root / "tiny.yaml", data)
    run_dir = run_experiment(RunConfig.from_dict(data))
    return root, run_dir


def test_errors_found_at_start_leave_no_run_folder(prepared, tmp_path):
    root, _ = prepared
    config = str(root / "tiny.yaml")
    out = f"output_dir={tmp_path / 'runs'}"
    (tmp_path / "afile").write_text("")
    cases = [
        (["model.device=cuda"], "model.device=cuda: this torch", 2),
        (["model.device=gpu"], "model.device=gpu: not a torch device", 2),
        (
            [f"output_dir={tmp_path / 'afile'}"],
            "is a file, not a folder; choose another output_dir",
            2,
        ),
        (["output_dir=/sys/mlinguality-test"], "output_dir /sys/mlinguality-test: cannot write", 2),
        (["corpus.source=absent.tsv"], "absent.tsv: no such file", 2),
        (["selectivity.metrics=topk,nope"], "selectivity.metrics: unknown 'nope'", 2),
        (["selectivity.pairs=en-xx"], "'en-xx' names 'xx', not in corpus.langs", 2),
    ]
    sets = []
    for overrides, needle, status in cases:
        args = ["run", config, "--set", out]
        for override in overrides:
            args += ["--set", override]
        sets.append((args, needle, status))
    for args, needle, status in sets:
        assert_user_error(cli(*args, cwd=tmp_path), needle, status=status)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    assert not Path("/sys/mlinguality-test").exists()


def test_errors_found_mid_run_leave_no_orphan_folder(prepared, tmp_path):
    """Corpus and model errors surface once a stage starts; the fresh folder is removed."""
    root, _ = prepared
    (tmp_path / "noru.jsonl").write_text('{"id": "a", "en": "x", "fr": "y"}\n')
    empty = {**TEXTS, "ru": [""] * len(TEXTS["en"])}
    write_corpus(tmp_path / "empty_ru.jsonl", empty)
    (tmp_path / "nomodel").mkdir()
    cases = [
        ("noru.jsonl", "tiny", ["noru.jsonl", "no key for language 'ru'"]),
        ("empty_ru.jsonl", "tiny", ["dropped empty 8", "every language needs a non-empty text"]),
        (str(root / "corpus.jsonl"), str(tmp_path / "nomodel"), ["no config.json"]),
        (
            str(root / "corpus.jsonl"),
            "no-such-org/no-such-model",
            ["not in the Hugging Face cache"],
        ),
    ]
    for source, spec, needles in cases:
        result = cli(
            "run", str(root / "tiny.yaml"),
            "--set", f"output_dir={tmp_path / 'runs'}", "--set", f"cache_dir={tmp_path / 'cache'}",
            "--set", f"corpus.source={source}", "--set", f"model.spec={spec}",
            cwd=tmp_path,
        )  # fmt: skip
        line = assert_user_error(result, *needles)
        assert "raise corpus.limit" not in line
        assert run_dirs(tmp_path) == [], (source, spec)


def _bytes(run_dir: Path) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in CSVS}


def test_damaged_cache_entry_is_rebuilt_and_runs_never_share_files(prepared, tmp_path):
    """Bad cases 2 and 3: a truncated cached stats file is rebuilt (with a warning), and the
    files of a run are copies: editing one changes neither the cache nor another run."""
    root, first = prepared
    cache = root / "cache"
    (collect,) = cache.glob("collect-*")
    stats = collect / "stats" / "en.safetensors"
    intact = stats.read_bytes()
    stats.write_bytes(intact[: len(intact) // 2])
    result = cli("run", str(root / "tiny.yaml"), "--set", "name=again", cwd=root)
    assert result.rc == 0, result.err[-2000:]
    assert "is damaged (stats/en.safetensors has" in result.err and "rebuilding it" in result.err
    (again,) = (root / "runs").glob("again-*")
    assert stages(again)["collect"]["origin"] == "computed"
    # the cache entry was rebuilt: whole again, and matching its new record
    # (safetensors metadata order varies between writes, so compare the tensors)
    from safetensors.torch import load_file

    from mlinguality.run.stage_cache import damage

    assert len(stats.read_bytes()) == len(intact)
    record = json.loads((collect / "record.json").read_text())["files"]
    assert damage(collect, record) is None
    rebuilt, original = load_file(stats), load_file(first / "stats" / "en.safetensors")
    assert rebuilt.keys() == original.keys()
    assert all(rebuilt[k].equal(original[k]) for k in rebuilt)
    assert _bytes(again) == _bytes(first)
    for path in [again / "stats" / "en.safetensors", again / "layer_profile.csv"]:
        assert path.stat().st_nlink == 1
    (score,) = cache.glob("score-*")
    cached_csv = (score / "layer_profile.csv").read_bytes()
    with (again / "layer_profile.csv").open("a") as handle:  # edit one run's copy in place
        handle.write("edited\n")
    assert (score / "layer_profile.csv").read_bytes() == cached_csv
    assert (first / "layer_profile.csv").read_bytes() == cached_csv
    # the edited run folder is damaged too: --resume recomputes (or re-copies) that stage
    before = stages(again)
    resumed = cli("run", "--resume", str(again), cwd=root)
    assert resumed.rc == 0, resumed.err[-2000:]
    assert "stage score in" in resumed.err and "is damaged" in resumed.err
    assert _bytes(again) == _bytes(first)
    assert stages(again)["collect"] == before["collect"]  # intact: kept, not redone
    assert stages(again)["score"]["origin"].startswith("cache:score-")


def test_read_only_cache_still_runs(prepared, tmp_path):
    """A cache folder that cannot be written: one warning, the run completes from scratch."""
    root, first = prepared
    result = cli(
        "run", str(root / "tiny.yaml"), "--set", f"output_dir={tmp_path / 'runs'}",
        "--set", "cache_dir=/sys/mlinguality-cache", "--set", "ablation.enabled=false",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.rc == 0, result.err[-2000:]
    assert "cache_dir /sys/mlinguality-cache: cannot write there" in result.err
    (run_dir,) = run_dirs(tmp_path)
    assert (run_dir / "layer_profile.csv").read_bytes() == (
        first / "layer_profile.csv"
    ).read_bytes()


def test_disk_full_mid_run_is_one_line_and_resumes(prepared, tmp_path):
    """A write limit (RLIMIT_FSIZE, as a full disk) stops the run at a stage with one line; the
    resume finishes with the results of an uninterrupted run."""
    import resource

    root, first = prepared

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    args = ["run", str(root / "tiny.yaml"), "--set", f"output_dir={tmp_path / 'runs'}"]
    args += ["--set", f"cache_dir={tmp_path / 'cache'}"]
    result = cli(*args, cwd=tmp_path, preexec_fn=limit)
    line = assert_user_error(
        result, "File too large", "resume with `mlinguality run --resume", status=1
    )
    (run_dir,) = run_dirs(tmp_path)
    assert str(run_dir) in line
    failed = [name for name, entry in stages(run_dir).items() if entry["status"] == "failed"]
    assert len(failed) == 1 and f"at stage {failed[0]}" in line
    resumed = cli("run", "--resume", str(run_dir), cwd=tmp_path)
    assert resumed.rc == 0, resumed.err[-2000:]
    assert _bytes(run_dir) == _bytes(first)


def _wait_for(predicate, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


STALLED_COLLECTION = """
import importlib, sys, time
from pathlib import Path

collection = importlib.import_module("mlinguality.activations.collect")  # the module itself
READY = Path(sys.argv[1])

def stalled(*args, **kwargs):  # inside stage collect until the test's signal arrives
    READY.touch()
    while True:
        time.sleep(0.05)

collection.collect = stalled
from mlinguality.cli.main import main
sys.argv = ["mlinguality", *sys.argv[2:]]
raise SystemExit(main())
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_is_one_line_and_resumes(prepared, tmp_path, signum):
    """Ctrl-C (or SIGTERM) mid-collection: "interrupted at stage collect; resume with ...", the
    stage record says interrupted, and --resume finishes with identical CSVs.

    The collection is held (a wrapper replaces it with a wait) so the signal lands inside the
    stage however fast the machine is; the tiny run took 3.4 s, and a signal sent on seeing
    stages.json once arrived after it had finished.
    """
    root, first = prepared
    script, ready = tmp_path / "stalled.py", tmp_path / "collecting"
    script.write_text(STALLED_COLLECTION)
    args = ["run", str(root / "tiny.yaml"), "--set", f"output_dir={tmp_path / 'runs'}"]
    args += ["--set", f"cache_dir={tmp_path / 'cache'}"]
    process = subprocess.Popen(
        [sys.executable, str(script), str(ready), *args],
        cwd=tmp_path, env=env(), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for(ready.exists)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    (run_dir,) = run_dirs(tmp_path)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    expected = f"mlinguality: interrupted at stage collect; resume with `mlinguality run --resume {run_dir}`"
    assert [line for line in err.splitlines() if line.startswith("mlinguality:")] == [expected]
    assert stages(run_dir)["collect"]["status"] == "interrupted"
    resumed = cli("run", "--resume", str(run_dir), cwd=tmp_path)
    assert resumed.rc == 0, resumed.err[-2000:]
    assert _bytes(run_dir) == _bytes(first)


def test_stale_temp_folders_are_cleaned(prepared, tmp_path):
    """Temp folders of killed processes (dead pid) in the cache go on the next start; a live
    process's temp folder stays."""
    from mlinguality.run.stage_cache import clean_stale_temps

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".collect-abc.tmp-{dead.pid}"
    live = tmp_path / f".collect-abc.tmp-{os.getpid()}"
    for folder in (stale, live):
        (folder / "stats").mkdir(parents=True)
    assert clean_stale_temps(tmp_path) == [stale]
    assert not stale.exists() and live.exists()
    root, _ = prepared
    result = cli("run", str(root / "tiny.yaml"), "--set", f"cache_dir={tmp_path}", "--set", "name=t",
                 "--set", "ablation.enabled=false", cwd=root)  # fmt: skip
    assert result.rc == 0, result.err[-2000:]
    assert live.exists()
    (entry,) = tmp_path.glob("collect-*")
    assert "stats/en.safetensors" in json.loads((entry / "record.json").read_text())["files"]


# --- model folders ------------------------------------------------------------------------------


def _damage_model_folders(root: Path) -> dict[str, Path]:
    """A saved tiny model, and copies without weights, truncated, random bytes, NaN weights."""
    import shutil
    import struct

    from mlinguality.model import TinyModelConfig, build_tiny_hf_model, build_tiny_tokenizer

    good = root / "good"
    config = TinyModelConfig(n_layers=2)
    tokenizer = build_tiny_tokenizer(config)
    build_tiny_hf_model(config, len(tokenizer)).save_pretrained(good)
    tokenizer.save_pretrained(good)
    folders = {}
    for name in ("noweights", "truncated", "random", "nan"):
        folders[name] = root / name
        shutil.copytree(good, folders[name])
    (folders["noweights"] / "model.safetensors").unlink()
    weights = (good / "model.safetensors").read_bytes()
    (folders["truncated"] / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    (folders["random"] / "model.safetensors").write_bytes(os.urandom(len(weights)))
    n = struct.unpack("<Q", weights[:8])[0]
    header = json.loads(weights[8 : 8 + n])
    first = min((v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"), default=0)
    flipped = bytearray(weights)
    flipped[8 + n + first + 2 : 8 + n + first + 4] = b"\xff\x7f"  # a float32 exponent of all ones
    (folders["nan"] / "model.safetensors").write_bytes(bytes(flipped))
    return folders


def test_damaged_model_folders_are_one_line(tmp_path):
    folders = _damage_model_folders(tmp_path)
    cases = {
        "noweights": "no weights (model.safetensors or pytorch_model.bin)",
        "truncated": "model.safetensors: truncated or padded",
        "random": "model.safetensors: not a safetensors file",
        "nan": "holds NaN or inf (damaged file?)",
    }
    for name, needle in cases.items():
        line = assert_user_error(cli("model", "check", str(folders[name]), cwd=tmp_path), needle)
        assert str(folders[name]) in line
    good = cli("model", "check", "tiny", cwd=tmp_path)
    assert good.rc == 0 and good.out.splitlines()[0] == "tiny: 4 layers x d_mlp=64, vocabulary 400"
    assert_user_error(cli("model", "check", "tiny:bert", cwd=tmp_path), "use 'tiny'")


# --- corpora ------------------------------------------------------------------------------------


def test_indonesian_column_and_long_texts(prepared, tmp_path):
    """A TSV with Indonesian ('id') reads as a language; a text longer than the model's context
    is refused naming its example (or, with corpus.too_long=truncate, cut with a warning)."""
    tsv = tmp_path / "id.tsv"
    rows = ["example_id\ten\tid\tfr"]
    rows += [
        f"v{i}\t{en}\tTeks {i}.\t{fr}"
        for i, (en, fr) in enumerate(zip(TEXTS["en"], TEXTS["fr"], strict=True))
    ]
    tsv.write_text("\n".join(rows) + "\n")
    info = cli("corpus", "info", str(tsv), "--langs", "en,id", cwd=tmp_path)
    assert info.rc == 0, info.err[-2000:]
    assert "corpus " in info.out and "\nid " in info.out
    both = tmp_path / "both.tsv"
    both.write_text("id\ten\tid\nv1\ta\tb\n")
    assert_user_error(
        cli("corpus", "info", str(both), "--langs", "en", cwd=tmp_path),
        "'id' is Indonesian's language code, so name the example-id column 'example_id'",
    )
    root, _ = prepared
    long = {lang: list(texts) for lang, texts in TEXTS.items()}
    long["en"][3] = "Blessed are the peacemakers. " * 40  # 600 tokens > 512, the tiny context
    long["fr"][3] = "Heureux ceux qui procurent la paix. " * 40  # (all three long: an aligned
    long["ru"][3] = "Блаженны миротворцы. " * 40  # verse, not one dropped for its length ratio)
    write_corpus(tmp_path / "long.jsonl", long)
    args = ["run", str(root / "tiny.yaml"), "--set", f"output_dir={tmp_path / 'runs'}"]
    args += ["--set", f"cache_dir={tmp_path / 'cache'}", "--set", "model.spec=tiny:gpt2"]
    args += ["--set", f"corpus.source={tmp_path / 'long.jsonl'}", "--set", "ablation.enabled=false"]
    assert_user_error(
        cli(*args, cwd=tmp_path),
        "example 'v3' (en) has 600 tokens,",
        "more than the model's context of 512; shorten it, or set corpus.too_long=truncate",
    )
    assert run_dirs(tmp_path) == []
    truncated = cli(*args, "--set", "corpus.too_long=truncate", cwd=tmp_path)
    assert truncated.rc == 0, truncated.err[-2000:]
    assert "truncated 3 text(s) to the model's context of 512 tokens" in truncated.err
    assert "v3 (en), v3 (fr), v3 (ru)" in truncated.err

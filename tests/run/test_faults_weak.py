"""Weak cases of issue 22, run as a user would: ``python -m mlinguality`` in a subprocess with
the tiny model. Each asserts the exit status, one ``mlinguality:`` line (or one warning) naming
what was wrong and what to do, no traceback, and nothing left behind by a refused run.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.run.faults import (
    TEXTS,
    assert_user_error,
    cli,
    config_dict,
    run_dirs,
    write_config,
    write_corpus,
)


@pytest.fixture
def tiny(tmp_path) -> Path:
    """A tiny-model config file over a JSONL corpus in ``tmp_path`` (no run made)."""
    write_corpus(tmp_path / "corpus.jsonl")
    data = config_dict(tmp_path)
    data["ablation"]["enabled"] = False
    return write_config(tmp_path / "tiny.yaml", data)


def _nothing_left(root: Path) -> None:
    assert run_dirs(root) == []
    assert not list(root.rglob("wandb")), "a W&B run was started"
    assert not list(root.rglob("*.lock")), "a lock file was left"


def test_a_csv_field_over_the_csv_modules_limit_is_read_and_truncated(tiny):
    """Before: a field over 131,072 characters failed as "text follows a quoted field" (the
    csv module's field_size_limit), with corpus.too_long=truncate too."""
    root = tiny.parent
    long = {lang: list(texts) for lang, texts in TEXTS.items()}
    for lang in long:
        long[lang][3] = (long[lang][3] + " ") * (140_000 // len(long[lang][3]))
    assert min(len(long[lang][3]) for lang in long) > 131_072
    with (root / "long.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["example_id", *long])
        for i in range(len(long["en"])):
            writer.writerow([f"v{i}", *(long[lang][i] for lang in long)])
    args = ["run", str(tiny), "--set", f"corpus.source={root / 'long.csv'}"]
    assert_user_error(cli(*args, cwd=root), "example 'v3' (en) has", "set corpus.too_long=truncate")
    _nothing_left(root)
    done = cli(*args, "--set", "corpus.too_long=truncate", cwd=root)
    assert done.rc == 0, done.err[-2000:]
    assert "truncated 3 text(s) to the model's context" in done.err
    assert "v3 (en), v3 (fr), v3 (ru)" in done.err


@pytest.mark.parametrize("bad", ["null", "NaN", "Infinity", "true", '""', "[1]"])
def test_a_jsonl_id_that_is_not_an_id_is_refused_at_its_line(tiny, bad):
    """Before: ``"id": null`` became the id ``'None'`` and ``NaN`` became ``'nan'``."""
    root = tiny.parent
    lines = (root / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].replace('"id": "v2"', f'"id": {bad}')
    assert bad in lines[2]
    (root / "bad.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    needle = f"{root / 'bad.jsonl'}:3: 'id' is {bad}, not an id"
    info = cli("corpus", "info", "bad.jsonl", "--langs", "en,fr", cwd=root)
    assert_user_error(info, needle.removeprefix(f"{root}/"))
    line = assert_user_error(
        cli("run", str(tiny), "--set", f"corpus.source={root / 'bad.jsonl'}", cwd=root), needle
    )
    assert "leave the key out" in line
    _nothing_left(root)


def test_integer_jsonl_ids_are_kept(tmp_path):
    from mlinguality.corpus import load_corpus

    lines = [json.dumps({"id": i, "en": f"text {i}", "fr": f"texte {i}"}) for i in range(4)]
    (tmp_path / "ints.jsonl").write_text("\n".join(lines) + "\n")
    assert load_corpus(str(tmp_path / "ints.jsonl"), ["en", "fr"]).ids == ["0", "1", "2", "3"]


# ids all on the selection side of the seed-0 hash (5 of them evaluate under corpus.seed=1)
_ONE_SIDED = ["r1", "r2", "r4", "r6", "r9", "r10", "r12", "r15"]


def test_a_one_sided_id_hash_split_says_why_and_corpus_seed_changes_it(tiny):
    """Before: "8 usable examples ... split into 8 to select and 0 to evaluate; the corpus needs
    at least 3 aligned examples" (it had 8), and corpus.seed did not change the split."""
    from mlinguality.corpus import load_corpus, split_salt

    root = tiny.parent
    lines = (root / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    records = [{**json.loads(line), "id": new} for line, new in zip(lines, _ONE_SIDED, strict=True)]
    (root / "hashed.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    args = ["run", str(tiny), "--set", f"corpus.source={root / 'hashed.jsonl'}"]
    line = assert_user_error(
        cli(*args, cwd=root),
        "8 usable examples in en,fr,ru split into 8 to select and 0 to evaluate by the hash of "
        "each example's id (corpus.eval_fraction=0.5, corpus.seed=0)",
        "try another corpus.seed, change corpus.eval_fraction or add examples",
    )
    assert "at least 3 aligned examples" not in line
    _nothing_left(root)
    corpus = load_corpus(str(root / "hashed.jsonl"), ["en", "fr", "ru"])
    _, evaluate = corpus.split(0.5, split_salt(1))
    assert 0 < len(evaluate) < len(corpus)
    done = cli(*args, "--set", "corpus.seed=1", cwd=root)
    assert done.rc == 0, done.err[-2000:]
    (run_dir,) = run_dirs(root)
    assert "split into" not in done.err


def test_steering_a_language_with_no_selected_neurons_warns_once_naming_it(tiny):
    """Before: steering from or towards a language with 0 selected neurons reported results
    (half an intervention) without a word."""
    root = tiny.parent
    pairs = "en-fr,fr-en,en-ru,ru-fr"
    done = cli(
        "run", str(tiny), "--set", "selectivity.top_rate=0.01", "--set", "steering.enabled=true",
        "--set", f"steering.pairs={pairs}", "--set", "steering.alphas=[1.0]",
        "--set", "steering.n_prompts=2", "--set", "steering.max_new_tokens=3", cwd=root,
    )  # fmt: skip
    assert done.rc == 0, done.err[-2000:]
    (run_dir,) = run_dirs(root)
    with (run_dir / "selected_neurons.csv").open() as handle:
        chosen = {row["lang"] for row in csv.DictReader(handle)}
    empty = [lang for lang in ("en", "fr", "ru") if lang not in chosen]
    assert empty and chosen, (empty, chosen)  # 1% of 128 neurons: some languages get none
    warnings = [line for line in done.err.splitlines() if "0 selected neurons" in line]
    assert len(warnings) == len(empty), warnings
    for lang, line in zip(empty, warnings, strict=True):
        assert f"steering: '{lang}' has 0 selected neurons" in line
        assert "raise selectivity.top_rate" in line
        away = [p.replace("-", "->") for p in pairs.split(",") if p.startswith(lang)]
        if away:
            assert f"steering away from it ({', '.join(away)}) deactivates nothing" in line
    assert (run_dir / "steering" / "steering_summary.csv").is_file()


def test_compare_across_models_or_languages_warns_in_one_line(tiny):
    """Before: ``compare`` put the numbers of runs of other models or language sets side by
    side without a word."""
    root = tiny.parent
    made = {}
    for name, sets in {
        "a": [],
        "rate": ["selectivity.top_rate=0.1"],
        "other": ["model.spec=tiny:gpt2", "corpus.langs=en,fr", "selectivity.control_pairs=[]"],
    }.items():
        args = ["run", str(tiny), "--set", f"name={name}"]
        for item in sets:
            args += ["--set", item]
        done = cli(*args, cwd=root)
        assert done.rc == 0, done.err[-2000:]
        (made[name],) = (root / "runs").glob(f"{name}-*")
    alike = cli("compare", str(made["a"]), str(made["rate"]), cwd=root)
    assert alike.rc == 0, alike.err[-2000:]
    assert "differ" not in alike.err and "Not like for like" not in alike.out
    other = cli("compare", str(made["a"]), str(made["other"]), cwd=root)
    assert other.rc == 0 and "Traceback" not in other.err, other.err[-2000:]
    (line,) = [line for line in other.err.splitlines() if "differ" in line]
    assert f"compare {made['a']} {made['other']}: " in line
    assert "models differ ('tiny (seed 0)' vs 'tiny:gpt2 (seed 0)')" in line
    assert "languages differ (en,fr,ru vs en,fr)" in line and "not like for like" in line
    assert "**Not like for like**: models differ" in other.out


def test_the_ablation_matrix_is_logged_once_for_the_whole_matrix(tiny):
    """Before: "ablation matrix (...): 1 rows x 3 languages + 2 random evaluations" once per
    row (three times), which read as a one-row matrix; an empty row read "0 rows"."""
    root = tiny.parent
    done = cli("run", str(tiny), "--set", "ablation.enabled=true", cwd=root)
    assert done.rc == 0, done.err[-2000:]
    lines = [line for line in done.err.splitlines() if "ablation matrix (" in line]
    assert len(lines) == 1, lines
    (run_dir,) = run_dirs(root)
    with (run_dir / "selected_neurons.csv").open() as handle:
        chosen = {row["lang"] for row in csv.DictReader(handle)}
    n = len(chosen & {"en", "fr", "ru"})
    assert f"neurons of {n} of 3 languages ablated, each evaluated on 3 languages" in lines[0]
    assert "ablation matrix (zero, metric=lape, top_rate=0.05)" in lines[0]
    assert " rows " not in lines[0]
    # the count of language evaluations the configs and README state is the pipeline's:
    # L baselines + L per row ablated + n_random count- and n_random activity-matched controls
    # per row (here n of the L=3 rows have neurons; the paper's 5 rows all do)
    with (run_dir / "ablation.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 3 + n * (3 + 1 + 1)


def _evaluations(langs: int, n_random: int, activity: bool) -> int:
    return langs * (langs + 1 + n_random * (1 + activity))


def test_the_paper_configs_evaluation_count_is_stated_right():
    """Before: paper.yaml said 35 evaluations, the README 40 (40 is right: the activity-matched
    control adds one per language to the 35 of a run without it)."""
    import yaml

    from tests.run.faults import REPO

    text = (REPO / "experiments/configs/paper.yaml").read_text()
    paper = yaml.safe_load(text)
    ab = paper["ablation"]
    n = _evaluations(len(paper["corpus"]["langs"]), ab["n_random"], ab["activity_control"])
    assert n == 40
    assert f"each of the {n} evaluations" in text
    readme = " ".join((REPO / "README.md").read_text().split())
    assert f"{n} language evaluations" in readme and "35 evaluations" not in text


def test_run_and_demo_help_describe_with_an_example_and_the_duration(tmp_path):
    """Before: ``run --help`` and ``demo --help`` listed options only: no description, example
    or duration."""
    for command, example in [
        ("run", "mlinguality run paper --dry-run"),
        ("demo", "mlinguality demo"),
    ]:
        shown = cli(command, "--help", cwd=tmp_path)
        assert shown.rc == 0, shown.err[-2000:]
        text = shown.out
        assert "examples:" in text and example in text
        assert "duration:" in text and "4-9 min on a 2-core CPU" in text
        assert "~90 s" in text and "model.threads=1" in text
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("## Quickstart: the main job", 1)[1].split("```", 2)[1]
    assert "mlinguality demo --set model.threads=1" in block  # the advice in the command block
    assert "(~90 s on a 2-core CPU)" in readme and "(~50 s)" not in readme


def test_an_offline_run_keeps_a_readable_record_of_what_it_logged(tiny):
    """Before: an offline run's config, history and summary were only inside the binary
    ``run-ID.wandb`` log (no wandb-summary.json, no config.yaml; ``wandb.Api`` needs a server).
    Now ``RUN_DIR/wandb/logged.json`` holds them, equal to what the log holds."""
    from tests.wandb_reader import read_offline_run

    root = tiny.parent
    done = cli("run", str(tiny), "--wandb", "offline", cwd=root)
    assert done.rc == 0, done.err[-2000:]
    (run_dir,) = run_dirs(root)
    logged = json.loads((run_dir / "wandb" / "logged.json").read_text())
    offline = Path(logged["offline_dir"])
    assert offline.parent == run_dir / "wandb" and offline.name.endswith(logged["id"])
    truth = read_offline_run(offline)
    assert logged["mode"] == "offline" and logged["name"] == truth.name == run_dir.name
    assert logged["summary"] and logged["summary"] == {
        k: truth.summary[k] for k in logged["summary"]
    }
    assert logged["config"]["corpus"] == truth.config["corpus"]
    rows = iter(truth.history)  # each logged row is (part of) a history row, in order
    for mine in logged["history"]:
        assert any(all(row.get(k) == v for k, v in mine.items()) for row in rows), mine
    logged_keys = {key for row in truth.history for key in row}
    for table in logged["tables"]:  # a table is logged as nested keys (KEY/_type, ...)
        assert any(key.startswith(f"{table['key']}/") for key in logged_keys), table
    assert {a["name"] for a in logged["artifacts"]} == {a["name"] for a in truth.artifacts}


def test_a_key_of_another_section_names_where_it_lives(tiny):
    """``ablation.n_permutations`` is selectivity's: the message says so instead of suggesting
    the closest spelling in the wrong section (``ablation.positions``)."""
    result = cli("run", str(tiny), "--set", "ablation.n_permutations=3", cwd=tiny.parent)
    line = assert_user_error(result, "'ablation.n_permutations'", "selectivity.n_permutations")
    assert "ablation.positions" not in line
    _nothing_left(tiny.parent)
    typo = cli("run", str(tiny), "--set", "ablation.positons=all", cwd=tiny.parent)
    assert_user_error(typo, "did you mean 'ablation.positions'")


def test_resume_refuses_a_folder_that_is_not_a_run(tiny):
    """A folder holding a ``config.yaml`` but no ``stages.json`` and not named like a run (here
    the config's own folder) is refused in one line; nothing is computed into it."""
    folder = tiny.parent / "configs"
    folder.mkdir()
    (folder / "config.yaml").write_text(tiny.read_text())
    before = sorted(path.name for path in folder.iterdir())
    result = cli("run", "--resume", str(folder), cwd=tiny.parent)
    assert_user_error(result, "not a run folder", "mlinguality run")
    assert sorted(path.name for path in folder.iterdir()) == before


def test_a_missing_language_lists_an_id_column_as_what_it_may_be(tmp_path):
    """A TSV whose columns are ``id, en, fr``: asking for ``de`` lists ``id`` too (it may be
    Indonesian), not only en and fr."""
    corpus = tmp_path / "corpus.tsv"
    corpus.write_text("id\ten\tfr\nv1\tAmen.\tAmen.\nv2\tLight.\tLumière.\n", encoding="utf-8")
    data = config_dict(tmp_path)
    data["corpus"] = {**data["corpus"], "source": str(corpus), "langs": ["en", "de"]}
    config = write_config(tmp_path / "tiny.yaml", data)
    result = cli("run", str(config), cwd=tmp_path)
    assert_user_error(result, "'de'", "available: id (the ids, or Indonesian), en, fr")

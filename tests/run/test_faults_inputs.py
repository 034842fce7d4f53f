"""Fault cases of the inputs (issue 14), run as a user would: ``python -m mlinguality`` in a
subprocess. Each asserts the exit status, one ``mlinguality:`` line naming the file, key or value
and what to do, no traceback, and no run folder left by a refused run; the accepted ones, that
the result is right. The cases that need a finished run are in ``test_faults_runs.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mlinguality.corpus import load_corpus
from mlinguality.errors import MlingualityError
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
    return write_config(tmp_path / "tiny.yaml", config_dict(tmp_path))


def _nothing_left(root: Path) -> None:
    assert run_dirs(root) == []
    assert not list(root.rglob("wandb")), "a W&B run was started"
    assert not list(root.rglob("*.lock")), "a lock file was left"


# --- numbers out of range (cases 7 and 10) -------------------------------------------------------

_OUT_OF_RANGE = [
    # (--set, what the line must say)
    ("seed=18446744073709551616", "seed: must be in [0, 4294967295] (2**32 - 1), got 18446744073709551616"),
    ("seed=-1", "seed: must be in [0, 4294967295]"),
    ("corpus.seed=4294967296", "corpus.seed: must be in [0, 4294967295]"),
    ("selectivity.seed=-3", "selectivity.seed: must be in [0, 4294967295]"),
    ("steering.temperature=-1", "steering.temperature: must be > 0, got -1"),
    ("steering.temperature=0", "steering.temperature: must be > 0, got 0"),
    ("steering.temperature=.nan", "steering.temperature: must be a finite number, got nan"),
    ("steering.alphas=[.nan, 1]", "steering.alphas: must be a finite number, got nan"),
    ("steering.alphas=0.5,.inf", "steering.alphas: must be a finite number, got inf"),
    ("steering.quantile=1.5", "steering.quantile: must be in [0, 1], got 1.5"),
    ("steering.quantile=.nan", "steering.quantile: must be in [0, 1], got nan"),
    ("corpus.eval_fraction=1", "corpus.eval_fraction: must be in (0, 1), got 1.0"),
    ("corpus.eval_fraction=.nan", "corpus.eval_fraction: must be in (0, 1), got nan"),
    ("selectivity.top_rate=.nan", "selectivity.top_rate: must be in (0, 1], got nan"),
]  # fmt: skip


@pytest.mark.parametrize(("override", "needle"), _OUT_OF_RANGE, ids=[c[0] for c in _OUT_OF_RANGE])
def test_numbers_out_of_range_are_refused_before_the_run(tiny, override, needle):
    """Before: a seed of 2**64 failed in torch.manual_seed ("Overflow ... at the report (a
    bug?)") leaving a folder with only config.yaml; a negative temperature or NaN alphas ran."""
    root = tiny.parent
    line = assert_user_error(cli("run", str(tiny), "--set", override, cwd=root), needle)
    assert line == f"mlinguality: error: {needle}" or line.startswith(
        f"mlinguality: error: {needle}"
    )
    _nothing_left(root)


def test_in_range_numbers_pass_and_comma_lists_of_numbers_parse(tiny):
    result = cli(
        "run", str(tiny), "--dry-run", "--set", "seed=4294967295", "--set", "steering.alphas=0.5,2",
        "--set", "steering.temperature=0.7", "--set", "steering.do_sample=true", cwd=tiny.parent,
    )  # fmt: skip
    assert result.rc == 0, result.err[-2000:]
    config = yaml.safe_load(result.out)
    assert config["seed"] == 4294967295 and config["steering"]["alphas"] == [0.5, 2.0]
    assert config["steering"]["temperature"] == 0.7


# --- YAML files (case 6 and the empty file) ------------------------------------------------------


def test_yaml_merge_keys_work_and_repeated_keys_are_still_refused(tmp_path):
    """Before: ``<<: *anchor`` failed with "could not determine a constructor for the tag
    'tag:yaml.org,2002:merge'" although yaml.safe_load reads it."""
    merged = tmp_path / "merge.yaml"
    merged.write_text(
        "collection: &batches\n  batch_tokens: 256\nablation:\n  <<: *batches\n  mode: mean\n"
    )
    result = cli("run", str(merged), "--dry-run", cwd=tmp_path)
    assert result.rc == 0, result.err[-2000:]
    config = yaml.safe_load(result.out)
    assert config == yaml.safe_load(
        cli("run", "--dry-run", "--set", "collection.batch_tokens=256", "--set",
            "ablation.batch_tokens=256", "--set", "ablation.mode=mean", cwd=tmp_path).out
    )  # fmt: skip
    overridden = tmp_path / "override.yaml"  # a key beside the merge overrides the merged one
    overridden.write_text(
        "collection: &c\n  batch_tokens: 256\nablation:\n  <<: *c\n  batch_tokens: 64\n"
    )
    result = cli("run", str(overridden), "--dry-run", cwd=tmp_path)
    assert result.rc == 0 and yaml.safe_load(result.out)["ablation"]["batch_tokens"] == 64
    twice = tmp_path / "twice.yaml"
    twice.write_text(
        "collection: &c\n  batch_tokens: 256\nablation:\n  <<: *c\n  mode: mean\n  mode: zero\n"
    )
    line = assert_user_error(cli("run", str(twice), "--dry-run", cwd=tmp_path), f"config {twice}")
    assert line.endswith("key 'mode' appears twice (lines 5 and 6); keep one")


def test_an_empty_config_file_is_refused(tmp_path):
    """Before: an empty YAML file ran the whole default job (Gemma, the Bible, 5 languages)."""
    for text in ("", "# only a comment\n"):
        (tmp_path / "empty.yaml").write_text(text)
        assert_user_error(
            cli("run", "empty.yaml", cwd=tmp_path),
            "config empty.yaml: empty;",
            "or leave out the file to run the defaults",
        )
    _nothing_left(tmp_path)


# --- corpora (cases 4, 5 and the default control pair) -------------------------------------------

PEACEMAKERS = '"Blessed," said he, "are the peacemakers."'


def _tsv(path: Path, en_texts: list[str]) -> Path:
    rows = ["example_id\ten\tfr\tru"]
    rows += [
        f"v{i}\t{en}\t{fr}\t{ru}"
        for i, (en, fr, ru) in enumerate(zip(en_texts, TEXTS["fr"], TEXTS["ru"], strict=True))
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_tsv_quote_marks_are_text_and_csv_quoting_is_asked_for(tiny):
    """Before: the cell ``"Blessed," said he, "are the peacemakers."`` loaded as ``Blessed, said
    he, "are the peacemakers."``; an unbalanced quote was reported at a later line."""
    root = tiny.parent
    texts = list(TEXTS["en"])
    texts[2] = PEACEMAKERS
    quoted = _tsv(root / "quoted.tsv", texts)
    info = cli("corpus", "info", str(quoted), "--langs", "en,fr", cwd=root)
    assert info.rc == 0, info.err[-2000:]
    assert load_corpus(str(quoted), ["en", "fr"]).texts("en")[2] == PEACEMAKERS  # literal
    # under CSV rules the same cell is malformed (text after a closed quote), and says so
    with pytest.raises(MlingualityError, match=r"quoted.tsv:4: text follows a quoted field"):
        load_corpus(str(quoted), ["en", "fr"], tsv_quoting="csv")
    csv_quoted = texts[:2] + ['"""Blessed,"" said he, ""are the peacemakers."""', *texts[3:]]
    csv_rules = load_corpus(str(_tsv(root / "csv.tsv", csv_quoted)), ["en"], tsv_quoting="csv")
    assert csv_rules.texts("en")[2] == PEACEMAKERS
    # with CSV quoting, a quote opened on the file's line 4 and never closed is named there
    # (before: the line where the csv module gave up, rows later)
    texts[2], texts[5] = '"Blessed are the peacemakers.', '"Ask," and it shall be given.'
    unbalanced = _tsv(root / "unbalanced.tsv", texts)
    for args in (
        ["corpus", "info", str(unbalanced), "--langs", "en,fr", "--tsv-quoting", "csv"],
        [
            "run",
            str(tiny),
            "--set",
            f"corpus.source={unbalanced}",
            "--set",
            "corpus.tsv_quoting=csv",
        ],
    ):
        assert_user_error(
            cli(*args, cwd=root),
            f"{unbalanced}:4: a quote mark opens a field that is not closed on this line",
            'writing a quote mark inside it as ""',
            "corpus.tsv_quoting=literal",
        )
    _nothing_left(root)
    literal = cli("corpus", "info", str(unbalanced), "--langs", "en,fr", cwd=root)
    assert literal.rc == 0, literal.err[-2000:]  # literal: the quote is text
    assert load_corpus(str(unbalanced), ["en"]).texts("en")[2] == '"Blessed are the peacemakers.'


def test_a_key_repeated_in_a_jsonl_object_is_refused(tiny):
    """Before: ``{"en": "...", "en": "OVERRIDDEN"}`` was accepted and the last value won."""
    root = tiny.parent
    lines = (root / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[1])
    lines[1] = json.dumps(record, ensure_ascii=False)[:-1] + ', "en": "OVERRIDDEN"}'
    (root / "dup.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    needle = f"{root / 'dup.jsonl'}:2: key 'en' appears twice in one object; keep one"
    assert_user_error(
        cli("corpus", "info", "dup.jsonl", "--langs", "en,fr", cwd=root), "dup.jsonl:2: key 'en'"
    )
    assert_user_error(
        cli("run", str(tiny), "--set", f"corpus.source={root / 'dup.jsonl'}", cwd=root), needle
    )
    _nothing_left(root)


def test_the_bible_control_pair_on_another_corpus_is_a_preflight_error(tiny):
    """Before: the default en/en:WEB control broke every non-Bible corpus ("no column for
    language 'en:WEB'") after the run folder and a W&B run were started. Now the default is
    the Bible's pair on the Bible only (the runs of test_faults_runs.py use it on TSV and
    JSONL corpora); one named explicitly is refused before anything starts."""
    root = tiny.parent
    tsv = _tsv(root / "c.tsv", TEXTS["en"])
    data = config_dict(root, corpus={"source": str(tsv), "langs": ["en", "fr", "ru"]})
    data["selectivity"]["control_pairs"] = ["en/en:WEB"]
    data["tracking"]["wandb"] = "offline"
    write_config(root / "web.yaml", data)
    assert_user_error(
        cli("run", "web.yaml", cwd=root),
        "selectivity.control_pairs: 'en/en:WEB' needs 'en:WEB'",
        f"{tsv} has no column for it (available: en, fr, ru)",
        "set selectivity.control_pairs: []",
    )
    assert_user_error(
        cli("run", "web.yaml", "--set", "corpus.langs=en,de", "--set", "selectivity.control_pairs=[]", cwd=root),
        f"corpus.langs: {tsv} has no column for language 'de'; available: en, fr, ru",
    )  # fmt: skip
    _nothing_left(root)


# --- the command line itself ---------------------------------------------------------------------


def test_no_arguments_print_the_help_and_bare_config_names_resolve(tmp_path):
    """Before: ``mlinguality`` printed a usage error; ``mlinguality run paper.yaml`` failed
    although ``run --help`` says ``YAML under experiments/configs/``."""
    bare = cli(cwd=tmp_path)
    assert bare.rc == 2 and "Traceback" not in bare.err
    assert bare.out.startswith("usage: mlinguality") and "Subcommands:" not in bare.err
    assert "run" in bare.out and "positional arguments" in bare.out
    for name in ("paper", "paper.yaml"):
        shipped = cli("run", name, "--dry-run", cwd=tmp_path)
        assert shipped.rc == 0, shipped.err[-2000:]
        assert yaml.safe_load(shipped.out)["name"] == "paper"
    assert_user_error(
        cli("run", "papr.yaml", cwd=tmp_path),
        "config papr.yaml: no such file here, nor under",
        "(shipped configs: many_languages, paper)",
    )
    _nothing_left(tmp_path)

"""RunConfig: YAML <-> dataclass round trips, overrides, agent-style arguments, one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from mlinguality.errors import MlingualityError
from mlinguality.run.config import (
    AblationConfig,
    CorpusConfig,
    RunConfig,
    SelectivityConfig,
)
from mlinguality.run.overrides import agent_overrides, override_keys

REPO = Path(__file__).resolve().parents[2]


def _custom() -> RunConfig:
    return RunConfig(
        name="custom",
        cache_dir=None,
        corpus=CorpusConfig(
            source="data/x.jsonl", langs=["en", "ru", "zh"], limit=None, translations={"en": "kjv"}
        ),
        selectivity=SelectivityConfig(metrics=["lape", "topk"], pairs=["en-ru"], top_rate=0.05),
        ablation=AblationConfig(mode="mean", n_random=3, eval_limit=10),
    )


def test_yaml_round_trip(tmp_path):
    config = _custom()
    config.dump(tmp_path / "c.yaml")
    assert RunConfig.load(tmp_path / "c.yaml") == config
    assert RunConfig.from_dict(config.to_dict()) == config
    # the YAML is a plain nested mapping a person can edit
    data = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert data["ablation"]["mode"] == "mean"
    assert data["corpus"]["translations"] == {"en": "kjv"}


def test_partial_yaml_takes_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("selectivity:\n  top_rate: 0.02\n")
    config = RunConfig.load(tmp_path / "c.yaml")
    assert config.selectivity.top_rate == 0.02
    assert config.selectivity.metrics == RunConfig().selectivity.metrics
    assert config.corpus == CorpusConfig()


def test_ints_widen_to_float_but_not_the_reverse():
    assert RunConfig.from_dict({"selectivity": {"top_rate": 1}}).selectivity.top_rate == 1.0
    with pytest.raises(MlingualityError, match=r"^corpus\.limit: expected an integer"):
        RunConfig.from_dict({"corpus": {"limit": 2.5}})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"selectivity": {"top_rat": 0.1}},
            "unknown key 'selectivity.top_rat' (did you mean 'selectivity.top_rate'?)",
        ),
        ({"modle": {}}, "unknown key 'modle' (did you mean 'model'?)"),
        (
            {"model": {"dtype": "fp8"}},
            "model.dtype: expected one of 'float32', 'bfloat16', 'float16', got 'fp8'",
        ),
        ({"selectivity": {"top_rate": 0}}, "selectivity.top_rate: must be in (0, 1], got 0.0"),
        ({"corpus": {"langs": ["en"]}}, "corpus.langs: need at least two languages"),
        ({"corpus": {"langs": "en,ru"}}, "corpus.langs: expected a list"),
        ({"corpus": "bible"}, "corpus: expected a mapping"),
        ({"ablation": {"enabled": "yes"}}, "ablation.enabled: expected true or false"),
        ({"selectivity": {"pairs": ["en_ru"]}}, "selectivity.pairs: 'en_ru' is not of the form"),
        ({"tracking": {"wandb": "cloud"}}, "tracking.wandb: expected one of"),
    ],
)
def test_bad_input_is_one_line_naming_the_key(data, message):
    with pytest.raises(MlingualityError) as error:
        RunConfig.from_dict(data)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("ablation:\n  mode: half\n")
    with pytest.raises(MlingualityError, match=rf"^config {path}: ablation.mode: expected one of"):
        RunConfig.load(path)
    path.write_text("ablation: [unclosed\n")
    with pytest.raises(MlingualityError, match=rf"^config {path}: line \d+ not valid YAML"):
        RunConfig.load(path)
    with pytest.raises(MlingualityError, match="no such file"):
        RunConfig.load(tmp_path / "absent.yaml")


def test_overrides_parse_by_type():
    config = RunConfig().with_overrides(
        [
            "selectivity.top_rate=0.02",
            "corpus.langs=en, ru ,zh",
            "corpus.limit=null",
            "corpus.books=Matthew-John",
            "ablation.enabled=false",
            "ablation.n_random=4",
            "corpus.translations={en: kjv, ru: synodal}",
            "model.spec=1e3",  # a string field stays the string typed
            "name=other",
        ]
    )
    assert config.selectivity.top_rate == 0.02
    assert config.corpus.langs == ["en", "ru", "zh"]
    assert config.corpus.limit is None
    assert config.corpus.books == "Matthew-John"
    assert config.ablation.enabled is False
    assert config.ablation.n_random == 4
    assert config.corpus.translations == {"en": "kjv", "ru": "synodal"}
    assert config.model.spec == "1e3"
    assert config.name == "other"
    # everything else untouched
    assert config.collection == RunConfig().collection


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("selectivity.toprate=0.1", "unknown key 'selectivity.toprate'"),
        ("selectivity=0.1", "selectivity: is a section"),
        ("model.spec.x=1", "unknown key 'model.spec.x'"),
        ("top_rate", "override 'top_rate': expected section.key=value"),
        (
            "collection.batch_tokens=many",
            "collection.batch_tokens: expected an integer, got 'many'",
        ),
        ("corpus.limit=1", "corpus.limit: must be >= 2"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(MlingualityError) as error:
        RunConfig().with_overrides([override])
    assert str(error.value).startswith(message)


def test_agent_arguments_round_trip_through_wandb_formatting():
    """The values wandb agent formats with its own code parse back to the same typed values."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    values = {
        "selectivity.top_rate": 0.02,
        "corpus.langs": ["en", "ru", "hi"],
        "corpus.limit": None,
        "ablation.enabled": False,
        "ablation.mode": "mean",
        "model.spec": "tiny",
        "selectivity.n_permutations": 50,
    }
    argv = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})["args"]
    assert "--selectivity.top_rate=0.02" in argv
    config = RunConfig().with_overrides(agent_overrides(argv))
    data = config.to_dict()
    for key, value in values.items():
        section, name = key.split(".")
        assert data[section][name] == value, key


def test_agent_overrides_reject_other_arguments():
    with pytest.raises(MlingualityError, match="unrecognized argument 'extra'"):
        agent_overrides(["extra"])
    with pytest.raises(MlingualityError, match="unrecognized argument '--flag'"):
        agent_overrides(["--flag"])


def test_cli_parses_set_and_agent_style_arguments(monkeypatch):
    """`mlinguality run CONFIG --set ... --k=v` reaches the runner as one resolved config."""
    import mlinguality.cli.main as cli

    seen = {}

    def fake_run(config, resume=None, start_from=None):
        seen["config"] = config
        return Path("/nowhere")

    monkeypatch.setitem(
        sys.modules, "mlinguality.run.runner", SimpleNamespace(run_experiment=fake_run)
    )
    with pytest.raises(SystemExit) as exit_:
        cli.main(
            [
                "run",
                str(REPO / "experiments" / "configs" / "paper.yaml"),
                "--set",
                "ablation.mode=mean",
                "--selectivity.top_rate=0.03",
                "--wandb",
                "disabled",
            ]
        )
    assert exit_.value.code == 0
    config = seen["config"]
    assert config.ablation.mode == "mean"
    assert config.selectivity.top_rate == 0.03
    assert config.tracking.wandb == "disabled"


def test_cli_unknown_key_exits_2_with_one_line(capsys):
    import mlinguality.cli.main as cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--selectivity.top_rat=0.03"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "mlinguality: error: unknown key 'selectivity.top_rat' (did you mean 'selectivity.top_rate'?)"
    )


def test_other_commands_still_reject_unknown_arguments(capsys):
    import mlinguality.cli.main as cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["model", "check", "tiny", "--selectivity.top_rate=0.1"])
    assert exit_.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_paper_yaml_is_the_default_config():
    """`mlinguality demo` falls back to RunConfig() when installed without the repo: keep them equal."""
    assert RunConfig.load(REPO / "experiments" / "configs" / "paper.yaml") == RunConfig()


@pytest.mark.parametrize("path", sorted((REPO / "experiments" / "configs").glob("*.yaml")), ids=str)
def test_shipped_configs_load(path):
    """Every value the file sets is the loaded config's (nothing dropped or defaulted)."""
    written = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    loaded = RunConfig.load(path).to_dict()

    def leaves(data: dict, prefix: str = ""):
        for key, value in data.items():
            if isinstance(value, dict) and key != "translations":
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    got = dict(leaves(loaded))
    pairs = list(leaves(written))
    assert pairs, f"{path} sets nothing"
    for key, value in pairs:
        assert got[key] == value, key


def test_every_leaf_key_parses_its_own_agent_formatting():
    """For every field, `--key=str(value)` (how wandb agent writes it) gives the value back."""
    keys = override_keys()
    assert {"selectivity.top_rate", "tracking.wandb", "name"} <= set(keys)
    assert "model" not in keys  # sections are not leaves
    custom = _custom()
    data = custom.to_dict()
    argv = []
    for key in keys:
        section, _, name = key.rpartition(".")
        argv.append(f"--{key}={(data[section] if section else data)[name]}")
    assert RunConfig().with_overrides(agent_overrides(argv)) == custom


def test_many_languages_config_covers_every_bible_language():
    from mlinguality.corpus.bible import DEFAULT_TRANSLATIONS

    config = RunConfig.load(REPO / "experiments" / "configs" / "many_languages.yaml")
    assert len(config.corpus.langs) >= 12
    assert set(config.corpus.langs) == set(DEFAULT_TRANSLATIONS)
    assert not config.ablation.enabled and config.collection.positions == "all"
    assert config.collection_langs == [*config.corpus.langs, "en:WEB"]


def test_control_pairs_must_start_in_the_corpus_languages():
    with pytest.raises(MlingualityError, match="control_pairs: 'es/es:9' starts with 'es'"):
        RunConfig().with_overrides(["selectivity.control_pairs=[es/es:9]"])
    with pytest.raises(MlingualityError, match="not of the form 'en/en:WEB'"):
        RunConfig().with_overrides(["selectivity.control_pairs=[en-en:WEB]"])
    config = RunConfig().with_overrides(["selectivity.control_pairs=[]"])
    assert config.collection_langs == config.corpus.langs
    # null: the Bible's KJV/WEB pair on the Bible, none on a corpus file
    config = RunConfig().with_overrides(["selectivity.control_pairs=null"])
    assert config.control_pairs == ["en/en:WEB"]
    assert config.collection_langs == [*config.corpus.langs, "en:WEB"]
    config = config.with_overrides(["corpus.source=verses.tsv"])
    assert config.control_pairs == [] and config.collection_langs == config.corpus.langs

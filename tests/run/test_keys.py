"""Stage keys follow the contents of what a stage reads: a changed corpus file or model folder is
recomputed, never served from the cache."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd

from mlinguality.run.config import RunConfig
from mlinguality.run.keys import input_fingerprints, stage_keys
from mlinguality.run.runner import run_experiment
from tests.run.test_runner import _config, _write_corpus


def _origins(run_dir: Path) -> dict[str, str]:
    record = json.loads((run_dir / "stages.json").read_text())
    return {name: entry["origin"] for name, entry in record.items()}


def test_keys_cover_settings_and_upstream_keys():
    fingerprints = {"model": {"tiny": "tiny"}, "corpus": {"file": "a"}, "merged_stats": None}
    base = stage_keys(RunConfig(), fingerprints)
    rate = stage_keys(RunConfig().with_overrides(["selectivity.top_rate=0.02"]), fingerprints)
    assert [name for name in base if base[name] != rate[name]] == [
        "select",
        "examples",
        "ablate",
        "steer",
    ]
    perms = stage_keys(RunConfig().with_overrides(["selectivity.n_permutations=5"]), fingerprints)
    assert [name for name in base if base[name] != perms[name]] == ["score"]
    batch = stage_keys(RunConfig().with_overrides(["collection.batch_tokens=64"]), fingerprints)
    assert batch == base  # a speed knob never changes a key
    model = stage_keys(RunConfig(), {**fingerprints, "model": {"folder": "other"}})
    assert all(model[name] != base[name] for name in base)


def test_an_edited_corpus_file_is_recomputed(tmp_path):
    corpus = _write_corpus(tmp_path / "corpus.jsonl")
    config = _config(tmp_path, tracking={"wandb": "disabled"}, ablation={"enabled": False})
    first = run_experiment(config)
    lines = corpus.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[0])
    record["fr"] = "Tout au début, Dieu fit le ciel et la terre entière."
    lines[0] = json.dumps(record, ensure_ascii=False)
    stat = corpus.stat()
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime: the bytes decide
    second = run_experiment(config)
    assert set(_origins(second).values()) == {"computed"}
    tokens = [
        json.loads((run / "corpus.json").read_text())["n_tokens"]["fr"] for run in (first, second)
    ]
    assert tokens[0] != tokens[1]  # the new text was read
    third = run_experiment(config)  # unchanged since: reused
    assert all(origin.startswith("cache:") for origin in _origins(third).values())
    assert (third / "selected_neurons.csv").read_bytes() == (
        second / "selected_neurons.csv"
    ).read_bytes()


def test_a_model_folder_with_other_weights_is_recomputed(tmp_path, caplog):
    from mlinguality.model import TinyModelConfig, build_tiny_hf_model, build_tiny_tokenizer

    folder = tmp_path / "model"
    spec = TinyModelConfig(n_layers=3, d_mlp=32, seed=0)
    tokenizer = build_tiny_tokenizer(spec)
    tokenizer.save_pretrained(folder)
    build_tiny_hf_model(spec, len(tokenizer)).save_pretrained(folder)
    _write_corpus(tmp_path / "corpus.jsonl")
    config = _config(
        tmp_path,
        model={"spec": str(folder)},
        tracking={"wandb": "disabled"},
        ablation={"enabled": False},
    )
    before = input_fingerprints(config)["model"]
    first = run_experiment(config)
    other = TinyModelConfig(n_layers=3, d_mlp=32, seed=1)
    build_tiny_hf_model(other, len(tokenizer)).save_pretrained(folder)  # a checkpoint over it
    assert input_fingerprints(config)["model"] != before
    with caplog.at_level(logging.INFO, logger="mlinguality.run.keys"):
        second = run_experiment(config)
    assert set(_origins(second).values()) == {"computed"}
    notes = [r.getMessage() for r in caplog.records if "files changed" in r.getMessage()]
    assert len(notes) == 1 and str(folder) in notes[0] and "recomputed" in notes[0]
    means = [pd.read_csv(run / "selected_neurons.csv")["score"].sum() for run in (first, second)]
    assert means[0] != means[1]


def test_a_tiny_model_is_keyed_by_the_seed_of_its_weights():
    fingerprints = [
        input_fingerprints(RunConfig.from_dict({"model": {"spec": "tiny"}, "seed": seed}))
        for seed in (0, 1)
    ]
    assert fingerprints[0]["model"] != fingerprints[1]["model"]


def test_a_stage_version_bump_changes_its_key_and_its_readers_only():
    import dataclasses

    from mlinguality.run import stages

    fingerprints = {"model": "m", "corpus": "c", "merged_stats": None}
    base = stage_keys(RunConfig(), fingerprints)
    bumped = tuple(
        dataclasses.replace(s, version=s.version + 1) if s.name == "select" else s
        for s in stages.STAGES
    )
    other = stage_keys(RunConfig(), fingerprints, bumped)
    changed = [name for name in base if base[name] != other[name]]
    assert changed == ["select", "examples", "ablate", "steer"]


def test_an_edited_moses_file_is_recomputed(tmp_path):
    """A Moses prefix (``verses.en``, ``verses.fr``, ...): the key covers every file's bytes."""
    from tests.run.test_runner import _ALT, _TEXTS, LANGS

    prefix = tmp_path / "verses"
    texts = {**_TEXTS, "en:alt": _ALT}
    for lang in [*LANGS, "en:alt"]:
        Path(f"{prefix}.{lang}").write_text("\n".join(texts[lang]) + "\n", encoding="utf-8")
    config = _config(tmp_path, tracking={"wandb": "disabled"}, ablation={"enabled": False})
    config = config.with_overrides([f"corpus.source={prefix}", "lenses.enabled=false"])
    run_experiment(config)
    again = run_experiment(config)
    assert _origins(again)["collect"].startswith("cache:collect-")
    fr = Path(f"{prefix}.fr")
    lines = fr.read_text(encoding="utf-8").splitlines()
    lines[0] = "Tout au début, Dieu fit le ciel et la terre entière."
    fr.write_text("\n".join(lines) + "\n", encoding="utf-8")
    edited = run_experiment(config)
    assert _origins(edited)["collect"] == "computed"


def test_the_bibles_key_is_its_databases_digest():
    from mlinguality.corpus.bible import bible_db_path
    from mlinguality.files import content_digest
    from mlinguality.run.keys import corpus_identity

    assert corpus_identity(RunConfig()) == {"bible": content_digest(bible_db_path())}

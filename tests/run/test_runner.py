"""End-to-end runs on a tiny model and a tiny JSONL corpus: files, oracles, reuse, resume, W&B."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch

from mlinguality.run.config import RunConfig
from tests.utils import assert_close
from tests.wandb_reader import check_run_mirror

_TEXTS = {
    "en": [
        "In the beginning God created the heaven and the earth.",
        "And God said, Let there be light: and there was light.",
        "Blessed are the peacemakers.",
        "The Lord is my shepherd; I shall not want.",
        "Love your neighbour as yourself.",
        "Ask, and it shall be given you.",
        "Let not your heart be troubled.",
        "The truth shall make you free.",
        "Jesus wept.",
        "Rejoice evermore.",
        "Pray without ceasing.",
        "God is love.",
    ],
    "fr": [
        "Au commencement, Dieu créa les cieux et la terre.",
        "Dieu dit: Que la lumière soit! Et la lumière fut.",
        "Heureux ceux qui procurent la paix.",
        "L'Éternel est mon berger: je ne manquerai de rien.",
        "Tu aimeras ton prochain comme toi-même.",
        "Demandez, et l'on vous donnera.",
        "Que votre cœur ne se trouble point.",
        "La vérité vous affranchira.",
        "Jésus pleura.",
        "Soyez toujours joyeux.",
        "Priez sans cesse.",
        "Dieu est amour.",
    ],
    "ru": [
        "В начале сотворил Бог небо и землю.",
        "И сказал Бог: да будет свет. И стал свет.",
        "Блаженны миротворцы.",
        "Господь — Пастырь мой; я ни в чем не буду нуждаться.",
        "Возлюби ближнего твоего, как самого себя.",
        "Просите, и дано будет вам.",
        "Да не смущается сердце ваше.",
        "Истина сделает вас свободными.",
        "Иисус прослезился.",
        "Всегда радуйтесь.",
        "Непрестанно молитесь.",
        "Бог есть любовь.",
    ],
}
LANGS = list(_TEXTS)
# A second English wording of each verse: the same-language control (en/en:alt)
_ALT = [
    "When all began, God made the heavens and the earth.",
    "Then God said, Let light be: and light came to be.",
    "Happy are those who make peace.",
    "The Lord is my shepherd; I lack nothing at all.",
    "Love the one next to you as you love yourself.",
    "Ask, and it will be given to you.",
    "Do not let your heart be troubled.",
    "The truth will set you free.",
    "Jesus cried.",
    "Always be glad.",
    "Never stop praying.",
    "God is love.",
]


def _write_corpus(path: Path) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for i in range(len(_TEXTS["en"])):
            record = {"id": f"v{i}", **{lang: _TEXTS[lang][i] for lang in LANGS}}
            record["en:alt"] = _ALT[i]
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def _config(root: Path, **sections) -> RunConfig:
    data = {
        "name": "tiny",
        "output_dir": str(root / "runs"),
        "cache_dir": str(root / "cache"),
        "plots": True,
        "model": {"spec": "tiny"},
        "corpus": {"source": str(root / "corpus.jsonl"), "langs": LANGS, "limit": None},
        "collection": {"batch_tokens": 256},
        "selectivity": {
            "metrics": ["topk", "cohens_d", "verse_distance", "lape"],
            "top_rate": 0.05,
            "n_permutations": 10,
            "control_pairs": ["en/en:alt"],
        },
        "ablation": {"mode": "zero", "n_random": 1},
        "tracking": {"wandb": "offline", "tags": ["unit"]},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    return RunConfig.from_dict(data)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One full run, shared: everything computed, W&B offline."""
    from mlinguality.run.runner import run_experiment

    root = tmp_path_factory.mktemp("runner")
    _write_corpus(root / "corpus.jsonl")
    config = _config(root)
    return root, config, run_experiment(config)


def _stages(run_dir: Path) -> dict[str, str]:
    return {
        name: entry["origin"]
        for name, entry in json.loads((run_dir / "stages.json").read_text()).items()
    }


def _splits(root: Path):
    from mlinguality.corpus import load_corpus

    return load_corpus(str(root / "corpus.jsonl"), [*LANGS, "en:alt"]).split(0.5)


def test_run_folder_holds_every_result(first_run):
    _, config, run_dir = first_run
    for name in (
        "config.yaml",
        "stats/en.safetensors",
        "stats/ru.safetensors",
        "layer_profile.csv",
        "u_shape.csv",
        "selectivity.csv",
        "ablation.csv",
        "ablation.json",
        "ablation.png",
        "summary.json",
        "report.md",
        "plots/layer_profile.png",
        "plots/selected_neurons.png",
        "neurons/neurons.json",
        "neurons/output_language.csv",
        "neurons.html",
    ):
        assert (run_dir / name).exists(), name
    assert RunConfig.load(run_dir / "config.yaml") == config
    assert set(_stages(run_dir).values()) == {"computed"}
    report = (run_dir / "report.md").read_text()
    assert "![per-layer profile](plots/layer_profile.png)" in report
    assert "![ablation heatmap](ablation.png)" in report


def test_stats_are_those_of_the_selection_split(first_run, tiny4):
    """Oracle: collection called directly on the held-in half of the same corpus."""
    from mlinguality.activations.collect import collect
    from mlinguality.activations.stats import load_stats

    root, _, run_dir = first_run
    select, held_out = _splits(root)
    saved = load_stats(run_dir / "stats", LANGS)
    direct = collect(tiny4, select, LANGS, per_example=True, progress=False)
    for lang in LANGS:
        assert saved[lang].example_ids == list(select.ids)
        assert not set(saved[lang].example_ids) & set(held_out.ids)
        assert saved[lang].n_tokens == direct[lang].n_tokens
        assert_close(saved[lang].sum, direct[lang].sum, "fp32")


def _naive_bits_per_byte(model, texts: list[str], hooks=()) -> float:
    """One text at a time, no padding: NLL of every token after BOS, over UTF-8 bytes."""
    nll, n_bytes = 0.0, 0
    for text in texts:
        ids = model.tokenizer(text, return_tensors="pt")["input_ids"]
        assert ids[0, 0] == model.tokenizer.bos_token_id
        with torch.no_grad():
            logits = model.run_with_hooks(ids, fwd_hooks=list(hooks))
        logprobs = torch.log_softmax(logits[0, :-1].double(), dim=-1)
        nll -= float(logprobs.gather(-1, ids[0, 1:, None]).sum())
        n_bytes += len(text.encode("utf-8"))
    return nll / math.log(2) / n_bytes


def test_ablation_numbers_match_a_naive_loop(first_run, tiny4):
    """Baseline and one ablated cell recomputed text by text with a hand-written zeroing hook."""
    from safetensors.torch import load_file

    root, _, run_dir = first_run
    _, held_out = _splits(root)
    record = json.loads((run_dir / "ablation.json").read_text())
    assert record["rows"] == [*LANGS, "random", "random_activity"]  # config order
    assert record["langs"] == LANGS and record["positions"] == "skip_first"
    model = tiny4
    for lang in LANGS:
        expected = _naive_bits_per_byte(model, held_out.texts(lang))
        assert_close(record["baseline_bits_per_byte"][lang], expected, "fp32", msg=lang)
    masks = {
        lang: mask.bool()
        for lang, mask in load_file(run_dir / "selected_neurons.safetensors").items()
    }
    row = max(masks, key=lambda lang: int(masks[lang].sum()))
    assert masks[row].any(), "no neurons selected: the ablation oracle would be vacuous"

    def zero(layer):
        def hook(act, hook):
            act[:, 1:, masks[row][layer]] = 0.0  # skip_first: every position but the BOS
            return act

        return hook

    hooks = [(f"blocks.{layer}.mlp.hook_post", zero(layer)) for layer in range(masks[row].shape[0])]
    i = record["rows"].index(row)
    for j, lang in enumerate(record["langs"]):
        expected = _naive_bits_per_byte(model, held_out.texts(lang), hooks)
        assert_close(record["bits_per_byte"][i][j], expected, "fp32", msg=f"{row} -> {lang}")
        assert record["delta_bits_per_byte"][i][j] == pytest.approx(
            record["bits_per_byte"][i][j] - record["baseline_bits_per_byte"][lang]
        )


def test_selection_and_summary_agree_with_the_files(first_run):
    import pandas as pd
    from safetensors.torch import load_file

    from mlinguality.activations.stats import load_stats
    from mlinguality.selectivity.selection import select_language_neurons

    _, config, run_dir = first_run
    masks = select_language_neurons(load_stats(run_dir / "stats", LANGS), "lape", top_rate=0.05)
    saved = load_file(run_dir / "selected_neurons.safetensors")
    table = pd.read_csv(run_dir / "selectivity.csv")
    summary = json.loads((run_dir / "summary.json").read_text())
    for lang in LANGS:
        assert torch.equal(saved[lang].bool(), masks[lang])
        per_layer = table[table["lang"] == lang].sort_values("layer")["n_selected"].tolist()
        assert per_layer == masks[lang].sum(dim=1).tolist()
        assert summary["selectivity"]["n_selected"][lang] == int(masks[lang].sum())
    u_shape = pd.read_csv(run_dir / "u_shape.csv")
    topk = u_shape[(u_shape["metric"] == "topk") & ~u_shape["control"]]
    assert len(topk) == 2  # en-fr, en-ru: English against each other language
    assert summary["selectivity"]["u_shape"] == pytest.approx(topk["u"].mean())
    assert summary["selectivity"]["u_over_floor"] == pytest.approx(topk["u_over_floor"].mean())
    record = json.loads((run_dir / "ablation.json").read_text())
    assert summary["ablation"]["diagonal_dominance"] == record["dominance"]["ratio"]
    profile = pd.read_csv(run_dir / "layer_profile.csv")
    assert sorted(profile["layer"].unique()) == [0, 1, 2, 3]
    # the same-language control: scored, marked, and the floor of every en-X row
    control = profile[(profile["metric"] == "cohens_d") & (profile["pair"] == "en-en:alt")]
    ru = profile[(profile["metric"] == "cohens_d") & (profile["pair"] == "en-ru")]
    assert control["control"].all() and not ru["control"].any()
    assert ru["floor"].tolist() == pytest.approx(control["value"].tolist())
    assert "en:alt" not in saved, "a control language is never selected from"
    report = (run_dir / "report.md").read_text()
    assert "same-language floor" in report and "activity-matched random control" in report
    verse_u = u_shape[(u_shape["metric"] == "verse_distance") & ~u_shape["control"]]
    headline = summary["selectivity"]["verse_distance_u_over_floor"]
    assert set(headline) == {"en-fr", "en-ru"} == set(verse_u["pair"])
    for row in verse_u.itertuples():
        assert headline[row.pair][0] == pytest.approx(row.u_over_floor)
    assert "U of the per-verse distance minus the same-language floor" in report


def test_offline_wandb_run_mirrors_the_run(first_run):
    """Read back with wandb's records: config first, live progress, artifacts, clear keys."""
    _, config, run_dir = first_run
    run = check_run_mirror(run_dir)
    assert run.name == run_dir.name and run.tags == ["unit"]
    assert run.config["ablation"] == config.to_dict()["ablation"]
    assert run.summary["ablation/matrix/_type"] == "table-file"
    assert run.summary["ablation/heatmap/_type"] == "image-file"
    # selected neurons per layer are a series; their summary value is the total over layers
    total = json.loads((run_dir / "summary.json").read_text())["selectivity"]["n_selected"]["ru"]
    counts = [row["per_layer/n_selected/ru"] for row in run.history if "layer" in row]
    assert run.summary["selectivity/n_selected/ru"] == total == sum(counts) and len(counts) == 4
    per_layer = [row for row in run.history if "per_layer/selectivity/topk/en-ru" in row]
    assert [row["layer"] for row in per_layer] == [0, 1, 2, 3]


def test_cli_rerun_reuses_stages_from_the_cache(first_run, capsys):
    """`mlinguality run CONFIG --selectivity.top_rate=...`: collection and scoring come from the
    cache, selection is recomputed (ablation and plots off to keep it fast)."""
    import mlinguality.cli.main as cli

    root, config, first_dir = first_run
    path = root / "cli.yaml"
    config.dump(path)
    argv = ["run", str(path), "--selectivity.top_rate=0.1", "--name=viacli", "--set", "plots=false"]
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--ablation.enabled=false", "--wandb", "disabled"])
    assert exit_.value.code == 0
    (run_dir,) = Path(config.output_dir).glob("viacli-*")
    assert capsys.readouterr().out.strip() == f"report: {run_dir / 'report.md'}"
    resolved = RunConfig.load(run_dir / "config.yaml")
    assert resolved.selectivity.top_rate == 0.1 and resolved.tracking.wandb == "disabled"
    origins = _stages(run_dir)
    assert origins["collect"].startswith("cache:collect-") and origins["score"].startswith(
        "cache:score-"
    )
    assert origins["select"] == "computed" and "ablate" not in origins
    assert (run_dir / "stats" / "en.safetensors").read_bytes() == (
        first_dir / "stats" / "en.safetensors"
    ).read_bytes()
    summary = json.loads((run_dir / "summary.json").read_text())
    first = json.loads((first_dir / "summary.json").read_text())
    assert summary["selectivity"]["n_selected_total"] > first["selectivity"]["n_selected_total"]
    assert not (run_dir / "wandb").exists() and not (run_dir / "plots").exists()


def _keys(run_dir: Path) -> dict[str, str]:
    return {
        name: entry["key"]
        for name, entry in json.loads((run_dir / "stages.json").read_text()).items()
    }


def test_wandb_failure_keeps_local_results(first_run, monkeypatch, caplog):
    import wandb

    from mlinguality.run.runner import run_experiment

    def broken(*args, **kwargs):
        raise ConnectionError("api.wandb.ai unreachable")

    monkeypatch.setattr(wandb, "init", broken)
    _, config, _ = first_run
    with caplog.at_level(logging.WARNING):
        run_dir = run_experiment(config.with_overrides(["tracking.wandb=online", "plots=false"]))
    assert _stages(run_dir) == {name: f"cache:{name}-{key}" for name, key in _keys(run_dir).items()}
    assert json.loads((run_dir / "summary.json").read_text())["ablation"]["n_langs"] >= 1
    assert "## Ablation" in (run_dir / "report.md").read_text()
    assert any(
        "W&B init failed (api.wandb.ai unreachable)" in r.getMessage() for r in caplog.records
    )


def test_interrupted_run_resumes_where_it_stopped(first_run, monkeypatch):
    import dataclasses

    import mlinguality.run.stages as stages
    from mlinguality.run.runner import run_experiment

    _, config, _ = first_run
    overrides = ["selectivity.top_rate=0.2", "ablation.enabled=false", "plots=false", "name=crash"]
    config = config.with_overrides([*overrides, "tracking.wandb=disabled"])
    real_stages = stages.STAGES

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    crashing = [
        dataclasses.replace(s, step=crash) if s.name == "select" else s for s in real_stages
    ]
    monkeypatch.setattr(stages, "STAGES", tuple(crashing))
    with pytest.raises(KeyboardInterrupt, match="^interrupted at stage select; resume with `ml"):
        run_experiment(config)
    (run_dir,) = Path(config.output_dir).glob("crash-*")
    before = json.loads((run_dir / "stages.json").read_text())
    assert before["select"]["status"] == "interrupted"
    before = {k: v for k, v in before.items() if v["status"] == "done"}
    assert set(before) == {"collect", "score"}
    monkeypatch.setattr(stages, "STAGES", real_stages)
    assert run_experiment(config, resume=run_dir) == run_dir
    after = json.loads((run_dir / "stages.json").read_text())
    assert {k: after[k] for k in before} == before  # finished stages were not redone
    assert after["select"]["origin"] == "computed"
    report = (run_dir / "report.md").read_text()
    cells = [[c.strip() for c in line.split("|")[1:3]] for line in report.splitlines()]
    assert ["collect", "resumed"] in cells and ["select", "computed"] in cells


def test_a_run_from_another_reuses_its_stages_and_leaves_it_and_the_cache_intact(first_run):
    """``start_from`` (``--from RUN_DIR``): a new folder, the matching stages copied from the
    old run, the changed one recomputed there; the old run and the cache entry unchanged (a
    resume with the changed config is refused)."""
    from mlinguality.errors import MlingualityError
    from mlinguality.run.runner import run_experiment

    _, config, _ = first_run
    config = config.with_overrides(
        ["selectivity.top_rate=0.02", "ablation.enabled=false", "plots=false", "name=inplace"]
    )
    run_dir = run_experiment(config.with_overrides(["tracking.wandb=disabled"]))
    key = _keys(run_dir)["select"]
    cached = Path(config.cache_dir) / f"select-{key}" / "selectivity.csv"
    before = cached.read_bytes()
    assert (run_dir / "selectivity.csv").read_bytes() == before
    changed = config.with_overrides(
        ["selectivity.top_rate=0.1", "tracking.wandb=disabled", "cache_dir=null", "name=from"]
    )
    with pytest.raises(MlingualityError, match="name would change from .inplace. "):
        run_experiment(changed, resume=run_dir)
    new = run_experiment(changed, start_from=run_dir)
    assert new != run_dir and new.name.startswith("from-")
    origins = {name: entry["origin"] for name, entry in _stage_entries(new).items()}
    assert origins["collect"] == origins["score"] == f"run:{run_dir.name}"
    assert origins["select"] == "computed" and _keys(new)["select"] != key
    assert (new / "selectivity.csv").read_bytes() != before
    assert (run_dir / "selectivity.csv").read_bytes() == before  # the old run: untouched
    assert cached.read_bytes() == before  # and the cache entry of the old settings


def _stage_entries(run_dir: Path) -> dict:
    return json.loads((run_dir / "stages.json").read_text())


# --- results back in Python: Run.load, compare, the model's identity ---------------------------


def test_run_loads_back_with_a_tidy_neuron_table(first_run):
    from mlinguality.run.results import Run
    from mlinguality.selectivity.neurons import masks_from_table
    from mlinguality.selectivity.scores import lape

    _, config, run_dir = first_run
    run = Run.load(str(run_dir))
    assert run.config == config and run.summary == json.loads(
        (run_dir / "summary.json").read_text()
    )
    assert list(run.neurons.columns) == ["lang", "layer", "neuron", "score"]
    assert len(run.neurons) == run.summary["selectivity"]["n_selected_total"]
    rebuilt = masks_from_table(run.neurons, 4, 64)
    for lang, mask in run.masks.items():
        assert rebuilt.get(lang, torch.zeros_like(mask)).equal(mask)
    entropy, _ = lape(run.stats)  # the oracle: LAPE recomputed from the saved statistics
    expected = entropy[run.neurons["layer"].values, run.neurons["neuron"].values]
    assert_close(torch.tensor(run.neurons["score"].values), expected.double())
    record = json.loads((run_dir / "ablation.json").read_text())
    row = record["rows"].index("ru")
    assert run.ablation_delta.loc["ru", "fr"] == pytest.approx(
        record["delta_bits_per_byte"][row][1]
    )
    saved = json.loads((run_dir / "selected_neurons.json").read_text())
    assert saved["metric"] == "lape" and len(saved["neurons"]) == len(run.neurons)


def test_compare_reports_overlap_and_ablation_deltas(first_run, tmp_path, capsys):
    import shutil

    import pandas as pd

    import mlinguality.cli.main as cli

    _, _, run_dir = first_run
    other = tmp_path / "other"
    shutil.copytree(run_dir, other, ignore=shutil.ignore_patterns("wandb"))
    neurons = pd.read_csv(other / "selected_neurons.csv")
    ru = neurons[neurons["lang"] == "ru"]
    assert len(ru) >= 2
    neurons.drop(index=ru.index[0]).to_csv(other / "selected_neurons.csv", index=False)
    record = json.loads((other / "ablation.json").read_text())
    record["delta_bits_per_byte"] = [
        [None if v is None else v + 0.25 for v in row] for row in record["delta_bits_per_byte"]
    ]
    (other / "ablation.json").write_text(json.dumps(record))
    from mlinguality.run.stage_cache import fingerprint
    from mlinguality.run.stages import stage_named

    entries = _stage_entries(other)  # another run, not an edited one: its own checksums
    for name in ("select", "ablate"):
        entries[name]["files"] = fingerprint(other, list(stage_named(name).outputs))
    (other / "stages.json").write_text(json.dumps(entries))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["compare", str(run_dir), str(other), "--out", str(tmp_path / "cmp")])
    assert exit_.value.code == 0
    overlap = pd.read_csv(tmp_path / "cmp" / "neuron_overlap.csv").set_index("lang")
    assert overlap.loc["ru", "n_a"] == len(ru) and overlap.loc["ru", "n_both"] == len(ru) - 1
    assert overlap.loc["ru", "jaccard"] == pytest.approx((len(ru) - 1) / len(ru))
    delta = pd.read_csv(tmp_path / "cmp" / "ablation_delta.csv", index_col="ablated")
    assert delta.loc["ru", "fr"] == pytest.approx(0.25)
    profile = pd.read_csv(tmp_path / "cmp" / "profile.csv")
    assert len(profile) and (profile["diff"].abs() < 1e-12).all()
    assert (tmp_path / "cmp" / "profile_overlay.png").stat().st_size > 0
    assert "## Selected neurons" in capsys.readouterr().out


def test_a_model_object_keys_the_cache_on_its_weights(first_run):
    """Another model under the same spec string must not reuse the first model's statistics."""
    from mlinguality import TinyModelConfig, load_model
    from mlinguality.run.runner import run_experiment

    _, config, first_dir = first_run
    other = load_model(
        TinyModelConfig(architecture="gemma3", n_layers=4, d_model=32, d_mlp=64, seed=1)
    )
    overrides = [
        "ablation.enabled=false",
        "plots=false",
        "name=othermodel",
        "tracking.wandb=disabled",
    ]
    run_dir = run_experiment(config.with_overrides(overrides), model=other)
    assert _stages(run_dir)["collect"] == "computed"
    assert _keys(run_dir)["collect"] != _keys(first_dir)["collect"]
    assert (run_dir / "stats" / "en.safetensors").read_bytes() != (
        first_dir / "stats" / "en.safetensors"
    ).read_bytes()

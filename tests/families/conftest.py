"""The family matrix's fixtures: every family's folder (built once per session), a tiny parallel
corpus, and one full run per family (collect -> score -> select -> ablate -> steer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.families.builders import FAMILIES, save_family

LANGS = ["en", "fr", "ru"]
_TEXTS = {
    "en": [
        "In the beginning God created the heaven and the earth.",
        "Blessed are the peacemakers.",
        "The Lord is my shepherd; I shall not want.",
        "Love your neighbour as yourself.",
        "Ask, and it shall be given you.",
        "The truth shall make you free.",
    ],
    "fr": [
        "Au commencement, Dieu créa les cieux et la terre.",
        "Heureux ceux qui procurent la paix.",
        "L'Éternel est mon berger: je ne manquerai de rien.",
        "Tu aimeras ton prochain comme toi-même.",
        "Demandez, et l'on vous donnera.",
        "La vérité vous affranchira.",
    ],
    "ru": [
        "В начале сотворил Бог небо и землю.",
        "Блаженны миротворцы.",
        "Господь — Пастырь мой; я ни в чем не буду нуждаться.",
        "Возлюби ближнего твоего, как самого себя.",
        "Просите, и дано будет вам.",
        "Истина сделает вас свободными.",
    ],
}


@pytest.fixture(scope="session")
def family_root(tmp_path_factory) -> Path:
    """Every family's model folder (config.json, safetensors, tokenizer files) and the corpus."""
    root = tmp_path_factory.mktemp("families")
    for family in FAMILIES:
        save_family(family, root / family.name)
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for i in range(len(_TEXTS["en"])):
            record = {"id": f"v{i}", **{lang: _TEXTS[lang][i] for lang in LANGS}}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return root


def run_config(root: Path, spec: str, name: str):
    """The smallest run that goes through every stage: 3 languages x 3 selection verses, one
    random control, one steering prompt with 2 new tokens."""
    from mlinguality.run.config import RunConfig

    return RunConfig.from_dict(
        {
            "name": name,
            "output_dir": str(root / "runs"),
            "cache_dir": None,
            "plots": False,
            "model": {"spec": spec, "threads": 1},
            "corpus": {"source": str(root / "corpus.jsonl"), "langs": LANGS, "limit": None},
            "collection": {"batch_tokens": 256},
            "selectivity": {
                "metrics": ["lape", "cohens_d"],
                "top_rate": 0.05,
                "n_permutations": 3,
                "n_bootstrap": 3,
                "control_pairs": None,
            },
            "ablation": {"n_random": 1, "eval_limit": 2, "activity_control": False},
            "steering": {
                "enabled": True,
                "pairs": ["en-fr"],
                "alphas": [1.0],
                "n_prompts": 1,
                "prompt_words": 2,
                "max_new_tokens": 2,
                "n_random": 0,
                "activity_control": False,
            },
            "examples": {"enabled": False},
            "tracking": {"wandb": "disabled"},
        }
    )


@pytest.fixture(scope="module", params=[family.name for family in FAMILIES])
def family_run(request, family_root):
    """One family: its spec, its loaded bridge, and the folder of its full run."""
    from mlinguality.model import load_model
    from mlinguality.run.runner import run_experiment

    family = next(f for f in FAMILIES if f.name == request.param)
    folder = family_root / family.name
    run_dir = run_experiment(run_config(family_root, str(folder), family.name))
    return family, load_model(folder), run_dir

"""Helpers of the fault-case tests: run the real command line in a subprocess and read its answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

TEXTS = {
    "en": [
        "In the beginning God created the heaven and the earth.",
        "And God said, Let there be light: and there was light.",
        "Blessed are the peacemakers.",
        "The Lord is my shepherd; I shall not want.",
        "Love your neighbour as yourself.",
        "Ask, and it shall be given you.",
        "Let not your heart be troubled.",
        "The truth shall make you free.",
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
    ],
}
LANGS = list(TEXTS)
CSVS = ("layer_profile.csv", "u_shape.csv", "selectivity.csv", "ablation.csv")


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def message(self) -> str:
        """The one ``mlinguality:`` line on stderr (asserting there is exactly one)."""
        lines = [line for line in self.err.splitlines() if line.startswith("mlinguality:")]
        assert len(lines) == 1, f"expected one mlinguality: line, got {self.err!r}"
        return lines[0]


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }


def cli(*args: str, cwd: Path, script: Path | None = None, timeout: float = 300, **kw) -> Result:
    """``python -m mlinguality ARGS`` (or ``python SCRIPT ARGS``) in a subprocess."""
    head = [str(script)] if script else ["-m", "mlinguality"]
    done = subprocess.run(
        [sys.executable, *head, *args],
        cwd=cwd,
        env={**env(), **kw.pop("extra_env", {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def assert_user_error(result: Result, *needles: str, status: int = 2) -> str:
    """Exit status, exactly one ``mlinguality:`` line holding every needle, no traceback."""
    assert result.rc == status, (result.rc, result.err[-2000:])
    assert "Traceback" not in result.err, result.err[-2000:]
    line = result.message
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def write_corpus(path: Path, texts: dict[str, list[str]] = TEXTS) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for i in range(len(texts["en"])):
            record = {"id": f"v{i}", **{lang: texts[lang][i] for lang in texts}}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def config_dict(root: Path, **top) -> dict:
    """A tiny-model run: 3 languages x 8 verses, every stage, no plots, no W&B."""
    data = {
        "name": "tiny",
        "output_dir": str(root / "runs"),
        "cache_dir": str(root / "cache"),
        "plots": False,
        "model": {"spec": "tiny", "threads": 1},
        "corpus": {"source": str(root / "corpus.jsonl"), "langs": LANGS, "limit": None},
        "collection": {"batch_tokens": 256},
        "selectivity": {
            "metrics": ["topk", "lape"],
            "top_rate": 0.05,
            "n_permutations": 5,
            "n_bootstrap": 0,
            "control_pairs": None,  # the corpus has one English wording
        },
        "ablation": {"mode": "zero", "n_random": 1, "eval_limit": 2},
        "tracking": {"wandb": "disabled"},
    }
    data.update(top)
    return data


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def stages(run_dir: Path) -> dict[str, dict]:
    return json.loads((run_dir / "stages.json").read_text())


def run_dirs(root: Path) -> list[Path]:
    folder = root / "runs"
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

"""Every code block in README.md and docs/ runs, as a reader would run it.

The fence's info string says how (the convention is also written in docs/contributing.md):

- ```` ```python ````: executed; the blocks of one page share one namespace, in page order (a
  page reads like a notebook). They run on the tiny model or in-memory data in the fast suite.
- ```` ```bash ```` / ```` ```console ````: every line run by bash (``$ `` prompts stripped), in a
  scratch folder holding a link to ``experiments/``, with this checkout first on PYTHONPATH.
- ``slow`` after the language (```` ```python slow ````): needs Gemma 3 270M or the Bible
  corpus at scale; runs only in the slow suite.
- ``norun="reason"``: never run (installing packages, a W&B server, hour-long reproductions);
  the reason is required and the test lists these blocks.
- ``text``, ``yaml``, ``json``, ``markdown``: output or data, not code. ``yaml`` blocks must parse.

A block with no language at all fails the test: say what it is.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
_FENCE = re.compile(
    r"^(?P<indent> *)```(?P<info>[^`\n]*)\n(?P<body>.*?)^(?P=indent)```\s*$", re.M | re.S
)
_RUN = ("python", "bash", "console", "sh", "shell")
_DATA = ("text", "yaml", "yml", "json", "markdown", "md", "csv", "toml", "mermaid")


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    flags: dict[str, str]
    body: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def _blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        lang, *rest = shlex.split(match["info"]) or [""]
        flags = dict(item.partition("=")[::2] for item in rest)
        body = "\n".join(line.removeprefix(match["indent"]) for line in match["body"].splitlines())
        found.append(Block(page, text[: match.start()].count("\n") + 1, lang, flags, body))
    return found


ALL = [block for page in PAGES for block in _blocks(page)]


def _pages(slow: bool) -> list[Path]:
    return sorted(
        {
            b.page
            for b in ALL
            if b.lang in _RUN and "norun" not in b.flags and ("slow" in b.flags) == slow
        }
    )


def test_every_block_says_what_it_is():
    unknown = [b.where for b in ALL if b.lang not in _RUN + _DATA]
    assert unknown == [], f"blocks without a known language: {unknown}"
    no_reason = [b.where for b in ALL if "norun" in b.flags and not b.flags["norun"]]
    assert no_reason == [], f'norun blocks need a reason (norun="..."): {no_reason}'
    for block in ALL:
        if block.lang in ("yaml", "yml"):
            yaml.safe_load(block.body)


def test_not_run_blocks_are_few(capsys):
    skipped = [f"{b.where} ({b.flags['norun']})" for b in ALL if "norun" in b.flags]
    with capsys.disabled():
        sys.stdout.write(f"\ndoc blocks not run: {len(skipped)}: {'; '.join(skipped)}\n")
    ran = [b for b in ALL if b.lang in _RUN and "norun" not in b.flags]
    assert len(ran) >= 2 * len(skipped)


def _run_page(page: Path, slow: bool, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments").symlink_to(REPO / "experiments")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
        "WANDB_SILENT": "true",
    }
    namespace: dict = {"__name__": "__doc__"}
    for block in _blocks(page):
        if block.lang not in _RUN or "norun" in block.flags or ("slow" in block.flags) != slow:
            continue
        if block.lang == "python":
            try:
                exec(compile(block.body, block.where, "exec"), namespace)  # noqa: S102
            except Exception as error:
                raise AssertionError(f"{block.where}: {type(error).__name__}: {error}") from error
            continue
        script = "\n".join(re.sub(r"^\$ ", "", line) for line in block.body.splitlines())
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert result.returncode == 0, (
            f"{block.where}: exit {result.returncode}\n{result.stderr[-3000:]}"
        )


@pytest.mark.parametrize("page", _pages(slow=False), ids=lambda p: str(p.relative_to(REPO)))
def test_page_blocks_run(page, tmp_path, monkeypatch):
    _run_page(page, False, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("page", _pages(slow=True), ids=lambda p: str(p.relative_to(REPO)))
def test_page_blocks_run_on_gemma(page, tmp_path, monkeypatch):
    _run_page(page, True, tmp_path, monkeypatch)

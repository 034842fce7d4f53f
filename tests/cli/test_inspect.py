"""The CLI conventions: --version, config show|keys, run --dry-run, help on every option."""

from __future__ import annotations

import argparse

import pytest
import yaml

import mlinguality.cli.main as cli
from mlinguality import __version__
from mlinguality.run.config import RunConfig
from mlinguality.run.overrides import override_keys


def _main(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_version(capsys):
    assert _main(["--version"], capsys).strip() == f"mlinguality {__version__}"


def test_config_keys_lists_every_key_with_its_default_and_help(capsys):
    lines = _main(["config", "keys"], capsys).splitlines()
    listed = {line.split()[0]: line for line in lines}
    assert list(listed) == override_keys()
    assert all(len(line.split(None, 2)) == 3 for line in lines)  # key, default, help
    assert listed["selectivity.top_rate"].split()[1] == "0.01"
    table = _main(["config", "keys", "--markdown"], capsys)
    assert "| `ablation.mode` | one of 'zero', 'mean' | `zero` |" in table


def test_config_show_and_run_dry_run_print_the_resolved_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shown = yaml.safe_load(_main(["config", "show", "--set", "corpus.langs=en,ru"], capsys))
    assert shown == RunConfig().with_overrides(["corpus.langs=en,ru"]).to_dict()
    dry = yaml.safe_load(_main(["run", "--dry-run", "--selectivity.top_rate=0.2"], capsys))
    assert dry["selectivity"]["top_rate"] == 0.2
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_every_option_has_help():
    def walk(parser: argparse.ArgumentParser, path: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")
            elif not action.help and action.dest != "help":
                yield f"{path} {'/'.join(action.option_strings) or action.dest}"

    assert list(walk(cli.build_parser(), "mlinguality")) == []


_BAR_SCRIPT = """
import logging, sys
from tqdm import tqdm
import mlinguality.cli.inspect as commands
import mlinguality.cli.main as cli

def handler(args):
    bar = tqdm(total=3, file=sys.stderr, ascii=True, mininterval=0)
    bar.update(1)
    logging.getLogger("mlinguality.test").info("between bars")
    bar.update(2)
    bar.close()
    return 0

commands._config_keys = handler
cli.main(["config", "keys"])
"""


def test_log_lines_do_not_break_progress_bars():
    """A log line during a tqdm bar gets a line of its own (the bar is redrawn below it)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    result = subprocess.run(
        [sys.executable, "-c", _BAR_SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.split("\n") if "between bars" in line]
    assert line.split("\r")[-1] == "INFO mlinguality.test: between bars"

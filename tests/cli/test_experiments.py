"""The experiment subcommands (ablation-matrix, profile, word-final) on the tiny model."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import mlinguality.cli.main as cli
from mlinguality.cli.experiments import parse_rates


def _main(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


def test_parse_rates():
    assert parse_rates("0.01, 0.05") == [0.01, 0.05]
    assert parse_rates("lape=0.01;cohens_d=0.002,0.01") == {
        "lape": [0.01],
        "cohens_d": [0.002, 0.01],
    }


def test_ablation_matrix_writes_one_configuration_per_setting(tmp_path, capsys):
    out = tmp_path / "am"
    argv = ["ablation-matrix", "--model", "tiny", "--langs", "en,fr", "--select", "6"]
    argv += ["--eval", "2", "--metrics", "lape", "--rates", "0.05,0.1", "--modes", "zero"]
    status, stdout, _ = _main([*argv, "--seeds", "1", "--out", str(out)], capsys)
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [c["rate"] for c in summary["configs"]] == [0.05, 0.1]
    assert summary["select_verses"] == 6 and summary["eval_verses"] == 2
    cells = pd.read_csv(out / "matrix.csv")
    assert set(cells["rate"]) == {0.05, 0.1}
    assert (out / "heatmaps.png").stat().st_size > 1000
    assert stdout.count("| lape |") == 2  # the comparison table, one line per configuration


def test_ablation_matrix_bad_rates_is_one_line(tmp_path, capsys):
    status, _, err = _main(["ablation-matrix", "--rates", "lape=x", "--out", str(tmp_path)], capsys)
    assert status == 2
    assert err.startswith("mlinguality: error: --rates 'lape=x'") and err.count("\n") == 1


def test_profile_writes_tables_and_reuses_its_statistics(tmp_path, capsys, caplog):
    out = tmp_path / "profile"
    argv = ["profile", "--model", "tiny", "--langs", "en,fr", "--verses", "8"]
    argv += ["--permutations", "9", "--bootstrap", "3", "--out", str(out)]
    status, stdout, _ = _main(argv, capsys)
    assert status == 0
    first = pd.read_csv(out / "layer_profile.csv")
    assert set(first.layer) == {0, 1, 2, 3} and "en-fr" in set(first.pair)
    assert "## U-shape statistics" in stdout and "| layer |" in stdout.replace("  ", "")
    assert (out / "selectivity_profile_grid.png").is_file()
    (out / "layer_profile.csv").unlink()
    caplog.set_level("INFO", logger="mlinguality")
    status, _, _ = _main(argv, capsys)  # second run: statistics from --out/stats, same seed
    assert status == 0 and "statistics reused" in caplog.text
    pd.testing.assert_frame_equal(pd.read_csv(out / "layer_profile.csv"), first)


def test_profile_replot_without_tables_is_one_line(tmp_path, capsys):
    status, _, err = _main(["profile", "--replot", "--out", str(tmp_path)], capsys)
    assert status == 2 and "layer_profile.csv not found" in err and err.count("\n") == 1


def test_word_final_prints_a_table_and_refuses_a_missing_layer(capsys):
    argv = ["word-final", "--model", "tiny", "--langs", "en", "--verses", "2"]
    status, stdout, _ = _main([*argv, "--layers", "0,3"], capsys)
    assert status == 0 and stdout.splitlines()[2].startswith("| en | ")
    status, _, err = _main([*argv, "--layers", "0,9"], capsys)
    assert status == 2 and "--layers: 9 is not a layer of tiny (0..3)" in err

"""Fault cases of the command line (issue 13), each run as a user would: ``python -m mlinguality``
in a subprocess with the tiny model. Every case asserts the exit status, one ``mlinguality:`` line
naming what was wrong, no traceback, nothing left behind, and (for faults) that the next run
resumes or rebuilds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.run.faults import (
    assert_user_error,
    cli,
)

# --- input errors caught before torch is imported (about a second each) -----------------------

_BAD_CONFIGS = [
    # (case, YAML text, what the line must name)
    ("repeated key", "corpus:\n  limit: 3\nseed: 1\ncorpus:\n  langs: [en, fr]\n",
     ["key 'corpus' appears twice (lines 1 and 4)"]),
    ("repeated nested key", "corpus:\n  limit: 3\n  limit: 4\n",
     ["key 'limit' appears twice (lines 2 and 3)"]),
    ("unknown key", "selectivity:\n  top_rat: 0.1\n",
     ["unknown key 'selectivity.top_rat'", "did you mean 'selectivity.top_rate'"]),
    ("wrong type", "selectivity:\n  top_rate: lots\n", ["selectivity.top_rate: expected a number"]),
    ("out of range", "selectivity:\n  top_rate: 5\n", ["selectivity.top_rate: must be in (0, 1]"]),
    ("bad choice", "ablation:\n  mode: half\n", ["ablation.mode: expected one of"]),
    ("invalid YAML", "ablation: [unclosed\n", ["line 2 not valid YAML"]),
    ("a list, not a mapping", "- a\n- b\n", ["expected a mapping"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "text", "needles"), _BAD_CONFIGS, ids=[c[0] for c in _BAD_CONFIGS]
)
def test_bad_config_files(tmp_path, case, text, needles):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    line = assert_user_error(cli("run", str(path), cwd=tmp_path), f"config {path}", *needles)
    assert "\n" not in line
    assert not (tmp_path / "runs").exists()


def test_bad_paths_and_arguments(tmp_path):
    """Missing or unreadable config, a folder as config, bad --set, bad --resume folder."""
    assert_user_error(cli("run", "absent.yaml", cwd=tmp_path), "absent.yaml: no such file")
    assert_user_error(cli("run", str(tmp_path), cwd=tmp_path), "is a directory, not a YAML file")
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert_user_error(cli("run", "latin1.yaml", cwd=tmp_path), "latin1.yaml: not UTF-8")
    assert_user_error(cli("run", "--set", "seed", cwd=tmp_path), "expected section.key=value")
    assert_user_error(
        cli("run", "--resume", str(tmp_path), cwd=tmp_path), "config.yaml: no such file"
    )
    assert not (tmp_path / "runs").exists()


# --- model folders ------------------------------------------------------------------------------


def _damage_model_folders(root: Path) -> dict[str, Path]:
    """A saved tiny model, and copies without weights, truncated, random bytes, NaN weights."""
    import shutil
    import struct

    from mlinguality.model import TinyModelConfig, build_tiny_hf_model, build_tiny_tokenizer

    good = root / "good"
    config = TinyModelConfig(n_layers=2)
    tokenizer = build_tiny_tokenizer(config)
    build_tiny_hf_model(config, len(tokenizer)).save_pretrained(good)
    tokenizer.save_pretrained(good)
    folders = {}
    for name in ("noweights", "truncated", "random", "nan"):
        folders[name] = root / name
        shutil.copytree(good, folders[name])
    (folders["noweights"] / "model.safetensors").unlink()
    weights = (good / "model.safetensors").read_bytes()
    (folders["truncated"] / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    (folders["random"] / "model.safetensors").write_bytes(os.urandom(len(weights)))
    n = struct.unpack("<Q", weights[:8])[0]
    header = json.loads(weights[8 : 8 + n])
    first = min((v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"), default=0)
    flipped = bytearray(weights)
    flipped[8 + n + first + 2 : 8 + n + first + 4] = b"\xff\x7f"  # a float32 exponent of all ones
    (folders["nan"] / "model.safetensors").write_bytes(bytes(flipped))
    return folders


def test_damaged_model_folders_are_one_line(tmp_path):
    folders = _damage_model_folders(tmp_path)
    cases = {
        "noweights": "no weights (model.safetensors or pytorch_model.bin)",
        "truncated": "model.safetensors: truncated or padded",
        "random": "model.safetensors: not a safetensors file",
        "nan": "holds NaN or inf (damaged file?)",
    }
    for name, needle in cases.items():
        line = assert_user_error(cli("model", "check", str(folders[name]), cwd=tmp_path), needle)
        assert str(folders[name]) in line
    good = cli("model", "check", "tiny", cwd=tmp_path)
    assert good.rc == 0 and good.out.strip() == "tiny: 4 layers x d_mlp=64, vocabulary 400"
    assert_user_error(cli("model", "check", "tiny:bert", cwd=tmp_path), "use 'tiny'")


def test_sweep_count_below_one_is_refused(tmp_path):
    """`sweep --count -1` ran 2 of 3 grid points; `--count 0` printed a table never written."""
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "program": "experiments/run.py",
                "method": "grid",
                "parameters": {"selectivity.top_rate": {"values": [0.01, 0.02, 0.05]}},
            }
        )
    )
    for count in ("-1", "0"):
        assert_user_error(
            cli("sweep", str(sweep), "--count", count, cwd=tmp_path),
            f"--count: must be a positive number of runs, got {count}",
        )
    assert not (tmp_path / "runs").exists()

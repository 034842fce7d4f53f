"""Tests for mlinguality/model.py: every spec kind that builds offline, and the bad ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from mlinguality import ModelLoadError, TinyModelConfig, load_model
from mlinguality.files import sha256
from mlinguality.model import build_tiny_hf_model, build_tiny_tokenizer
from tests.utils import assert_close


def _mlp_post_oracle(hf_model, ids, layer: int) -> torch.Tensor:
    """The plain transformers MLP hidden activation, captured with a torch forward hook."""
    captured = {}

    def keep_input(module, inputs, output) -> None:
        captured["post"] = inputs[0].detach()

    if hasattr(hf_model, "model"):  # gated: act(gate_proj(x)) * up_proj(x) enters down_proj
        handle = hf_model.model.layers[layer].mlp.down_proj.register_forward_hook(keep_input)
    else:  # GPT-2: act(c_fc(x)) enters c_proj
        handle = hf_model.transformer.h[layer].mlp.c_proj.register_forward_hook(keep_input)
    with torch.no_grad():
        hf_model(ids)
    handle.remove()
    return captured["post"]


@pytest.mark.parametrize("architecture", ["gemma3", "gpt2"])
def test_tiny_model_hook_post_matches_plain_transformers(architecture):
    config = TinyModelConfig(architecture=architecture, n_layers=3, d_mlp=48, seed=3)
    bridge = load_model(config)
    assert bridge.cfg.n_layers == 3 and bridge.cfg.d_mlp == 48
    tokenizer = build_tiny_tokenizer(config)
    oracle_model = build_tiny_hf_model(config, len(tokenizer))  # same seed -> same weights
    ids = tokenizer(["Блаженны миротворцы, ибо"], return_tensors="pt").input_ids
    _, cache = bridge.run_with_cache(ids, names_filter=lambda n: n == "blocks.2.mlp.hook_post")
    assert_close(
        cache["blocks.2.mlp.hook_post"], _mlp_post_oracle(oracle_model, ids, 2), "fp32_model"
    )


def test_tiny_seed_changes_weights():
    a = load_model(TinyModelConfig(seed=0))
    b = load_model(TinyModelConfig(seed=1))
    ids = a.tokenizer("hello", return_tensors="pt").input_ids
    assert not torch.allclose(a(ids), b(ids))


def test_tiny_tokenizer_keeps_every_script():
    tokenizer = build_tiny_tokenizer(TinyModelConfig())
    for text in ["हिन्दी", "中文", "Русский", "Ελληνικά"]:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert tokenizer.decode(ids) == text
        assert tokenizer.unk_token_id not in ids


def test_local_directory_round_trip(tmp_path):
    config = TinyModelConfig(n_layers=2, d_mlp=40, seed=5)
    tokenizer = build_tiny_tokenizer(config)
    hf_model = build_tiny_hf_model(config, len(tokenizer))
    hf_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    bridge = load_model(tmp_path)
    assert bridge.cfg.d_mlp == 40 and len(bridge.tokenizer) == len(tokenizer)
    ids = tokenizer("Heureux ceux qui procurent la paix", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = hf_model(ids).logits
    assert_close(bridge(ids), expected, "fp32_model")


def test_bfloat16_dtype_is_applied():
    bridge = load_model(TinyModelConfig(), dtype="bfloat16")
    assert next(bridge.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize("architecture", ["gemma3", "gpt2"])
def test_a_model_in_another_dtype_equals_loading_it_so(architecture):
    from mlinguality.ablation.hooks import ablate, mask_from_pairs
    from mlinguality.model import model_in_dtype

    spec = TinyModelConfig(architecture=architecture, n_layers=2, d_mlp=64)
    model = load_model(spec)
    half = model_in_dtype(model, "bfloat16")
    ids = model.tokenizer(["Blessed are the meek."], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(half(ids), load_model(spec, dtype="bfloat16")(ids))
        assert next(model.parameters()).dtype == torch.float32  # the original is untouched
        assert model(ids).dtype == torch.float32
        mask = mask_from_pairs([(layer, n) for layer in (0, 1) for n in range(32)], 2, 64)
        with ablate(half, mask) as hooks:  # hooks act on the copy
            ablated = half(ids)
    assert all(record.calls == 1 for record in hooks.records.values())
    assert not torch.equal(ablated, half(ids))
    assert model_in_dtype(model, "float32") is model


def test_directory_without_tokenizer_is_refused(tmp_path):
    config = TinyModelConfig()
    build_tiny_hf_model(config, 400).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="no tokenizer files"):
        load_model(tmp_path)


def test_empty_directory_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)


def test_bad_dtype_is_one_line_error():
    with pytest.raises(ModelLoadError, match="dtype: unknown 'float8'"):
        load_model(TinyModelConfig(), dtype="float8")


def test_missing_path_is_refused():
    with pytest.raises(ModelLoadError, match="no such directory"):
        load_model("./no/such/model/dir")


def test_unknown_hub_name_offline_fails_fast_with_one_line():
    code = (
        "import os; os.environ['HF_HUB_OFFLINE']='1'\n"
        "from mlinguality.cli.main import main\n"
        "main(['model', 'check', 'facebook/definitely-not-a-cached-model'])\n"
    )
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    elapsed_after_imports = time.perf_counter() - start
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "local model directory" in lines[0] and "Traceback" not in result.stderr
    assert elapsed_after_imports < 20  # imports dominate; the check itself makes no retries


def test_hub_check_itself_is_fast(monkeypatch):
    from mlinguality import model as model_module

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="pass a local model directory"):
        model_module.load_model("facebook/definitely-not-a-cached-model")
    assert time.perf_counter() - start < 2.0


def test_corrupt_cache_is_detected(tmp_path, monkeypatch):
    from mlinguality import gemma as model_module

    folder = tmp_path / "gemma-3-270m"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"0123456789")
    files = {"weights.bin": {"size": 10, "sha256": sha256(folder / "weights.bin")}}
    manifest = {"format": model_module._CACHE_FORMAT, "files": files}
    (folder / model_module._MANIFEST).write_text(__import__("json").dumps(manifest))
    assert model_module._verify_manifest(folder) is None
    (folder / "weights.bin").write_bytes(b"0123456780")  # same size, one byte flipped
    assert "checksum" in model_module._verify_manifest(folder)
    (folder / "weights.bin").write_bytes(b"01234")
    assert "size" in model_module._verify_manifest(folder)
    (folder / model_module._MANIFEST).unlink()  # a half-written conversion has no manifest
    assert "manifest" in model_module._verify_manifest(folder)


def test_corrupt_cache_is_rebuilt_not_used(tmp_path, monkeypatch):
    from mlinguality import gemma as model_module

    monkeypatch.setenv("MLINGUALITY_CACHE", str(tmp_path))
    conversions = []

    def fake_convert(folder):
        conversions.append(folder)
        folder.mkdir()
        (folder / "weights.bin").write_bytes(b"good")
        files = {"weights.bin": {"size": 4, "sha256": sha256(folder / "weights.bin")}}
        manifest = {"format": model_module._CACHE_FORMAT, "files": files}
        (folder / model_module._MANIFEST).write_text(__import__("json").dumps(manifest))

    monkeypatch.setattr(model_module, "_convert_gemma", fake_convert)
    folder = model_module.ensure_gemma_cache()  # absent -> converted
    assert len(conversions) == 1
    assert model_module.ensure_gemma_cache() == folder and len(conversions) == 1  # valid -> reused
    weights = folder / "weights.bin"
    recorded = json.loads((folder / model_module._MANIFEST).read_text())["files"]["weights.bin"]
    assert recorded["mtime_ns"] == weights.stat().st_mtime_ns  # later loads skip the sha256
    weights.write_bytes(b"evil")  # corrupt, later (a new mtime) -> rebuilt
    os.utime(weights, ns=(recorded["mtime_ns"] + 10**9, recorded["mtime_ns"] + 10**9))
    model_module.ensure_gemma_cache()
    assert len(conversions) == 2 and weights.read_bytes() == b"good"
    # corruption that keeps size and mtime (bit rot) is found by the full check only
    mtime = weights.stat().st_mtime_ns
    model_module.ensure_gemma_cache()
    weights.write_bytes(b"evi1")
    os.utime(weights, ns=(mtime, mtime))
    assert model_module.ensure_gemma_cache() == folder and len(conversions) == 2
    model_module.ensure_gemma_cache(verify=True)
    assert len(conversions) == 3 and weights.read_bytes() == b"good"


def test_stale_conversion_temp_is_removed_and_conversion_is_locked(tmp_path, monkeypatch):
    """A killed conversion's temp folder (dead pid) is removed on the next start; a second
    process converting at the same time waits for the lock and uses the first one's folder."""
    from filelock import FileLock, Timeout

    from mlinguality import gemma as model_module

    monkeypatch.setenv("MLINGUALITY_CACHE", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".gemma-3-270m.tmp-{dead.pid}"
    stale.mkdir()
    (stale / "model.gguf").write_bytes(b"x" * 100)
    conversions = []

    def fake_convert(folder):
        conversions.append(folder)
        with pytest.raises(Timeout):  # converting under the lock
            FileLock(str(tmp_path / ".gemma-3-270m.lock")).acquire(timeout=0)
        folder.mkdir()
        (folder / "w").write_bytes(b"ok")
        files = {"w": {"size": 2, "sha256": sha256(folder / "w")}}
        manifest = {"format": model_module._CACHE_FORMAT, "files": files}
        (folder / model_module._MANIFEST).write_text(json.dumps(manifest))

    lock = tmp_path / ".gemma-3-270m.lock"
    monkeypatch.setattr(model_module, "_convert_gemma", fake_convert)
    model_module.ensure_gemma_cache()
    assert not stale.exists() and len(conversions) == 1
    # another process holds the lock: we wait, then find its finished folder and do not convert
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from filelock import FileLock\n"
         f"with FileLock({str(lock)!r}):\n print('held', flush=True); time.sleep(2)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    (tmp_path / "gemma-3-270m" / "w").write_bytes(b"no")  # damaged while the other converts
    os.utime(tmp_path / "gemma-3-270m" / "w", ns=(1, 1))
    start = time.perf_counter()
    model_module.ensure_gemma_cache()
    assert time.perf_counter() - start > 0.5  # waited for the holder
    holder.wait()
    assert len(conversions) == 2


def test_set_threads_applies_the_count_and_warns_on_a_busy_machine(monkeypatch, caplog):
    import os

    import torch

    from mlinguality.model import set_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        assert set_threads(2) == 2
        assert "load average 9.0 on 2 cores" in caplog.text
        caplog.clear()
        assert set_threads(1) == 1 and caplog.text == ""  # one thread: nothing to contend
        monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
        assert set_threads(2) == 2 and caplog.text == ""  # a quiet machine
    finally:
        torch.set_num_threads(before)

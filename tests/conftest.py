"""Fixtures: seeded RNGs, tiny random models, and the real Gemma model (slow tests, loaded once)."""

from __future__ import annotations

import os
import random
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# a W&B run opened without dir= (docs/wandb.md's "your own run") goes here, not into the repo
os.environ.setdefault("WANDB_DIR", tempfile.mkdtemp(prefix="mlinguality-tests-wandb-"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
import torch

# OMP_NUM_THREADS=1 on a shared machine (docs/performance.md, "Threads on a shared machine")
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_model():
    """A 2-layer random Gemma-3-style bridge (gated MLP, d_mlp=64) with a byte-level tokenizer."""
    from mlinguality import TinyModelConfig, load_model

    return load_model(TinyModelConfig(architecture="gemma3", n_layers=2, d_model=32, d_mlp=64))


@pytest.fixture(scope="session")
def tiny_gpt2():
    """A 2-layer random GPT-2-style bridge (plain MLP)."""
    from mlinguality import TinyModelConfig, load_model

    return load_model(TinyModelConfig(architecture="gpt2", n_layers=2, d_model=32, d_mlp=64))


@pytest.fixture(scope="session")
def gemma():
    """The embedded Gemma 3 270M (fp32, CPU), converted on first use and shared by slow tests."""
    from mlinguality import load_model

    return load_model("gemma-3-270m")


@pytest.fixture
def without_typechecks():
    """jaxtyping/beartype checks off, as a user's process runs (no pytest import hook): for tests
    of the library's own one-line errors on values the annotations already refuse."""
    from jaxtyping import config

    config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        config.update("jaxtyping_disable", False)

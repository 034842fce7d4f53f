"""Fixtures shared by the runner's tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tiny4():
    """The model ``model.spec: tiny`` loads with ``seed: 0`` (4 layers, d_mlp 64)."""
    from mlinguality.model import load_model, tiny_config

    return load_model(tiny_config("tiny", seed=0))

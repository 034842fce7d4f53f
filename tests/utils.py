"""Shared test helpers: one assert_close with documented tolerances."""

from __future__ import annotations

import torch

# Tolerances by what is compared:
# - "exact": the same arithmetic in another order (sums of float64, integer counts): 1e-9 relative.
# - "fp32": float32 forward passes of the same model that differ in batching/padding: 1e-4 / 1e-5.
# - "fp32_model": two implementations of one model (bridge vs plain transformers): 1e-3 / 1e-4.
TOLERANCES = {
    "exact": {"rtol": 1e-9, "atol": 1e-9},
    "fp32": {"rtol": 1e-4, "atol": 1e-5},
    "fp32_model": {"rtol": 1e-3, "atol": 1e-4},
}


def assert_close(actual, expected, kind: str = "fp32", msg: str = "") -> None:
    """torch.testing.assert_close with a named tolerance from TOLERANCES."""
    actual = torch.as_tensor(actual)
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, **TOLERANCES[kind], msg=msg or None)

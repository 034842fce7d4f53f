"""Tests for mlinguality/types.py: the suite checks the package's shape annotations.

``pyproject.toml``'s ``addopts`` run pytest with ``--jaxtyping-packages=mlinguality,beartype.beartype``,
which wraps every function and dataclass of the package in a jaxtyping + beartype check. Without
it every annotation goes unchecked and the rest of the suite still passes; this canary fails.
"""

from __future__ import annotations

import pytest
import torch
from jaxtyping import TypeCheckError

from mlinguality.ablation.random_sets import activity_bins
from mlinguality.activations.stats import ActivationStats


def test_shape_annotations_are_checked_under_pytest():
    # a LayerNeuron [layer, d_mlp] given [example, layer, d_mlp]: unchecked, argsort runs on it
    with pytest.raises(TypeCheckError, match="activity"):
        activity_bins(torch.rand(2, 3, 4), n_bins=2)
    # the dims are bound across arguments: m2's d_mlp (4) disagrees with sum's (3)
    empty = ActivationStats.empty("en", n_layers=2, d_mlp=3, gated=False)
    with pytest.raises(TypeCheckError, match="m2"):
        ActivationStats(
            lang="en",
            n_tokens=0,
            sum=empty.sum,
            m2=torch.zeros(2, 4, dtype=torch.float64),
            n_positive=empty.n_positive,
            max=empty.max,
        )

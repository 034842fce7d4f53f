"""Tests for mlinguality.selectivity.plots: files are real PNGs and the drawn lines are the profile's."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from mlinguality.errors import MlingualityError
from mlinguality.selectivity.plots import draw_layer_profile, plot_layer_profile, plot_profile_grid
from mlinguality.selectivity.profile import selectivity_profile
from tests.synthetic import make_langs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def profile():
    shift = torch.zeros(4, 8)
    shift[[0, 3]] = 1.0
    stats = make_langs(["en", "fr", "ru"], n_examples=10, shift={"ru": shift}, seed=0)
    return selectivity_profile(stats, n_permutations=19, n_bootstrap=10, k=2, seed=0)


def test_profile_png_is_written(profile, tmp_path):
    path = plot_layer_profile(profile, "cohens_d", tmp_path / "sub" / "d.png", title="test")
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 500 and height > 300


def test_grid_png_is_written(profile, tmp_path):
    path = plot_profile_grid(profile, tmp_path / "grid.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_drawn_lines_are_the_profile_values_and_labels_carry_u(profile):
    fig, ax = plt.subplots()
    labels = draw_layer_profile(ax, profile, "cohens_d")
    u = profile.u_shape.set_index(["metric", "pair"])
    expected_labels = []
    for pair in ("en-fr", "en-ru"):
        row = u.loc[("cohens_d", pair)]
        expected_labels.append(
            f"{pair}  U={row.u:.2f} ({row.ci_low:.2f}-{row.ci_high:.2f}) p={row.p_value:.3g}"
        )
    assert labels == expected_labels
    rows = profile.layers
    expected = rows[(rows.metric == "cohens_d") & (rows.pair == "en-ru")].sort_values("layer")
    solid = [line for line in ax.lines if line.get_linestyle() == "-"]
    assert len(solid) == 2  # one per pair
    np.testing.assert_allclose(solid[1].get_ydata(), expected.value.to_numpy())
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    np.testing.assert_allclose(dashed[1].get_ydata(), expected.null_mean.to_numpy())
    plt.close(fig)


def test_topk_panel_draws_the_chance_line(profile):
    fig, ax = plt.subplots()
    draw_layer_profile(ax, profile, "topk")
    dotted = [line for line in ax.lines if line.get_linestyle() == ":"]
    chance = profile.layers[profile.layers.metric == "topk"].chance.iloc[0]
    assert len(dotted) == 1 and dotted[0].get_ydata()[0] == pytest.approx(chance)
    plt.close(fig)


def test_unknown_metric_raises(profile, tmp_path):
    with pytest.raises(MlingualityError, match="no rows for metric 'nope'"):
        plot_layer_profile(profile, "nope", tmp_path / "x.png")

"""Tests for mlinguality.selectivity.plots (and the other selectivity plots: the language
overlap, the selected neurons per layer): files are real PNGs, the drawn lines are the
profile's, every plot labels its y axis, and the dendrogram's leaves are the languages."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from mlinguality.errors import MlingualityError
from mlinguality.selectivity.overlap import (
    cluster_languages,
    language_overlap,
    plot_language_overlap,
)
from mlinguality.selectivity.plots import (
    AXIS_LABELS,
    FLOOR_LABEL,
    draw_layer_profile,
    plot_layer_profile,
    plot_profile_grid,
)
from mlinguality.selectivity.profile import selectivity_profile
from tests.selectivity.test_overlap import _families
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


# --- axis labels: read back from the figures the plot functions save ------------------------


@pytest.fixture
def saved(monkeypatch) -> list[Figure]:
    """Every figure saved while the test runs (the plot functions close theirs after saving)."""
    figures: list[Figure] = []
    original = Figure.savefig

    def savefig(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figures


def drawn_axes(fig: Figure) -> list:
    """The axes a reader sees (hidden and axis-off panels left out)."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.axison]


def assert_every_y_axis_is_labelled(fig: Figure) -> None:
    axes = drawn_axes(fig)
    assert axes
    for ax in axes:
        assert ax.get_ylabel().strip(), ax.get_title() or ax


def test_every_profile_panel_names_its_score(profile, saved, tmp_path):
    metrics = list(dict.fromkeys(profile.layers.metric))
    for metric in metrics:
        fig, ax = plt.subplots()
        draw_layer_profile(ax, profile, metric)
        assert ax.get_ylabel() == AXIS_LABELS[metric] and ax.get_xlabel() == "layer"
        plt.close(fig)
    plot_profile_grid(profile, tmp_path / "grid.png")
    plot_layer_profile(profile, "topk", tmp_path / "topk.png")
    grid, single = saved
    assert [ax.get_ylabel() for ax in drawn_axes(grid)] == [AXIS_LABELS[m] for m in metrics]
    assert_every_y_axis_is_labelled(single)
    assert FLOOR_LABEL in grid._suptitle.get_text()  # the caption names the control


def test_profile_control_line_is_the_same_language_floor(tmp_path, saved):
    stats = make_langs(["en", "fr", "en:alt"], n_examples=10, seed=1)
    profile = selectivity_profile(
        stats,
        metrics=["cohens_d"],
        pairs=[("en", "fr")],
        control_pairs=[("en", "en:alt")],
        n_permutations=9,
        n_bootstrap=5,
        seed=0,
    )
    fig, ax = plt.subplots()
    labels = draw_layer_profile(ax, profile, "cohens_d")
    dash_dot = [line for line in ax.lines if line.get_linestyle() == "-."]
    assert len(dash_dot) == 1 and dash_dot[0].get_color() == "black"
    assert labels[1].startswith("en-en:alt  U=")  # named by the caption, not a synonym
    assert not any("control" in label for label in labels)
    plt.close(fig)


def test_overlap_dendrogram_leaves_are_the_languages_above_their_columns(saved, tmp_path):
    table = language_overlap(_families(), k=5)
    plot_language_overlap(table, tmp_path / "overlap.png")
    (fig,) = saved
    assert_every_y_axis_is_labelled(fig)
    bands = list(dict.fromkeys(table["band"]))
    n = table["lang_a"].nunique()
    for column, band in enumerate(bands):
        top, heat = fig.axes[column], fig.axes[len(bands) + column]
        leaves = [label.get_text() for label in top.get_xticklabels()]
        order, _ = cluster_languages(table, band)
        assert leaves == order  # every leaf is labelled with its language code
        assert [label.get_text() for label in heat.get_xticklabels()] == order
        # scipy puts leaf i at x = 10 i + 5: the limits make leaf i sit above column i
        np.testing.assert_allclose(top.get_xticks(), 10 * np.arange(n) + 5)
        assert top.get_xlim() == (0, 10 * n) and heat.get_xlim() == (-0.5, n - 0.5)
        assert top.get_position().x0 == pytest.approx(heat.get_position().x0, abs=1e-6)
        assert top.get_position().width == pytest.approx(heat.get_position().width, abs=1e-6)
        assert top.get_ylabel() == "distance (1 - correlation)"


def test_selected_neurons_plot_labels_its_axes(saved, tmp_path):
    from mlinguality.run.report import plot_selected

    chosen = pd.DataFrame(
        {"lang": ["en", "en", "fr", "fr"], "layer": [0, 1, 0, 1], "n_selected": [1, 2, 3, 0]}
    )
    plot_selected(chosen, tmp_path / "selected.png")
    (fig,) = saved
    (ax,) = drawn_axes(fig)
    assert ax.get_ylabel() == "selected neurons" and ax.get_xlabel() == "layer"
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), [3, 0])

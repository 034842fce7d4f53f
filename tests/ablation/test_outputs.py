"""Tests for the ablation heatmap (mlinguality.ablation.outputs.plot_matrices): the rows are the
ablated languages and the two random controls under their one name each, every cell's text is
its change in bits per byte, and the axes are labelled."""

from __future__ import annotations

import math

import pytest
import torch

from mlinguality.ablation.evaluation import LanguageLoss
from mlinguality.ablation.matrix import ACTIVITY_ROW, RANDOM_ROW, AblationMatrix
from mlinguality.ablation.outputs import CONTROL_LABELS, plot_matrices
from tests.selectivity.test_plots import assert_every_y_axis_is_labelled, saved  # noqa: F401

LANGS = ["en", "fr"]


def _loss(lang: str, bits_per_byte: float, n_bytes: int = 1000) -> LanguageLoss:
    """A loss whose bits per byte is ``bits_per_byte`` (one text of ``n_bytes`` bytes)."""
    nll = bits_per_byte * math.log(2) * n_bytes
    return LanguageLoss(
        lang,
        torch.tensor([nll], dtype=torch.float64),
        torch.tensor([100]),
        torch.tensor([n_bytes]),
    )


def _matrix(scale: float) -> AblationMatrix:
    base = {"en": 1.0, "fr": 2.0}
    rises = {"en": {"en": 0.5, "fr": 0.1}, "fr": {"en": 0.05, "fr": 0.3}}
    return AblationMatrix(
        langs=LANGS,
        rows=LANGS,
        mode="zero",
        baseline={lang: _loss(lang, base[lang]) for lang in LANGS},
        ablated={
            row: {lang: _loss(lang, base[lang] + scale * r) for lang, r in cells.items()}
            for row, cells in rises.items()
        },
        random={lang: [_loss(lang, base[lang] + scale * 0.02)] for lang in LANGS},
        n_neurons={"en": 3, "fr": 4},
        random_activity={lang: [_loss(lang, base[lang] - scale * 0.01)] for lang in LANGS},
        positions="skip_first",
    )


def test_heatmap_rows_use_the_control_names(saved, tmp_path):  # noqa: F811
    plot_matrices([_matrix(1.0)], tmp_path / "m.png", ncols=1)
    (fig,) = saved
    ax = fig.axes[0]
    rows = [label.get_text() for label in ax.get_yticklabels()]
    assert rows == ["en (3)", "fr (4)", "count-matched random", "activity-matched random"]
    assert CONTROL_LABELS == {
        RANDOM_ROW: "count-matched random",
        ACTIVITY_ROW: "activity-matched random",
    }
    assert_every_y_axis_is_labelled(fig)  # the heatmap and its colour bar
    assert ax.get_ylabel() == "ablated set (neurons)" and fig.axes[1].get_ylabel() == "Δ bits/byte"


@pytest.mark.parametrize(("scale", "en_on_en"), [(1.0, "+0.50"), (0.01, "+0.0050")])
def test_cell_text_keeps_two_significant_digits_of_the_largest_cell(
    saved,  # noqa: F811
    tmp_path,
    scale,
    en_on_en,
):
    plot_matrices([_matrix(scale)], tmp_path / "m.png", ncols=1)
    (fig,) = saved
    texts = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
        for t in fig.axes[0].texts
    }
    assert texts[(0, 0)] == en_on_en  # row en, column en
    assert texts[(3, 1)].startswith("-0.0")  # the activity-matched control on fr

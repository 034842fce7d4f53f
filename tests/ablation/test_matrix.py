"""Tests for mlinguality/ablation/matrix.py: cells against direct evaluations, the summaries
(delta, dominance, records) against a hand computation, and joined parts against one call."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from mlinguality import TinyModelConfig, load_model
from mlinguality.ablation.evaluation import LanguageLoss, encode_languages, evaluate
from mlinguality.ablation.hooks import ablate, mask_from_pairs, mean_activation
from mlinguality.ablation.matrix import ACTIVITY_ROW, RANDOM_ROW, AblationMatrix, ablation_matrix
from mlinguality.ablation.outputs import comparison_table, plot_matrices, write_csv
from mlinguality.ablation.random_sets import random_matched_mask
from mlinguality.errors import MlingualityError
from tests.utils import assert_close

EVAL = {
    "en": ["In the beginning God created the heaven.", "Jesus wept.", "Blessed are the meek."],
    "fr": ["Au commencement, Dieu créa les cieux.", "Jésus pleura.", "Heureux les débonnaires."],
    "ru": ["В начале сотворил Бог небо.", "Иисус прослезился.", "Блаженны кроткие."],
}


def test_ablation_matrix_cells_equal_direct_evaluation(tiny_model, tmp_path):
    d_mlp = tiny_model.cfg.d_mlp
    sets = {
        "en": mask_from_pairs([(0, n) for n in range(0, 8)], 2, d_mlp),
        "fr": mask_from_pairs([(1, n) for n in range(8, 20)], 2, d_mlp),
        "ru": torch.zeros(2, d_mlp, dtype=torch.bool),  # empty: skipped, NaN row
    }
    encoded = encode_languages(tiny_model.tokenizer, EVAL)
    matrix = ablation_matrix(tiny_model, encoded, sets, "zero", n_seeds=2, meta={"metric": "toy"})
    with ablate(tiny_model, sets["fr"], positions="skip_first"):  # the matrix's default
        direct = evaluate(tiny_model, encoded["ru"]).bits_per_byte
    baseline = evaluate(tiny_model, encoded["ru"]).bits_per_byte
    delta = matrix.delta()
    assert delta.shape == (4, 3)  # en, fr, ru, random x en, fr, ru
    assert math.isclose(float(delta[1, 2]), direct - baseline, rel_tol=1e-9, abs_tol=1e-12)
    assert torch.isnan(delta[2]).all() and "ru" not in matrix.random
    assert len(matrix.random["en"]) == 2
    random_en = matrix.random_deltas("en")
    assert math.isclose(float(delta[3, 0]), sum(random_en) / 2, rel_tol=1e-9)

    dom = matrix.dominance()
    own = [float(delta[0, 0]), float(delta[1, 1])]
    cross = [float(delta[0, 1]), float(delta[0, 2]), float(delta[1, 0]), float(delta[1, 2])]
    assert math.isclose(dom.own_rise, sum(own) / 2, rel_tol=1e-9)
    assert math.isclose(dom.cross_rise, sum(cross) / 4, rel_tol=1e-9)
    assert math.isclose(dom.ratio, dom.own_rise / dom.cross_rise, rel_tol=1e-9)
    assert dom.n_langs == 2
    expected_max = int(delta[0, 0] > delta[1, 0]) + int(delta[1, 1] > delta[0, 1])
    assert dom.n_diagonal_max == expected_max

    path = write_csv([matrix], tmp_path / "m.csv")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 3 + 2 * 3 + 2 * 2  # baseline + 2 rows x 3 langs + 2 random x 2 seeds
    assert {row["metric"] for row in rows} == {"toy"}
    fr_on_ru = next(r for r in rows if r["ablated"] == "fr" and r["lang"] == "ru")
    assert math.isclose(float(fr_on_ru["delta_bits_per_byte"]), direct - baseline, rel_tol=1e-9)
    assert int(fr_on_ru["n_neurons"]) == 12
    assert "| toy | zero | skip_first |" in comparison_table([matrix])
    assert plot_matrices([matrix, matrix], tmp_path / "m.png").stat().st_size > 1000


def test_ablation_matrix_mean_mode_uses_the_mean(tiny_gpt2):
    d_mlp = tiny_gpt2.cfg.d_mlp
    sets = {"en": mask_from_pairs([(0, 3)], 2, d_mlp), "fr": mask_from_pairs([(1, 4)], 2, d_mlp)}
    encoded = encode_languages(tiny_gpt2.tokenizer, {k: EVAL[k] for k in ("en", "fr")})
    mean = torch.randn(2, d_mlp)
    matrix = ablation_matrix(
        tiny_gpt2, encoded, sets, "mean", mean=mean, n_seeds=0, positions="all"
    )
    with ablate(tiny_gpt2, sets["en"], mode="mean", mean=mean):
        direct = evaluate(tiny_gpt2, encoded["fr"]).bits_per_byte
    assert math.isclose(matrix.ablated["en"]["fr"].bits_per_byte, direct, rel_tol=1e-12)
    assert matrix.random == {"en": [], "fr": []}


def test_a_one_language_matrix_on_a_one_layer_model_has_no_cross_language_rise():
    model = load_model(TinyModelConfig(n_layers=1, d_mlp=16))
    sets = {"en": mask_from_pairs([(0, 1)], 1, 16)}
    encoded = encode_languages(model.tokenizer, {"en": EVAL["en"]})
    matrix = ablation_matrix(model, encoded, sets, n_seeds=1)
    delta = matrix.delta()
    assert delta.shape == (2, 1)  # en, random x en
    with ablate(model, sets["en"], positions="skip_first"):
        direct = evaluate(model, encoded["en"]).bits_per_byte
    own = direct - matrix.baseline["en"].bits_per_byte
    assert own != 0.0, "the ablation must matter for the test to mean something"
    dom = matrix.dominance()
    assert math.isclose(dom.own_rise, own, rel_tol=1e-9)
    assert math.isnan(dom.cross_rise) and math.isnan(dom.ratio)  # one language: no cross pairs
    assert (dom.n_langs, dom.n_diagonal_max) == (1, 1)
    assert math.isclose(dom.random_rise, float(delta[1, 0]), rel_tol=1e-9)


def test_compare_selections_one_matrix_per_config_with_selected_sets(tiny_model):
    from mlinguality.ablation.matrix import compare_selections
    from mlinguality.activations.collect import collect
    from mlinguality.selectivity.selection import select_language_neurons

    class Corpus:
        ids = ["1", "2", "3"]

        def texts(self, lang):
            return EVAL[lang]

    stats = collect(tiny_model, Corpus(), ["en", "fr"], progress=False)
    encoded = encode_languages(tiny_model.tokenizer, {k: EVAL[k] for k in ("en", "fr")})
    matrices = compare_selections(
        tiny_model, encoded, stats, ["cohens_d"], [0.02, 0.05], ["zero", "mean"], n_seeds=1
    )
    assert [(m.meta["rate"], m.mode) for m in matrices] == [
        (0.02, "zero"),
        (0.02, "mean"),
        (0.05, "zero"),
        (0.05, "mean"),
    ]
    expected = select_language_neurons(stats, metric="cohens_d", top_rate=0.05)
    assert matrices[2].n_neurons == {lang: int(mask.sum()) for lang, mask in expected.items()}
    assert matrices[0].baseline["fr"] is matrices[3].baseline["fr"]  # one shared baseline
    mean = mean_activation(stats)
    with ablate(tiny_model, expected["en"], mode="mean", mean=mean, positions="skip_first"):
        direct = evaluate(tiny_model, encoded["fr"]).bits_per_byte
    assert math.isclose(matrices[3].ablated["en"]["fr"].bits_per_byte, direct, rel_tol=1e-12)
    assert all(m.random_activity for m in matrices), "the activity-matched control by default"


def test_ablation_matrix_activity_control_row_equals_direct_evaluation(tiny_model):
    from mlinguality.ablation.matrix import _seed_for

    d_mlp = tiny_model.cfg.d_mlp
    activity = torch.rand(2, d_mlp, generator=torch.Generator().manual_seed(4))
    sets = {
        "en": mask_from_pairs([(0, n) for n in range(8)], 2, d_mlp),
        "fr": mask_from_pairs([(1, n) for n in range(5)], 2, d_mlp),
    }
    encoded = encode_languages(tiny_model.tokenizer, {k: EVAL[k] for k in ("en", "fr")})
    matrix = ablation_matrix(
        tiny_model, encoded, sets, n_seeds=2, seed=3, activity=activity, positions="all"
    )
    assert matrix.row_labels == ["en", "fr", "random", ACTIVITY_ROW]
    base = matrix.baseline["fr"].bits_per_byte
    direct = []
    for index in range(2):
        generator = torch.Generator().manual_seed(_seed_for(3, "fr", index))
        drawn = random_matched_mask(sets["fr"], generator, activity=activity)
        with ablate(tiny_model, drawn):
            direct.append(evaluate(tiny_model, encoded["fr"]).bits_per_byte - base)
    assert matrix.random_deltas("fr", ACTIVITY_ROW) == pytest.approx(direct, rel=1e-12)
    delta = matrix.delta()
    assert delta.shape == (4, 2)
    assert math.isclose(float(delta[3, 1]), sum(direct) / 2, rel_tol=1e-9)
    dom = matrix.dominance()
    expected = (sum(direct) / 2 + sum(matrix.random_deltas("en", ACTIVITY_ROW)) / 2) / 2
    assert math.isclose(dom.random_activity_rise, expected, rel_tol=1e-9)
    assert math.isclose(dom.own_minus_random_activity, dom.own_rise - expected, rel_tol=1e-9)
    rows = [r for r in matrix.records() if r["ablated"] == ACTIVITY_ROW]
    assert len(rows) == 4 and {r["positions"] for r in rows} == {"all"}


def test_a_matrix_joined_from_single_cells_equals_one_call(tiny_model):
    """What torchrun ranks do (run/distributed.py): every (row, language) cell on its own, the
    parts joined in any order, give the one-call matrix: same cells, controls, CSV rows."""
    import random

    from mlinguality.ablation.matrix import join_matrices

    d_mlp = tiny_model.cfg.d_mlp
    sets = {
        "en": mask_from_pairs([(0, n) for n in range(8)], 2, d_mlp),
        "fr": mask_from_pairs([(1, n) for n in range(5)], 2, d_mlp),
        "ru": torch.zeros(2, d_mlp, dtype=torch.bool),  # empty: no row
    }
    activity = torch.rand(2, d_mlp, generator=torch.Generator().manual_seed(4))
    encoded = encode_languages(tiny_model.tokenizer, EVAL)
    options = {"n_seeds": 2, "seed": 3, "activity": activity, "meta": {"metric": "toy"}}
    whole = ablation_matrix(tiny_model, encoded, sets, **options)
    cells = [(row, lang) for row in sets for lang in EVAL]
    random.Random(0).shuffle(cells)
    parts = [
        ablation_matrix(
            tiny_model,
            {lang: encoded[lang]},
            {row: sets[row]},
            baseline={lang: whole.baseline[lang]},
            **options,
        )
        for row, lang in cells
    ]
    joined = join_matrices(parts, list(sets), whole.baseline)
    assert joined.records() == whole.records()
    assert joined.row_labels == whole.row_labels == ["en", "fr", "ru", "random", "random_activity"]
    assert joined.n_neurons == whole.n_neurons == {"en": 8, "fr": 5, "ru": 0}
    assert joined.dominance().to_dict() == pytest.approx(whole.dominance().to_dict(), nan_ok=True)
    with pytest.raises(MlingualityError, match="no parts"):
        join_matrices([], ["en"], whole.baseline)


# --- the summaries, by hand ----------------------------------------------------------------


def _loss(lang: str, bits_per_byte: float) -> LanguageLoss:
    """A loss of ``bits_per_byte`` on 100 bytes (20 predicted tokens)."""
    nll = torch.tensor([bits_per_byte * math.log(2) * 100], dtype=torch.float64)
    return LanguageLoss(lang, nll, torch.tensor([20]), torch.tensor([100]))


def test_delta_and_dominance_equal_a_hand_computation():
    """Bits per byte chosen so every summary has a round value to check by hand; ru's set is
    empty (no row, no control), and for en the fr set is more harmful than en's own."""
    base = {"en": 1.0, "fr": 2.0, "ru": 3.0}
    cells = {"en": {"en": 1.5, "fr": 2.1, "ru": 3.0}, "fr": {"en": 1.6, "fr": 2.8, "ru": 3.3}}
    matrix = AblationMatrix(
        langs=["en", "fr", "ru"],
        rows=["en", "fr", "ru"],
        mode="zero",
        baseline={lang: _loss(lang, value) for lang, value in base.items()},
        ablated={
            row: {lang: _loss(lang, value) for lang, value in row_cells.items()}
            for row, row_cells in cells.items()
        },
        random={"en": [_loss("en", 1.1), _loss("en", 1.3)], "fr": [_loss("fr", 2.5)]},
        n_neurons={"en": 4, "fr": 6, "ru": 0},
        random_activity={"en": [_loss("en", 1.05)], "fr": [_loss("fr", 2.15), _loss("fr", 2.25)]},
    )
    nan = math.nan
    expected = torch.tensor(
        [
            [0.5, 0.1, 0.0],  # en's set
            [0.6, 0.8, 0.3],  # fr's set
            [nan, nan, nan],  # ru: empty set, not run
            [0.2, 0.5, nan],  # random: mean over seeds of (0.1, 0.3) and (0.5); none for ru
            [0.05, 0.2, nan],  # random_activity: (0.05) and (0.15, 0.25)
        ],
        dtype=torch.float64,
    )
    delta = matrix.delta()
    assert matrix.row_labels == ["en", "fr", "ru", RANDOM_ROW, ACTIVITY_ROW]
    assert torch.equal(delta.isnan(), expected.isnan())
    assert_close(delta.nan_to_num(), expected.nan_to_num(), "exact")

    dom = matrix.dominance()
    by_hand = {
        "own_rise": (0.5 + 0.8) / 2,  # 0.65
        "cross_rise": (0.1 + 0.0 + 0.6 + 0.3) / 4,  # 0.25
        "ratio": 0.65 / 0.25,
        "random_rise": (0.1 + 0.3 + 0.5) / 3,  # pooled over seeds, not a mean of language means
        "own_over_random": 0.65 / 0.3,
        "random_activity_rise": (0.05 + 0.15 + 0.25) / 3,  # 0.15
        "own_minus_random": 0.65 - 0.3,
        "own_minus_random_activity": 0.65 - 0.15,
        "n_diagonal_max": 1,  # fr's column peaks at fr's set; en's column at fr's set (0.6 > 0.5)
        "n_langs": 2,  # ru has no ablated row
    }
    assert dom.to_dict() == pytest.approx(by_hand, rel=1e-9)
    per_lang = {
        "en": {"own": 0.5, "cross": 0.05, "random": 0.2, "random_activity": 0.05},
        "fr": {"own": 0.8, "cross": 0.45, "random": 0.5, "random_activity": 0.2},
    }
    assert list(dom.per_lang) == list(per_lang)
    for lang, values in per_lang.items():
        assert dom.per_lang[lang] == pytest.approx(values, rel=1e-9)

    records = matrix.records()
    assert len(records) == 3 + 2 * 3 + 3 + 3  # baseline, 2 rows x 3 langs, 3 + 3 control seeds
    fr_on_ru = next(r for r in records if r["ablated"] == "fr" and r["lang"] == "ru")
    assert fr_on_ru["delta_bits_per_byte"] == pytest.approx(0.3, rel=1e-9)
    assert fr_on_ru["n_neurons"] == 6
    control = [r for r in records if r["ablated"] == ACTIVITY_ROW and r["lang"] == "fr"]
    assert [r["seed"] for r in control] == [0, 1]
    assert [r["n_neurons"] for r in control] == [6, 6]  # a control is matched to its column's set
    assert [r["delta_bits_per_byte"] for r in control] == pytest.approx([0.15, 0.25], rel=1e-9)

"""``mlinguality model check`` prints a folder's family facts; a model too shallow for the score
stage is refused before any work."""

from __future__ import annotations

import pytest

from mlinguality.errors import MlingualityError
from tests.families.builders import FAMILIES, save_family
from tests.families.conftest import run_config

_BY_NAME = {family.name: family for family in FAMILIES}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "xglm-8x",
            [
                "architecture: XGLMForCausalLM, 4 layers, d_mlp=256 (hook width; checkpoint "
                "config 256)",
                "MLP: plain, act(W_in x); a neuron fires when hook_post > 0",
                "in front of every text: </s> (the tokenizer's own setting); excluded with "
                "include_bos: false",
                "needed: d_mlp=256 from the hook (TransformerBridge's config said 128)",
            ],
        ),
        (
            "gpt2",
            [
                "in front of every text: <|endoftext|> (added: the tokenizer's BOS, which it "
                "does not add itself, as TransformerLens does); excluded with include_bos: false",
                "needed: BOS <|endoftext|> added in front of every text",
            ],
        ),
        (
            "qwen2",
            [
                "MLP: gated, act(gate) * up; a neuron fires when gate > 0 (hook_pre)",
                "hooks: blocks.L.mlp.hook_post (= blocks.L.mlp.out.hook_in), "
                "blocks.L.mlp.hook_pre (gate), blocks.L.mlp.hook_pre_linear (up)",
                "in front of every text: nothing (the tokenizer has no BOS: the first token is "
                "text); nothing to exclude",
            ],
        ),
    ],
)
def test_model_check_prints_the_family_facts(name, expected, tmp_path, capsys):
    from mlinguality.cli.main import main

    folder = save_family(_BY_NAME[name], tmp_path / name)
    with pytest.raises(SystemExit) as exit_code:
        main(["model", "check", str(folder)])
    assert exit_code.value.code in (0, None)
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert "W_out reads hook_post: yes" in lines
    for line in expected:
        assert line in lines


def _two_layers(config: dict) -> dict:
    config = {k: v for k, v in config.items() if k not in ("layer_types", "max_window_layers")}
    return {**config, "num_hidden_layers": 2}


def test_a_two_layer_model_is_refused_before_any_work(tmp_path):
    from transformers import Qwen2Config

    from mlinguality.run.runner import run_experiment
    from tests.families.builders import Family

    family = _BY_NAME["qwen2"]
    shallow = Family(
        "shallow", family.architecture, family.d_mlp, True, None, "none", family.tokenizer,
        lambda tok: Qwen2Config(**_two_layers(family.config(tok).to_dict())),
    )  # fmt: skip
    folder = save_family(shallow, tmp_path / "shallow")
    (tmp_path / "corpus.jsonl").write_text('{"id": "v0", "en": "a", "fr": "b", "ru": "c"}\n')
    config = run_config(tmp_path, str(folder), "shallow")
    with pytest.raises(MlingualityError, match="2 layer.*U-shape statistic.*at least 3"):
        run_experiment(config)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())

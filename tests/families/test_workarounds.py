"""The TransformerBridge workarounds of mlinguality/families.py: each works, and each has a canary
that fails once TransformerLens no longer behaves so (then remove the workaround)."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from mlinguality.families import bridge_keeps_tokenizer, checkpoint_d_mlp
from mlinguality.model import load_model
from tests.families.builders import FAMILIES, save_family

_BY_NAME = {family.name: family for family in FAMILIES}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("workarounds")
    return {name: save_family(_BY_NAME[name], root / name) for name in ("xglm-8x", "smollm2")}


@pytest.mark.parametrize("name", ["xglm-8x", "opt", "falcon"])
def test_canary_the_bridge_still_misreads_the_mlp_width(name, tmp_path):
    """TransformerBridge's own config (no workaround) says 4 x d_model for XGLM's and OPT's
    ``ffn_dim`` and Falcon's ``ffn_hidden_size``. When this fails, TransformerLens reads them:
    remove ``families.correct_d_mlp``."""
    from transformer_lens.model_bridge import TransformerBridge

    folder = save_family(_BY_NAME[name], tmp_path / name)
    hf_model = AutoModelForCausalLM.from_pretrained(folder).eval()
    width = checkpoint_d_mlp(hf_model.config)
    assert width == _BY_NAME[name].d_mlp != 4 * hf_model.config.hidden_size
    bridge = TransformerBridge.boot_transformers(
        str(folder), hf_model=hf_model, tokenizer=AutoTokenizer.from_pretrained(folder)
    )
    assert bridge.cfg.d_mlp == 4 * hf_model.config.hidden_size != width, (
        "TransformerBridge now reads the MLP width itself: families.correct_d_mlp can go"
    )


def test_xglm_8x_loads_with_the_hooks_width_and_says_so(folders, caplog):
    model = load_model(folders["xglm-8x"])
    assert model.cfg.d_mlp == 8 * model.cfg.d_model == 256
    assert any("TransformerBridge's config said 128" in note for note in model.mlinguality_notes)


def test_canary_the_bridge_still_forces_a_chat_token_bos(folders):
    """TransformerLens's ``get_tokenizer_with_bos`` reloads SmolLM2's tokenizer (BOS
    ``<|im_start|>``, not added) with ``add_bos_token=True``, so the chat token would lead every
    text. When this fails, it no longer does: remove ``families.bridge_keeps_tokenizer``."""
    from transformer_lens.utilities import get_tokenizer_with_bos

    tokenizer = AutoTokenizer.from_pretrained(folders["smollm2"])
    assert tokenizer("hello")["input_ids"][0] != tokenizer.bos_token_id
    reloaded = get_tokenizer_with_bos(tokenizer)
    assert reloaded("hello")["input_ids"][0] == tokenizer.bos_token_id, (
        "TransformerLens no longer forces the tokenizer's BOS: families.bridge_keeps_tokenizer "
        "can go"
    )


def test_the_bridge_keeps_the_tokenizer_the_toolkit_chose(folders):
    model = load_model(folders["smollm2"])
    ids = model.tokenizer("hello")["input_ids"]
    assert ids == model.tokenizer("hello", add_special_tokens=False)["input_ids"]
    assert model.to_tokens("hello")[0].tolist() == ids  # TransformerLens's own tokenization too
    assert (
        "add_bos_token" not in model.tokenizer.init_kwargs
        or not (model.tokenizer.init_kwargs["add_bos_token"])
    )  # the flag was only hidden while the bridge booted


def test_bridge_keeps_tokenizer_restores_the_flag():
    class Fake:
        init_kwargs = {"name_or_path": "x"}

    fake = Fake()
    with bridge_keeps_tokenizer(fake):
        assert fake.init_kwargs["add_bos_token"] is True
    assert fake.init_kwargs == {"name_or_path": "x"}

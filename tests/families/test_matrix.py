"""The family matrix: every family's tiny random model through the whole pipeline, with what the
toolkit relies on checked against plain ``transformers`` (docs/models.md lists the rows).

Per family: the hook width is the checkpoint's MLP width; ``hook_post`` is what ``W_out`` reads
(zeroing a neuron at the hook equals zeroing its ``W_out`` row); the firing counts are the gate's
on gated MLPs and ``hook_post > 0`` on plain ones, and the counted positions are exactly the
text's own tokens (by the tokenizer's offsets); the run writes every stage's files.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mlinguality.activations.batching import tokenize_texts
from mlinguality.activations.stats import load_stats
from mlinguality.families import checkpoint_d_mlp, describe
from mlinguality.types import hook_post_name
from tests.families.conftest import LANGS

# Where each architecture's MLP activation enters W_out in plain transformers (the oracle), and
# the module whose output is the gate pre-activation on gated MLPs (Phi-3: the first half of the
# fused gate_up_proj).
_DOWN = {
    "GPT2LMHeadModel": "transformer.h.{L}.mlp.c_proj",
    "BloomForCausalLM": "transformer.h.{L}.mlp.dense_4h_to_h",
    "XGLMForCausalLM": "model.layers.{L}.fc2",
    "OPTForCausalLM": "model.decoder.layers.{L}.fc2",
    "PhiForCausalLM": "model.layers.{L}.mlp.fc2",
    "FalconForCausalLM": "transformer.h.{L}.mlp.dense_4h_to_h",
}
_GATE_UP = {"Phi3ForCausalLM": "model.layers.{L}.mlp.gate_up_proj"}
_LAYER = 1


def _texts(run_dir, lang: str) -> list[str]:
    """The selection split's texts of ``lang``, by the ids the run's stats record."""
    corpus = {}
    for line in (run_dir.parents[1] / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        corpus[record["id"]] = record[lang]
    stats = load_stats(run_dir / "stats", [lang])[lang]
    return [corpus[example_id] for example_id in stats.example_ids]


def _oracle_counts(folder, family, texts: list[str]):
    """Text tokens (by offsets) and firing counts per layer and neuron, from a fresh plain
    ``transformers`` model run one text at a time, with torch hooks."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    n_layers = model.config.num_hidden_layers
    captured: dict[int, torch.Tensor] = {}
    handles = []
    for layer in range(n_layers):
        if family.gated and family.architecture in _GATE_UP:
            module = model.get_submodule(_GATE_UP[family.architecture].format(L=layer))

            def keep(_m, _args, out, layer=layer):
                captured[layer] = out[..., : out.shape[-1] // 2]

            handles.append(module.register_forward_hook(keep))
        elif family.gated:
            module = model.get_submodule(f"model.layers.{layer}.mlp.gate_proj")
            handles.append(
                module.register_forward_hook(
                    lambda _m, _a, out, layer=layer: captured.__setitem__(layer, out)
                )
            )
        else:
            module = model.get_submodule(_DOWN[family.architecture].format(L=layer))
            handles.append(
                module.register_forward_pre_hook(
                    lambda _m, args, layer=layer: captured.__setitem__(layer, args[0])
                )
            )
    n_tokens, firing = 0, torch.zeros(n_layers, family.d_mlp, dtype=torch.int64)
    lead = [tokenizer.convert_tokens_to_ids(family.leading)] if family.leading else []
    for text in texts:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        own = [end > start for start, end in encoded["offset_mapping"]]
        assert all(own), f"{family.name}: a text token without characters: {encoded}"
        ids = torch.tensor([lead + list(encoded["input_ids"])])
        with torch.no_grad():
            model(ids)
        text_positions = slice(len(lead), None)
        n_tokens += len(encoded["input_ids"])
        for layer in range(n_layers):
            values = captured[layer].reshape(ids.shape[1], -1)[text_positions]
            firing[layer] += (values > 0).sum(0)
    for handle in handles:
        handle.remove()
    return n_tokens, firing


def test_the_hook_is_as_wide_as_the_checkpoints_mlp(family_run):
    family, model, _ = family_run
    facts = describe(model)
    assert facts.d_mlp == family.d_mlp == checkpoint_d_mlp(model.original_model.config)
    assert model.cfg.n_layers >= 4 and facts.gated == family.gated
    assert facts.w_out_reads_post


def test_zeroing_at_hook_post_equals_zeroing_the_w_out_row(family_run):
    family, model, _ = family_run
    ids = torch.tensor([tokenize_texts(model.tokenizer, ["Heureux ceux qui"])[0].ids])
    neuron = family.d_mlp - 3

    def zero(act, hook):
        act = act.clone()
        act[..., neuron] = 0.0
        return act

    with torch.no_grad():
        plain = model(ids)
        hooked = model.run_with_hooks(ids, fwd_hooks=[(hook_post_name(_LAYER), zero)])
        out = model.blocks[_LAYER].mlp.out
        weight = getattr(out, "original_component", out).weight
        saved = weight.detach().clone()
        if weight.shape[-1] == family.d_mlp:  # nn.Linear: [d_model, d_mlp]
            weight[:, neuron] = 0.0
        else:  # GPT-2's Conv1D: [d_mlp, d_model]
            weight[neuron, :] = 0.0
        try:
            edited = model(ids)
        finally:
            weight.copy_(saved)
    assert float((hooked - plain).abs().max()) > 1e-6  # the neuron matters
    torch.testing.assert_close(hooked, edited, rtol=1e-5, atol=1e-6)


def test_leading_tokens_are_the_familys_and_never_a_real_token(family_run):
    family, model, _ = family_run
    facts = describe(model)
    assert facts.leading.source == family.leading_source
    assert facts.leading_tokens == ([family.leading] if family.leading else [])
    text = "Heureux ceux qui procurent la paix"
    (tokenized,) = tokenize_texts(model.tokenizer, [text])
    plain = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenized.ids[tokenized.n_prefix :] == plain  # everything after the front is text
    assert model.to_tokens(text)[0].tolist() == tokenized.ids  # TransformerLens agrees


@pytest.mark.parametrize("lang", LANGS)
def test_counted_positions_and_firing_match_plain_transformers(family_run, lang):
    """Collection's token count is the texts' own tokens (by offsets) and its firing counts are
    the gate's (gated) or hook_post's (plain), from an independent forward pass."""
    family, _, run_dir = family_run
    texts = _texts(run_dir, lang)
    n_tokens, firing = _oracle_counts(run_dir.parents[1] / family.name, family, texts)
    stats = load_stats(run_dir / "stats", [lang])[lang]
    assert stats.n_tokens == n_tokens
    counts = stats.n_gate_positive if family.gated else stats.n_positive
    assert (stats.n_gate_positive is not None) == family.gated
    # batched (padded) and one-at-a-time passes may round a value within 1e-7 of 0 apart
    mismatch = int((counts - firing).abs().sum())
    assert mismatch <= max(2, int(1e-3 * firing.numel())), f"{mismatch} counts differ"


def test_a_run_writes_every_stage(family_run):
    family, _, run_dir = family_run
    stages = json.loads((run_dir / "stages.json").read_text())
    assert {name: entry["origin"] for name, entry in stages.items()} == {
        name: "computed" for name in ("collect", "score", "select", "lenses", "ablate", "steer")
    }
    for name in (
        "layer_profile.csv",
        "u_shape.csv",
        "selected_neurons.csv",
        "ablation.csv",
        "steering/steering.csv",
    ):
        assert (run_dir / name).stat().st_size > 0, f"{family.name}: {name}"
    record = json.loads((run_dir / "ablation.json").read_text())
    assert record["rows"][: len(LANGS)] == LANGS

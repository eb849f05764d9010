"""rel-att and grad-att equal their formulas written out on the model's own eager attention (transformers, not the
harness), on a random tiny LLaVA and on the shipped Qwen2-VL (M-RoPE positions, a non-square grid)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from fastrm_bench.builders import create_method
from fastrm_bench.explainers.mllms_know import GENERIC_QUESTION, default_layer
from fastrm_bench.models.zoo import CHECKPOINTS, load_model

TOKENS = 3


@pytest.fixture(scope="module", params=["tiny-random-llava", "tiny-qwen-shapes"])
def case(request, tiny_adapter, tiny_llava_dir):
    """(harness adapter answering with SDPA, inputs, a 3-token answer, the same weights as transformers' eager model)."""
    if request.param == "tiny-qwen-shapes":
        adapter, folder = load_model("tiny-qwen-shapes", device="cpu"), CHECKPOINTS / "tiny-qwen-shapes"
    else:
        adapter, folder = tiny_adapter, tiny_llava_dir
    image = Image.new("RGB", (64, 48), "yellow")
    image.paste((200, 30, 30), (4, 4, 20, 20))
    inputs = replace(adapter.build_inputs([image], ["Where is the red square?"]), sample_id="s")
    generation = adapter.generate(inputs, max_new_tokens=TOKENS, min_new_tokens=TOKENS)[0]
    assert generation.num_generated == TOKENS
    eager = AutoModelForImageTextToText.from_pretrained(folder, attn_implementation="eager").eval()
    return adapter, inputs, generation, eager


def _eager_forward(eager, inputs, answer: torch.Tensor):
    """transformers' own forward over prompt + ``answer``: per-token inputs (mask, Qwen's mm_token_type_ids) extended
    over the answer as text tokens."""
    ids = torch.cat([inputs.input_ids, answer[None]], dim=1)
    extra = {}
    for key, value in inputs.tensors.items():
        if key == "input_ids":
            continue
        if value.shape[:2] == inputs.input_ids.shape:
            fill = 1 if key == "attention_mask" else 0
            value = torch.cat([value, value.new_full((1, len(answer)), fill)], dim=1)
        extra[key] = value
    return eager(input_ids=ids, output_attentions=True, **extra)


def test_the_default_layer_is_the_authors_at_the_same_depth():
    # LLaVA-1.5-7B: 14 of 32 (llava_methods.py); Qwen2.5-VL-3B: 22 of 36 (qwen2_5_methods.py)
    assert default_layer(32) == 14 and default_layer(4) == 2 and default_layer(2) == 1 and default_layer(1) == 0
    assert default_layer(36, "qwen2_5_vl") == 22 and default_layer(28, "qwen2_5_vl") == 17
    assert default_layer(36, "qwen2_vl") == 16  # a family the authors did not tune: LLaVA's fraction


def test_rel_att_is_the_questions_attention_over_the_generic_questions(case):
    adapter, inputs, generation, eager = case
    layer = default_layer(adapter.num_layers, adapter.family)
    with torch.no_grad():
        asked = _eager_forward(eager, inputs, generation.generated_ids[:-1]).attentions[layer][0]
        generic = adapter.build_inputs(list(inputs.images), [GENERIC_QUESTION])
        base = _eager_forward(eager, generic, generation.generated_ids[:0]).attentions[layer][0]
    rows = inputs.prompt_length - 1 + torch.arange(TOKENS)
    expected = asked[:, rows][:, :, inputs.layout.positions].mean(0) / base[:, -1, generic.layout.positions].mean(0)
    maps = create_method("rel-att")[0].explain(adapter, inputs, generation).maps
    assert maps.shape == (TOKENS, inputs.layout.num_tokens)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(maps[0], maps[0].mean().expand_as(maps[0]))  # a map, not a constant


@pytest.mark.parametrize("layer", [1, None])
def test_grad_att_is_attention_times_its_positive_gradient(case, layer):
    adapter, inputs, generation, eager = case
    index = default_layer(adapter.num_layers, adapter.family) if layer is None else layer
    out = _eager_forward(eager, inputs, generation.generated_ids[:-1])
    attention = out.attentions[index]
    rows = inputs.prompt_length - 1 + torch.arange(TOKENS)
    expected = []
    for t in range(TOKENS):  # the authors' loss: -CE(logits, argmax) = log p(greedy token)
        logp = torch.log_softmax(out.logits[0, rows[t]].float(), dim=-1)[generation.generated_ids[t]]
        (grad,) = torch.autograd.grad(logp, attention, retain_graph=True)
        expected.append((attention * grad.clamp_min(0))[0, :, rows[t], inputs.layout.positions].mean(0))
    spec = {} if layer is None else {"layer": layer}
    maps = create_method("grad-att", **spec)[0].explain(adapter, inputs, generation).maps
    torch.testing.assert_close(maps, torch.stack(expected).detach(), rtol=1e-3, atol=1e-7)
    assert maps.abs().sum() > 0


def test_a_layer_outside_the_model_is_refused(case):
    adapter, inputs, generation, _ = case
    with pytest.raises(ValueError, match="outside"):
        create_method("grad-att", layer=99)[0].explain(adapter, inputs, generation)

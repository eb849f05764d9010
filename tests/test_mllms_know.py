"""rel-att and grad-att equal their formulas written out on the model's own eager attention (transformers, not the harness)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from PIL import Image
from transformers import LlavaForConditionalGeneration

from fastrm_bench.builders import create_method
from fastrm_bench.explainers.mllms_know import GENERIC_QUESTION, default_layer


@pytest.fixture(scope="module")
def case(tiny_adapter, tiny_llava_dir):
    image = Image.new("RGB", (48, 48), "yellow")
    image.paste((200, 30, 30), (4, 4, 20, 20))
    inputs = replace(tiny_adapter.build_inputs([image], ["Where is the red square?"]), sample_id="s")
    generation = tiny_adapter.generate(inputs, max_new_tokens=3, min_new_tokens=3)[0]
    eager = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir, attn_implementation="eager").eval()
    return inputs, generation, eager


def _eager_forward(eager, inputs, answer: torch.Tensor):
    ids = torch.cat([inputs.input_ids, answer[None]], dim=1)
    return eager(input_ids=ids, pixel_values=inputs.tensors["pixel_values"], attention_mask=torch.ones_like(ids),
                 output_attentions=True)


def test_the_default_layer_is_the_authors_at_the_same_depth():
    assert default_layer(32) == 14 and default_layer(4) == 2 and default_layer(1) == 0


def test_rel_att_is_the_questions_attention_over_the_generic_questions(tiny_adapter, case):
    inputs, generation, eager = case
    layer = default_layer(tiny_adapter.num_layers)
    image = inputs.layout.positions
    with torch.no_grad():
        asked = _eager_forward(eager, inputs, generation.generated_ids[:-1]).attentions[layer][0]
        generic = tiny_adapter.build_inputs(list(inputs.images), [GENERIC_QUESTION])
        base = _eager_forward(eager, generic, generation.generated_ids[:0]).attentions[layer][0]
    rows = inputs.prompt_length - 1 + torch.arange(3)
    expected = asked[:, rows][:, :, image].mean(0) / base[:, -1, generic.layout.positions].mean(0)
    maps = create_method("rel-att")[0].explain(tiny_adapter, inputs, generation).maps
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)


def test_grad_att_is_attention_times_its_positive_gradient(tiny_adapter, case):
    inputs, generation, eager = case
    layer = 1
    image = inputs.layout.positions
    out = _eager_forward(eager, inputs, generation.generated_ids[:-1])
    attention = out.attentions[layer]
    rows = inputs.prompt_length - 1 + torch.arange(3)
    expected = []
    for t in range(3):
        logp = torch.log_softmax(out.logits[0, rows[t]].float(), dim=-1)[generation.generated_ids[t]]
        (grad,) = torch.autograd.grad(logp, attention, retain_graph=True)
        expected.append((attention * grad.clamp_min(0))[0, :, rows[t], image].mean(0))
    maps = create_method("grad-att", layer=layer)[0].explain(tiny_adapter, inputs, generation).maps
    torch.testing.assert_close(maps, torch.stack(expected).detach(), rtol=1e-3, atol=1e-7)
    assert maps.abs().sum() > 0


def test_a_layer_outside_the_model_is_refused(tiny_adapter, case):
    inputs, generation, _ = case
    with pytest.raises(ValueError, match="outside"):
        create_method("grad-att", layer=99)[0].explain(tiny_adapter, inputs, generation)

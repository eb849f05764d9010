"""Every registered method (timm-style, parametrised over the registry) on a tiny LLaVA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastrm_bench.builders import create_method
from fastrm_bench.fastrm.model import FastRM
from fastrm_bench.interfaces import Sample
from fastrm_bench.registry import METHODS


@pytest.fixture(scope="module")
def generation_case(tiny_adapter):
    image = Image.new("RGB", (48, 48), "yellow")
    inputs = tiny_adapter.build_inputs([image], ["Where is the yellow square?"])
    mask = np.zeros((48, 48), dtype=bool)
    mask[8:20, 30:44] = True
    sample = Sample("q1", image, "Where is the yellow square?", ["top right"], mask=mask)  # for `oracle`
    return inputs, tiny_adapter.generate(inputs, max_new_tokens=5, min_new_tokens=5, return_hidden=True)[0], sample


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name, tiny_adapter, generation_case, tmp_path):
    inputs, generation, sample = generation_case
    model = tiny_adapter.model
    overrides = {}
    if name == "fastrm":  # no proxy ships for the random test model: an untrained one of its hidden size
        overrides["checkpoint"] = str(FastRM(tiny_adapter.hidden_size).save_pretrained(tmp_path / "proxy"))
    method, _ = create_method(name, **overrides)
    explanation = method.explain_sample(tiny_adapter, inputs, generation, sample)
    assert explanation.maps.shape == (5, inputs.layout.num_tokens)
    assert torch.isfinite(explanation.maps).all() and explanation.seconds >= 0
    assert not model.training and model.config._attn_implementation == "sdpa"
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())


def test_gradcam_matches_a_hand_written_single_token_gradcam(tiny_adapter, generation_case):
    inputs, generation, sample = generation_case
    maps = create_method("gradcam")[0].explain(tiny_adapter, inputs, generation).maps
    model = tiny_adapter.model
    hidden = model.model.vision_tower(inputs.tensors["pixel_values"], output_hidden_states=True).hidden_states
    acts = hidden[model.config.vision_feature_layer].detach().requires_grad_(True)
    features = model.model.multi_modal_projector(acts[:, 1:])
    embeds = model.get_input_embeddings()(inputs.input_ids)
    slots = (inputs.input_ids == tiny_adapter.image_token_id).unsqueeze(-1).expand_as(embeds)
    prompt = embeds.masked_scatter(slots, features)
    answer = model.get_input_embeddings()(generation.generated_ids[:1]).unsqueeze(0)
    logits = model(inputs_embeds=torch.cat([prompt, answer], dim=1)).logits[0]
    t = 1  # the second generated token, predicted at p_1 = L0
    (grad,) = torch.autograd.grad(logits[inputs.prompt_length - 1 + t, generation.generated_ids[t]], acts)
    weights = grad[0, 1:].mean(0)
    expected = (acts[0, 1:].detach() @ weights).clamp_min(0)
    torch.testing.assert_close(maps[t], expected, rtol=1e-4, atol=1e-6)


def test_rollout_rows_are_distributions_over_earlier_tokens(tiny_adapter, generation_case):
    inputs, generation, sample = generation_case
    maps = create_method("rollout")[0].explain(tiny_adapter, inputs, generation).maps
    assert (maps >= 0).all() and (maps.flatten(1).sum(1) < 1 + 1e-5).all()

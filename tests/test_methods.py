"""Every registered method (timm-style, parametrised over the registry) on a tiny LLaVA."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from fastrm_bench.builders import create_method
from fastrm_bench.fastrm.model import FastRM
from fastrm_bench.interfaces import Explanation, ExplanationMethod, MethodNeeds, Sample, check_maps
from fastrm_bench.registry import METHODS


@pytest.fixture(scope="module")
def generation_case(tiny_adapter):
    image = Image.new("RGB", (48, 48), "yellow")
    inputs = tiny_adapter.build_inputs([image], ["Where is the yellow square?"])
    mask = np.zeros((48, 48), dtype=bool)
    mask[8:20, 30:44] = True
    sample = Sample("q1", image, "Where is the yellow square?", ["top right"], mask=mask)  # for `oracle`
    return inputs, tiny_adapter.generate(inputs, max_new_tokens=5, min_new_tokens=5, return_hidden=True)[0], sample


def _method(name: str, adapter, tmp_path):
    overrides = {}
    if name == "fastrm":  # no proxy ships for the random test model: an untrained one of its hidden size
        overrides["checkpoint"] = str(FastRM(adapter.hidden_size).save_pretrained(tmp_path / "proxy"))
    return create_method(name, **overrides)[0]


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name, tiny_adapter, generation_case, tmp_path):
    inputs, generation, sample = generation_case
    model = tiny_adapter.model
    method = _method(name, tiny_adapter, tmp_path)
    explanation = method.explain_sample(tiny_adapter, inputs, generation, sample)
    assert explanation.maps.shape == (5, inputs.layout.num_tokens)
    assert torch.isfinite(explanation.maps).all() and explanation.seconds >= 0
    assert not model.training and model.config._attn_implementation == "sdpa"
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())


@pytest.fixture(scope="module")
def empty_and_short(tiny_adapter):
    """An empty answer and a 3-token one of the same inputs, the first generation's hidden states kept."""
    image = Image.new("RGB", (48, 48), "yellow")
    inputs = tiny_adapter.build_inputs([image], ["Where is the yellow square?"])
    inputs = replace(inputs, sample_id="q1")
    short = tiny_adapter.generate(inputs, max_new_tokens=3, min_new_tokens=3, return_hidden=True)[0]
    assert short.num_generated == 3
    length = inputs.prompt_length
    empty = replace(short, sequences=short.sequences[:, :length], generated_ids=short.generated_ids[:0], text="",
                    last_hidden=short.last_hidden[: length - 1])
    mask = np.zeros((48, 48), dtype=bool)
    mask[8:20, 30:44] = True
    return inputs, {"empty": empty, "short": short}, Sample("q1", image, "Where is the yellow square?", ["top right"],
                                                            mask=mask)


@pytest.mark.parametrize("answer", ["empty", "short"])
@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_gives_one_map_per_answer_token(name, answer, tiny_adapter, empty_and_short, tmp_path):
    """One shape for every method and answer length: [T, n_image_tokens], [0, n] for an empty answer."""
    inputs, generations, sample = empty_and_short
    generation = generations[answer]
    method = _method(name, tiny_adapter, tmp_path)
    explanation = method.explain_sample(tiny_adapter, inputs, generation, sample)
    assert tuple(explanation.maps.shape) == (generation.num_generated, inputs.layout.num_tokens)
    check_maps(name, explanation, generation, inputs.layout)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_declares_what_it_needs(name, tmp_path):
    """Each built-in method's class declares its own `MethodNeeds`; a method reading the sample says so."""
    cls = METHODS.get(name)
    assert "needs" in vars(cls) and isinstance(cls.needs, MethodNeeds), f"{name} declares no MethodNeeds"
    overrides_sample = cls.compute_sample_maps is not ExplanationMethod.compute_sample_maps
    assert cls.needs.ground_truth == overrides_sample


def test_the_needs_tell_the_kinds_of_method_apart():
    needs = {name: METHODS.get(name).needs for name in METHODS.names()}
    assert {n for n, x in needs.items() if not x.gradients} >= {"fastrm", "tam", "attention", "rollout", "random", "oracle"}
    assert all(needs[n].gradients for n in ("chefer", "chefer-reference", "chefer-stale", "dex-ar", "gradcam"))
    assert {n for n, x in needs.items() if x.hidden_states} == {n for n, x in needs.items() if x.probabilities} == {"fastrm"}
    assert needs["random"].stochastic and not needs["chefer"].stochastic
    assert create_method("chefer", attention="eager")[0].needs.attention == "full"
    with pytest.raises(ValueError, match="attention"):
        MethodNeeds(attention="some")


def test_the_runner_refuses_maps_of_another_shape_naming_the_method(tiny_adapter, empty_and_short):
    inputs, generations, _ = empty_and_short
    wrong = Explanation(maps=torch.zeros(1, inputs.layout.num_tokens))  # a placeholder row for an empty answer
    with pytest.raises(ValueError, match="'my-method'.*shape \\(1, 36\\)"):
        check_maps("my-method", wrong, generations["empty"], inputs.layout)


def test_explain_measures_every_method_the_same_way(tiny_adapter, generation_case):
    """A method implements only its maps; `explain` (the base class) times them and reports the peak memory."""
    inputs, generation, _ = generation_case

    class Slow(ExplanationMethod):
        def compute_maps(self, adapter, inputs, generation):
            time.sleep(0.05)
            return torch.ones(generation.num_generated, inputs.layout.num_tokens)

    explanation = Slow().explain(tiny_adapter, inputs, generation)
    assert explanation.seconds >= 0.05
    assert explanation.maps.shape == (5, inputs.layout.num_tokens)
    assert explanation.peak_memory_bytes is None or explanation.peak_memory_bytes >= 0


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

"""`chefer` (fast, exact) equals `chefer-reference` for every token; a stale-row variant would not."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from PIL import Image

from fastrm_bench.explainers._attention import chefer_abar, explaining, predicting_positions
from fastrm_bench.explainers.chefer import Chefer, CheferReference


@contextmanager
def eager_attention(model):
    """The app runs eager attention (it reads ``output_attentions``); the model's own implementation after."""
    loaded = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(loaded)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per token: max |a - b| relative to the max of the reference map."""
    return (a - b).abs().amax(dim=1) / b.abs().amax(dim=1).clamp_min(1e-12)


def _stale_rows(adapter, inputs, generation) -> torch.Tensor:
    """The known public bug: the gradients of the first token reused for every later token."""
    with explaining(adapter.model):
        image_positions = inputs.layout.positions
        forward = adapter.teacher_forced(inputs, generation, attention="eager")
        positions = predicting_positions(inputs, generation)
        first = forward.logits[positions[0], generation.generated_ids[0]]
        grads = torch.autograd.grad(first, forward.probabilities)
        relevance = torch.eye(forward.logits.shape[0])
        for grad, attention in zip(grads, forward.probabilities):
            relevance = relevance + chefer_abar(grad[0], attention[0].detach()) @ relevance
        return relevance[positions][:, image_positions]


@pytest.fixture(params=["tiny-random", "embedded"])
def case(request, tiny_adapter):
    if request.param == "tiny-random":
        image, question = Image.new("RGB", (48, 48), "red"), "What color is the circle?"
        return tiny_adapter, image, question
    from fastrm_bench.models.zoo import load_model
    from fastrm_bench.world.scenes import generate_scene, jpeg_roundtrip, scene_seed

    adapter = load_model("tiny-llava-shapes", device="cpu")
    scene = generate_scene(scene_seed("test", 3))
    return adapter, jpeg_roundtrip(scene.image), f"Where is the {scene.objects[0].category}?"


def test_fast_equals_reference_for_every_token(case):
    adapter, image, question = case
    inputs = adapter.build_inputs([image], [question])
    generation = adapter.generate(inputs, max_new_tokens=6, min_new_tokens=6)[0]
    assert generation.num_generated == 6
    fast = Chefer(chunk_size=4).explain(adapter, inputs, generation).maps  # chunks of 4 and 2
    reference = CheferReference().explain(adapter, inputs, generation).maps
    assert fast.shape == reference.shape == (6, inputs.layout.num_tokens)
    assert torch.all(_relative_error(fast, reference) < 1e-5)
    assert torch.all(reference.amax(dim=1) > 0)  # the maps are not trivially zero
    stale = _stale_rows(adapter, inputs, generation)
    assert _relative_error(stale[:1], reference[:1]).item() < 1e-5  # the first token is right...
    assert torch.all(_relative_error(stale[1:], reference[1:]) > 1e-3)  # ...the later ones are not


@pytest.mark.parametrize("method", [Chefer(), CheferReference()], ids=["chefer", "chefer-reference"])
def test_model_state_is_restored_and_no_parameter_gets_a_grad(tiny_adapter, method):
    model = tiny_adapter.model
    model.train()
    model.requires_grad_(True)
    inputs = tiny_adapter.build_inputs([Image.new("RGB", (48, 48), "blue")], ["What shape is the blue object?"])
    generation = tiny_adapter.generate(inputs, max_new_tokens=3, min_new_tokens=3)[0]
    method.explain(tiny_adapter, inputs, generation)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert model.config._attn_implementation == "sdpa"  # the model keeps the attention it was loaded with
    model.eval()
    model.requires_grad_(False)


def _app_stale_relevancy(adapter, inputs, generation) -> torch.Tensor:
    """The KV-cache app's relevancy, re-enacted: decode step by step with the cache, one backward per step
    on that step's new attention rows, each layer's stored rows grown by the new one, ``R += cam @ R``."""
    model = adapter.model
    lm = model.model.language_model
    image_positions = inputs.layout.positions
    prompt = adapter.lm_input_embeds(inputs).detach().requires_grad_(True)
    cams: list[torch.Tensor] = []
    maps = []
    with explaining(model), eager_attention(model):
        out = lm(inputs_embeds=prompt, use_cache=True, output_attentions=True)
        for s in range(generation.num_generated):
            if s > 0:
                step = model.get_input_embeddings()(generation.generated_ids[s - 1 : s]).unsqueeze(0)
                out = lm(inputs_embeds=step, past_key_values=out.past_key_values, use_cache=True, output_attentions=True)
            score = model.lm_head(out.last_hidden_state[0, -1])[int(generation.generated_ids[s])]
            grads = torch.autograd.grad(score, out.attentions, retain_graph=True)
            n = inputs.prompt_length + s
            relevance = torch.eye(n)
            for layer, (grad, attention) in enumerate(zip(grads, out.attentions)):
                cam = (grad * attention.detach()).clamp_min(0).mean(dim=1)[0]  # this step's rows [1 or L0, n]
                if s == 0:
                    cams.append(cam)
                else:
                    cams[layer] = torch.cat([torch.cat([cams[layer], torch.zeros(n - 1, 1)], dim=1), cam])
                relevance = relevance + cams[layer] @ relevance
            maps.append(relevance[-1, image_positions])
    return torch.stack(maps)


def test_chefer_stale_is_the_apps_relevancy_exact_at_the_first_token_only(case):
    """`chefer-stale` equals the app's KV-cache relevancy re-enacted step by step, and exact Chefer at t = 0 only."""
    from fastrm_bench.explainers.chefer import CheferStale

    adapter, image, question = case
    inputs = adapter.build_inputs([image], [question])
    generation = adapter.generate(inputs, max_new_tokens=5, min_new_tokens=5)[0]
    stale = CheferStale(chunk_size=2).explain(adapter, inputs, generation).maps  # chunks of 2, 2 and 1
    app = _app_stale_relevancy(adapter, inputs, generation)
    exact = Chefer().explain(adapter, inputs, generation).maps
    assert stale.shape == exact.shape == (5, inputs.layout.num_tokens)
    assert torch.all(_relative_error(stale, app) < 1e-5)
    assert _relative_error(stale[:1], exact[:1]).item() < 1e-5
    assert torch.all(_relative_error(stale[1:], exact[1:]) > 1e-4)


def test_the_gradient_chunk_is_sized_from_the_memory_budget():
    """Forward graph G = 300 bytes, P = 100 bytes per token of a chunk; the reference peaks at G + P = 400."""
    assert Chefer(margin=0.25).chunk_tokens(300, 100) == 2  # 300 + 2 * 100 <= 1.25 * 400 < 300 + 3 * 100
    assert Chefer().chunk_tokens(300, 100) == 1  # the default 10%: 300 + 100 <= 1.1 * 400 < 300 + 2 * 100
    assert Chefer(margin=0.0).chunk_tokens(300, 100) == 1  # no more than the reference
    assert Chefer(max_memory=1000).chunk_tokens(300, 100) == 7  # a budget: (1000 - 300) // 100
    assert Chefer(max_memory=1000).chunk_tokens(300, 100, free_bytes=250) == 2  # never beyond the free memory
    assert Chefer(max_memory=200).chunk_tokens(300, 100) == 1  # never fewer than one token
    assert Chefer(chunk_size=16).chunk_tokens(300, 100) == 16  # a fixed chunk is kept
    with pytest.raises(ValueError, match="max_memory"):
        Chefer(max_memory=0)

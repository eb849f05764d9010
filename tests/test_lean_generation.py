"""FastRM's lean inference path: generation keeps only the final norm's outputs, on every family.

`generate(return_hidden=True)` hooks the family's final norm (prefill + every decoding step) instead of
asking transformers for ``output_hidden_states=True`` (every layer's states, kept to the end). The
hidden states, and so FastRM's maps, must be the same either way.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from fastrm_bench.embedded.tiny_random import FAMILIES, build_tiny_random
from fastrm_bench.explainers.fastrm_method import ExplainedAnswer, FastRMMethod, explain_answer
from fastrm_bench.fastrm.model import FastRM, FastRMConfig
from fastrm_bench.metrics.entropy import map_entropy
from fastrm_bench.models.zoo import load_model

IMAGE = (80, 48)


@pytest.fixture(scope="module", params=FAMILIES)
def family_adapter(request, tmp_path_factory):
    folder = build_tiny_random(request.param, tmp_path_factory.mktemp(f"lean-{request.param}"), seed=0)
    return load_model(str(folder), device="cpu")  # the family's adapter (mllama: cross-attention)


def _proxy(adapter, folder) -> FastRMMethod:
    torch.manual_seed(0)
    FastRM(FastRMConfig(adapter.hidden_size, distilled_from=adapter.name)).save_pretrained(folder)
    return FastRMMethod(checkpoint=str(folder))


def _spy_generate(adapter, seen: list[dict]):
    """Record the keyword arguments of every call of the model's own ``generate``."""
    original = adapter.model.generate

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    adapter.model.generate = spy
    return original


def test_lean_hidden_states_and_maps_equal_output_hidden_states(family_adapter, tmp_path):
    adapter = family_adapter
    inputs = adapter.build_inputs([Image.new("RGB", IMAGE, (200, 30, 30))], ["What color is the circle?"])
    seen: list[dict] = []
    original = _spy_generate(adapter, seen)
    try:
        lean = adapter.generate(inputs, 6, min_new_tokens=6, return_hidden=True)[0]
        full = adapter.generate(inputs, 6, min_new_tokens=6, return_hidden=True, hidden_from="all_layers")[0]
    finally:
        adapter.model.generate = original
    assert [kw["output_hidden_states"] for kw in seen] == [False, True]  # the lean call never asks for every layer
    assert torch.equal(lean.generated_ids, full.generated_ids)
    assert lean.last_hidden.shape == full.last_hidden.shape == (inputs.prompt_length + 5, adapter.hidden_size)
    assert torch.equal(lean.last_hidden, full.last_hidden)
    method = _proxy(adapter, tmp_path / "proxy")
    maps_lean = method.explain(adapter, inputs, lean).maps
    maps_full = method.explain(adapter, inputs, full).maps
    assert maps_lean.shape == (6, inputs.layout.num_tokens)
    assert torch.equal(maps_lean, maps_full)
    assert not adapter.family_spec.final_norm(adapter.model)._forward_hooks  # the hook is gone after generation


def test_lean_hidden_states_of_a_perturbed_batch(family_adapter):
    """K perturbed variants answered as one batch: row b of the hook's outputs belongs to variant b."""
    adapter = family_adapter
    inputs = adapter.build_inputs([Image.new("RGB", IMAGE, (30, 200, 30))], ["What color is the square?"])
    keep = torch.ones(3, inputs.layout.num_tokens)
    keep[1, ::2] = 0
    keep[2, :] = 0
    lean = adapter.generate(inputs, 4, min_new_tokens=4, return_hidden=True, image_keep=keep)
    full = adapter.generate(inputs, 4, min_new_tokens=4, return_hidden=True, image_keep=keep, hidden_from="all_layers")
    assert len(lean) == len(full) == 3
    for a, b in zip(lean, full):
        assert torch.equal(a.last_hidden, b.last_hidden)
    assert not torch.equal(lean[0].last_hidden, lean[2].last_hidden)


def test_hidden_from_is_checked(family_adapter):
    adapter = family_adapter
    if adapter.family != "llava":
        pytest.skip("one family is enough for an argument check")
    inputs = adapter.build_inputs([Image.new("RGB", IMAGE)], ["What color is the circle?"])
    with pytest.raises(ValueError, match="hidden_from"):
        adapter.generate(inputs, 2, return_hidden=True, hidden_from="every_layer")


def test_explain_answer_is_one_call(embedded_scene):
    """The answer, one map per token and the entropy of the answer's map, equal to the method's own maps."""
    image, question = embedded_scene
    result = explain_answer("tiny-llava-shapes", image, question, max_new_tokens=10)
    assert isinstance(result, ExplainedAnswer)
    assert result.text and len(result.tokens) == result.maps.shape[0] == result.generation.num_generated
    from fastrm_bench.models.zoo import load_model

    adapter = load_model("tiny-llava-shapes")
    inputs = adapter.build_inputs([image], [question])
    full = adapter.generate(inputs, 10, return_hidden=True, hidden_from="all_layers")[0]
    assert full.text == result.text
    assert torch.equal(FastRMMethod().explain(adapter, inputs, full).maps, result.maps)
    content = [t.strip().isalnum() for t in result.tokens]
    expected = result.maps[torch.tensor(content)].mean(0) if any(content) else result.maps.mean(0)
    torch.testing.assert_close(result.sample_map, expected)
    assert result.entropy == pytest.approx(map_entropy(expected))
    assert 0 < result.entropy < torch.log(torch.tensor(float(result.maps.shape[1]))).item()
    assert result.layout.to_image(result.maps[0]).shape == image.size[::-1]


@pytest.fixture
def embedded_scene():
    from fastrm_bench.world.scenes import generate_scene, jpeg_roundtrip, scene_seed

    scene = generate_scene(scene_seed("test", 3))
    return jpeg_roundtrip(scene.image), f"What color is the {scene.objects[0].shape}? Answer the question using up to two words."

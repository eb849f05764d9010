"""Methods that read attention give the same maps whether the model answers with SDPA (attention captured and
recomputed) or with eager attention, on the two shipped models, whose maps are far from degenerate."""

from __future__ import annotations

import pytest
import torch

from fastrm_bench.builders import create_method
from fastrm_bench.models.zoo import load_model
from fastrm_bench.world.scenes import generate_scene, jpeg_roundtrip, scene_seed

METHODS = ("chefer", "chefer-stale", "attention", "rollout", "gradcam-lm", "dex-ar", "dex-ar-sentence", "tam")


@pytest.mark.parametrize("model", ["tiny-llava-shapes", "tiny-qwen-shapes"])
def test_methods_under_sdpa_equal_their_eager_selves(model):
    adapters = {kind: load_model(model, device="cpu", attn_implementation=kind) for kind in ("sdpa", "eager")}
    assert {kind: a.attn_implementation for kind, a in adapters.items()} == {"sdpa": "sdpa", "eager": "eager"}
    scene = generate_scene(scene_seed("test", 5))
    question = f"What color is the {scene.objects[0].shape}? Answer the question using up to two words."
    cases = {}
    for kind, adapter in adapters.items():
        inputs = adapter.build_inputs([jpeg_roundtrip(scene.image)], [question])
        cases[kind] = (adapter, inputs, adapter.generate(inputs, max_new_tokens=4, min_new_tokens=4)[0])
    assert torch.equal(cases["sdpa"][2].generated_ids, cases["eager"][2].generated_ids)
    for name in METHODS:
        method = create_method(name)[0]
        maps = {kind: method.explain(*case).maps for kind, case in cases.items()}
        scale = maps["eager"].abs().amax()
        assert maps["sdpa"].shape == maps["eager"].shape == (4, cases["sdpa"][1].layout.num_tokens), name
        assert scale > 0, name
        assert (maps["sdpa"] - maps["eager"]).abs().max() <= 1e-5 * scale, name

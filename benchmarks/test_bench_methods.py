"""Speed of the maps: chefer vs chefer-reference, and FastRM's overhead.

Run: ``python -m pytest benchmarks -m benchmark --benchmark-only --benchmark-columns=median,rounds``.
``FASTRM_BENCH_DEVICE=cuda`` runs them on a GPU, and then also on a random-weight model of
LLaVA-1.5-7B's shapes (width 4096, 32 heads, CLIP ViT-L/14-336's 24x24 grid) with only
``FASTRM_BENCH_LLAVA_LAYERS`` (default 4) of its 32 LM layers and of its 24 vision layers.
Nothing here asserts a speed: the numbers are read from the table and quoted in the README.
"""

from __future__ import annotations

import os

import pytest
import torch

from fastrm_bench.builders import create_method
from fastrm_bench.models.zoo import load_model
from fastrm_bench.world.scenes import generate_scene, jpeg_roundtrip, scene_seed

pytestmark = pytest.mark.benchmark
DEVICE = os.environ.get("FASTRM_BENCH_DEVICE", "cpu")


def _case(adapter):
    scene = generate_scene(scene_seed("test", 0))
    inputs = adapter.build_inputs([jpeg_roundtrip(scene.image)], [f"What color is the {scene.objects[0].shape}?"])
    return adapter, inputs


@pytest.fixture(scope="module")
def case():
    return _case(load_model("tiny-llava-shapes", device=DEVICE))


@pytest.fixture(scope="module")
def llava15_shaped_case(tmp_path_factory):
    """LLaVA-1.5-7B's widths, heads and grid (576 image tokens), random weights, a few layers: GPU only."""
    if not DEVICE.startswith("cuda"):
        pytest.skip("the LLaVA-1.5-shaped benchmark needs FASTRM_BENCH_DEVICE=cuda")
    from fastrm_bench.embedded.tiny_llava import TinyLlavaSize, build_model, build_processor

    layers = int(os.environ.get("FASTRM_BENCH_LLAVA_LAYERS", "4"))
    size = TinyLlavaSize(image_size=336, patch_size=14, vision_hidden=1024, vision_layers=layers, text_hidden=4096,
                         text_layers=layers, heads=32, mlp_ratio=3)
    torch.manual_seed(0)
    processor = build_processor(size)
    model = build_model(processor.tokenizer, size)
    model.config.text_config.max_position_embeddings = 4096
    out = tmp_path_factory.mktemp("llava15-shaped")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return _case(load_model(str(out), device=DEVICE))


@pytest.mark.parametrize("tokens", [1, 8, 32, 100])
@pytest.mark.parametrize("method", ["chefer", "chefer-reference"])
def test_chefer_maps(benchmark, case, method, tokens):
    adapter, inputs = case
    generation = adapter.generate(inputs, tokens, min_new_tokens=tokens, return_hidden=True)[0]
    explain = create_method(method)[0].explain
    rounds = 1 if (method == "chefer-reference" and tokens >= 32 and DEVICE == "cpu") else 3
    maps = benchmark.pedantic(explain, args=(adapter, inputs, generation), rounds=rounds, iterations=1,
                              warmup_rounds=0 if DEVICE == "cpu" else 1).maps
    assert maps.shape[0] == tokens


@pytest.mark.parametrize("tokens", [1, 8, 32])
@pytest.mark.parametrize("method", ["chefer", "chefer-reference"])
def test_chefer_maps_llava15_shaped(benchmark, llava15_shaped_case, method, tokens):
    adapter, inputs = llava15_shaped_case
    generation = adapter.generate(inputs, tokens, min_new_tokens=tokens, return_hidden=True)[0]
    explain = create_method(method)[0].explain
    maps = benchmark.pedantic(explain, args=(adapter, inputs, generation), rounds=3, iterations=1, warmup_rounds=1).maps
    assert maps.shape == (tokens, 24, 24)


@pytest.mark.parametrize("with_fastrm", [False, True], ids=["generate", "generate+fastrm"])
def test_fastrm_overhead_at_100_tokens(benchmark, case, with_fastrm):
    adapter, inputs = case
    method = create_method("fastrm")[0]

    def work():  # plain greedy generation vs generation that also keeps hidden states and runs the proxy
        generation = adapter.generate(inputs, 100, min_new_tokens=100, return_hidden=with_fastrm)[0]
        if with_fastrm:
            method.explain(adapter, inputs, generation)
        return generation

    benchmark.pedantic(work, rounds=21, iterations=1, warmup_rounds=2)  # CPU timing is noisy: compare minima


def test_fastrm_overhead_paired(benchmark, case):
    """The same comparison as pairs run back to back: the median of per-pair ratios cancels the drift of a shared CPU."""
    import statistics
    import time

    adapter, inputs = case
    method = create_method("fastrm")[0]

    def timed(with_fastrm: bool) -> float:
        start = time.perf_counter()
        generation = adapter.generate(inputs, 100, min_new_tokens=100, return_hidden=with_fastrm)[0]
        if with_fastrm:
            method.explain(adapter, inputs, generation)
        return time.perf_counter() - start

    def pairs() -> float:
        ratios = []
        for i in range(20):
            order = (False, True) if i % 2 == 0 else (True, False)  # alternate which one runs first
            t = {flag: timed(flag) for flag in order}
            ratios.append(t[True] / t[False])
        return statistics.median(ratios)

    ratio = benchmark.pedantic(pairs, rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info["median_ratio_fastrm_over_generate"] = ratio
    print(f"\nFastRM overhead, median of 20 paired ratios: {100 * (ratio - 1):+.1f}% ({adapter.attn_implementation} attention)")

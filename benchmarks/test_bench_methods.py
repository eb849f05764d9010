"""Speed of the maps on the embedded model (CPU, 2 threads): chefer vs chefer-reference, and FastRM's overhead.

Run: ``python -m pytest benchmarks -m benchmark --benchmark-only --benchmark-columns=median,rounds``.
Nothing here asserts a speed: the numbers are read from the table and quoted in the README.
"""

from __future__ import annotations

import pytest

from fastrm_bench.builders import create_method
from fastrm_bench.models.zoo import load_model
from fastrm_bench.world.scenes import generate_scene, jpeg_roundtrip, scene_seed

pytestmark = pytest.mark.benchmark


@pytest.fixture(scope="module")
def case():
    adapter = load_model("tiny-llava-shapes", device="cpu")
    scene = generate_scene(scene_seed("test", 0))
    inputs = adapter.build_inputs([jpeg_roundtrip(scene.image)], [f"What color is the {scene.objects[0].shape}?"])
    return adapter, inputs


@pytest.mark.parametrize("tokens", [1, 8, 32, 100])
@pytest.mark.parametrize("method", ["chefer", "chefer-reference"])
def test_chefer_maps(benchmark, case, method, tokens):
    adapter, inputs = case
    generation = adapter.generate(inputs, tokens, min_new_tokens=tokens, return_hidden=True)[0]
    explain = create_method(method)[0].explain
    rounds = 1 if (method == "chefer-reference" and tokens >= 32) else 3
    maps = benchmark.pedantic(explain, args=(adapter, inputs, generation), rounds=rounds, iterations=1).maps
    assert maps.shape[0] == tokens


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
    print(f"\nFastRM overhead, median of 20 paired ratios: {100 * (ratio - 1):+.1f}%")

"""`dex-ar`, `dex-ar-sentence` and `tam` against direct, written-out evaluations of their formulas.

The direct evaluations below run the tiny random LLaVA's language model themselves (input
embeddings as a leaf, hooks on the decoder layers for their outputs) and follow the formulas of
docs/choices.md token by token, layer by layer and head by head, with one `autograd.grad` per
(token, layer) and plain loops; the methods compute the same numbers batched.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from fastrm_bench.builders import create_method


@pytest.fixture(scope="module")
def case(tiny_adapter):
    """A 4-token answer of the tiny random LLaVA about a noise image (a plain one gives every patch the same key)."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
    inputs = tiny_adapter.build_inputs([Image.fromarray(pixels)], ["What color is the square?"])
    generation = tiny_adapter.generate(inputs, max_new_tokens=4, min_new_tokens=4)[0]
    assert generation.num_generated == 4
    return tiny_adapter, inputs, generation


@pytest.fixture(scope="module")
def embedded_case():
    """A 4-token answer of the shipped model, whose heads do look at the image (the filters have work to do)."""
    from fastrm_bench.models.zoo import load_model
    from fastrm_bench.world.scenes import generate_scene, jpeg_roundtrip, scene_seed

    adapter = load_model("tiny-llava-shapes", device="cpu")
    scene = generate_scene(scene_seed("test", 1))
    inputs = adapter.build_inputs([jpeg_roundtrip(scene.image)], [f"Where is the {scene.objects[0].category}?"])
    return adapter, inputs, adapter.generate(inputs, max_new_tokens=4, min_new_tokens=4)[0]


def _direct_forward(adapter, inputs, generation):
    """Logits [N, V], attentions (per layer [1, H, N, N]) and every decoder layer's output [N, d], by hand."""
    model = adapter.model
    lm = model.model.language_model
    prompt = adapter.lm_input_embeds(inputs)[0]
    answer = model.get_input_embeddings()(generation.generated_ids[:-1])
    x = torch.cat([prompt, answer]).unsqueeze(0).detach().requires_grad_(True)
    outputs = []
    hooks = [layer.register_forward_hook(lambda m, a, out: outputs.append(out[0] if isinstance(out, tuple) else out))
             for layer in lm.layers]
    loaded = model.config._attn_implementation
    model.set_attn_implementation("eager")  # the textbook attention probabilities, as the authors' code reads them
    try:
        out = lm(inputs_embeds=x, output_attentions=True)
    finally:
        model.set_attn_implementation(loaded)
        for h in hooks:
            h.remove()
    logits = model.lm_head(out.last_hidden_state)[0]
    return logits, out.attentions, [o[0] for o in outputs]


def _sequence_ids(inputs, generation) -> list[int]:
    return inputs.input_ids[0].tolist() + generation.generated_ids.tolist()


def _direct_dex_ar(adapter, inputs, generation, layers: int, head_filter: bool, token_filter: bool):
    """(per-token maps [T, n], sentence map [n]) of DEX-AR, written out."""
    model = adapter.model
    lm = model.model.language_model
    logits, attentions, hidden = _direct_forward(adapter, inputs, generation)
    ids = _sequence_ids(inputs, generation)
    image = inputs.layout.positions.tolist()
    image_id = adapter.image_token_id
    L0 = inputs.prompt_length
    T = generation.num_generated
    chosen = list(range(len(attentions)))[-layers:]
    heads = attentions[0].shape[1]
    G_img = {}  # (t, l, h) -> list of n values
    S_img, S_txt = {}, {}
    for t in range(T):
        p = L0 - 1 + t
        y = int(generation.generated_ids[t])
        for layer in chosen:
            z = model.lm_head(lm.norm(hidden[layer][p]))[y]
            (grad,) = torch.autograd.grad(z, attentions[layer], retain_graph=True)
            for h in range(heads):
                G = [max(float(grad[0, h, p, j]), 0.0) for j in range(p + 1)]
                G_img[t, layer, h] = [G[j] for j in image]
                S_img[t, layer, h] = max(G[j] for j in image)
                S_txt[t, layer, h] = max(G[j] for j in range(p + 1) if ids[j] != image_id)
    lo = min(min(v) for v in G_img.values())
    hi = max(max(v) for v in G_img.values())

    def minmax(values):
        a, b = min(values), max(values)
        return [(v - a) / (b - a) if b > a else 0.0 for v in values]

    sums = []
    for t in range(T):
        acc = [0.0] * len(image)
        for layer in chosen:
            for h in range(heads):
                w = max(S_img[t, layer, h] - S_txt[t, layer, h], 0.0) if head_filter else 1.0
                for i in range(len(image)):
                    acc[i] += w * (G_img[t, layer, h][i] - lo) / (hi - lo)
        sums.append(acc)
    per_token = [minmax(acc) for acc in sums]
    sentence = [0.0] * len(image)
    for t in range(T):
        best_img = max(S_img[t, layer, h] for layer in chosen for h in range(heads))
        best_txt = max(S_txt[t, layer, h] for layer in chosen for h in range(heads))
        delta = max(best_img - best_txt, 0.0) if token_filter else 1.0
        for i in range(len(image)):
            sentence[i] += delta * sums[t][i]
    return torch.tensor(per_token), torch.tensor(minmax(sentence)), S_img, S_txt


@pytest.mark.parametrize("layers", [1, 10], ids=["last-layer", "all-layers"])
@pytest.mark.parametrize("filtered", [True, False], ids=["filtered", "unfiltered"])
@pytest.mark.parametrize("model", ["tiny-random", "embedded"])
def test_dex_ar_equals_its_written_out_formula(request, model, layers, filtered):
    adapter, inputs, generation = request.getfixturevalue("case" if model == "tiny-random" else "embedded_case")
    per_token, sentence, s_img, s_txt = _direct_dex_ar(adapter, inputs, generation, layers, filtered, filtered)
    method = create_method("dex-ar", layers=layers, head_filter=filtered)[0]
    maps = method.explain(adapter, inputs, generation).maps
    assert maps.shape == (4, inputs.layout.num_tokens)
    torch.testing.assert_close(maps, per_token, rtol=1e-4, atol=1e-5)
    sentence_method = create_method("dex-ar-sentence", layers=layers, head_filter=filtered, token_filter=filtered)[0]
    sentence_maps = sentence_method.explain(adapter, inputs, generation).maps
    torch.testing.assert_close(sentence_maps, sentence.expand(4, -1), rtol=1e-4, atol=1e-5)
    # The random model's heads mostly look at text, so its filtered maps may be all zero (w = 0 or delta = 0);
    # the shipped model's are not, and its filter keeps some heads and drops others.
    if model == "embedded" or not filtered:
        assert per_token.amax(dim=1).min() > 0 and sentence.max() > 0
    if model == "embedded" and filtered:
        weights = [s_img[k] - s_txt[k] for k in s_img]
        assert min(weights) < 0 < max(weights)


def _numpy_rank_gaussian_filter(grid: np.ndarray) -> np.ndarray:
    """TAM's published filter, written out: numpy reflect padding, sorted 3x3 window, sigma = std / mean."""
    out = np.zeros_like(grid)
    padded = np.pad(grid, 1, mode="reflect")
    offsets = np.arange(9) - 4
    for r in range(grid.shape[0]):
        for c in range(grid.shape[1]):
            window = np.sort(padded[r : r + 3, c : c + 3].flatten())
            mean = window.mean()
            if mean <= 0:
                continue
            sigma = window.std() / mean
            if sigma == 0:
                out[r, c] = window[4]
                continue
            kernel = np.exp(-(offsets**2) / (2 * sigma**2))
            out[r, c] = (window * kernel).sum() / kernel.sum()
    return out


def _direct_tam(adapter, inputs, generation):
    """TAM maps [T, n] written out, and how many tokens had a non-zero interference."""
    with torch.no_grad():
        logits = _direct_forward(adapter, inputs, generation)[0].double()
    ids = _sequence_ids(inputs, generation)
    image = inputs.layout.positions.tolist()
    L0 = inputs.prompt_length
    rows, cols = inputs.layout.groups[0].grid
    maps, interfered = [], 0
    for t in range(generation.num_generated):
        y = int(generation.generated_ids[t])
        a = [max(float(logits[i, y]), 0.0) for i in image]
        earlier = [(ids[j], j) for j in range(L0) if ids[j] != adapter.image_token_id]  # (class, position)
        earlier += [(int(generation.generated_ids[k]), L0 - 1 + k) for k in range(t)]
        s = [max(float(logits[q, y]), 0.0) for _, q in earlier]
        others = [u for u, (c, _) in enumerate(earlier) if c != y]
        total = sum(s[u] for u in others)
        b = [0.0] * len(image)
        for u in others:
            c = earlier[u][0]
            for i, pos in enumerate(image):
                b[i] += s[u] / (total + 1e-8) * max(float(logits[pos, c]), 0.0)
        bb = sum(v * v for v in b)
        lam = sum(x * v for x, v in zip(a, b)) / bb if bb > 0 else 0.0
        interfered += lam != 0
        m = [max(x - lam * v, 0.0) for x, v in zip(a, b)]
        lo, hi = min(m + s), max(m + s)
        m = [(v - lo) / (hi - lo) for v in m]
        maps.append(_numpy_rank_gaussian_filter(np.array(m).reshape(rows, cols)).flatten())
    return torch.tensor(np.stack(maps), dtype=torch.float32), interfered


def test_tam_equals_its_written_out_formula(case):
    adapter, inputs, generation = case
    assert len(inputs.layout.groups) == 1
    expected, interfered = _direct_tam(adapter, inputs, generation)
    maps = create_method("tam")[0].explain(adapter, inputs, generation).maps
    assert maps.shape == (4, inputs.layout.num_tokens)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-5)
    assert interfered == generation.num_generated  # the interference removal ran for every token
    assert expected.amax(dim=1).min() > 0


def test_rank_gaussian_filter_on_grids_of_any_shape():
    from fastrm_bench.explainers.tam import rank_gaussian_filter

    gen = torch.Generator().manual_seed(0)
    for shape in ((2, 2), (3, 5), (7, 4)):
        grid = torch.rand(shape, generator=gen, dtype=torch.float64)
        grid[0, 0] = 0.0
        torch.testing.assert_close(rank_gaussian_filter(grid), torch.from_numpy(_numpy_rank_gaussian_filter(grid.numpy())))
    constant = torch.full((3, 3), 0.25, dtype=torch.float64)
    assert torch.equal(rank_gaussian_filter(constant), constant)  # sigma = 0: the window's value
    assert torch.equal(rank_gaussian_filter(torch.zeros(2, 3)), torch.zeros(2, 3))  # mean <= 0: zero
    row = torch.tensor([[0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)  # one row: the column axis is still mirrored
    assert torch.isfinite(rank_gaussian_filter(row)).all() and rank_gaussian_filter(row).shape == (1, 4)
    assert not math.isnan(float(rank_gaussian_filter(row).sum()))


def test_dex_ar_token_weights_aggregate_another_methods_maps_in_a_run(world_root, tiny_llava_dir, tmp_path):
    """``--aggregation dex-ar``: the run's sample map is the DEX-AR-weighted mean of the method's own per-token maps."""
    import json

    from fastrm_bench.aggregation import weighted_map
    from fastrm_bench.explainers.dex_ar import DexAR
    from fastrm_bench.maps_io import load_sample_maps, load_token_maps
    from fastrm_bench.models.zoo import load_model
    from fastrm_bench.runner import RunConfig, run

    out = tmp_path / "run"
    run(RunConfig(method="rollout", task="vqav2", model=str(tiny_llava_dir), limit=3, output_dir=str(out),
                  data_root=str(world_root), device="cpu", max_new_tokens=4, metrics=["cost"], aggregation="dex-ar"),
        log=lambda *_: None)
    assert json.loads((out / "config.json").read_text())["run"]["aggregation"] == "dex-ar"
    adapter = load_model(str(tiny_llava_dir), device="cpu")
    from fastrm_bench.builders import create_task

    task, _ = create_task("vqav2", data_root=str(world_root))
    records = {r.id: r for r in task.records}
    tokens, samples = load_token_maps(out), load_sample_maps(out / "maps.npz")
    weighed = 0
    for line in (out / "samples.jsonl").read_text().splitlines():
        record = json.loads(line)
        sample = task.sample(records[record["id"]])
        inputs = adapter.build_inputs([sample.image], [task.prompt(sample)])
        generation = adapter.generate(inputs, 4)[0]
        weights = DexAR(layers=10, head_filter=True).token_weights(adapter, inputs, generation)
        expected = weighted_map(torch.from_numpy(tokens[record["id"]]), weights).numpy()
        np.testing.assert_allclose(samples[record["id"]], expected, rtol=1e-5, atol=1e-7)
        weighed += int((weights > 0).any())
    assert weighed, "no answer had a visual token: the case checks nothing"

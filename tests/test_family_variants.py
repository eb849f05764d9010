"""Family config variants real checkpoints use, each a tiny random checkpoint built with the family's own classes:
LLaVA keeping the CLS token (``vision_feature_select_strategy: "full"``), LLaVA concatenating several vision layers
(``vision_feature_layer: [-2, -5]``), Gemma 3 with pan-and-scan crops switched on by a processor option.

Layouts are checked against counts worked out by hand; Chefer against its reference; the methods through `run`.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from fastrm_bench.embedded.tiny_random import build_tiny_random
from fastrm_bench.explainers.chefer import Chefer, CheferReference
from fastrm_bench.models.adapter import HFVisionLanguageAdapter

IMAGE = (80, 48)  # width, height
QUESTION = "What color is the circle?"

VARIANTS = {
    "llava-full": ("llava", {"vision_feature_select_strategy": "full"}),
    "llava-layers": ("llava", {"vision_feature_layer": [-2, -5], "vision_layers": 5}),
    "llava-layers-full": ("llava", {"vision_feature_layer": [-2, -5], "vision_layers": 5,
                                    "vision_feature_select_strategy": "full"}),
}

#: by hand: the 80x48 image is centre-cropped to 48x48 (columns 16-64) and resized to 32 px, 8 px patches: a 4x4
#: grid; "full" keeps CLIP's CLS token, written first: 17 image tokens, the CLS a 1x1 group over the same crop
CROP = (0.0, 16.0, 48.0, 64.0)
EXPECTED_GROUPS = {
    "llava-full": [((1, 1), CROP), ((4, 4), CROP)],
    "llava-layers": [((4, 4), CROP)],
    "llava-layers-full": [((1, 1), CROP), ((4, 4), CROP)],
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request, tmp_path_factory):
    """(variant name, folder, adapter loaded with SDPA)."""
    family, options = VARIANTS[request.param]
    folder = build_tiny_random(family, tmp_path_factory.mktemp(request.param), seed=0, **options)
    return request.param, folder, HFVisionLanguageAdapter.from_pretrained(folder, device="cpu")


def _inputs(adapter, colour=(200, 30, 30)):
    return adapter.build_inputs([Image.new("RGB", IMAGE, colour)], [QUESTION])


def test_layout_counts_the_cls_token_by_hand(variant):
    name, _, adapter = variant
    inputs = _inputs(adapter)
    layout = inputs.layout
    assert [(g.grid, g.region) for g in layout.groups] == EXPECTED_GROUPS[name]
    ids = inputs.input_ids[0]
    image = torch.nonzero(ids == adapter.image_token_id).flatten()
    assert layout.num_tokens == image.numel() == (17 if name.endswith("full") else 16)
    # the CLS token is the first image token of the sequence (CLIP's class embedding comes first), the grid follows
    assert layout.positions.tolist() == image.tolist()


def test_chefer_equals_the_reference(variant):
    _, _, adapter = variant
    inputs = _inputs(adapter)
    generation = adapter.generate(inputs, max_new_tokens=4, min_new_tokens=4)[0]
    fast = Chefer(chunk_size=3).explain(adapter, inputs, generation).maps
    reference = CheferReference().explain(adapter, inputs, generation).maps
    scale = reference.abs().amax(dim=1)
    assert fast.shape == reference.shape == (4, inputs.layout.num_tokens) and (scale > 0).all()
    assert torch.all((fast - reference).abs().amax(dim=1) <= 1e-5 * scale)


def test_gradcam_target_is_what_the_projector_reads(variant):
    """Grad-CAM's leaf is the projector's input: one vision layer (CLS in the layer's output), or the listed
    layers' hidden states concatenated along channels; each LM image token depends on exactly the leaf rows
    `vision_to_tokens` pools into it."""
    name, _, adapter = variant
    inputs = _inputs(adapter)
    generation = adapter.generate(inputs, max_new_tokens=2, min_new_tokens=2)[0]
    captured: list[torch.Tensor] = []
    with adapter._on_lm_input(lambda x: captured.append(x) or x):  # noqa: SLF001 - read the LM input with its graph
        forward = adapter.teacher_forced(inputs, generation, vision_leaf=True)
    config = adapter.model.config
    with torch.no_grad():
        states = adapter.model.model.vision_tower(inputs.tensors["pixel_values"], output_hidden_states=True).hidden_states
    layers = config.vision_feature_layer if isinstance(config.vision_feature_layer, list) else [config.vision_feature_layer]
    first = 0 if isinstance(config.vision_feature_layer, int) or name.endswith("full") else 1  # "default" drops CLS
    expected = torch.cat([states[k][:, first:] for k in layers], dim=-1)
    torch.testing.assert_close(forward.leaf.detach(), expected)
    n_rows = forward.leaf.shape[:-1].numel()
    pooling = adapter.vision_to_tokens(inputs, torch.eye(n_rows))
    positions = inputs.layout.positions
    for k in range(inputs.layout.num_tokens):
        (grad,) = torch.autograd.grad(captured[0][0, positions[k]].sum(), forward.leaf, retain_graph=True)
        assert torch.equal(grad.reshape(n_rows, -1).abs().sum(-1) > 0, pooling[:, k] != 0), k


def test_attention_and_gradcam_runs(variant, world_root, tmp_path):
    """`fastrm-bench run --model DIR --method M --task pope --limit 2`: a map per answer token over every image token."""
    from fastrm_bench.runner import RunConfig, run

    _, folder, adapter = variant
    for method in ("attention", "gradcam"):
        out = tmp_path / method
        cfg = RunConfig(method=method, task="pope", model=str(folder), limit=2, output_dir=str(out),
                        data_root=str(world_root), max_new_tokens=3, device="cpu", fractions=[0.0, 0.5])
        assert run(cfg, log=lambda *_: None)["n"] == 2, method
        records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        tokens = [sum(g["grid"][0] * g["grid"][1] for g in r["layout"]["groups"]) for r in records]
        assert tokens == [_inputs(adapter).layout.num_tokens] * 2, method
        assert all(len(r["curves"]["positive"]) == 2 for r in records), method

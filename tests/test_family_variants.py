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
    "gemma3-pan-and-scan": ("gemma3", {}),
}
#: the processor options a variant's model folder gives in fastrm_bench.json (how `run --model DIR` gets them);
#: pan-and-scan's minimum crop size is lowered from 256 px to fit the tiny images
PROCESSOR_OPTIONS = {"gemma3-pan-and-scan": {"do_pan_and_scan": True, "pan_and_scan_min_crop_size": 16}}

#: by hand: the 80x48 image is centre-cropped to 48x48 (columns 16-64) and resized to 32 px, 8 px patches: a 4x4
#: grid; "full" keeps CLIP's CLS token, written first: 17 image tokens, the CLS a 1x1 group over the same crop
CROP = (0.0, 16.0, 48.0, 64.0)
EXPECTED_GROUPS = {
    "llava-full": [((1, 1), CROP), ((4, 4), CROP)],
    "llava-layers": [((4, 4), CROP)],
    "llava-layers-full": [((1, 1), CROP), ((4, 4), CROP)],
    # by hand: width / height = 1.67 >= 1.2 activates pan-and-scan; round(1.67) = 2 crops of ceil(80 / 2) = 40 px
    # along the width; the whole image first, then each crop, each a 2x2 grid of soft tokens
    "gemma3-pan-and-scan": [((2, 2), (0, 0, 48, 80)), ((2, 2), (0, 0, 48, 40)), ((2, 2), (0, 40, 48, 80))],
}
EXPECTED_TOKENS = {"llava-full": 17, "llava-layers": 16, "llava-layers-full": 17, "gemma3-pan-and-scan": 12}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request, tmp_path_factory):
    """(variant name, folder, adapter loaded with SDPA)."""
    family, options = VARIANTS[request.param]
    folder = build_tiny_random(family, tmp_path_factory.mktemp(request.param), seed=0, **options)
    if request.param in PROCESSOR_OPTIONS:
        (folder / "fastrm_bench.json").write_text(json.dumps({"processor_options": PROCESSOR_OPTIONS[request.param]}))
    return request.param, folder, HFVisionLanguageAdapter.from_pretrained(folder, device="cpu")


def _inputs(adapter, colour=(200, 30, 30)):
    return adapter.build_inputs([Image.new("RGB", IMAGE, colour)], [QUESTION])


def test_layout_follows_the_hand_worked_geometry(variant):
    name, _, adapter = variant
    inputs = _inputs(adapter)
    layout = inputs.layout
    assert [(g.grid, g.region) for g in layout.groups] == EXPECTED_GROUPS[name]
    ids = inputs.input_ids[0]
    image = torch.nonzero(ids == adapter.image_token_id).flatten()
    assert layout.num_tokens == image.numel() == EXPECTED_TOKENS[name]
    # every image token is in the layout, in sequence order: the CLS token first (CLIP's class embedding comes
    # first), then the grid; Gemma 3's whole image, then its crops
    assert layout.positions.tolist() == image.tolist()


@pytest.mark.parametrize("size, regions", [
    ((48, 80), [(0, 0, 80, 48), (0, 0, 40, 48), (40, 0, 80, 48)]),  # tall: cut along the height
    ((48, 48), [(0, 0, 48, 48)]),  # square: ratio 1 < 1.2, no crop
    ((160, 48), [(0, 0, 48, 160), (0, 0, 48, 54), (0, 54, 48, 108), (0, 108, 48, 160)]),  # round(3.33) = 3, ceil(160/3) = 54
])
def test_pan_and_scan_regions_by_hand(tmp_path_factory, size, regions):
    folder = build_tiny_random("gemma3", tmp_path_factory.mktemp("gemma3"), seed=0)
    adapter = HFVisionLanguageAdapter.from_pretrained(folder, device="cpu",
                                                      processor_options=PROCESSOR_OPTIONS["gemma3-pan-and-scan"])
    layout = adapter.build_inputs([Image.new("RGB", size, "red")], [QUESTION]).layout
    assert [g.region for g in layout.groups] == regions and all(g.grid == (2, 2) for g in layout.groups)
    off = HFVisionLanguageAdapter.from_pretrained(folder, device="cpu")  # off unless asked, as the processor has it
    assert len(off.build_inputs([Image.new("RGB", size, "red")], [QUESTION]).layout.groups) == 1


def test_chefer_equals_the_reference(variant):
    _, _, adapter = variant
    inputs = _inputs(adapter)
    generation = adapter.generate(inputs, max_new_tokens=4, min_new_tokens=4)[0]
    fast = Chefer(chunk_size=3).explain(adapter, inputs, generation).maps
    reference = CheferReference().explain(adapter, inputs, generation).maps
    scale = reference.abs().amax(dim=1)
    assert fast.shape == reference.shape == (4, inputs.layout.num_tokens) and (scale > 0).all()
    assert torch.all((fast - reference).abs().amax(dim=1) <= 1e-5 * scale)


def test_gradcam_pools_its_target_into_the_tokens_it_feeds(variant):
    """Each LM image token depends on exactly the rows of Grad-CAM's target that `vision_to_tokens` pools into it
    (Gemma 3: each crop's patches into that crop's soft tokens). For LLaVA the target is what the projector
    reads: one vision layer's output, or the listed layers' hidden states concatenated along channels."""
    name, _, adapter = variant
    inputs = _inputs(adapter)
    generation = adapter.generate(inputs, max_new_tokens=2, min_new_tokens=2)[0]
    captured: list[torch.Tensor] = []
    with adapter._on_lm_input(lambda x: captured.append(x) or x):  # noqa: SLF001 - read the LM input with its graph
        forward = adapter.teacher_forced(inputs, generation, vision_leaf=True)
    n_rows = forward.leaf.shape[:-1].numel()
    pooling = adapter.vision_to_tokens(inputs, torch.eye(n_rows))
    positions = inputs.layout.positions
    for k in range(inputs.layout.num_tokens):
        (grad,) = torch.autograd.grad(captured[0][0, positions[k]].sum(), forward.leaf, retain_graph=True)
        assert torch.equal(grad.reshape(n_rows, -1).abs().sum(-1) > 0, pooling[:, k] != 0), k
    if adapter.family != "llava":
        return
    config = adapter.model.config
    with torch.no_grad():
        states = adapter.model.model.vision_tower(inputs.tensors["pixel_values"], output_hidden_states=True).hidden_states
    layers = config.vision_feature_layer if isinstance(config.vision_feature_layer, list) else [config.vision_feature_layer]
    first = 0 if isinstance(config.vision_feature_layer, int) or name.endswith("full") else 1  # "default" drops CLS
    expected = torch.cat([states[k][:, first:] for k in layers], dim=-1)
    torch.testing.assert_close(forward.leaf.detach(), expected)


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
        for record in records:  # the layout of the run's image as the variant's adapter makes it
            height, width = record["layout"]["image_size"]
            expected = adapter.build_inputs([Image.new("RGB", (width, height))], [QUESTION]).layout.to_dict()
            assert record["layout"] == expected, method
        assert all(len(r["curves"]["positive"]) == 2 for r in records), method


def test_with_every_image_token_removed_the_answer_no_longer_depends_on_the_image(variant):
    """The layout holds every token the image reaches the LM through (LLaVA "full": the CLS token too, which sees
    the whole crop; Gemma 3: every crop's tokens): removing them all leaves two images indistinguishable."""
    _, _, adapter = variant
    images = [Image.new("RGB", IMAGE, (200, 30, 30)), Image.effect_noise(IMAGE, 60).convert("RGB")]
    inputs = [adapter.build_inputs([image], [QUESTION]) for image in images]
    generation = adapter.generate(inputs[0], 3, min_new_tokens=3)[0]
    n = inputs[0].layout.num_tokens
    keep = torch.stack([torch.ones(n), torch.zeros(n)])
    for removal in adapter.removals:
        first, second = (adapter.answer_logprobs(i, generation, keep, removal) for i in inputs)
        assert not torch.allclose(first[0], second[0], atol=1e-6), removal
        torch.testing.assert_close(first[1], second[1], rtol=0, atol=1e-5)

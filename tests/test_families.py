"""Every supported family, through the one adapter: layouts, exact Chefer, masks to tokens, removals, runs.

Each family is a tiny random-weight checkpoint built offline with the family's own config, model and
processor classes (`fastrm_bench.embedded.tiny_random`), loaded by path as a user's `--model DIR` is.
The test image is 80 wide x 48 high: LLaVA-1.5 crops its centre, LLaVA-NeXT adds anyres tiles,
Qwen gets a non-square merged grid, Idefics3/SmolVLM split it into 2x3 tiles plus the global image.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from fastrm_bench.embedded.tiny_random import FAMILIES, build_tiny_random
from fastrm_bench.explainers.chefer import Chefer, CheferReference
from fastrm_bench.models.adapter import HFVisionLanguageAdapter
from fastrm_bench.models.attention_capture import AttentionCaptureError
from fastrm_bench.models.zoo import load_model
from tests.gradcam_pooling import assert_pooling_is_the_models_dependencies

IMAGE = (80, 48)  # width, height

#: (grid, region) of each layout group for the 80x48 image, worked out by hand from each family's processor
EXPECTED_GROUPS = {
    "llava": [((4, 4), (0, 16, 48, 64))],  # centre 48x48 crop, 12 px cells
    "llava_next": [((4, 4), (0, 0, 48, 80)), ((4, 8), (0, 0, 48, 80))],  # base, then 2x2 tiles unpadded to 4x8
    # as llava_next, the 4x8 tile grid downsampled by sqrt(32 / 16) to int(4 // 1.41) x int(8 // 1.41) = 2x5
    "llava_onevision": [((4, 4), (0, 0, 48, 80)), ((2, 5), (0, 0, 48, 80))],
    "qwen2_vl": [((2, 3), (0, 0, 48, 80))],
    "qwen2_5_vl": [((2, 3), (0, 0, 48, 80))],
    # 80x48 < min_pixels 32*32*8: x sqrt(8192/3840) = 1.46 -> 70x117, sides up to multiples of 32 -> 96 high x 128
    # wide -> 6x8 patches of 16 px -> 3x4 merged tokens over the whole image
    "qwen3_vl": [((3, 4), (0, 0, 48, 80))],
    "qwen3_vl_moe": [((3, 4), (0, 0, 48, 80))],
    "idefics3": [((2, 2), (r * 24, c * 80 / 3, (r + 1) * 24, (c + 1) * 80 / 3)) for r in range(2) for c in range(3)]
    + [((2, 2), (0, 0, 48, 80))],
    "gemma3": [((2, 2), (0, 0, 48, 80))],
    "paligemma": [((4, 4), (0, 0, 48, 80))],
    # longest edge 64: 80x48 / 1.25 = 64 x 38.4 -> whole 16 px units (8 px patches merged 2x2): 4 wide x 3 high
    "mistral3": [((3, 4), (0, 0, 48, 80))],
    # longest edge 64, 8 px patches, no merging: 38.4 -> 5 rows of 8 px (40 high), 64 -> 8 columns
    "llava-pixtral": [((5, 8), (0, 0, 48, 80))],  # 32 px resize of the whole image, 8 px patches: 12 x 20 px cells
}
# mllama: no canvas of up to 4 32 px tiles holds 48x80 unscaled; the largest scale is 0.8 on 2x2 tiles (64x64): the image
# resized to 38x64 (top left), padded; a tile is 32 canvas px = 48/38 x 32 high, 40 wide; per tile its CLS then 4x4 patches
_MLLAMA_TILE = (32 * 48 / 38, 40)
EXPECTED_GROUPS["mllama"] = [
    (grid, (r * _MLLAMA_TILE[0], c * _MLLAMA_TILE[1], (r + 1) * _MLLAMA_TILE[0], (c + 1) * _MLLAMA_TILE[1]))
    for r in range(2) for c in range(2) for grid in ((1, 1), (4, 4))]
EXPECTED_GROUPS["smolvlm"] = EXPECTED_GROUPS["idefics3"]
# InternVL: aspect 80/48 = 1.67, closest canvas within 6 tiles is 3 columns x 2 rows (1.5), the thumbnail last
EXPECTED_GROUPS["internvl"] = EXPECTED_GROUPS["idefics3"]

#: tokens on an object filling rows 0-23 and columns 0-27 (top left) at >= half coverage, by hand:
#: llava: crop columns 16-28 = its first cell column; next: base cells are 20 px wide (28 px covers 1.4 of them),
#: tile cells 10 px (2.8); qwen cells 26.7 px wide; idefics tile (0,0) is all covered and the global cell (0,0)
#: 28/40 of it; gemma 28/40 of cell (0,0); paligemma cells are 20 px wide (column 1 only 8/20 covered)
EXPECTED_CORNER_TOKENS = {
    "llava": [0, 4],
    "llava_next": [0, 4, 16, 17, 18, 24, 25, 26],
    # base as llava_next; tile cells 24 high x 16 wide: (0, 0) fully covered, (0, 1) 12/16
    "llava_onevision": [0, 4, 16, 17],
    "qwen2_vl": [0],
    "qwen2_5_vl": [0],
    "qwen3_vl": [0, 4],  # 16 x 20 px cells: cell (1, 0) is exactly half covered (rows 16-23), (0, 1) only 8/20
    "qwen3_vl_moe": [0, 4],
    "idefics3": [0, 1, 2, 3, 24],
    "smolvlm": [0, 1, 2, 3, 24],
    "gemma3": [0],
    "paligemma": [0, 4],
    "internvl": [0, 1, 2, 3, 24],
    "mistral3": [0, 4],  # 16 x 20 px cells, as qwen3_vl
    # 9.6 x 10 px cells; row 2 holds pixel rows 19-28 (5 of 10 covered), column 2 pixel columns 20-29 (8 of 10):
    # cells (2, 0), (2, 1) half covered, (0, 2), (1, 2) 0.8, (2, 2) only 0.4
    "llava-pixtral": [0, 1, 2, 8, 9, 10, 16, 17],
    # tile (0, 0): 40.4 x 40 px, its CLS 24x28 / (40.4x40) = 0.42 covered; patch cells 10.1 x 10: rows 0-1 (row 2 only
    # 3.8/10.1), columns 0-2 (column 2 8/10): tokens 1 + 4 r + c
    "mllama": [1, 2, 3, 5, 6, 7],  # as idefics3: the same 2x3 tiles + whole-image thumbnail of 2x2 tokens
}


#: families whose LM needs more than embeddings and a mask (M-RoPE, bidirectional image blocks): no "drop" removal
NO_DROP = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "gemma3", "paligemma", "mllama")


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    return {family: build_tiny_random(family, tmp_path_factory.mktemp(f"tiny-{family}"), seed=0) for family in FAMILIES}


@pytest.fixture(scope="session", params=FAMILIES)
def family_adapter(request, family_dirs):
    return load_model(str(family_dirs[request.param]), device="cpu")  # the family's adapter (mllama: cross-attention)


def _inputs(adapter):
    return adapter.build_inputs([Image.new("RGB", IMAGE, (200, 30, 30))], ["What color is the circle?"])


def test_layout_follows_the_family_geometry(family_adapter):
    inputs = _inputs(family_adapter)
    layout = inputs.layout
    found = [(g.grid, g.region) for g in layout.groups]
    expected = EXPECTED_GROUPS[family_adapter.family]
    assert [g for g, _ in found] == [g for g, _ in expected]
    for (_, region), (_, want) in zip(found, expected):
        assert region == pytest.approx(want)
    ids = inputs.input_ids[0]
    assert torch.all(ids[layout.positions] == family_adapter.image_token_id)
    if family_adapter.family in ("llava_next", "llava_onevision"):  # the newline slots carry the image token but are not patches
        newlines = layout.groups[-1].grid[0]  # one per tile row
        assert int((ids == family_adapter.image_token_id).sum()) == layout.num_tokens + newlines


def test_a_corner_mask_lands_on_the_right_tokens(family_adapter):
    layout = _inputs(family_adapter).layout
    mask = np.zeros((IMAGE[1], IMAGE[0]), dtype=bool)
    mask[:24, :28] = True
    assert np.flatnonzero(layout.mask_to_tokens(mask)).tolist() == EXPECTED_CORNER_TOKENS[family_adapter.family]
    heat = layout.to_image(layout.mask_to_tokens(mask).astype(float))  # and back to image space
    assert heat.shape == mask.shape and np.nanmax(heat[24:, 40:]) == 0


def test_chefer_equals_the_reference_on_every_family(family_adapter):
    inputs = _inputs(family_adapter)
    generation = family_adapter.generate(inputs, max_new_tokens=4, min_new_tokens=4)[0]
    fast = Chefer(chunk_size=3).explain(family_adapter, inputs, generation).maps  # chunks of 3 and 1
    reference = CheferReference().explain(family_adapter, inputs, generation).maps
    assert fast.shape == reference.shape == (4, inputs.layout.num_tokens)
    scale = reference.abs().amax(dim=1)
    assert (scale > 0).sum() >= 3  # at least three tokens with a non-trivial map
    assert torch.all((fast - reference).abs().amax(dim=1) <= 1e-5 * scale.clamp_min(1e-12))


def test_captured_attention_equals_eager_attention(family_adapter):
    """Loaded with SDPA, every LM layer's probabilities recomputed from the captured forward are eager attention's, and
    ``dY/dA = dY/dO V^T`` from the gradient at the attention output is the gradient at eager's probabilities."""
    assert family_adapter.attn_implementation == "sdpa"
    inputs = _inputs(family_adapter)
    generation = family_adapter.generate(inputs, max_new_tokens=4, min_new_tokens=4)[0]
    eager = family_adapter.teacher_forced(inputs, generation, attention="eager")
    captured = family_adapter.teacher_forced(inputs, generation, attention="capture")
    assert not eager.attention and not captured.probabilities and len(captured.attention) == len(eager.probabilities)
    assert family_adapter.model.config.get_text_config()._attn_implementation == "sdpa"  # switched back after the capture
    torch.testing.assert_close(captured.logits, eager.logits, rtol=1e-5, atol=1e-5)
    p, token = inputs.prompt_length + 2, int(generation.generated_ids[3])
    eager_grads = torch.autograd.grad(eager.logits[p, token], eager.probabilities)
    output_grads = torch.autograd.grad(captured.logits[p, token], [layer.output for layer in captured.attention])
    rows = torch.arange(captured.logits.shape[0])
    for layer, probabilities, eager_grad, output_grad in zip(captured.attention, eager.probabilities, eager_grads, output_grads):
        torch.testing.assert_close(layer.probabilities(rows), probabilities[0].float(), rtol=0, atol=1e-6)
        scale = eager_grad.abs().max()
        assert scale > 0
        assert (layer.probability_gradients(output_grad, rows) - eager_grad[0]).abs().max() <= 1e-5 * scale
        own = layer.own_row_gradients(output_grad.unsqueeze(0), torch.tensor([p]))
        assert (own[0] - eager_grad[0, :, p]).abs().max() <= 1e-5 * scale
    if family_adapter.family in ("gemma3", "paligemma"):  # bidirectional image block / prefix: an explicit mask
        assert all(layer.mask is not None for layer in captured.attention)


def test_attention_methods_under_sdpa_equal_their_eager_selves(family_adapter, family_dirs):
    """The same methods on the same weights loaded with eager attention give the same maps (within 1e-5 of each
    map's maximum). DEX-AR's min-max of near-equal random-weight gradients only amplifies float noise here: it is
    compared on the shipped models (tests/test_attention_capture.py)."""
    from fastrm_bench.builders import create_method

    eager = load_model(str(family_dirs[family_adapter.family]), device="cpu", attn_implementation="eager")
    cases = []
    for adapter in (family_adapter, eager):
        inputs = _inputs(adapter)
        cases.append((adapter, inputs, adapter.generate(inputs, max_new_tokens=3, min_new_tokens=3)[0]))
    assert torch.equal(cases[0][2].generated_ids, cases[1][2].generated_ids)
    # TAM reads no attention: only the two forwards' float rounding (1e-7 in logits) reaches its normalised maps
    for name, tolerance in (("attention", 1e-5), ("rollout", 1e-5), ("chefer-stale", 1e-5), ("gradcam-lm", 1e-5),
                            ("tam", 1e-4)):
        method = create_method(name)[0]
        fast, textbook = (method.explain(*case).maps for case in cases)
        scale = textbook.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
        assert ((fast - textbook).abs() <= tolerance * scale).all(), name


def test_a_family_whose_attention_cannot_be_captured_says_so_in_one_line(family_adapter, monkeypatch):
    if family_adapter.family != "llava":
        pytest.skip("one family shows the message")
    inputs = _inputs(family_adapter)
    generation = family_adapter.generate(inputs, max_new_tokens=2, min_new_tokens=2)[0]
    text_config = family_adapter.model.config.get_text_config()
    monkeypatch.setattr(text_config, "num_hidden_layers", text_config.num_hidden_layers + 1)  # one layer goes unrecorded
    with pytest.raises(AttentionCaptureError) as err:
        family_adapter.teacher_forced(inputs, generation, attention="capture")
    message = str(err.value)
    assert "\n" not in message and "--attn-implementation eager" in message and "attention interface" in message
    assert text_config._attn_implementation == "sdpa"


def test_removals_supported_or_refused_by_name(family_adapter):
    inputs = _inputs(family_adapter)
    n = inputs.layout.num_tokens
    keep = torch.ones(3, n)
    keep[1, ::2] = 0
    keep[2] = 0
    plain = family_adapter.generate(inputs, 3, min_new_tokens=3)[0].generated_ids
    for removal in ("zero", "drop"):
        if removal not in family_adapter.removals:
            with pytest.raises(ValueError, match=f"not supported for the {family_adapter.family} family"):
                family_adapter.generate(inputs, 3, image_keep=keep, removal=removal)
            continue
        out = family_adapter.generate(inputs, 3, min_new_tokens=3, image_keep=keep, removal=removal)
        assert torch.equal(out[0].generated_ids, plain)  # keeping everything changes nothing
    assert family_adapter.removals[0] == "zero"
    assert ("drop" in family_adapter.removals) == (family_adapter.family not in NO_DROP)


#: images of several sizes and prompts of several lengths: a batch of them is left-padded
BATCH_IMAGES = [(IMAGE, (200, 30, 30)), ((48, 64), (20, 130, 30)), ((64, 64), (20, 30, 230))]
BATCH_PROMPTS = ["What color is the circle?", "Is there a square in the image at all?", "Where?"]


def test_a_batch_is_answered_as_each_sample_alone(family_adapter):
    """`--batch-size`: each row's generation (ids, prompt length, hidden states) is the one its sample alone gets."""
    images = [Image.new("RGB", size, colour) for size, colour in BATCH_IMAGES]
    batch = family_adapter.build_inputs(images, BATCH_PROMPTS)
    assert (batch.tensors["attention_mask"] == 0).any()  # the batch is padded
    together = family_adapter.generate(batch, 4, return_hidden=True)
    for image, prompt, got in zip(images, BATCH_PROMPTS, together):
        alone = family_adapter.generate(family_adapter.build_inputs([image], [prompt]), 4, return_hidden=True)[0]
        assert torch.equal(got.sequences, alone.sequences) and got.prompt_length == alone.prompt_length
        torch.testing.assert_close(got.last_hidden, alone.last_hidden, rtol=1e-4, atol=1e-5)


def test_removals_of_several_samples_packed_into_one_batch(family_adapter):
    """``keep_rows``: the perturbed answers of two samples in one batch equal each sample's own batch of removals."""
    images = [Image.new("RGB", IMAGE, colour) for _, colour in BATCH_IMAGES[:2]]  # same size: same token count
    batch = family_adapter.build_inputs(images, BATCH_PROMPTS[:2])
    n = batch.layouts[0].num_tokens
    keep = torch.ones(5, n)
    keep[1, ::2] = 0
    keep[2] = 0
    keep[4, : n // 2] = 0
    owner = torch.tensor([0, 0, 0, 1, 1])
    if not family_adapter.packs_removals:
        with pytest.raises(ValueError, match="keep_rows"):
            family_adapter.generate(batch, 3, image_keep=keep, keep_rows=owner)
        return
    for removal in family_adapter.removals:
        packed = family_adapter.generate(batch, 3, min_new_tokens=3, image_keep=keep, removal=removal, keep_rows=owner)
        for i, (image, prompt) in enumerate(zip(images, BATCH_PROMPTS)):
            own = family_adapter.generate(family_adapter.build_inputs([image], [prompt]), 3, min_new_tokens=3,
                                          image_keep=keep[owner == i], removal=removal)
            got = [g.generated_ids.tolist() for g, o in zip(packed, owner) if o == i]
            assert got == [g.generated_ids.tolist() for g in own], (removal, i)


def test_zero_removal_equals_zeroing_the_image_features(family_adapter):
    """The hook path (families with positions of their own) against embeddings built by hand."""
    inputs = _inputs(family_adapter)
    n = inputs.layout.num_tokens
    keep = torch.ones(1, n)
    keep[0, : n // 2] = 0
    zeroed = family_adapter.lm_input_embeds(inputs).clone()
    zeroed[0, inputs.layout.positions[: n // 2]] = 0
    if family_adapter.family_spec.embeds_suffice:  # encoded once, then generated from embeddings
        got, _ = family_adapter.perturbed_embeds(inputs, keep, "zero")
    else:  # the family's own generate, its language model's input changed by a hook
        captured: list[torch.Tensor] = []
        with family_adapter._on_lm_input(lambda x: captured.append(x) or x):  # noqa: SLF001 - watch the hooked input
            family_adapter.generate(inputs, 1, image_keep=keep)
        got = captured[0]
    torch.testing.assert_close(got, zeroed)


def test_answer_logprobs_equal_teacher_forcing_and_follow_the_removal(family_adapter):
    """The probability curves' score: with nothing removed, the teacher-forced log-probabilities of the answer;
    with half the image removed, those of a forward whose image tokens were zeroed (or dropped)."""
    inputs = _inputs(family_adapter)
    n = inputs.layout.num_tokens
    generation = family_adapter.generate(inputs, 3, min_new_tokens=3)[0]
    positions = inputs.prompt_length - 1 + torch.arange(3)
    logits = family_adapter.teacher_forced(inputs, generation).logits[positions].detach().float()
    expected = torch.log_softmax(logits, -1).gather(-1, generation.generated_ids[:, None].to(logits.device))[:, 0].cpu()
    keep = torch.ones(2, n)
    keep[1, : n // 2] = 0
    for removal in family_adapter.removals:
        got = family_adapter.answer_logprobs(inputs, generation, keep, removal)
        torch.testing.assert_close(got[0], expected, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(got[1], got[0], atol=1e-6), removal


def _two_images_kept_and_removed(adapter: HFVisionLanguageAdapter, removal: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Answer log-probabilities [2, T] for two different images (a red canvas, noise): row 0 every image token kept,
    row 1 every one removed; the answer is the first image's."""
    pixels = np.random.default_rng(1).integers(0, 256, size=(IMAGE[1], IMAGE[0], 3), dtype=np.uint8)
    images = [Image.new("RGB", IMAGE, (200, 30, 30)), Image.fromarray(pixels)]
    inputs = [adapter.build_inputs([image], ["What color is the circle?"]) for image in images]
    generation = adapter.generate(inputs[0], 3, min_new_tokens=3)[0]
    keep = torch.stack([torch.ones(inputs[0].layout.num_tokens), torch.zeros(inputs[0].layout.num_tokens)])
    first, second = (adapter.answer_logprobs(i, generation, keep, removal) for i in inputs)
    return first, second


def test_with_every_image_token_removed_the_answer_no_longer_depends_on_the_image(family_adapter):
    """What the perturbation metric's removals remove is all the image reaches the LM through: with every image
    token of the layout removed, two different images give the same answer log-probabilities (kept: different)."""
    for removal in family_adapter.removals:
        first, second = _two_images_kept_and_removed(family_adapter, removal)
        assert not torch.allclose(first[0], second[0], atol=1e-6), removal  # the image matters while it is there
        torch.testing.assert_close(first[1], second[1], rtol=0, atol=1e-5)


#: families whose vision features also enter the LM after its first layers (DeepStack)
DEEPSTACK = ("qwen3_vl", "qwen3_vl_moe")


@pytest.mark.parametrize("family", DEEPSTACK)
def test_qwen3_vl_deepstack_carries_the_image_past_zeroed_embeddings(family, family_dirs, monkeypatch):
    """Why Qwen3-VL's removal also zeroes the DeepStack features: zeroing the image tokens' input embeddings alone
    (the other families' removal) leaves the answer depending on the image, through the features DeepStack adds
    to the image tokens after the first LM layers. (The tiny model exercises the second route.)"""
    from fastrm_bench.models.families import Family, Qwen3VLFamily

    monkeypatch.setattr(Qwen3VLFamily, "remove_image_tokens", Family.remove_image_tokens)
    adapter = HFVisionLanguageAdapter.from_pretrained(family_dirs[family], device="cpu")
    first, second = _two_images_kept_and_removed(adapter, "zero")
    assert (first[1] - second[1]).abs().max() > 1e-4


@pytest.mark.parametrize("family", DEEPSTACK)
def test_qwen3_vl_removal_zeroes_the_deepstack_features_of_the_removed_tokens(family, family_dirs):
    """Each removed token's DeepStack features are zeroed in every injected layer, the kept ones untouched, row by
    row of a batch of removals (the features are the image tokens of all rows, in row-major order)."""
    adapter = HFVisionLanguageAdapter.from_pretrained(family_dirs[family], device="cpu")
    inputs = _inputs(adapter)
    n = inputs.layout.num_tokens
    keep = torch.ones(2, n)
    keep[0, ::3] = 0
    keep[1, n // 2 :] = 0
    seen: list[list[torch.Tensor]] = []
    with adapter._on_lm_call(lambda kwargs: seen.append(kwargs["deepstack_visual_embeds"])):  # noqa: SLF001
        adapter.generate(inputs, 1, image_keep=torch.ones(2, n))
        adapter.generate(inputs, 1, image_keep=keep)
    (plain, removed) = (step for step in seen if step is not None)
    assert len(plain) == len(adapter.model.config.vision_config.deepstack_visual_indexes) == 2
    for whole, zeroed in zip(plain, removed):
        assert whole.shape == (2 * n, adapter.hidden_size) and whole.abs().amax(dim=-1).gt(0).all()
        torch.testing.assert_close(zeroed, whole * keep.flatten()[:, None], rtol=0, atol=0)


def test_every_method_runs_on_every_family(family_adapter, family_dirs, world_root, tmp_path):
    """`fastrm-bench run --model DIR --task pope --limit 3` for every registered method; fastrm after `distill`."""
    from fastrm_bench.fastrm.distill import DatasetConfig, TrainConfig, build_dataset, train_proxy
    from fastrm_bench.registry import METHODS
    from fastrm_bench.runner import RunConfig, run

    model_dir = str(family_dirs[family_adapter.family])
    data = DatasetConfig(model=model_dir, task="vqav2", data_root=str(world_root), questions=4, shard_size=2, max_new_tokens=3)
    build_dataset(data, tmp_path / "data", log=lambda *_: None)
    proxy = tmp_path / "proxy"
    train_proxy(tmp_path / "data", proxy, TrainConfig(steps=5, batch_size=8, eval_every=5), distilled_from=model_dir,
                log=lambda *_: None)
    specs = tmp_path / "specs" / "methods"
    specs.mkdir(parents=True)
    (specs / "fastrm-here.yaml").write_text(f"name: fastrm-here\nimplementation: fastrm\nparams: {{checkpoint: '{proxy}'}}\n")
    for name in METHODS.names():
        method = "fastrm-here" if name == "fastrm" else name
        out = tmp_path / "runs" / name
        cfg = RunConfig(method=method, task="pope", model=model_dir, limit=3, output_dir=str(out), data_root=str(world_root),
                        max_new_tokens=3, device="cpu", fractions=[0.0, 0.5])  # two points: the curve machinery, cheaply
        os.environ["FASTRM_BENCH_SPEC_PATH"] = str(tmp_path / "specs")
        try:
            result = run(cfg, log=lambda *_: None)
        finally:
            os.environ.pop("FASTRM_BENCH_SPEC_PATH")
        assert result["n"] == 3, name
        records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        assert all(len(r["curves"]["positive"]) == 2 and "layout" in r for r in records), name


def test_gradcam_pools_patches_into_the_tokens_they_feed(family_adapter):
    """The family's patch -> token pooling (Grad-CAM's geometry) equals the model's own dependency structure."""
    assert_pooling_is_the_models_dependencies(family_adapter, _inputs(family_adapter))


def test_dex_ar_tam_and_stale_chefer_on_every_family(family_adapter):
    """The methods beyond the paper on every layout (several groups, non-square grids): a finite map per
    token in the layout's order; DEX-AR's sentence map the same for every token; chefer-stale exact at t = 0."""
    from fastrm_bench.builders import create_method

    pixels = np.random.default_rng(0).integers(0, 256, size=(IMAGE[1], IMAGE[0], 3), dtype=np.uint8)
    inputs = family_adapter.build_inputs([Image.fromarray(pixels)], ["What color is the circle?"])
    generation = family_adapter.generate(inputs, max_new_tokens=3, min_new_tokens=3)[0]
    n = inputs.layout.num_tokens
    maps = {}
    for name in ("dex-ar", "dex-ar-unfiltered", "dex-ar-sentence", "dex-ar-sentence-unfiltered", "tam", "chefer-stale"):
        maps[name] = create_method(name)[0].explain(family_adapter, inputs, generation).maps
        assert maps[name].shape == (3, n) and torch.isfinite(maps[name]).all(), name
    for name in ("dex-ar-sentence", "dex-ar-sentence-unfiltered"):
        assert torch.equal(maps[name], maps[name][:1].expand(3, -1)), name
    # gradients differ from patch to patch on a noise image (TAM's activations may all be negative on random weights)
    assert maps["dex-ar-unfiltered"].amax(dim=1).min() > 0
    exact = Chefer().explain(family_adapter, inputs, generation).maps
    scale = exact[0].abs().max().clamp_min(1e-12)
    assert (maps["chefer-stale"][0] - exact[0]).abs().max() <= 1e-5 * scale

"""Inputs of several images: one layout drawing them side by side, on every family, and the `pairs` task end to end.

A row of `build_inputs` may show several images; its layout takes each image's own layout (the family's, the image
encoded alone) and places it on a canvas where the images stand left to right `SIDE_BY_SIDE_GAP` pixels apart.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fastrm_bench.embedded.tiny_random import FAMILIES, build_tiny_random
from fastrm_bench.explainers.chefer import Chefer, CheferReference
from fastrm_bench.layout import SIDE_BY_SIDE_GAP, side_by_side, side_by_side_image, side_by_side_mask
from fastrm_bench.models.zoo import load_model
from tests.gradcam_pooling import assert_pooling_is_the_models_dependencies

WIDE, TALL = (80, 48), (48, 64)  # PIL sizes (width, height)
QUESTION = "Is the yellow circle in the left image or the right image?"


def test_side_by_side_geometry_by_hand():
    """48x80 and 64x48 (height x width): a 64-high canvas, the second image 80 + 8 px from the left."""
    assert SIDE_BY_SIDE_GAP == 8
    canvas, offsets = side_by_side([(48, 80), (64, 48)])
    assert canvas == (64, 136) and offsets == [0, 88]
    picture = side_by_side_image([Image.new("RGB", WIDE, (255, 0, 0)), Image.new("RGB", TALL, (0, 0, 255))])
    pixels = np.asarray(picture)
    assert picture.size == (136, 64) and tuple(pixels[0, 0]) == (255, 0, 0) and tuple(pixels[63, 100]) == (0, 0, 255)
    assert tuple(pixels[10, 84]) == (255, 255, 255) and tuple(pixels[60, 10]) == (255, 255, 255)  # gap, below the first
    mask = side_by_side_mask([None, np.ones((64, 48), dtype=bool)], [(48, 80), (64, 48)])
    assert mask.sum() == 64 * 48 and mask[:, 88:].all() and not mask[:, :88].any()


@pytest.fixture(scope="module", params=FAMILIES)
def adapter(request, tmp_path_factory):
    folder = build_tiny_random(request.param, tmp_path_factory.mktemp(f"several-{request.param}"), seed=0)
    return load_model(str(folder), device="cpu")


def _pair(seed: int = 0) -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(seed)
    return (Image.fromarray(rng.integers(0, 256, size=(WIDE[1], WIDE[0], 3), dtype=np.uint8)),
            Image.fromarray(rng.integers(0, 256, size=(TALL[1], TALL[0], 3), dtype=np.uint8)))


def test_two_images_make_one_layout_of_both_side_by_side(adapter):
    """Each image's groups are its layout alone, the second's moved 88 px right; the positions are the row's image
    tokens in order (LLaVA-NeXT's and OneVision's newline slots aside), first image first."""
    images = _pair()
    inputs = adapter.build_inputs([images], [QUESTION])
    alone = [adapter.build_inputs([image], [QUESTION]).layout for image in images]
    layout = inputs.layout
    assert layout.image_size == (64, 136)
    expected = [(g.grid, g.region) for g in alone[0].groups] + [
        (g.grid, (g.region[0], g.region[1] + 88, g.region[2], g.region[3] + 88)) for g in alone[1].groups]
    assert [g.grid for g in layout.groups] == [grid for grid, _ in expected]
    for group, (_, region) in zip(layout.groups, expected):
        assert group.region == pytest.approx(region)
    ids = inputs.input_ids[0]
    image_positions = torch.nonzero(ids == adapter.image_token_id).flatten()
    assert torch.all(ids[layout.positions] == adapter.image_token_id)
    assert layout.num_tokens == alone[0].num_tokens + alone[1].num_tokens
    first = layout.positions[: alone[0].num_tokens]
    assert first.max() < layout.positions[alone[0].num_tokens :].min()  # the first image's tokens come first
    assert set(layout.positions.tolist()) <= set(image_positions.tolist())
    assert inputs.images == (images,)


def test_chefer_equals_the_reference_on_two_images(adapter):
    inputs = adapter.build_inputs([_pair()], [QUESTION])
    generation = adapter.generate(inputs, max_new_tokens=3, min_new_tokens=3)[0]
    fast = Chefer(chunk_size=2).explain(adapter, inputs, generation).maps
    reference = CheferReference().explain(adapter, inputs, generation).maps
    assert fast.shape == reference.shape == (3, inputs.layout.num_tokens)
    scale = reference.abs().amax(dim=1).clamp_min(1e-12)
    assert torch.all((fast - reference).abs().amax(dim=1) <= 1e-5 * scale)


def test_removing_every_token_of_both_images_removes_them(adapter):
    """Two different pairs: different answer log-probabilities while kept, the same with every image token removed."""
    inputs = [adapter.build_inputs([_pair(seed)], [QUESTION]) for seed in (0, 1)]
    generation = adapter.generate(inputs[0], 3, min_new_tokens=3)[0]
    n = inputs[0].layout.num_tokens
    keep = torch.stack([torch.ones(n), torch.zeros(n)])
    first, second = (adapter.answer_logprobs(i, generation, keep, "zero") for i in inputs)
    assert not torch.allclose(first[0], second[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(first[1], second[1], rtol=0, atol=1e-5)


def test_vision_side_gradcam_pools_each_image_into_its_own_tokens(adapter):
    """Grad-CAM's pooling of two images (each image's patches pooled as that image alone) is the model's own."""
    assert_pooling_is_the_models_dependencies(adapter, adapter.build_inputs([_pair()], [QUESTION]))


def test_vision_side_gradcam_maps_two_images(adapter):
    from fastrm_bench.explainers.gradcam import GradCAM

    inputs = adapter.build_inputs([_pair()], [QUESTION])
    generation = adapter.generate(inputs, max_new_tokens=2, min_new_tokens=2)[0]
    maps = GradCAM().explain(adapter, inputs, generation).maps
    assert maps.shape == (2, inputs.layout.num_tokens) and torch.isfinite(maps).all() and (maps >= 0).all()


# ---------------------------------------------------------------------------------------------- the pairs task
def test_pairs_task_puts_the_object_on_one_side_and_its_mask_there(world_root):
    from fastrm_bench.builders import create_task

    task = create_task("pairs", data_root=str(world_root))[0]
    records = task.records
    sides = [r.references[0] for r in records]
    assert records and abs(sides.count("left") - sides.count("right")) <= 1
    for record in records[:4]:
        sample = task.sample(record)
        left, right = sample.images
        assert sample.image.size == side_by_side_image(sample.images).size
        offset = left.width + SIDE_BY_SIDE_GAP
        on_left, on_right = sample.mask[:, :offset].any(), sample.mask[:, offset:].any()
        assert (on_left, on_right) == ((True, False) if record.references[0] == "left" else (False, True))
        assert sample.question.startswith("Is the ") and sample.question.endswith(" in the left image or the right image?")
    probe = task.sample(records[0])
    assert task.score(f"the {probe.references[0]} one", probe) == 1.0
    assert task.score("left right" if probe.references[0] == "right" else "right", probe) == 0.0


def test_pairs_runs_end_to_end_with_chefer_fastrm_and_gradcam(world_root, tmp_path):
    """`fastrm-bench run --task pairs` on the shipped model: both images' tokens mapped by each method."""
    from typer.testing import CliRunner

    from fastrm_bench.cli import app

    for method in ("chefer", "fastrm", "gradcam"):
        out = tmp_path / method
        result = CliRunner().invoke(app, ["run", "--method", method, "--task", "pairs", "--limit", "2", "--output-dir",
                                          str(out), "--data-root", str(world_root), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert not (out / "skipped.jsonl").exists() or not (out / "skipped.jsonl").read_text().strip(), method
        records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines() if line.strip()]
        assert len(records) == 2
        for record in records:
            groups = record["layout"]["groups"]
            assert record["layout"]["image_size"][1] > 2 * 64  # two 64 px scenes and the gap
            assert {g["region"][1] >= 64 for g in groups} == {False, True}  # groups on both images


def test_explain_two_images_draws_both_side_by_side(tmp_path):
    """`fastrm-bench explain --image A --image B`: one map over both images, each where the canvas shows it."""
    from typer.testing import CliRunner

    from fastrm_bench import examples
    from fastrm_bench.cli import app

    first, second = examples.path("four-shapes.png"), examples.path("circle-and-triangles.png")
    out = tmp_path / "two"
    result = CliRunner().invoke(app, ["explain", "--image", str(first), "--image", str(second), "--question", QUESTION,
                                      "--method", "chefer", "--out", str(out), "--device", "cpu", "--no-warmup"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "explanation.json").read_text())
    widths = [Image.open(p).width for p in (first, second)]
    assert data["layout"]["image_size"][1] == sum(widths) + SIDE_BY_SIDE_GAP
    lefts = sorted({g["region"][1] for g in data["layout"]["groups"]})
    assert lefts[0] < widths[0] <= lefts[-1]  # groups over the first image and over the second

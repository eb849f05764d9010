"""Variable-size scenes: a build option of the embedded world, with masks in each image's own pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from fastrm_bench.world.build import WorldSizes, build_world, coco_file_name, ensure_world
from fastrm_bench.world.questions import questions_for_scene
from fastrm_bench.world.scenes import ImageSizes, generate_scene, scene_seed, scene_size

VARIABLE_WORLD = {"train": 4, "val": 16, "test": 4, "pope_images": 4}


@pytest.fixture(scope="module")
def variable_root(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("variable") / "shapes-variable", seed=0,
                       sizes=WorldSizes(**VARIABLE_WORLD), image_sizes=ImageSizes())


def test_scene_sizes_are_seeded_and_cover_sizes_and_aspect_ratios():
    sizes = ImageSizes(min_side=48, max_side=96, step=8)
    drawn = [scene_size(scene_seed("val", i), sizes) for i in range(200)]
    assert drawn == [scene_size(scene_seed("val", i), sizes) for i in range(200)]
    assert all(48 <= s <= 96 and s % 8 == 0 for hw in drawn for s in hw)
    assert len(set(drawn)) > 20
    assert any(h > w for h, w in drawn) and any(h < w for h, w in drawn) and any(h == w for h, w in drawn)


@pytest.mark.parametrize("bad", [dict(min_side=0), dict(min_side=96, max_side=48), dict(step=0), dict(step=5)])
def test_bad_image_sizes_are_refused(bad):
    with pytest.raises(ValueError):
        ImageSizes(**bad)


def test_variable_scenes_keep_disjoint_masks_inside_their_own_canvas():
    for i in range(40):
        seed = scene_seed("train", i)
        height, width = scene_size(seed, ImageSizes())
        scene = generate_scene(seed, size=(height, width))
        assert scene.image.shape == (height, width, 3)
        assert 1 <= len(scene.objects) <= 4
        total = np.sum([o.mask for o in scene.objects], axis=0)
        assert total.shape == (height, width) and total.max() == 1
        for obj in scene.objects:
            x, y, w, h = obj.bbox
            assert obj.mask[y : y + h, x : x + w].sum() == obj.mask.sum()
            assert 0.75 * 16 - 1 <= w <= 1.5 * 24 + 1  # object sizes scale with the short side
        rng = np.random.default_rng(0)
        for q in questions_for_scene(scene, rng, ("position",)):  # positions read each axis's own middle
            cx, cy = scene.objects[q.refs[0]].center
            assert q.answer == f"{'top' if cy < height / 2 else 'bottom'} {'left' if cx < width / 2 else 'right'}"


def test_default_scene_is_the_same_with_or_without_the_size_argument():
    for i in range(5):
        plain, sized = generate_scene(i), generate_scene(i, size=(64, 64))
        np.testing.assert_array_equal(plain.image, sized.image)


def test_variable_build_writes_official_files_with_masks_in_image_pixels(variable_root):
    manifest = json.loads((variable_root / "manifest.json").read_text())
    assert manifest["data_source"] == "shapes-variable"
    assert manifest["image_sizes"] == {"min_side": 48, "max_side": 96, "step": 8}
    coco = COCO(str(variable_root / "coco/annotations/instances_val2014.json"))
    shapes = set()
    for index in range(VARIABLE_WORLD["val"]):
        image_id = 200_000 + index
        info = coco.loadImgs([image_id])[0]
        with Image.open(variable_root / "coco/images/val2014" / coco_file_name("val", image_id)) as im:
            assert im.size == (info["width"], info["height"])
        seed = scene_seed("val", index)
        scene = generate_scene(seed, size=scene_size(seed, ImageSizes()))
        assert (info["height"], info["width"]) == scene.image.shape[:2]
        shapes.add((info["height"], info["width"]))
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=[image_id])), key=lambda a: a["id"])
        for ann, obj in zip(anns, scene.objects, strict=True):
            mask = coco.annToMask(ann).astype(bool)
            np.testing.assert_array_equal(mask, obj.mask)
            ys, xs = np.nonzero(obj.mask)  # the box is the mask's own, in the image's pixels
            assert ann["bbox"] == [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)]
    assert len(shapes) > 3
    for name in ("vqav2/v2_OpenEnded_mscoco_val2014_questions.json", "gqa/val_balanced_questions.json",
                 "pope/coco_pope_random.json"):
        assert (variable_root / name).is_file()


def test_ensure_world_tells_variable_and_default_worlds_apart(variable_root, tmp_path):
    sizes = WorldSizes(**VARIABLE_WORLD)
    assert ensure_world(variable_root, 0, sizes, image_sizes=ImageSizes()) == variable_root
    stamp = (variable_root / "manifest.json").stat().st_mtime_ns
    ensure_world(variable_root, 0, sizes, image_sizes=ImageSizes())
    assert (variable_root / "manifest.json").stat().st_mtime_ns == stamp  # found, not rebuilt
    default = ensure_world(tmp_path / "copy", 0, sizes)
    assert json.loads((default / "manifest.json").read_text())["data_source"] == "shapes"
    again = ensure_world(default, 0, sizes, image_sizes=ImageSizes(min_side=56, max_side=72))  # other sizes: rebuilt
    assert json.loads((again / "manifest.json").read_text())["image_sizes"]["min_side"] == 56


def test_build_data_passes_the_options_and_names_variant_folders(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import fastrm_bench.world.build as build
    from fastrm_bench.cli import app

    calls = []
    monkeypatch.setattr(build, "build_world", lambda root, seed, sizes, **kw: calls.append((root, kw)) or root)
    assert CliRunner().invoke(app, ["build-data", "--variable-sizes", "--captions"]).exit_code == 0
    assert CliRunner().invoke(app, ["build-data", "--out", str(tmp_path), "--captions"]).exit_code == 0
    assert CliRunner().invoke(app, ["build-data"]).exit_code == 0
    assert calls == [(build.default_data_root(0, "variable-describe"), {"image_sizes": ImageSizes(), "captions": True}),
                     (tmp_path, {"image_sizes": None, "captions": True}),
                     (build.default_data_root(0), {"image_sizes": None, "captions": False})]

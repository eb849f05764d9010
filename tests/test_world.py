"""The embedded world: deterministic, official formats that pycocotools reads, exact masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from fastrm_bench.world.build import WorldSizes, build_world, coco_file_name
from fastrm_bench.world.questions import QUESTION_TYPES, questions_for_scene
from fastrm_bench.world.scenes import COLOR_NAMES, SHAPES, generate_scene, scene_seed

from .conftest import SMALL_WORLD


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(world_root, tmp_path):
    again = build_world(tmp_path / "again", seed=0, sizes=WorldSizes(**SMALL_WORLD))
    first, second = _files(world_root), _files(again)
    assert first.keys() == second.keys() and len(first) > 100
    assert all(first[k] == second[k] for k in first)
    other = build_world(tmp_path / "other", seed=1, sizes=WorldSizes(**SMALL_WORLD))
    assert _files(other)["coco/annotations/instances_val2014.json"] != first["coco/annotations/instances_val2014.json"]


def test_coco_file_loads_and_masks_decode_to_the_generator_masks(world_root):
    coco = COCO(str(world_root / "coco/annotations/instances_val2014.json"))
    assert len(coco.getCatIds()) == len(COLOR_NAMES) * len(SHAPES)
    for index in range(5):
        image_id = 200_000 + index
        scene = generate_scene(scene_seed("val", index, 0))
        assert coco.loadImgs([image_id])[0]["file_name"] == coco_file_name("val", image_id)
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=[image_id])), key=lambda a: a["id"])
        assert len(anns) == len(scene.objects)
        for ann, obj in zip(anns, scene.objects):
            assert coco.loadCats([ann["category_id"]])[0]["name"] == obj.category
            np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), obj.mask)


def test_scenes_have_distinct_categories_and_disjoint_masks():
    for seed in range(50):
        scene = generate_scene(seed)
        cats = [o.category for o in scene.objects]
        assert 2 <= len(cats) <= 4 and len(set(cats)) == len(cats)
        total = np.sum([o.mask for o in scene.objects], axis=0)
        assert total.max() == 1
        for obj in scene.objects:  # the object's pixels carry its colour, not background grey
            r, g, b = scene.image[obj.mask].mean(axis=0)
            assert max(r, g, b) - min(r, g, b) > 60


def test_questions_reference_the_objects_that_determine_the_answer():
    rng = np.random.default_rng(0)
    seen = set()
    for seed in range(200):
        scene = generate_scene(seed)
        for q in questions_for_scene(scene, rng):
            seen.add(q.qtype)
            if q.qtype == "color":
                assert scene.objects[q.refs[0]].color == q.answer
            elif q.qtype == "shape":
                assert scene.objects[q.refs[0]].shape == q.answer
            elif q.qtype == "count":
                assert int(q.answer) == len(q.refs)
            elif q.qtype == "exist":
                assert (q.answer == "yes") == bool(q.refs)
            elif q.qtype == "relate_color":
                target, anchor = (scene.objects[i] for i in q.refs)
                assert target.color == q.answer and anchor.category in q.question
    assert seen == set(QUESTION_TYPES)


def test_vqa_and_gqa_files_follow_the_official_keys(world_root):
    questions = json.loads((world_root / "vqav2/v2_OpenEnded_mscoco_val2014_questions.json").read_text())
    annotations = json.loads((world_root / "vqav2/v2_mscoco_val2014_annotations.json").read_text())
    assert set(questions["questions"][0]) == {"image_id", "question", "question_id"}
    ann = annotations["annotations"][0]
    assert {"question_id", "image_id", "question_type", "answer_type", "multiple_choice_answer", "answers"} <= set(ann)
    assert len(ann["answers"]) == 10 and set(ann["answers"][0]) == {"answer", "answer_confidence", "answer_id"}
    gqa = json.loads((world_root / "gqa/val_balanced_questions.json").read_text())
    qid, value = next(iter(gqa.items()))
    assert {"imageId", "question", "answer", "fullAnswer", "isBalanced", "types", "annotations", "semantic"} <= set(value)
    assert (world_root / "gqa/images" / f"{value['imageId']}.jpg").is_file()


#: SHA-256 of every file but the JPEGs of the SMALL_WORLD build (seed 0), and of its scenes' pixels and masks:
#: build options (variable sizes, captions) must leave the default build as it was. The JPEGs are checked
#: against their scenes instead (their bytes depend on the installed libjpeg, not on this code).
DEFAULT_BUILD_FILES_SHA256 = "76873e754f17e2c7133bde3eedbba03556d19d9f0d7f847d48d29df6dfa96af5"
DEFAULT_BUILD_SCENES_SHA256 = "148d346e886fb9548615365c0782a422134fdcd714de832c9dacd115a2b5e53b"


def test_default_build_is_unchanged(world_root):
    import hashlib

    from fastrm_bench.world.scenes import jpeg_bytes

    manifest = json.loads((world_root / "manifest.json").read_text())
    assert manifest == {"world": "shapes-v1", "seed": 0, "sizes": SMALL_WORLD, "data_source": "shapes",
                        "counterfactual": "counterfactual"}
    files = hashlib.sha256()
    for p in sorted(world_root.rglob("*")):
        if p.is_file() and p.suffix != ".jpg" and "counterfactual" not in p.name:  # the split added since, beside
            files.update(str(p.relative_to(world_root)).encode())
            if p.name == "manifest.json":  # as it was before the counterfactual split was recorded in it
                manifest.pop("counterfactual")
                files.update(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
            else:
                files.update(p.read_bytes())
    assert files.hexdigest() == DEFAULT_BUILD_FILES_SHA256
    scenes = hashlib.sha256()
    for split, base in (("train", 100_000), ("val", 200_000), ("test", 300_000)):
        for i in range(SMALL_WORLD[split]):
            scene = generate_scene(scene_seed(split, i, 0))
            scenes.update(scene.image.tobytes())
            for obj in scene.objects:
                scenes.update(obj.mask.tobytes())
            jpeg = world_root / "coco" / "images" / f"{split}2014" / coco_file_name(split, base + i)
            assert jpeg.read_bytes() == jpeg_bytes(scene.image)
    assert scenes.hexdigest() == DEFAULT_BUILD_SCENES_SHA256
    assert not list(world_root.rglob("captions_*"))

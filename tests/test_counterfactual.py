"""The counterfactual split: each val scene minus one object, the rest identical, and questions about the removed one."""

from __future__ import annotations

import json

import numpy as np

from fastrm_bench.builders import create_task
from fastrm_bench.world.counterfactual import IMAGE_ID_BASE, counterfactual_scenes, remove_object
from fastrm_bench.world.scenes import SceneConfig, generate_scene, scene_seed


def test_removing_an_object_redraws_only_its_pixels_as_background():
    scene = generate_scene(scene_seed("val", 3, 0))
    assert len(scene.objects) >= 2
    gone = scene.objects[0]
    after = remove_object(scene, 0, np.random.default_rng(0))
    assert [o.category for o in after.objects] == [o.category for o in scene.objects[1:]]
    changed = (after.image != scene.image).any(axis=-1)
    assert not changed[~gone.mask].any() and changed[gone.mask].mean() > 0.9
    covered = np.logical_or.reduce([o.mask for o in scene.objects])
    background = scene.image[~covered].astype(float)
    redrawn = after.image[gone.mask].astype(float)
    # the object's colour is gone: its pixels now sit where the background's do, per channel
    assert np.abs(redrawn.mean(0) - background.mean(0)).max() < 3 * background.std(0).max() / np.sqrt(gone.mask.sum()) + 2
    assert np.abs(scene.image[gone.mask].astype(float).mean(0) - background.mean(0)).max() > 20


def test_every_counterfactual_is_its_val_scene_minus_the_named_object():
    for image_id, scene, removed in counterfactual_scenes(20, 0, SceneConfig(), None):
        original = generate_scene(scene_seed("val", image_id - IMAGE_ID_BASE, 0))
        names = [o.category for o in original.objects]
        assert removed in names and sorted([*[o.category for o in scene.objects], removed]) == sorted(names)


def test_the_counterfactual_tasks_ask_about_the_removed_object(world_root):
    vqa = create_task("vqav2-counterfactual", data_root=str(world_root))[0]
    pope = create_task("pope-counterfactual", data_root=str(world_root))[0]
    instances = json.loads((world_root / "coco/annotations/instances_counterfactual2014.json").read_text())
    present = {}
    for ann in instances["annotations"]:
        present.setdefault(ann["image_id"], set()).add(ann["category_id"])
    names = {c["id"]: c["name"] for c in instances["categories"]}
    probes = [s for s in vqa.samples() if s.references[0] == "no" and s.question.startswith("Is there")]
    assert len(probes) >= len(present) * 0.9  # one probe per image (and the usual exist questions)
    samples = list(pope.samples())
    assert len(samples) == 2 * len(present) and {s.references[0] for s in samples} == {"yes", "no"}
    image_ids = {image["file_name"]: image["id"] for image in instances["images"]}
    lines = [json.loads(x) for x in (world_root / "pope/coco_pope_counterfactual.json").read_text().splitlines()]
    for line in lines:  # yes: an object of the scene; no: the one removed from it (of the val scene, not of this one)
        asked = line["text"].split("Is there a ")[1].split(" in the image")[0]
        assert (asked in {names[c] for c in present[image_ids[line["image"]]]}) == (line["label"] == "yes")
    assert len(list(create_task("gqa-counterfactual", data_root=str(world_root))[0].samples())) > 0

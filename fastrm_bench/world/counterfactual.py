"""Counterfactual scenes: each validation scene again with one of its objects removed, the rest identical.

A model that names an object which is no longer there hallucinates it, and the scenes make such errors
likely where it matters: the removed object co-occurred with every other object of its scene (the POPE
"adversarial" idea, taken to the single image), and the questions ask about it.

The ``counterfactual`` split of every world build (the same official layouts, ``{split}`` = counterfactual)::

    coco/images/counterfactual2014/...            the val scenes minus one object each (same seeds)
    coco/annotations/instances_counterfactual2014.json   captions_counterfactual2014.json (with ``captions``)
    vqav2/..._counterfactual2014_...json          "Is there a <removed>?" (answer no), then the usual questions
    gqa/counterfactual_balanced_questions.json    the usual relational questions of the new scene
    pope/coco_pope_counterfactual.json            per image: a present object (yes) and the removed one (no)

The removed object's pixels are redrawn as background: the background's own per-channel mean and spread
(read from the pixels no object covers), so nothing outlines where the object was; no other pixel changes.
The task specs ``vqav2-counterfactual``, ``gqa-counterfactual``, ``pope-counterfactual`` and
``describe-counterfactual`` run on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fastrm_bench.tasks.pope_builder import QUESTION_TEMPLATE
from fastrm_bench.world import formats
from fastrm_bench.world.questions import Question, questions_for_scene
from fastrm_bench.world.scenes import ImageSizes, Scene, SceneConfig, generate_scene, jpeg_bytes, scene_seed, scene_size

SPLIT = "counterfactual"
IMAGE_ID_BASE = 400_000
#: scenes keep at least this many objects after the removal (a scene of one object left is still a scene)
MIN_LEFT = 1


def remove_object(scene: Scene, index: int, rng: np.random.Generator) -> Scene:
    """``scene`` without object ``index``: its pixels redrawn from the background's per-channel mean and spread."""
    covered = np.logical_or.reduce([o.mask for o in scene.objects])
    background = scene.image[~covered].astype(np.float64)
    mean, spread = background.mean(axis=0), background.std(axis=0)
    image = scene.image.astype(np.float64)
    mask = scene.objects[index].mask
    image[mask] = rng.normal(mean, spread, size=(int(mask.sum()), 3))
    objects = [o for k, o in enumerate(scene.objects) if k != index]
    return Scene(image=np.clip(image, 0, 255).astype(np.uint8), objects=objects)


def removed_probe(category: str) -> Question:
    """The question about the removed object: the answer is no, a model answering yes hallucinates it."""
    return Question("exist", "vqa", f"Is there a {category}?", "no", ())


def counterfactual_scenes(n: int, seed: int, scene_config: SceneConfig, image_sizes: ImageSizes | None
                          ) -> list[tuple[int, Scene, str]]:
    """(image id, counterfactual scene, removed category) for each of the first ``n`` val scenes that keeps an object."""
    rng = np.random.default_rng([seed, 99])
    out = []
    for i in range(n):
        seed_i = scene_seed("val", i, seed)
        scene = generate_scene(seed_i, scene_config, scene_size(seed_i, image_sizes) if image_sizes else None)
        if len(scene.objects) <= MIN_LEFT:
            continue
        k = int(rng.integers(len(scene.objects)))
        out.append((IMAGE_ID_BASE + i, remove_object(scene, k, rng), scene.objects[k].category))
    return out


def write_counterfactual_split(root: Path, n: int, seed: int, scene_config: SceneConfig = SceneConfig(),
                               image_sizes: ImageSizes | None = None, captions: bool = False) -> int:
    """Write the counterfactual split under ``root`` (see the module); returns its number of images."""
    rng = np.random.default_rng([seed, 98])
    image_dir = root / "coco" / "images" / f"{SPLIT}2014"
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / "gqa" / "images").mkdir(parents=True, exist_ok=True)
    images, vqa_questions, vqa_annotations, gqa, pope = [], [], [], {}, []
    for image_id, scene, removed in counterfactual_scenes(n, seed, scene_config, image_sizes):
        data, file_name = jpeg_bytes(scene.image), formats.coco_file_name(SPLIT, image_id)
        (image_dir / file_name).write_bytes(data)
        (root / "gqa" / "images" / f"s{image_id}.jpg").write_bytes(data)
        images.append((image_id, file_name, scene))
        asked = [removed_probe(removed), *questions_for_scene(scene, rng, formats.VQA_TYPES)]
        qs, anns = formats.vqa_records(image_id, asked, image_id * 100)
        vqa_questions += qs
        vqa_annotations += anns
        for j, q in enumerate(questions_for_scene(scene, rng, formats.GQA_TYPES)):
            gqa[str(image_id * 100 + 50 + j)] = formats.gqa_record(f"s{image_id}", image_id, q)
        present = int(rng.integers(len(scene.objects)))
        for text, label, refs in ((scene.objects[present].category, "yes", [formats.annotation_id(image_id, present)]),
                                  (removed, "no", [])):
            pope.append({"question_id": len(pope) + 1, "image": file_name, "text": QUESTION_TEMPLATE.format(text),
                         "label": label, "object_ids": refs})
    common = {"data_subtype": f"{SPLIT}2014", "license": {}, "info": {"description": "counterfactual scenes"}}
    formats.write_json(root / "coco" / "annotations" / f"instances_{SPLIT}2014.json", formats.coco_instances(images))
    formats.write_json(root / "vqav2" / f"v2_OpenEnded_mscoco_{SPLIT}2014_questions.json",
                       {**common, "task_type": "Open-Ended", "data_type": "mscoco", "questions": vqa_questions})
    formats.write_json(root / "vqav2" / f"v2_mscoco_{SPLIT}2014_annotations.json",
                       {**common, "data_type": "mscoco", "annotations": vqa_annotations})
    formats.write_json(root / "gqa" / f"{SPLIT}_balanced_questions.json", gqa)
    (root / "pope").mkdir(parents=True, exist_ok=True)
    (root / "pope" / f"coco_pope_{SPLIT}.json").write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in pope))
    if captions:
        formats.write_json(root / "coco" / "annotations" / f"captions_{SPLIT}2014.json", formats.coco_captions(images))
    return len(images)

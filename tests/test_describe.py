"""The describe task: captions that name the objects left to right, each word with its object's id and mask."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastrm_bench.builders import create_task
from fastrm_bench.data_errors import UnparsableRecordError
from fastrm_bench.tasks.answers import describe_object_score, describe_score
from fastrm_bench.world.build import WorldSizes, build_world, default_data_root
from fastrm_bench.world.captions import DESCRIBE_QUESTION, describe_scene, split_words
from fastrm_bench.world.formats import annotation_id
from fastrm_bench.world.scenes import COLORS, Scene, SceneObject, generate_scene, scene_seed

CAPTION_WORLD = {"train": 4, "val": 30, "test": 4, "pope_images": 4}


@pytest.fixture(scope="module")
def caption_root(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("captions") / "shapes", seed=0, sizes=WorldSizes(**CAPTION_WORLD),
                       captions=True)


def _object(color: str, shape: str, x: int, width: int = 64) -> SceneObject:
    mask = np.zeros((64, width), dtype=bool)
    mask[10:20, x : x + 10] = True
    return SceneObject(color, shape, (x, 10, 10, 10), mask)


def test_caption_names_objects_left_to_right_word_by_word():
    scene = Scene(np.zeros((64, 64, 3), np.uint8), [_object("blue", "square", 40), _object("red", "circle", 5),
                                                     _object("green", "triangle", 22)])
    caption = describe_scene(scene)
    assert caption.text == "a red circle, a green triangle, a blue square"  # centres x 9.5, 26.5, 44.5
    assert caption.words == ("a", "red", "circle", ",", "a", "green", "triangle", ",", "a", "blue", "square")
    assert caption.objects == (None, 1, 1, None, None, 2, 2, None, None, 0, 0)
    assert split_words(caption.text) == list(caption.words)
    # one object is no order; two centres 1 px apart (one above the other) have none either
    assert describe_scene(Scene(scene.image, scene.objects[:1])) is None
    assert describe_scene(Scene(scene.image, [_object("red", "circle", 5), _object("blue", "square", 6)])) is None


def test_caption_text_is_what_the_shipped_tokenizer_decodes_its_words_to():
    from transformers import AutoTokenizer

    from fastrm_bench.models.zoo import CHECKPOINTS

    tokenizer = AutoTokenizer.from_pretrained(CHECKPOINTS / "tiny-llava-shapes")
    for i in range(30):
        caption = describe_scene(generate_scene(scene_seed("val", i)))
        if caption is None:
            continue
        ids = tokenizer(caption.text, add_special_tokens=False).input_ids
        assert tokenizer.unk_token_id not in ids and len(ids) == len(caption.words) and 5 <= len(ids) <= 20
        assert [tokenizer.decode([i]) for i in ids] == list(caption.words)
        assert tokenizer.decode(ids) == caption.text


def test_captions_file_is_coco_captions_with_object_ids_per_word(caption_root):
    data = json.loads((caption_root / "coco/annotations/captions_val2014.json").read_text())
    instances = json.loads((caption_root / "coco/annotations/instances_val2014.json").read_text())
    assert [i["id"] for i in data["images"]] == [i["id"] for i in instances["images"]]
    objects = {a["id"]: a for a in instances["annotations"]}
    categories = {c["id"]: c["name"] for c in instances["categories"]}
    assert len(data["annotations"]) >= len(data["images"]) // 2
    for ann in data["annotations"]:
        assert {"image_id", "id", "caption", "tokens"} == set(ann)
        assert [t["word"] for t in ann["tokens"]] == split_words(ann["caption"])
        named = [t for t in ann["tokens"] if t["object_id"] is not None]
        assert all(t["word"] in ("a", ",") for t in ann["tokens"] if t["object_id"] is None)
        for t in named:  # every content word is its object's colour or shape, an object of the same image
            assert objects[t["object_id"]]["image_id"] == ann["image_id"]
            assert t["word"] in categories[objects[t["object_id"]]["category_id"]].split()
        centres = []
        for object_id in dict.fromkeys(t["object_id"] for t in named):
            x, _, w, _ = objects[object_id]["bbox"]
            centres.append(x + w / 2)
        assert centres == sorted(centres)
    manifest = json.loads((caption_root / "manifest.json").read_text())
    assert manifest["captions"] is True and manifest["data_source"] == "shapes"


def test_describe_task_samples_carry_words_object_ids_and_masks(caption_root):
    task, spec = create_task("describe", data_root=str(caption_root))
    assert spec.params["split"] == "val" and task.prompt_suffix == ""
    samples = list(task.samples(limit=5))
    assert len(samples) == 5
    for sample in samples:
        assert sample.question == DESCRIBE_QUESTION and task.prompt(sample) == DESCRIBE_QUESTION
        meta = sample.meta
        assert meta["words"] == split_words(sample.references[0])
        assert len(meta["token_objects"]) == len(meta["words"])
        ids = {o for o in meta["token_objects"] if o is not None}
        assert set(sample.object_masks) == ids and len(ids) >= 2
        height, width = sample.image.size[1], sample.image.size[0]
        union = np.zeros((height, width), bool)
        pixels = np.asarray(sample.image, dtype=float)
        for object_id, mask in sample.object_masks.items():
            assert mask.shape == (height, width) and mask.any()
            named = {w for w, o in zip(meta["words"], meta["token_objects"]) if o == object_id}
            mean = pixels[mask].mean(axis=0)  # the mask covers the object its words name: its colour is there
            nearest = min(COLORS, key=lambda c: np.abs(mean - np.array(COLORS[c])).sum())
            assert nearest in named and len(named) == 2
            assert not (union & mask).any()
            union |= mask
        np.testing.assert_array_equal(sample.mask, union)
        assert task.score(sample.references[0], sample) == 1.0
        assert ids <= {annotation_id(meta["image_id"], k) for k in range(4)}  # the instances file's ids


def test_describe_scores_whole_and_by_object():
    reference = "a red circle, a blue square, a green triangle"
    assert describe_score("A red circle, a blue square, a green triangle.", reference) == 1.0
    assert describe_score("a red circle, a green triangle, a blue square", reference) == 0.0
    assert describe_object_score("a red circle, a green triangle, a blue square", reference) == pytest.approx(1 / 3)
    assert describe_object_score("a red circle, a blue square", reference) == pytest.approx(2 / 3)
    assert describe_object_score("a red circle, a blue square, a green triangle, a red square", reference) == 0.75
    assert describe_object_score("", reference) == 0.0
    assert describe_score("a red circle, a blue cube", reference, "objects") == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="unknown describe scoring"):
        describe_score("x", reference, "fuzzy")


def test_describe_aggregate_adds_object_accuracy(caption_root):
    task, _ = create_task("describe", data_root=str(caption_root))
    reference = "a red circle, a blue square"
    records = [{"score": 1.0, "prediction": reference, "reference": reference, "meta": {"type": "describe"}},
               {"score": 0.0, "prediction": "a red circle", "reference": reference, "meta": {"type": "describe"}}]
    out = task.aggregate(records)
    assert out["accuracy"] == 0.5 and out["object_accuracy"] == pytest.approx(0.75)
    assert task.higher_is_better("object_accuracy") is True


def test_bad_caption_entries_are_reported_per_sample(caption_root, tmp_path):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(caption_root, root)
    path = root / "coco/annotations/captions_val2014.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["tokens"] = data["annotations"][0]["tokens"][1:]  # words no longer the caption's
    data["annotations"][1]["tokens"][1]["object_id"] = 999  # an object the instances file does not have
    path.write_text(json.dumps(data))
    task, _ = create_task("describe", data_root=str(root))
    with pytest.raises(UnparsableRecordError, match="not the caption's words"):
        task.sample(task.records[0])
    with pytest.raises(UnparsableRecordError, match=r"objects \[999\]"):
        task.sample(task.records[1])
    assert task.sample(task.records[2]).object_masks


def test_describe_task_without_a_data_root_builds_its_own_world(monkeypatch, caption_root):
    import fastrm_bench.world.build as build

    calls = []
    monkeypatch.setattr(build, "ensure_world", lambda root, **kw: calls.append((root, kw)) or caption_root)
    task, _ = create_task("describe")
    assert calls == [(default_data_root(0, "describe"), {"captions": True})]
    assert task.uses_embedded_world and task.data_root == caption_root

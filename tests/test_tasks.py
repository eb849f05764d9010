"""Task scoring against hand-computed values, and the POPE builder's three strategies."""

from __future__ import annotations

import json

import pytest

from fastrm_bench.builders import create_task
from fastrm_bench.tasks.answers import gqa_exact_match, normalize_vqa_answer, parse_pope_answer, vqa_soft_accuracy
from fastrm_bench.tasks.pope import pope_metrics
from fastrm_bench.tasks.pope_builder import build_pope_files


@pytest.mark.parametrize(
    "raw,normalised",
    [("Two.", "2"), ("a circle", "circle"), ("The Red", "red"), ("dont", "don't"), ("yes!", "yes"), ("three", "3"),
     ("top-left", "top left"), ("1,000", "1000")],
)
def test_vqa_normalisation(raw, normalised):
    assert normalize_vqa_answer(raw) == normalised


def test_vqa_soft_accuracy_by_hand():
    # the official evaluator compares raw strings when all ten humans agree; lmms-eval normalises always
    assert vqa_soft_accuracy("Two.", ["2"] * 10) == 0.0
    assert vqa_soft_accuracy("Two.", ["2"] * 10, "always") == 1.0
    assert vqa_soft_accuracy("Two.", ["2"] * 9 + ["3"]) == 1.0
    # 2 of 10 humans said red: holding out a "red" leaves 1 match (1/3), holding out a "blue" leaves 2 (2/3)
    assert vqa_soft_accuracy("red", ["red"] * 2 + ["blue"] * 8) == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)
    assert vqa_soft_accuracy("the circle", ["circle"] * 3 + ["square"] * 7) == pytest.approx((3 * (2 / 3) + 7 * 1) / 10)
    assert vqa_soft_accuracy("green", ["red"] * 10) == 0.0


def test_gqa_exact_match_by_hand():
    assert gqa_exact_match("Red.", "red") == 1.0
    assert gqa_exact_match("the red", "red") == 0.0  # GQA does not drop articles
    assert gqa_exact_match("a red circle", "red") == 0.0
    assert gqa_exact_match("Red.", "red", "exact") == 0.0  # the official eval.py: predicted == gold
    assert gqa_exact_match("red", "red", "exact") == 1.0


@pytest.mark.parametrize(
    "text,parsed",
    [("Yes.", "yes"), ("yes", "yes"), ("No, there is not.", "no"), ("There is no red circle", "no"), ("not sure", "no"),
     ("Yes. There is no doubt.", "yes"), ("I cannot tell", "yes"), ("NO", "yes")],
)
def test_pope_parsing_matches_the_reference(text, parsed):
    # "I cannot tell" and "NO" count as yes: the reference evaluator looks for "No"/"not"/"no" only
    assert parse_pope_answer(text) == parsed


def test_pope_metrics_by_hand():
    m = pope_metrics(["Yes.", "no", "Yes", "I cannot tell"], ["yes", "no", "no", "no"])
    # parsed: yes, no, yes, yes -> TP 1, FP 2, TN 1, FN 0
    assert m == pytest.approx({"accuracy": 0.5, "precision": 1 / 3, "recall": 1.0, "f1": 0.5, "yes_ratio": 0.75})


def _coco(images_categories: dict[int, list[int]], n_categories: int) -> dict:
    images, anns = [], []
    for image_id, cats in images_categories.items():
        images.append({"id": image_id, "file_name": f"img{image_id}.jpg", "width": 10, "height": 10})
        for c in cats:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": c, "bbox": [0, 0, 2, 2], "area": 4,
                         "iscrowd": 0})
    return {"images": images, "annotations": anns,
            "categories": [{"id": c, "name": "ABCDEF"[c - 1], "supercategory": "x"} for c in range(1, n_categories + 1)]}


def test_pope_builder_strategies_on_a_hand_checked_case(tmp_path):
    # A=1 ... F=6. Only image 1 has 3 categories (A, B, C); absent there: D, E, F.
    # Frequency: A 3, E 4, D 2, F 1 -> popular negatives E, D, F.
    # Co-occurrence: A with D twice -> D; B with E once -> E; C: E and D used -> F.
    layout = {1: [1, 2, 3], 2: [1, 4], 3: [1, 4], 4: [2, 5], 5: [3, 5], 6: [6], 7: [5], 8: [5]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(_coco(layout, 6)))
    build_pope_files(path, tmp_path / "pope", seed=0)
    lines = {s: [json.loads(x) for x in (tmp_path / "pope" / f"coco_pope_{s}.json").read_text().splitlines()]
             for s in ("random", "popular", "adversarial")}
    yes = [q["text"] for q in lines["popular"] if q["label"] == "yes"]
    assert yes == ["Is there a A in the image?", "Is there a B in the image?", "Is there a C in the image?"]
    negatives = {s: [q["text"].split()[3] for q in qs if q["label"] == "no"] for s, qs in lines.items()}
    assert negatives["popular"] == ["E", "D", "F"]
    assert negatives["adversarial"] == ["D", "E", "F"]
    assert sorted(negatives["random"]) == ["D", "E", "F"]


def test_pope_files_of_the_embedded_world_are_balanced(world_root):
    from pycocotools.coco import COCO

    coco = COCO(str(world_root / "coco/annotations/instances_val2014.json"))
    by_file = {img["file_name"]: img["id"] for img in coco.dataset["images"]}
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    for strategy in ("random", "popular", "adversarial"):
        lines = [json.loads(x) for x in (world_root / "pope" / f"coco_pope_{strategy}.json").read_text().splitlines()]
        assert len(lines) == 2 * 3 * 10  # 10 images x 3 objects x (yes + no)
        assert sum(q["label"] == "yes" for q in lines) == len(lines) // 2
        for q in lines:
            present = {names[a["category_id"]] for a in coco.loadAnns(coco.getAnnIds(imgIds=[by_file[q["image"]]]))}
            asked = q["text"][len("Is there a ") : -len(" in the image?")]
            assert (asked in present) == (q["label"] == "yes")


def test_tasks_read_the_embedded_world_with_masks(world_root):
    for name in ("vqav2", "gqa", "pope-adversarial"):
        task, spec = create_task(name, data_root=str(world_root))
        samples = list(task.samples(limit=5, seed=1))
        assert len(samples) == 5 and task.data_source == "shapes"
        assert [s.id for s in samples] == [s.id for s in task.samples(limit=5, seed=1)]  # seeded subsample
        assert any(s.mask is not None and s.mask.any() for s in samples)
        for s in samples:
            assert s.image.size == (64, 64) and s.references


def test_missing_image_and_malformed_line_are_reported(world_root, tmp_path):
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(world_root, root)
    pope = root / "pope" / "coco_pope_random.json"
    lines = pope.read_text().splitlines()
    pope.write_text("\n".join(lines[:3] + ["{not json"] + lines[3:]) + "\n")
    task, _ = create_task("pope-random", data_root=str(root))
    with pytest.raises(ValueError, match=r"coco_pope_random.json:4: malformed JSON"):
        list(task.samples())
    task, _ = create_task("vqav2", data_root=str(root))
    first = task.records[0]
    first.image.unlink()
    with pytest.raises(FileNotFoundError, match=f"question {first.id} is missing"):
        list(task.samples())

"""Writers of the official dataset formats (shared SPEC section 5) for the embedded world.

The task loaders read these files through the same code path as the real COCO / VQAv2 / GQA
/ POPE files. Extra keys (``referenced_ann_ids``, ``embedded_type``) carry the ids of the
objects each question is about; official readers ignore them. Describe captions are written as
COCO captions files; their extra key ``tokens`` gives each word of the caption and the COCO
annotation id of the object it names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from fastrm_bench.world.captions import describe_scene
from fastrm_bench.world.questions import Question
from fastrm_bench.world.scenes import CATEGORIES, Scene

VQA_ANSWER_TYPES = {"count": "number", "exist": "yes/no"}
#: the question types of each official format the world writes
VQA_TYPES = ("color", "shape", "count", "exist", "position")
GQA_TYPES = ("relate_color", "relate_shape", "relate_verify")


def coco_file_name(split: str, image_id: int) -> str:
    """An image's COCO file name (``COCO_val2014_000000200001.jpg``)."""
    return f"COCO_{split}2014_{image_id:012d}.jpg"


def write_json(path: Path, data: Any) -> None:
    """Deterministic JSON (sorted keys, no spaces) so equal data gives byte-identical files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")))


def coco_category_id(category: str) -> int:
    return CATEGORIES.index(category) + 1


def annotation_id(image_id: int, object_index: int) -> int:
    return image_id * 10 + object_index + 1


def caption_id(image_id: int) -> int:
    """The id of an image's describe caption (``image_id * 10``: no object annotation id has a last digit 0)."""
    return image_id * 10


def coco_captions(images: list[tuple[int, str, Scene]]) -> dict[str, Any]:
    """COCO captions JSON of the describe captions; scenes without one (`describe_scene`) have no annotation.

    Each annotation adds ``tokens``: ``[{"word", "object_id"}]`` in the caption's word order, ``object_id``
    the COCO annotation id (instances file) of the object the word names, null for "a" and ",".
    """
    out_images, annotations = [], []
    for image_id, file_name, scene in images:
        h, w = scene.image.shape[:2]
        out_images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        caption = describe_scene(scene)
        if caption is None:
            continue
        tokens = [{"word": word, "object_id": None if k is None else annotation_id(image_id, k)}
                  for word, k in zip(caption.words, caption.objects)]
        annotations.append({"image_id": image_id, "id": caption_id(image_id), "caption": caption.text, "tokens": tokens})
    return {
        "info": {"description": "fastrm-bench embedded world: describe captions (objects from left to right)",
                 "version": "1"},
        "licenses": [],
        "images": out_images,
        "annotations": annotations,
    }


def coco_instances(images: list[tuple[int, str, Scene]]) -> dict[str, Any]:
    """COCO instances JSON: categories, boxes, RLE segmentations (pycocotools)."""
    out_images, annotations = [], []
    for image_id, file_name, scene in images:
        h, w = scene.image.shape[:2]
        out_images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        for k, obj in enumerate(scene.objects):
            rle = mask_utils.encode(np.asfortranarray(obj.mask.astype(np.uint8)))
            annotations.append(
                {
                    "id": annotation_id(image_id, k),
                    "image_id": image_id,
                    "category_id": coco_category_id(obj.category),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "area": float(mask_utils.area(rle)),
                    "iscrowd": 0,
                    "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
                }
            )
    categories = [
        {"id": coco_category_id(c), "name": c, "supercategory": c.split(" ")[1]} for c in CATEGORIES
    ]
    return {
        "info": {"description": "fastrm-bench embedded world (synthetic shapes)", "version": "1"},
        "licenses": [],
        "images": out_images,
        "annotations": annotations,
        "categories": categories,
    }


def vqa_records(image_id: int, questions: list[Question], first_qid: int) -> tuple[list[dict], list[dict]]:
    """VQAv2 question and annotation records (10 identical human answers per question)."""
    qs, anns = [], []
    for j, q in enumerate(questions):
        qid = first_qid + j
        qs.append({"image_id": image_id, "question": q.question, "question_id": qid})
        anns.append(
            {
                "question_id": qid,
                "image_id": image_id,
                "question_type": " ".join(q.question.lower().split()[:3]),
                "answer_type": VQA_ANSWER_TYPES.get(q.qtype, "other"),
                "multiple_choice_answer": q.answer,
                "answers": [{"answer": q.answer, "answer_confidence": "yes", "answer_id": k + 1} for k in range(10)],
                "referenced_ann_ids": [annotation_id(image_id, r) for r in q.refs],
                "embedded_type": q.qtype,
            }
        )
    return qs, anns


def gqa_record(image_key: str, image_id: int, q: Question) -> dict[str, Any]:
    """A GQA question value; ``annotations`` map question word indices to object ids."""
    words = q.question.rstrip("?").split()
    ann_ids = [str(annotation_id(image_id, r)) for r in q.refs]
    # The last words name the anchor object (the second ref); the target is what is asked about.
    question_ann = {str(len(words) - 1): ann_ids[-1]} if ann_ids else {}
    full = {"relate_color": "The object is {a}.", "relate_shape": "The object is a {a}."}
    return {
        "imageId": image_key,
        "question": q.question,
        "answer": q.answer,
        "fullAnswer": full.get(q.qtype, "{a}.").format(a=q.answer).capitalize(),
        "isBalanced": True,
        "groups": {"global": None, "local": q.qtype},
        "types": {
            "structural": "verify" if q.qtype == "relate_verify" else "query",
            "semantic": "rel",
            "detailed": q.qtype,
        },
        "annotations": {"question": question_ann, "answer": {}, "fullAnswer": {"1": ann_ids[0]} if ann_ids else {}},
        "semantic": [{"operation": "select", "argument": ann_ids[-1] if ann_ids else "", "dependencies": []}],
        "semanticStr": q.qtype,
        "referenced_ann_ids": [int(a) for a in ann_ids],
        "embedded_type": q.qtype,
    }

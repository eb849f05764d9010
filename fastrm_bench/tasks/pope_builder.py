"""Build POPE question files from any COCO-format instances file, as the real POPE is built.

For each chosen image with at least ``objects_per_image`` distinct categories, that many
present categories become "yes" questions, each paired with one absent category ("no"):
- random: any absent category (seeded);
- popular: the most frequent categories over the whole annotation file;
- adversarial: the categories that co-occur most often with the present one.
Output: ``coco_pope_{random,popular,adversarial}.json``, one JSON object per line
(``question_id``, ``image``, ``text``, ``label``), yes and no interleaved as in POPE.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

STRATEGIES = ("random", "popular", "adversarial")
QUESTION_TEMPLATE = "Is there a {} in the image?"


def _image_categories(coco: COCO) -> dict[int, list[int]]:
    """Distinct category ids per image, in order of first annotation."""
    out: dict[int, list[int]] = {}
    for image_id in sorted(coco.getImgIds()):
        cats: list[int] = []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None)):
            if ann["category_id"] not in cats:
                cats.append(ann["category_id"])
        out[image_id] = cats
    return out


def build_pope(
    coco: COCO, seed: int = 0, num_images: int = 500, objects_per_image: int = 3
) -> dict[str, list[dict]]:
    """The three POPE question lists (one per negative-sampling strategy)."""
    rng = np.random.default_rng(seed)
    per_image = _image_categories(coco)
    frequency = Counter(c for cats in per_image.values() for c in cats)
    cooccur: dict[int, Counter] = {c: Counter() for c in coco.getCatIds()}
    for cats in per_image.values():
        for a in cats:
            cooccur[a].update(b for b in cats if b != a)
    all_cats = sorted(coco.getCatIds())
    popular_order = sorted(all_cats, key=lambda c: (-frequency[c], c))

    eligible = [i for i, cats in per_image.items()
                if len(cats) >= objects_per_image and len(all_cats) - len(cats) >= objects_per_image]
    if not eligible:
        raise ValueError(f"no image has {objects_per_image} distinct categories; cannot build POPE")
    chosen = sorted(rng.choice(eligible, size=min(num_images, len(eligible)), replace=False).tolist())
    name = {c["id"]: c["name"] for c in coco.loadCats(all_cats)}
    out: dict[str, list[dict]] = {s: [] for s in STRATEGIES}
    for image_id in chosen:
        present = per_image[image_id]
        picks = [present[k] for k in sorted(rng.choice(len(present), size=objects_per_image, replace=False))]
        absent = [c for c in all_cats if c not in present]
        file_name = coco.loadImgs([image_id])[0]["file_name"]
        ann_of = {a["category_id"]: a["id"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))}
        negatives = {
            "random": [absent[k] for k in rng.permutation(len(absent))],
            "popular": [c for c in popular_order if c in absent],
        }
        for strategy in STRATEGIES:
            used: set[int] = set()
            for positive in picks:
                if strategy == "adversarial":
                    order = sorted(absent, key=lambda c: (-cooccur[positive][c], c))
                else:
                    order = negatives[strategy]
                negative = next(c for c in order if c not in used)
                used.add(negative)
                lines = out[strategy]
                lines.append({"question_id": len(lines) + 1, "image": file_name, "text": QUESTION_TEMPLATE.format(name[positive]),
                              "label": "yes", "object_ids": [ann_of[positive]]})
                lines.append({"question_id": len(lines) + 1, "image": file_name, "text": QUESTION_TEMPLATE.format(name[negative]),
                              "label": "no", "object_ids": []})
    return out


def write_pope(questions: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for strategy, lines in questions.items():
        path = out_dir / f"coco_pope_{strategy}.json"
        path.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
        paths.append(path)
    return paths


def build_pope_files(annotations: Path, out_dir: Path, seed: int = 0, num_images: int = 500) -> list[Path]:
    """`fastrm-bench build-pope`: read a COCO instances file, write the three POPE files."""
    if not annotations.is_file():
        raise FileNotFoundError(f"COCO annotations file not found: {annotations}")
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress to stdout
        coco = COCO(str(annotations))
    return write_pope(build_pope(coco, seed=seed, num_images=num_images), out_dir)

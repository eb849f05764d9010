"""Describe: name the scene's objects from left to right, scored whole and object by object.

The files are COCO captions (``captions_{split}2014.json``: ``images`` and ``annotations`` of
``{image_id, id, caption}``), each annotation with the extra key ``tokens``: the caption's words in
order, each ``{"word", "object_id"}`` with the COCO annotation id (instances file) of the object the
word names, or null for words that name none ("a", ","). The embedded world writes them with
``build_world(..., captions=True)``; without ``data_root`` the task builds and caches that world.

Each sample carries, beside the union mask of its objects, every object's own mask
(`Sample.object_masks`) and in ``meta`` the reference's words (``words``) and per word the id of its
object (``token_objects``), so that a metric can score each answer word's map against its own object
(`fastrm_bench.metrics.token_localisation`).

Plain COCO captions (no ``tokens`` in any annotation: the official files, a user's data) give one sample
per image, its reference captions all of the image's, its objects every instance of the image, and in
``meta["coco_objects"]`` the COCO categories of those instances and of the objects its captions name, the
ground truth CHAIR compares a caption with (`fastrm_bench.metrics.coco_vocabulary`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastrm_bench.data_errors import UnparsableRecordError
from fastrm_bench.interfaces import Sample
from fastrm_bench.tasks.answers import DESCRIBE_SCORINGS, describe_object_score, describe_phrases, describe_score
from fastrm_bench.tasks.base import FileTask
from fastrm_bench.tasks.entries import INT, LIST, NULL, STR, Record, entry_problem, type_name
from fastrm_bench.world.captions import DESCRIBE_QUESTION, split_words


class DescribeTask(FileTask):
    """Describe captions (COCO captions + per-word object ids, COCO images); exact match, partial credit by object."""

    name = "describe"
    SCORINGS = DESCRIBE_SCORINGS
    DIRECTIONS = {"accuracy": True, "object_accuracy": True}

    def __init__(self, captions: str = "coco/annotations/captions_{split}2014.json", images: str = "coco/images/{split}2014",
                 question: str = DESCRIBE_QUESTION, data_root: str | Path | None = None, **kwargs: Any):
        kwargs.setdefault("prompt_suffix", "")  # the question says what to answer; "up to two words" would contradict it
        embedded = data_root is None and kwargs.get("hf_dataset") is None
        if embedded:  # the default world has no captions: a cached copy of it with them
            from fastrm_bench.world.build import default_data_root, ensure_world

            data_root = ensure_world(default_data_root(0, "describe"), captions=True)
        super().__init__(data_root=data_root, **kwargs)
        self.uses_embedded_world = embedded
        self.captions_file, self.images, self.question = captions, images, question

    def load_records(self) -> list[Record]:
        """One record per caption annotation; one that cannot be used keeps a placeholder naming the file and problem."""
        data = self.read_entries(self.captions_file, None, dict)
        path = self.path(self.captions_file)
        files = {image["id"]: image["file_name"] for image in data.get("images", [])
                 if entry_problem(image, {"id": INT, "file_name": STR}) is None} if isinstance(data.get("images"), list) else {}
        annotations = data.get("annotations", [])
        if not isinstance(annotations, list):
            raise ValueError(f"'annotations' of {path}: expected a list, found {type_name(annotations)}")
        if annotations and not any(isinstance(a, dict) and "tokens" in a for a in annotations):
            return self._image_records(annotations, files, path)
        good, bad, seen = [], [], set()
        for i, ann in enumerate(annotations, start=1):
            problem = entry_problem(ann, {"id": INT})
            if problem is None and ann["id"] in seen:
                problem = f"repeats id {ann['id']}"
            if problem is not None:
                bad.append(self.unparsable(f"{path.name}#{i}", f"{path}: annotation {i} {problem}"))
                continue
            seen.add(ann["id"])
            good.append(ann)
        return [self._record(ann, files, path) for ann in sorted(good, key=lambda a: a["id"])] + bad

    def _image_records(self, annotations: list[Any], files: dict[int, str], path: Path) -> list[Record]:
        """One record per captioned image of plain COCO captions: all its captions, all its instances."""
        from fastrm_bench.metrics.coco_vocabulary import image_categories

        captions: dict[int, list[str]] = {}
        for ann in annotations:
            if entry_problem(ann, {"image_id": INT, "caption": STR}) is None and ann["image_id"] in files:
                captions.setdefault(ann["image_id"], []).append(ann["caption"])
        if not captions:
            raise ValueError(f"{path}: no annotation has an image_id the file's images list and a caption")
        coco = self._coco
        records = []
        for image_id, texts in sorted(captions.items()):
            ann_ids = list(coco.getAnnIds(imgIds=[image_id])) if coco is not None else []
            names = [coco.cats[coco.anns[a]["category_id"]]["name"] for a in ann_ids] if coco is not None else []
            meta = {"type": "describe", "image_id": image_id, "coco_objects": image_categories(names, texts)}
            records.append(Record(str(image_id), self.path(self.images) / files[image_id], self.question, texts, meta,
                                  ann_ids))
        return records

    def _record(self, ann: dict[str, Any], files: dict[int, str], path: Path) -> Record:
        problem = self._problem(ann, files)
        if problem is not None:
            return self.unparsable(str(ann["id"]), f"{path}: caption {ann['id']} {problem}")
        words = [t["word"] for t in ann["tokens"]]
        objects = [t["object_id"] for t in ann["tokens"]]
        meta = {"type": "describe", "image_id": ann["image_id"], "words": words, "token_objects": objects}
        image = self.path(self.images) / files[ann["image_id"]]
        return Record(str(ann["id"]), image, self.question, [ann["caption"]], meta,
                      list(dict.fromkeys(o for o in objects if o is not None)))

    @staticmethod
    def _problem(ann: dict[str, Any], files: dict[int, str]) -> str | None:
        """Why a caption annotation cannot be used, or None."""
        problem = entry_problem(ann, {"image_id": INT, "caption": STR, "tokens": LIST})
        if problem is not None:
            return problem
        if ann["image_id"] not in files:
            return f"names image {ann['image_id']}, which the file's images do not list"
        for n, token in enumerate(ann["tokens"], start=1):
            problem = entry_problem(token, {"word": STR, "object_id": (INT, NULL)})
            if problem is not None:
                return f"has token {n} that {problem}"
        if [t["word"] for t in ann["tokens"]] != split_words(ann["caption"]):
            return "has tokens that are not the caption's words"
        if not describe_phrases(ann["caption"]):
            return "names no object"
        return None

    def sample(self, record: Record) -> Sample:
        """The record's sample with every named object's own mask (`Sample.object_masks`)."""
        sample = super().sample(record)
        sample.object_masks = self.masks_by_id(record.ann_ids)
        missing = sorted(set(record.ann_ids) - set(sample.object_masks))
        if missing:
            raise UnparsableRecordError(record.id, f"{self.name}: objects {missing} are not in {self.instances_path}")
        return sample

    def score(self, prediction: str, sample: Sample) -> float:
        return describe_score(prediction, sample.references[0], self.scoring)

    def aggregate(self, records: Sequence[dict[str, Any]]) -> dict[str, float]:
        """Accuracy (the scoring's), and ``object_accuracy``: the partial score whatever the scoring."""
        out = super().aggregate(records)
        partial = [describe_object_score(r["prediction"], r["reference"]) for r in records]
        out["object_accuracy"] = float(np.mean(partial)) if partial else float("nan")
        return out

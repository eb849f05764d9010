"""Two images per question: "Is the yellow circle in the left image or the right image?".

A task of several images per sample, built from POPE's files (random category): each "yes" question
about an object on image A is paired with a "no" question of the same text on another image B, so
exactly one of the two images shows the object. A is shown left in every other pair (in file order),
right in the others, the answer is "left" or "right", and the mask is the
object's mask on A placed where A is drawn on the side-by-side canvas (`layout.side_by_side`): a map
that points at the right image's object scores, one that points at the other image does not.

The words are the embedded world's (its models' word-level tokenizers know them); with real COCO POPE
files the same pairing holds.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from fastrm_bench.interfaces import Sample
from fastrm_bench.layout import side_by_side_image, side_by_side_mask
from fastrm_bench.tasks.base import FileTask
from fastrm_bench.tasks.entries import Record
from fastrm_bench.tasks.pope import POPETask

SIDES = ("left", "right")
_OBJECT = re.compile(r"^Is there an? (?P<object>.+) in the image\?$")


class PairsTask(FileTask):
    """Which of two images shows the object: accuracy overall and by the side the object is on."""

    name = "pairs"
    SCORINGS = {"default": "the first of the words left/right in the answer equals the side of the object"}

    def __init__(self, category: str = "random", **kwargs: Any):
        kwargs.setdefault("prompt_suffix", "")
        kwargs.setdefault("instances", "coco/annotations/instances_val2014.json")
        pope_kwargs = {k: kwargs[k] for k in ("data_root", "instances") if k in kwargs}
        super().__init__(**kwargs)
        self._pope = POPETask(categories=category, **pope_kwargs)
        self._pairs: dict[str, tuple[Record, Record]] = {}

    def load_records(self) -> list[Record]:
        """One record per "yes" question with a "no" question of the same text on another image."""
        negatives: dict[str, list[Record]] = defaultdict(list)
        for record in self._pope.records:
            if record.error is None and record.references[0] == "no":
                negatives[record.question].append(record)
        out = []
        for record in self._pope.records:
            match = _OBJECT.match(record.question) if record.error is None else None
            if match is None or record.references[0] != "yes":
                continue
            other = next((n for n in negatives[record.question] if n.image != record.image), None)
            if other is None:
                continue
            negatives[record.question].remove(other)
            side = SIDES[len(out) % 2]  # alternating: half the objects on each side
            pair_id = f"pair/{record.id.rsplit('/', 1)[1]}-{other.id.rsplit('/', 1)[1]}"
            question = f"Is the {match['object']} in the left image or the right image?"
            self._pairs[pair_id] = (record, other) if side == "left" else (other, record)
            out.append(Record(pair_id, record.image, question, [side], {"type": side, "object": match["object"]},
                              list(record.ann_ids)))
        return out

    def sample(self, record: Record) -> Sample:
        """Both images (data errors named by the POPE question they come from), on one canvas with the object's mask."""
        left, right = (self._pope.sample(r) for r in self._pairs[record.id])
        images = (left.image, right.image)
        sizes = [(im.height, im.width) for im in images]
        masks = [left.mask, right.mask]
        mask = side_by_side_mask(masks, sizes) if any(m is not None for m in masks) else None
        return Sample(record.id, side_by_side_image(images), record.question, list(record.references), dict(record.meta),
                      mask, images=images)

    def score(self, prediction: str, sample: Sample) -> float:
        said = next((w for w in re.findall(r"[a-z]+", prediction.lower()) if w in SIDES), None)
        return float(said == sample.references[0])

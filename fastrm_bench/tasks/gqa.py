"""GQA: compositional questions, exact match (official balanced questions JSON)."""

from __future__ import annotations

from typing import Any

from fastrm_bench.interfaces import Sample
from fastrm_bench.tasks.answers import GQA_SCORINGS, gqa_exact_match
from fastrm_bench.tasks.base import FileTask, Record
from fastrm_bench.tasks.predictions import GQA_PREDICTIONS, LLAVA_ANSWERS


class GQATask(FileTask):
    """GQA (official questions dict keyed by id, images {imageId}.jpg); exact match after normalisation."""

    name = "gqa"
    SCORINGS = GQA_SCORINGS
    ANSWERS_FORMATS = (GQA_PREDICTIONS, LLAVA_ANSWERS)

    def __init__(self, questions: str = "gqa/{split}_balanced_questions.json", images: str = "gqa/images/{imageId}.jpg",
                 **kwargs: Any):
        kwargs.setdefault("instances", "coco/annotations/instances_{split}2014.json")
        super().__init__(**kwargs)
        self.questions_file, self.images = questions, images

    HF_COLUMNS = {"id": "id", "question": "question", "answers": "answer", "image": "image"}

    def load_records(self) -> list[Record]:
        data = self.read_json(self.questions_file)
        records = []
        for qid in sorted(data, key=lambda k: (len(k), k)):
            q = data[qid]
            if not isinstance(q, dict) or not {"imageId", "question", "answer"} <= set(q):
                records.append(self.unparsable(str(qid), f"{self.path(self.questions_file)}: question {qid} lacks "
                                               "imageId, question or answer"))
                continue
            ann_ids = q.get("referenced_ann_ids")
            if ann_ids is None:  # real GQA: scene-graph object ids, no COCO masks
                ann_ids = []
            meta = {"type": (q.get("types") or {}).get("detailed"), "fullAnswer": q.get("fullAnswer")}
            path = self.data_root / self.images.replace("{split}", self.split).format(imageId=q["imageId"])
            records.append(Record(str(qid), path, q["question"], [q["answer"]], meta, [int(a) for a in ann_ids]))
        return records

    def score(self, prediction: str, sample: Sample) -> float:
        return gqa_exact_match(prediction, sample.references[0], self.scoring)


"""GQA: compositional questions, exact match (official balanced questions JSON)."""

from __future__ import annotations

from typing import Any

from fastrm_bench.interfaces import Sample
from fastrm_bench.tasks.answers import GQA_SCORINGS, gqa_exact_match
from fastrm_bench.tasks.base import FileTask
from fastrm_bench.tasks.entries import DICT, INT, LIST, NULL, STR, Record, entry_problem, list_problem
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
        """One record per question id; an entry that cannot be used keeps a placeholder naming the file and the problem."""
        data = self.read_entries(self.questions_file, None, dict)
        path = self.path(self.questions_file)
        records = []
        for qid in sorted(data, key=lambda k: (len(k), k)):
            q = data[qid]
            problem = entry_problem(q, {"imageId": STR, "question": STR, "answer": STR},
                                    {"referenced_ann_ids": (LIST, NULL), "types": (DICT, NULL)})
            if problem is None and q.get("referenced_ann_ids") is not None:
                problem = list_problem(q["referenced_ann_ids"], "referenced_ann_ids", INT)
            if problem is not None:
                records.append(self.unparsable(str(qid), f"{path}: question {qid} {problem}"))
                continue
            meta = {"type": (q.get("types") or {}).get("detailed"), "fullAnswer": q.get("fullAnswer")}
            image = self.data_root / self.images.replace("{split}", self.split).format(imageId=q["imageId"])
            records.append(Record(str(qid), image, q["question"], [q["answer"]], meta, list(q.get("referenced_ann_ids") or [])))
        return records

    def score(self, prediction: str, sample: Sample) -> float:
        return gqa_exact_match(prediction, sample.references[0], self.scoring)


"""VQAv2: open questions, soft accuracy over 10 human answers (official files)."""

from __future__ import annotations

from typing import Any

from fastrm_bench.interfaces import Sample
from fastrm_bench.tasks.answers import VQA_SCORINGS, vqa_soft_accuracy
from fastrm_bench.tasks.base import FileTask, Record
from fastrm_bench.tasks.predictions import LLAVA_ANSWERS, VQA_RESULTS


class VQAv2Task(FileTask):
    """VQAv2 (official questions + annotations JSON, COCO images); soft accuracy, official conventions by default."""

    name = "vqav2"
    SCORINGS = VQA_SCORINGS
    ANSWERS_FORMATS = (VQA_RESULTS, LLAVA_ANSWERS)

    def __init__(self, questions: str = "vqav2/v2_OpenEnded_mscoco_{split}2014_questions.json",
                 annotations: str = "vqav2/v2_mscoco_{split}2014_annotations.json",
                 images: str = "coco/images/{split}2014/COCO_{split}2014_{image_id:012d}.jpg", **kwargs: Any):
        super().__init__(**kwargs)
        self.questions_file, self.annotations_file, self.images = questions, annotations, images

    def load_records(self) -> list[Record]:
        questions = self.read_json(self.questions_file)["questions"]
        annotations = {a["question_id"]: a for a in self.read_json(self.annotations_file)["annotations"]}
        records = []
        for q in sorted(questions, key=lambda q: q["question_id"]):
            ann = annotations.get(q["question_id"])
            if ann is None or not {"image_id", "question"} <= set(q) or "answers" not in ann:
                what = "no annotation" if ann is None else "missing keys"
                records.append(self.unparsable(str(q["question_id"]), f"{self.path(self.annotations_file)}: {what} for "
                                               f"question {q['question_id']}"))
                continue
            image = self.images.replace("{split}", self.split).format(image_id=q["image_id"])
            meta = {"question_type": ann.get("question_type"), "answer_type": ann.get("answer_type"),
                    "type": ann.get("embedded_type", ann.get("answer_type")), "image_id": q["image_id"]}
            records.append(Record(str(q["question_id"]), self.data_root / image, q["question"],
                                  [a["answer"] for a in ann["answers"]], meta, list(ann.get("referenced_ann_ids", []))))
        return records

    def score(self, prediction: str, sample: Sample) -> float:
        return vqa_soft_accuracy(prediction, sample.references, self.scoring)


"""VQAv2: open questions, soft accuracy over 10 human answers (official files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastrm_bench.interfaces import Sample
from fastrm_bench.tasks.answers import VQA_SCORINGS, vqa_soft_accuracy
from fastrm_bench.tasks.base import FileTask
from fastrm_bench.tasks.entries import INT, LIST, STR, Record, entry_problem, list_problem
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
        """Questions joined to their annotations; an entry that cannot be used keeps a placeholder naming the file,
        the entry and what is wrong (questions without a usable id go last, in file order)."""
        qfile, afile = self.path(self.questions_file), self.path(self.annotations_file)
        questions = self.read_entries(self.questions_file, "questions")
        annotations = self._annotations()
        good: list[tuple[dict[str, Any], int]] = []
        bad: list[Record] = []
        seen: set[int] = set()
        for i, q in enumerate(questions, start=1):
            problem = entry_problem(q, {"question_id": INT})
            if problem is None and q["question_id"] in seen:
                problem = f"repeats question_id {q['question_id']}"
            if problem is not None:
                bad.append(self.unparsable(f"{qfile.name}#{i}", f"{qfile}: entry {i} {problem}"))
                continue
            seen.add(q["question_id"])
            good.append((q, i))
        ordered = sorted(good, key=lambda pair: pair[0]["question_id"])
        return [self._record(q, i, qfile, annotations.get(q["question_id"]), afile) for q, i in ordered] + bad

    def _annotations(self) -> dict[int, Any]:
        """Annotations by question id; one without a usable question_id is a problem of the questions it would answer."""
        out: dict[int, Any] = {}
        for ann in self.read_entries(self.annotations_file, "annotations"):
            if isinstance(ann, dict) and type(ann.get("question_id")) is int:
                out[ann["question_id"]] = ann
        return out

    def _record(self, q: dict[str, Any], i: int, qfile: Path, ann: Any, afile: Path) -> Record:
        qid = q["question_id"]
        problem = entry_problem(q, {"image_id": INT, "question": STR})
        if problem is not None:
            return self.unparsable(str(qid), f"{qfile}: question {qid} (entry {i}) {problem}")
        if ann is None:
            return self.unparsable(str(qid), f"{afile}: no annotation for question {qid}")
        problem = entry_problem(ann, {"answers": LIST}) or _answers_problem(ann["answers"]) or \
            (list_problem(ann["referenced_ann_ids"], "referenced_ann_ids", INT) if "referenced_ann_ids" in ann else None)
        if problem is not None:
            return self.unparsable(str(qid), f"{afile}: the annotation of question {qid} {problem}")
        image = self.images.replace("{split}", self.split).format(image_id=q["image_id"])
        meta = {"question_type": ann.get("question_type"), "answer_type": ann.get("answer_type"),
                "type": ann.get("embedded_type", ann.get("answer_type")), "image_id": q["image_id"]}
        return Record(str(qid), self.data_root / image, q["question"], [a["answer"] for a in ann["answers"]], meta,
                      list(ann.get("referenced_ann_ids", [])))

    def score(self, prediction: str, sample: Sample) -> float:
        return vqa_soft_accuracy(prediction, sample.references, self.scoring)



def _answers_problem(answers: list[Any]) -> str | None:
    """What is wrong with an annotation's human answers (each an object with an ``answer`` string), or None."""
    if not answers:
        return "has no answers"
    for n, answer in enumerate(answers, start=1):
        problem = entry_problem(answer, {"answer": STR})
        if problem is not None:
            return f"has answer {n} that {problem}"
    return None

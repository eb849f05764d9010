"""POPE: yes/no object-hallucination probes, scored as the reference evaluator scores them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from fastrm_bench.interfaces import Sample
from fastrm_bench.tasks.answers import parse_pope_answer, pope_label_positive
from fastrm_bench.tasks.base import FileTask, Record
from fastrm_bench.tasks.pope_builder import STRATEGIES
from fastrm_bench.tasks.predictions import LLAVA_ANSWERS, POPE_ANSWERS


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and yes-ratio *of the predictions* (parsed yes/no)."""
    pred = np.array([parse_pope_answer(p) == "yes" for p in predictions])
    gold = np.array([pope_label_positive(lab) for lab in labels])
    tp, fp = int((pred & gold).sum()), int((pred & ~gold).sum())
    fn, tn = int((~pred & gold).sum()), int((~pred & ~gold).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = len(pred)
    return {"accuracy": (tp + tn) / n if n else float("nan"), "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": float(pred.mean()) if n else float("nan")}


class POPETask(FileTask):
    """POPE (coco_pope_{random,popular,adversarial}.json lines, COCO images); accuracy/precision/recall/F1/yes-ratio."""

    DIRECTIONS = {"accuracy": True, "precision": True, "recall": True, "f1": True, "mean_f1": True, "yes_ratio": None}

    name = "pope"
    SCORINGS = {"official": "POPE's evaluate.py: its answer parser; a label other than \"no\" is positive"}
    ANSWERS_FORMATS = (LLAVA_ANSWERS, POPE_ANSWERS)

    def __init__(self, categories: Sequence[str] | str = STRATEGIES, questions: str = "pope/coco_pope_{category}.json",
                 images: str = "coco/images/val2014/{image}", **kwargs: Any):
        kwargs.setdefault("prompt_suffix", "")  # POPE questions are complete yes/no questions
        kwargs.setdefault("instances", "coco/annotations/instances_val2014.json")
        super().__init__(**kwargs)
        self.categories = [categories] if isinstance(categories, str) else list(categories)
        unknown = set(self.categories) - set(STRATEGIES)
        if unknown:
            raise ValueError(f"unknown POPE categories {sorted(unknown)}; expected some of {STRATEGIES}")
        self.questions_file, self.images = questions, images

    HF_COLUMNS = {"id": "question_id", "question": "question", "answers": "answer", "image": "image",
                  "category": "category"}

    def hf_record(self, row: dict[str, Any], image) -> Record | None:
        """lmms-lab/POPE style rows: question_id, question, answer, image_source, image, category."""
        c = self.hf_columns
        category = row[c["category"]]
        if category not in self.categories:
            return None
        label = row[c["answers"]].strip().lower()
        meta = {"category": category, "label": label, "type": category}
        return Record(f"{category}/{row[c['id']]}", image, row[c["question"]], [label], meta)

    def load_records(self) -> list[Record]:
        records = []
        for category in self.categories:
            path = self.path(self.questions_file.replace("{category}", category))
            if not path.is_file():
                raise FileNotFoundError(f"pope: expected {path} (under data root {self.data_root})")
            for lineno, line in enumerate(path.read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    q = json.loads(line)
                except json.JSONDecodeError as err:
                    records.append(self.unparsable(f"{category}/{path.name}:{lineno}", f"{path}:{lineno}: malformed JSON "
                                                   f"line: {err.msg}"))
                    continue
                missing = {"question_id", "image", "text", "label"} - set(q) if isinstance(q, dict) else {"all"}
                if missing:
                    records.append(self.unparsable(f"{category}/{q.get('question_id', f'{path.name}:{lineno}')}"
                                                   if isinstance(q, dict) else f"{category}/{path.name}:{lineno}",
                                                   f"{path}:{lineno}: missing keys {sorted(missing)}"))
                    continue
                image = self.data_root / self.images.format(image=q["image"], split=self.split)
                meta = {"category": category, "label": q["label"], "type": category}
                records.append(Record(f"{category}/{q['question_id']}", image, q["text"], [q["label"]], meta,
                                      list(q.get("object_ids", []))))
        return records

    def score(self, prediction: str, sample: Sample) -> float:
        return float((parse_pope_answer(prediction) == "yes") == pope_label_positive(sample.references[0]))

    def _single_category(self) -> str:
        if len(self.categories) != 1:
            raise ValueError("POPE answers cover one category file: use pope-random, pope-popular or pope-adversarial")
        return self.categories[0]

    def answer_id(self, raw: str) -> str:
        return f"{self._single_category()}/{raw}"

    def answers_order(self) -> list[str]:
        category = self._single_category()
        return [r.id for r in self.records if r.meta["category"] == category]

    def aggregate(self, records: Sequence[dict[str, Any]]) -> dict[str, float]:
        out: dict[str, float] = {}
        f1s = []
        for category in self.categories:
            rows = [r for r in records if r.get("meta", {}).get("category") == category]
            if not rows:
                continue
            metrics = pope_metrics([r["prediction"] for r in rows], [r["meta"]["label"] for r in rows])
            out.update({f"{category}/{k}": v for k, v in metrics.items()})
            f1s.append(metrics["f1"])
        overall = pope_metrics([r["prediction"] for r in records], [r["meta"]["label"] for r in records])
        out.update(overall)
        out["mean_f1"] = float(np.mean(f1s)) if f1s else float("nan")
        return out

"""POPE: yes/no object-hallucination probes, scored as the reference evaluator scores them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastrm_bench.interfaces import Sample
from fastrm_bench.tasks.answers import parse_pope_answer, pope_label_positive
from fastrm_bench.tasks.base import FileTask
from fastrm_bench.tasks.entries import INT, LIST, STR, Record, entry_problem, list_problem
from fastrm_bench.tasks.pope_builder import STRATEGIES
from fastrm_bench.tasks.predictions import LLAVA_ANSWERS, POPE_ANSWERS

#: the question files a POPE task can read: the three negative samplings, and the embedded world's counterfactual
#: scenes (a present object, and the one removed from the scene: `fastrm_bench.world.counterfactual`)
CATEGORIES = (*STRATEGIES, "counterfactual")


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and yes-ratio *of the predictions* (parsed yes/no)."""
    pred = np.array([parse_pope_answer(p) == "yes" for p in predictions], dtype=bool)
    gold = np.array([pope_label_positive(lab) for lab in labels], dtype=bool)
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
        unknown = set(self.categories) - set(CATEGORIES)
        if unknown:
            raise ValueError(f"unknown POPE categories {sorted(unknown)}; expected some of {CATEGORIES}")
        self.questions_file, self.images = questions, images

    HF_COLUMNS = {"id": "question_id", "question": "question", "answers": "answer", "image": "image",
                  "category": "category"}

    def hf_record(self, row: dict[str, Any], image) -> Record | None:
        """lmms-lab/POPE style rows: question_id, question, answer, image_source, image, category."""
        c = self.hf_columns
        category = row[c["category"]]
        if category not in self.categories:
            return None
        problem = entry_problem(row, {c["id"]: (INT, STR), c["question"]: STR, c["answers"]: STR})
        if problem is not None:
            return self.unparsable(f"{category}/{row.get(c['id'])}", f"{self.hf_dataset}: row {row.get(c['id'])!r} {problem}")
        label = row[c["answers"]].strip().lower()
        meta = {"category": category, "label": label, "type": category}
        return Record(f"{category}/{row[c['id']]}", image, row[c["question"]], [label], meta)

    def load_records(self) -> list[Record]:
        """Every category file's lines; a line that cannot be used keeps a placeholder naming the file, line and problem."""
        records = []
        for category in self.categories:
            path = self.path(self.questions_file.replace("{category}", category))
            if not path.is_file():
                raise FileNotFoundError(f"pope: expected {path} (under data root {self.data_root})")
            try:
                lines = path.read_text().splitlines()
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}: not UTF-8 text (byte {err.start}); is it the right file?") from None
            seen: set[int] = set()
            for lineno, line in enumerate(lines, start=1):
                if line.strip():
                    records.append(self._line_record(category, path, lineno, line, seen))
        return records

    def _line_record(self, category: str, path: Path, lineno: int, line: str, seen: set[int]) -> Record:
        """One JSON line of a category file as a record, or its placeholder."""
        where = f"{category}/{path.name}:{lineno}"
        try:
            q = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as err:
            reason = err.msg if isinstance(err, json.JSONDecodeError) else "nested too deeply"
            return self.unparsable(where, f"{path}:{lineno}: malformed JSON line: {reason}")
        problem = entry_problem(q, {"question_id": INT, "image": STR, "text": STR, "label": STR}, {"object_ids": LIST})
        if problem is None and "object_ids" in q:
            problem = list_problem(q["object_ids"], "object_ids", INT)
        if problem is None and q["question_id"] in seen:
            problem = f"repeats question_id {q['question_id']}"
        if problem is not None:
            known = isinstance(q, dict) and type(q.get("question_id")) is int and q["question_id"] not in seen
            if known:
                seen.add(q["question_id"])
            return self.unparsable(f"{category}/{q['question_id']}" if known else where, f"{path}:{lineno}: {problem}")
        seen.add(q["question_id"])
        image = self.data_root / self.images.format(image=q["image"], split=self.split)
        meta = {"category": category, "label": q["label"], "type": category}
        return Record(f"{category}/{q['question_id']}", image, q["text"], [q["label"]], meta, list(q.get("object_ids", [])))

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

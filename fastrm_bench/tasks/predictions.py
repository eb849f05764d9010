"""Scoring a predictions file in the official result formats, so any model's outputs can be scored.

- VQAv2: a JSON list ``[{"question_id", "answer"}]``;
- GQA: a JSON list ``[{"questionId", "prediction"}]``;
- POPE: JSON lines ``{"question_id", "text"}`` for one category (as POPE's own evaluator reads).
Predictions for question ids the task does not have are an error (as the reference VQA
evaluator's check); questions without a prediction are an error too unless ``allow_missing``,
in which case they are left out and counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastrm_bench.interfaces import Task

FORMATS = {"vqav2": ("question_id", "answer", "json"), "gqa": ("questionId", "prediction", "json"),
           "pope": ("question_id", "text", "jsonl")}


@dataclass
class Scored:
    metrics: dict[str, float]
    scored: int
    missing: list[str] = field(default_factory=list)


def read_predictions(task: Task, path: Path) -> dict[str, str]:
    """{task sample id: predicted text}; format from the task's implementation."""
    kind = "pope" if hasattr(task, "categories") else ("gqa" if task.__class__.__name__ == "GQATask" else "vqav2")
    id_key, text_key, layout = FORMATS[kind]
    if not path.is_file():
        raise FileNotFoundError(f"predictions file {path} not found")
    if layout == "json":
        try:
            rows = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: malformed JSON at line {err.lineno}: {err.msg}") from err
        numbered = list(enumerate(rows, start=1))
    else:
        numbered = []
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    numbered.append((lineno, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{lineno}: malformed JSON line: {err.msg}") from err
    out: dict[str, str] = {}
    prefix = ""
    if kind == "pope":
        if len(task.categories) != 1:
            raise ValueError("POPE predictions cover one category file: use pope-random, pope-popular or pope-adversarial")
        prefix = f"{task.categories[0]}/"
    for where, row in numbered:
        if id_key not in row or text_key not in row:
            raise ValueError(f"{path}: entry {where} lacks {id_key!r} or {text_key!r} (the {kind} result format)")
        out[prefix + str(row[id_key])] = str(row[text_key])
    return out


def score_predictions(task: Task, predictions: dict[str, str], allow_missing: bool = False) -> Scored:
    unparsable = [r.error for r in task.records if r.error is not None]
    if unparsable:  # scoring needs every reference: an entry that cannot be read is an error here, not a skip
        raise ValueError(f"{unparsable[0]} ({len(unparsable)} unparsable entries in the task's files)")
    records = {r.id: r for r in task.records}
    unknown = sorted(set(predictions) - set(records))
    if unknown:
        raise ValueError(f"{len(unknown)} prediction(s) for question ids the task does not have, e.g. {unknown[:5]}")
    missing = sorted(set(records) - set(predictions))
    if missing and not allow_missing:
        raise ValueError(f"{len(missing)} question(s) have no prediction, e.g. {missing[:5]}; "
                         "pass --allow-missing to score the answered ones only")
    rows: list[dict[str, Any]] = []
    for qid, text in predictions.items():
        record = records[qid]
        sample = _light_sample(record)
        rows.append({"id": qid, "prediction": text, "score": task.score(text, sample), "meta": record.meta})
    return Scored(task.aggregate(rows), len(rows), missing)


def _light_sample(record):
    """Scoring needs the references, not the image."""
    from fastrm_bench.interfaces import Sample

    return Sample(record.id, None, record.question, record.references, dict(record.meta))  # type: ignore[arg-type]

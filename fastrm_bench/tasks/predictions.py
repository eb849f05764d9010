"""Scoring an answers file, so any model's outputs can be scored with a task's metric.

The format is detected from the file among those the task declares (``ANSWERS_FORMATS``):

- LLaVA answers (every task): JSON lines ``{"question_id", "text", ...}``;
- VQAv2 results: a JSON list ``[{"question_id", "answer"}]``;
- GQA predictions: a JSON list ``[{"questionId", "prediction"}]``;
- POPE answers: JSON lines ``{"question", "answer"}`` in the order of the category's question
  file (as POPE's ``evaluate.py`` matches them).

Predictions for question ids the task does not have are an error (as the reference VQA
evaluator's check); questions without a prediction are an error too unless ``allow_missing``,
in which case they are left out and counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fastrm_bench.interfaces import Sample
from fastrm_bench.tasks.entries import INT, STR, Record, entry_problem


class FileTask(Protocol):
    """What the answer-file readers use of a task that reads official files (`tasks.base.FileTask`)."""

    name: str
    ANSWERS_FORMATS: tuple[AnswersFormat, ...]

    @property
    def records(self) -> list[Record]: ...

    def answers_order(self) -> list[str]: ...

    def answer_id(self, raw: str) -> str: ...

    def score(self, prediction: str, sample: Sample) -> float: ...

    def aggregate(self, records: Any) -> dict[str, float]: ...


@dataclass(frozen=True)
class AnswersFormat:
    """One answers-file layout: a JSON list or JSON lines, the text key, and the id key (None: matched by order)."""

    name: str
    layout: str  # "json" (one list) or "jsonl"
    text_key: str
    id_key: str | None = None
    #: with no id key, each entry's copy of the question (checked against the question file's)
    question_key: str | None = None

    @property
    def keys(self) -> set[str]:
        return {k for k in (self.id_key, self.text_key, self.question_key) if k}

    def describe(self) -> str:
        layout = "a JSON list" if self.layout == "json" else "JSON lines"
        order = "" if self.id_key else ", in the order of the question file"
        return f"{self.name}: {layout} of {{{', '.join(repr(k) for k in sorted(self.keys))}}}{order}"


LLAVA_ANSWERS = AnswersFormat("LLaVA answers", "jsonl", "text", id_key="question_id")
VQA_RESULTS = AnswersFormat("VQAv2 results", "json", "answer", id_key="question_id")
GQA_PREDICTIONS = AnswersFormat("GQA predictions", "json", "prediction", id_key="questionId")
POPE_ANSWERS = AnswersFormat("POPE answers", "jsonl", "answer", question_key="question")


@dataclass
class Scored:
    metrics: dict[str, float]
    scored: int
    missing: list[str] = field(default_factory=list)


def _entries(path: Path) -> tuple[str, list[tuple[int, Any]]]:
    """("json", [(index, entry)]) for a JSON list, ("jsonl", [(line, entry)]) for JSON lines."""
    if not path.is_file():
        raise FileNotFoundError(f"answers file {path} not found")
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}); expected a JSON list or JSON lines") from None
    try:
        whole = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        whole = None
    if isinstance(whole, list):
        return "json", list(enumerate(whole, start=1))
    numbered = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                numbered.append((lineno, json.loads(line)))
            except (json.JSONDecodeError, RecursionError) as err:
                reason = err.msg if isinstance(err, json.JSONDecodeError) else "nested too deeply"
                raise ValueError(f"{path}:{lineno}: malformed JSON line ({reason}); expected a JSON list or JSON lines") from None
    return "jsonl", numbered


def detect_format(task: FileTask, path: Path, layout: str, first: Any) -> AnswersFormat:
    """The first of the task's formats whose layout and keys the file's first entry has; else a clear error."""
    keys = set(first) if isinstance(first, dict) else set()
    for fmt in task.ANSWERS_FORMATS:
        if fmt.layout == layout and fmt.keys <= keys:
            return fmt
    expected = "; ".join(fmt.describe() for fmt in task.ANSWERS_FORMATS)
    found = "a JSON list" if layout == "json" else "JSON lines"
    raise ValueError(f"{path}: {found} whose first entry has keys {sorted(keys)}; {task.name} reads {expected}")


def read_predictions(task: FileTask, path: Path) -> dict[str, str]:
    """{task record id: predicted text} from an answers file in any format the task declares."""
    return read_answers(task, path)[0]


def read_answers(task: FileTask, path: Path) -> tuple[dict[str, str], AnswersFormat]:
    """{task record id: predicted text} and the detected format; a malformed entry is one line naming file and entry."""
    layout, entries = _entries(path)
    if not entries:
        raise ValueError(f"{path}: no answers")
    fmt = detect_format(task, path, layout, entries[0][1])
    where = "entry" if layout == "json" else "line"
    out: dict[str, str] = {}
    if fmt.id_key is None:
        order = task.answers_order()
        if len(entries) > len(order):
            raise ValueError(f"{path}: {len(entries)} answers for {len(order)} questions ({fmt.name} are matched by order)")
        records: dict[str, Record] = {r.id: r for r in task.records}
    for i, (n, row) in enumerate(entries):
        problem = entry_problem(row, _field_types(fmt))
        if problem is not None:
            raise ValueError(f"{path}: {where} {n} {problem} (the {fmt.name} format)")
        if fmt.id_key is None:
            record_id = order[i]
            asked, expected = str(row[fmt.question_key]).strip(), records[record_id].question.strip()
            if expected not in asked:
                raise ValueError(f"{path}: {where} {n} answers {asked!r}, but question {i + 1} of the file is "
                                 f"{expected!r} ({fmt.name} must follow the question file's order)")
        else:
            record_id = task.answer_id(str(row[fmt.id_key]))
        if record_id in out:
            raise ValueError(f"{path}: {where} {n} answers question {row[fmt.id_key]!r} a second time")
        out[record_id] = row[fmt.text_key]
    return out, fmt


def _field_types(fmt: AnswersFormat) -> dict[str, Any]:
    """The types an answers entry's keys must have: text is a string, an id a string or an integer."""

    types: dict[str, Any] = {fmt.text_key: STR}
    if fmt.id_key:
        types[fmt.id_key] = (INT, STR)
    if fmt.question_key:
        types[fmt.question_key] = STR
    return types


def score_predictions(task: FileTask, predictions: dict[str, str], allow_missing: bool = False) -> Scored:
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


def _light_sample(record: Record):
    """Scoring needs the references, not the image."""

    return Sample(record.id, None, record.question, record.references, dict(record.meta))  # type: ignore[arg-type]

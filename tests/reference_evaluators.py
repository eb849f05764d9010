"""Stand-alone Python 3 restatements of the reference evaluators the task scores are checked against.

They follow the reference code step by step, on the same data structures, and share no code with
``fastrm_bench`` (only the contractions table is imported: it was checked entry by entry against
the official one), so a slip in ``fastrm_bench.tasks.answers`` shows up as a disagreement:

- ``vqa_eval``: ``VQAEval.evaluate`` / ``processPunctuation`` / ``processDigitArticle`` of
  GT-Vision-Lab/VQA ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` at commit a013f00 (master),
  quirks included: answers are normalised only when the ten human answers disagree, and
  ``periodStrip.sub("", text, re.UNICODE)`` passes the flag as the count (32 periods at most).
- ``lmms_eval_vqav2``: ``vqav2_process_results`` of EvolvingLMMs-Lab/lmms-eval
  ``lmms_eval/tasks/vqav2/utils.py`` (commit 28ea9a1, unchanged at 75571cf) with its
  ``EvalAIAnswerProcessor`` (``lmms_eval/tasks/_task_utils/vqa_eval_metric.py``).
- ``pope_evaluate``: RUCAIBox/POPE ``evaluate.py`` with its two file paths as arguments.

``tests/data/vqav2_scoring_cases.json`` also records what the unmodified reference code returned
on each case, so these restatements are themselves checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastrm_bench.tasks.answers import _CONTRACTIONS as CONTRACTIONS

MANUAL_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
              "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ["a", "an", "the"]
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
OFFICIAL_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
LMMS_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")


def process_punctuation(in_text: str, comma_strip: re.Pattern[str]) -> str:
    out_text = in_text
    for p in PUNCT:
        if (p + " " in in_text or " " + p in in_text) or (re.search(comma_strip, in_text) is not None):
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    return PERIOD_STRIP.sub("", out_text, int(re.UNICODE))  # the reference passes re.UNICODE as the count


def process_digit_article(in_text: str) -> str:
    out_text = []
    for word in in_text.lower().split():
        word = MANUAL_MAP.setdefault(word, word)
        if word not in ARTICLES:
            out_text.append(word)
    for word_id, word in enumerate(out_text):
        if word in CONTRACTIONS:
            out_text[word_id] = CONTRACTIONS[word]
    return " ".join(out_text)


def _answer_dicts(answers: list[str]) -> list[dict]:
    return [{"answer": a, "answer_confidence": "yes", "answer_id": i} for i, a in enumerate(answers, start=1)]


def _leave_one_out(gt: list[dict], res_ans: str) -> float:
    gt_acc = []
    for gt_datum in gt:
        other = [item for item in gt if item != gt_datum]
        matching = [item for item in other if item["answer"] == res_ans]
        gt_acc.append(min(1, float(len(matching)) / 3))
    return float(sum(gt_acc)) / len(gt_acc)


def vqa_eval(prediction: str, answers: list[str]) -> float:
    """Per-question accuracy of the official ``VQAEval.evaluate`` (a fraction, not rounded)."""
    gt = _answer_dicts(answers)
    for ans in gt:
        ans["answer"] = ans["answer"].replace("\n", " ").replace("\t", " ").strip()
    res_ans = prediction.replace("\n", " ").replace("\t", " ").strip()
    if len({ans["answer"] for ans in gt}) > 1:
        for ans in gt:
            ans["answer"] = process_digit_article(process_punctuation(ans["answer"], OFFICIAL_COMMA_STRIP))
        res_ans = process_digit_article(process_punctuation(res_ans, OFFICIAL_COMMA_STRIP))
    return _leave_one_out(gt, res_ans)


def lmms_eval_vqav2(prediction: str, answers: list[str]) -> float:
    """lmms-eval's ``vqav2_process_results(doc, [prediction])["exact_match"]``: everything normalised, always."""
    gt = _answer_dicts(answers)
    for ans in gt:
        ans["answer"] = ans["answer"].replace("\n", " ").replace("\t", " ").strip()
    res_ans = prediction.replace("\n", " ").replace("\t", " ").strip()
    for ans in gt:
        ans["answer"] = process_digit_article(process_punctuation(ans["answer"], LMMS_COMMA_STRIP))
    res_ans = process_digit_article(process_punctuation(res_ans, LMMS_COMMA_STRIP))
    return _leave_one_out(gt, res_ans)


def pope_evaluate(ans_file: Path, label_file: Path) -> dict[str, float]:
    """POPE's ``evaluate.py``: answers ``{"question", "answer"}`` lines matched by order with the question file."""
    answers = [json.loads(q) for q in open(ans_file)]
    label_list = [json.loads(q)["label"] for q in open(label_file)]
    for answer in answers:
        text = answer["answer"]
        if text.find(".") != -1:
            text = text.split(".")[0]
        words = text.replace(",", "").split(" ")
        answer["answer"] = "no" if ("No" in words or "not" in words or "no" in words) else "yes"
    labels = [0 if label == "no" else 1 for label in label_list]
    preds = [0 if answer["answer"] == "no" else 1 for answer in answers]
    yes_ratio = preds.count(1) / len(preds)
    tp = tn = fp = fn = 0
    for pred, label in zip(preds, labels):
        if pred == 1 and label == 1:
            tp += 1
        elif pred == 1 and label == 0:
            fp += 1
        elif pred == 0 and label == 0:
            tn += 1
        elif pred == 0 and label == 1:
            fn += 1
    precision = float(tp) / float(tp + fp)
    recall = float(tp) / float(tp + fn)
    f1 = 2 * precision * recall / (precision + recall)
    return {"accuracy": (tp + tn) / (tp + tn + fp + fn), "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": yes_ratio}

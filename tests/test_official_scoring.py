"""`score` equals the reference evaluators, question by question, in their own answers formats.

The references are the restatements in ``tests/reference_evaluators.py``; the VQAv2 fixture also
records what the unmodified reference code returned, so the restatements are checked too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastrm_bench.builders import create_task
from fastrm_bench.cli import app
from fastrm_bench.tasks.predictions import _light_sample
from tests.reference_evaluators import lmms_eval_vqav2, pope_evaluate, vqa_eval

CASES = json.loads((Path(__file__).parent / "data" / "vqav2_scoring_cases.json").read_text())["cases"]


def test_the_fixture_is_tricky_enough_to_tell_the_conventions_apart():
    assert len(CASES) >= 30
    agree = [c for c in CASES if len(set(c["answers"])) == 1]
    assert 10 <= len(agree) <= len(CASES) - 10
    assert sum(c["official"] != c["lmms_eval"] for c in CASES) >= 10


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_reference_restatements_give_what_the_reference_code_gave(case):
    assert vqa_eval(case["prediction"], case["answers"]) == pytest.approx(case["official"], abs=1e-6)
    assert lmms_eval_vqav2(case["prediction"], case["answers"]) == pytest.approx(case["lmms_eval"], abs=1e-6)


@pytest.fixture
def vqa_root(tmp_path) -> Path:
    """A data root holding the fixture as official VQAv2 question and annotation files."""
    root = tmp_path / "vqa-data"
    (root / "vqav2").mkdir(parents=True)
    questions = [{"question_id": c["question_id"], "image_id": c["question_id"], "question": f"case {c['question_id']}?"}
                 for c in CASES]
    annotations = [{"question_id": c["question_id"], "image_id": c["question_id"], "question_type": "what",
                    "answer_type": "other", "multiple_choice_answer": c["answers"][0],
                    "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i}
                                for i, a in enumerate(c["answers"], start=1)]} for c in CASES]
    (root / "vqav2/v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps({"questions": questions}))
    (root / "vqav2/v2_mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": annotations}))
    return root


def _score(args: list[str], out: Path) -> dict:
    result = CliRunner().invoke(app, ["score", *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


@pytest.mark.parametrize("scoring,reference", [(None, vqa_eval), ("vqaeval", vqa_eval), ("always", lmms_eval_vqav2)])
def test_score_vqav2_equals_the_reference_question_by_question(vqa_root, tmp_path, scoring, reference):
    flag = ["--scoring", scoring] if scoring else []
    task, _ = create_task("vqav2", data_root=str(vqa_root), scoring=scoring)
    by_id = {c["question_id"]: c for c in CASES}
    for record in task.records:
        case = by_id[int(record.id)]
        assert task.score(case["prediction"], _light_sample(record)) == pytest.approx(
            reference(case["prediction"], case["answers"]), abs=1e-9), case["case"]
    expected = sum(reference(c["prediction"], c["answers"]) for c in CASES) / len(CASES)
    # the official results format and LLaVA's answers format give the same numbers
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"question_id": c["question_id"], "answer": c["prediction"]} for c in CASES]))
    llava = tmp_path / "answers.jsonl"
    llava.write_text("".join(json.dumps({"question_id": c["question_id"], "prompt": "q", "text": c["prediction"]}) + "\n"
                             for c in CASES))
    for path in (results, llava):
        out = _score(["--task", "vqav2", "--data-root", str(vqa_root), "--predictions", str(path), *flag], tmp_path / "m.json")
        assert out["metrics"]["accuracy"] == pytest.approx(expected, abs=1e-9)
        assert out["scoring"] == (scoring or "vqaeval")


def test_the_two_conventions_differ_where_the_references_do(vqa_root, tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"question_id": c["question_id"], "answer": c["prediction"]} for c in CASES]))
    args = ["--task", "vqav2", "--data-root", str(vqa_root), "--predictions", str(results)]
    official = _score(args, tmp_path / "a.json")["metrics"]["accuracy"]
    always = _score([*args, "--scoring", "always"], tmp_path / "b.json")["metrics"]["accuracy"]
    assert official == pytest.approx(sum(c["official"] for c in CASES) / len(CASES), abs=1e-6)
    assert always == pytest.approx(sum(c["lmms_eval"] for c in CASES) / len(CASES), abs=1e-6)
    assert official < always


def test_unknown_scoring_and_unknown_answers_format_are_clear_errors(vqa_root, tmp_path):
    path = tmp_path / "answers.json"
    path.write_text(json.dumps([{"qid": 1, "pred": "yes"}]))
    args = ["score", "--task", "vqav2", "--data-root", str(vqa_root), "--predictions", str(path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "['pred', 'qid']" in result.output and "'answer', 'question_id'" in result.output, result.output
    path.write_text(json.dumps([{"question_id": c["question_id"], "answer": "yes"} for c in CASES]))
    result = CliRunner().invoke(app, [*args, "--scoring", "lenient"])
    assert result.exit_code == 2 and "vqaeval" in result.output and "always" in result.output


# POPE: answers in POPE's own format ({"question", "answer"} lines, matched by order)
POPE_ANSWERS = [
    "Yes.", "No.", "yes", "no", "Yes, there is a dog.", "No, there is not.", "There is no dog in the image.",
    "There is a dog, not a cat.", "NO", "I cannot tell.", "not sure", "Yes. No doubt.", "No. Yes.", "yes no",
    "The answer is no", "No,there is none", "no.", "Yes, no", "There's not one", "Nope", "Not really",
    "It is not there", "yes, not", "absolutely", "", "No dog", "no, no", "Yes indeed", "a dog is not visible",
    "Yes.No", "no comment", "definitely yes", "Maybe", "no!", "No", "yes", "y",
]
POPE_LABELS = ["yes", "no"] * 18 + ["Yes"]  # a label other than "no" is positive, as POPE's evaluate.py reads it


@pytest.fixture
def pope_root(tmp_path) -> Path:
    root = tmp_path / "pope-data"
    (root / "pope").mkdir(parents=True)
    lines = [{"question_id": i, "image": f"img{i // 6}.jpg", "text": f"Is there a thing{i} in the image?", "label": label}
             for i, label in enumerate(POPE_LABELS, start=1)]
    (root / "pope/coco_pope_random.json").write_text("".join(json.dumps(q) + "\n" for q in lines))
    return root


def test_pope_official_answers_score_as_popes_evaluate(pope_root, tmp_path):
    assert len(POPE_ANSWERS) == len(POPE_LABELS) >= 30
    questions = [json.loads(x) for x in (pope_root / "pope/coco_pope_random.json").read_text().splitlines()]
    official = tmp_path / "answers.jsonl"
    official.write_text("".join(json.dumps({"question": q["text"], "answer": a}) + "\n" for q, a in zip(questions, POPE_ANSWERS)))
    expected = pope_evaluate(official, pope_root / "pope/coco_pope_random.json")
    llava = tmp_path / "llava.jsonl"
    llava.write_text("".join(json.dumps({"question_id": q["question_id"], "text": a}) + "\n"
                             for q, a in zip(questions, POPE_ANSWERS)))
    for path, name in ((official, "POPE answers"), (llava, "LLaVA answers")):
        out = _score(["--task", "pope-random", "--data-root", str(pope_root), "--predictions", str(path)], tmp_path / "m.json")
        assert out["answers_format"] == name
        for key, value in expected.items():
            assert out["metrics"][key] == pytest.approx(value, abs=1e-12), (name, key)
            assert out["metrics"][f"random/{key}"] == pytest.approx(value, abs=1e-12), (name, key)


def test_pope_answers_out_of_order_are_refused(pope_root, tmp_path):
    questions = [json.loads(x) for x in (pope_root / "pope/coco_pope_random.json").read_text().splitlines()]
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps({"question": q["text"], "answer": "yes"}) + "\n" for q in reversed(questions)))
    args = ["score", "--task", "pope-random", "--data-root", str(pope_root), "--predictions", str(path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "line 1" in result.output and "order" in result.output, result.output


def test_gqa_reads_its_official_predictions_and_scores_both_conventions(world_root, tmp_path):
    task, _ = create_task("gqa", data_root=str(world_root))
    records = task.records[:2]
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps([{"questionId": records[0].id, "prediction": records[0].references[0].capitalize() + "."},
                                {"questionId": records[1].id, "prediction": records[1].references[0]}]))
    args = ["--task", "gqa", "--data-root", str(world_root), "--predictions", str(path), "--allow-missing"]
    normalised = _score(args, tmp_path / "a.json")
    exact = _score([*args, "--scoring", "exact"], tmp_path / "b.json")
    assert normalised["answers_format"] == "GQA predictions" and normalised["scoring"] == "normalised"
    assert normalised["metrics"]["accuracy"] == 1.0 and exact["metrics"]["accuracy"] == 0.5

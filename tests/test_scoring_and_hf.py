"""`score` on official result files, and the same task read from official files vs a local HF dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fastrm_bench.builders import create_task
from fastrm_bench.cli import app


def test_score_vqa_predictions_by_hand(world_root, tmp_path):
    task, _ = create_task("vqav2", data_root=str(world_root))
    records = task.records[:3]
    # scored as lmms-eval does (normalised always); the official convention is tested in test_official_scoring.py
    preds = [{"question_id": int(records[0].id), "answer": records[0].references[0].upper() + "."},  # normalised: right
             {"question_id": int(records[1].id), "answer": "the " + records[1].references[0]},  # article dropped: right
             {"question_id": int(records[2].id), "answer": "purple"}]  # wrong
    path = tmp_path / "vqa.json"
    path.write_text(json.dumps(preds))
    args = ["score", "--task", "vqav2", "--predictions", str(path), "--data-root", str(world_root), "--scoring", "always"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "have no prediction" in result.output
    result = CliRunner().invoke(app, [*args, "--allow-missing", "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["scored"] == 3 and metrics["metrics"]["accuracy"] == pytest.approx(2 / 3)
    assert f"{len(task.records) - 3} question(s) without a prediction were left out" in result.output


def test_score_rejects_unknown_ids_and_malformed_lines(world_root, tmp_path):
    path = tmp_path / "pope.jsonl"
    path.write_text('{"question_id": 99999, "text": "yes"}\n')
    args = ["score", "--task", "pope-random", "--predictions", str(path), "--data-root", str(world_root)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "question ids the task does not have" in result.output
    path.write_text('{"question_id": 1, "text": "yes"}\n{"question_id": 2, \n')
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "pope.jsonl:2: malformed JSON line" in result.output


def test_score_pope_file_matches_hand_count(world_root, tmp_path):
    lines = [json.loads(x) for x in (world_root / "pope/coco_pope_adversarial.json").read_text().splitlines()]
    # answer "Yes." to everything: recall 1, precision 0.5, yes-ratio 1
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps({"question_id": q["question_id"], "text": "Yes."}) + "\n" for q in lines))
    result = CliRunner().invoke(app, ["score", "--task", "pope-adversarial", "--predictions", str(path), "--data-root",
                                      str(world_root), "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert m["recall"] == 1.0 and m["precision"] == 0.5 and m["yes_ratio"] == 1.0 and m["f1"] == pytest.approx(2 / 3)


def _as_hf(task, columns):
    """The task's samples as a local Hugging Face dataset, with the columns the hub copies use."""
    datasets = pytest.importorskip("datasets")
    rows = {k: [] for k in columns}
    for sample in task.samples():
        for key, fn in columns.items():
            rows[key].append(fn(sample))
    features = None
    return datasets.Dataset.from_dict(rows, features=features).cast_column("image", datasets.Image())


@pytest.mark.parametrize("name", ["pope-popular", "vqav2"])
def test_official_files_and_hf_dataset_give_the_same_samples_and_scores(world_root, tmp_path, name):
    official, _ = create_task(name, data_root=str(world_root))
    if name.startswith("pope"):
        columns = {"question_id": lambda s: int(s.id.split("/")[1]), "question": lambda s: s.question,
                   "answer": lambda s: s.references[0], "image_source": lambda s: "", "image": lambda s: s.image,
                   "category": lambda s: s.meta["category"]}
    else:
        columns = {"question_id": lambda s: int(s.id), "question": lambda s: s.question,
                   "answers": lambda s: [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                                         for i, a in enumerate(s.references)],
                   "image_id": lambda s: s.meta["image_id"], "image": lambda s: s.image}
    _as_hf(official, columns).save_to_disk(str(tmp_path / "hf"))
    from_hf, _ = create_task(name, hf_dataset=str(tmp_path / "hf"))
    a, b = list(official.samples(limit=12, seed=3)), list(from_hf.samples(limit=12, seed=3))
    assert [s.id for s in a] == [s.id for s in b]
    assert [(s.question, s.references) for s in a] == [(s.question, s.references) for s in b]
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b))
    predictions = ["yes", "no", "2", "red", "top left", "Yes.", "circle", "No, not", "blue", "3", "square", "no"]
    records_a = [{"prediction": p, "score": official.score(p, s), "meta": s.meta} for p, s in zip(predictions, a)]
    records_b = [{"prediction": p, "score": from_hf.score(p, s), "meta": s.meta} for p, s in zip(predictions, b)]
    assert [r["score"] for r in records_a] == [r["score"] for r in records_b]
    if name.startswith("pope"):
        assert official.aggregate(records_a) == from_hf.aggregate(records_b)

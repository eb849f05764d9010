"""The guide's (docs/extending.md) "Add your own task": a spec alone for a new data layout, and a task class from an entry point.

The code, entry point and specs are taken verbatim from the guide (docs/extending.md), installed as a real
distribution (a .dist-info on sys.path), listed, run on a tiny LLaVA and scored by the CLI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fastrm_bench.builders import create_task
from fastrm_bench.registry import Registry
from tests.test_plugin import _readme_block


def _spec(marker: str) -> dict:
    return yaml.safe_load(_readme_block(marker, "yaml"))


@pytest.fixture
def installed_task(tmp_path) -> tuple[Path, Path]:
    """(package folder to put on PYTHONPATH, spec folder) for the guide's (docs/extending.md) task plug-in."""
    pkg = tmp_path / "pkg"
    (pkg / "my_tasks").mkdir(parents=True)
    (pkg / "my_tasks" / "__init__.py").write_text(_readme_block("task-plugin-code", "python"))
    toml = _readme_block("task-plugin-entry-point", "toml")
    entry = re.search(r'^(\S+)\s*=\s*"(.+)"', toml.split("]", 1)[1].strip(), re.M)
    dist = pkg / "my_tasks-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-tasks\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[fastrm_bench.tasks]\n{entry.group(1)} = {entry.group(2)}\n")
    specs = tmp_path / "specs" / "tasks"
    specs.mkdir(parents=True)
    spec = _spec("task-plugin-spec")
    (specs / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))
    return pkg, specs.parent


def _cli(args: list[str], pkg: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pkg), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "fastrm_bench.cli", *args], capture_output=True, text=True, env=env)


def test_a_task_plugin_is_listed_run_and_scored(installed_task, world_root, tiny_llava_dir, tmp_path, monkeypatch):
    pkg, spec_dir = installed_task
    monkeypatch.syspath_prepend(str(pkg))
    registry = Registry("task", "fastrm_bench.tasks")
    assert registry.entry("short-answers").source == "plugin:my-tasks"
    # a data root in the plug-in's own layout, over images of the embedded world
    vqa, _ = create_task("vqav2", data_root=str(world_root))
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    rows = []
    for record in vqa.records[:4]:
        shutil.copy(record.image, data / "images" / record.image.name)
        rows.append({"id": f"q{record.id}", "image": f"images/{record.image.name}", "question": record.question,
                     "answer": record.references[0]})
    (data / "short_answers_val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec_name = _spec("task-plugin-spec")["name"]

    listed = _cli(["--spec-dir", str(spec_dir), "list", "tasks"], pkg)
    assert listed.returncode == 0 and re.search(rf"^{spec_name}\s+Short answers", listed.stdout, re.M), listed.stderr

    out = tmp_path / "run"
    ran = _cli(["--spec-dir", str(spec_dir), "run", "--method", "attention", "--task", spec_name, "--model",
                str(tiny_llava_dir), "--data-root", str(data), "--limit", "4", "--output-dir", str(out), "--device", "cpu"], pkg)
    assert ran.returncode == 0, ran.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["n"] == 4 and results["config"]["scoring"] == "exact"
    assert results["metrics"]["accuracy"]["ci95"] is not None

    answers = tmp_path / "answers.jsonl"  # LLaVA's answers format: three right (one in capitals), one wrong
    answers.write_text("".join(json.dumps({"question_id": r["id"], "text": r["answer"].upper() if i == 0 else
                                           (r["answer"] if i < 3 else "purple")}) + "\n" for i, r in enumerate(rows)))
    scored = _cli(["--spec-dir", str(spec_dir), "score", "--task", spec_name, "--data-root", str(data), "--predictions",
                   str(answers), "--out", str(tmp_path / "m.json")], pkg)
    assert scored.returncode == 0, scored.stderr
    assert json.loads((tmp_path / "m.json").read_text())["metrics"]["accuracy"] == 0.75
    # an official VQAv2 results file is not one of this task's formats: refused, naming the keys it reads
    vqa_results = tmp_path / "results.json"
    vqa_results.write_text(json.dumps([{"question_id": r["id"], "answer": r["answer"]} for r in rows]))
    refused = _cli(["--spec-dir", str(spec_dir), "score", "--task", spec_name, "--data-root", str(data), "--predictions",
                    str(vqa_results)], pkg)
    assert refused.returncode == 2 and "'question_id', 'text'" in refused.stderr, refused.stderr


def test_a_spec_alone_reads_a_new_data_layout(world_root, tmp_path):
    spec = _spec("task-spec-only")
    data = tmp_path / "data"
    shutil.copytree(world_root, data, ignore=shutil.ignore_patterns("*.png", "*.jpg"))
    for key, default in (("questions", "vqav2/v2_OpenEnded_mscoco_val2014_questions.json"),
                         ("annotations", "vqav2/v2_mscoco_val2014_annotations.json")):
        (data / spec["params"][key]).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(data / default, data / spec["params"][key])
    (tmp_path / "specs" / "tasks").mkdir(parents=True)
    (tmp_path / "specs" / "tasks" / "mine.yaml").write_text(yaml.safe_dump(spec))
    task, _ = create_task("vqav2", data_root=str(world_root))
    preds = tmp_path / "results.json"
    preds.write_text(json.dumps([{"question_id": int(r.id), "answer": r.references[0].upper()} for r in task.records]))
    from typer.testing import CliRunner

    from fastrm_bench.cli import app

    result = CliRunner().invoke(app, ["--spec-dir", str(tmp_path / "specs"), "score", "--task", spec["name"], "--data-root",
                                      str(data), "--predictions", str(preds), "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    out = json.loads((tmp_path / "m.json").read_text())
    # capitals count as right only because the spec chose lmms-eval's convention
    assert out["scoring"] == spec["params"]["scoring"] == "always" and out["metrics"]["accuracy"] == 1.0
    assert out["scored"] == len(task.records)

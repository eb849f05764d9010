"""The lmms-eval plug-in: lmms-eval's own evaluation, answers as its unwrapped model gives them, FastRM maps as
`fastrm-bench run` writes them, and `score --from-lmms-eval` measuring them as a run does.

Needs lmms-eval (installed without torchvision: see docs/recipes/lmms-eval.md); skipped without it. Two families
through lmms-eval's ``llava_hf``: the shipped `tiny-llava-shapes` (its prompt format as a chat template, which
lmms-eval reads from the processor) and a tiny random-weight LLaVA-NeXT. lmms-eval's Qwen2-VL routes need
torchvision (``qwen2_vl`` imports qwen_vl_utils, which imports it), and its generic ``huggingface`` class loads a
checkpoint without its generation head under transformers 5, so Qwen2-VL is not evaluated here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lmms_eval.evaluator", reason="lmms-eval is not installed (docs/recipes/lmms-eval.md installs it)")

from typer.testing import CliRunner  # noqa: E402

from fastrm_bench.cli import app  # noqa: E402
from fastrm_bench.lmms_maps import MAPS_FOLDER, lmms_eval_response  # noqa: E402
from fastrm_bench.maps_io import load_token_maps  # noqa: E402
from fastrm_bench.models.zoo import CHECKPOINTS  # noqa: E402

LIMIT = 4
TASK = "pope_local"
#: tiny-llava-shapes' prompt (its fastrm_bench.json) as a chat template, the form lmms-eval's llava_hf reads
LLAVA_SHAPES_TEMPLATE = ("{% for message in messages %}USER: {% for part in message['content'] %}{% if part['type'] == "
                         "'text' %}{{ part['text'] }}{% endif %}{% endfor %} <image> ASSISTANT:{% endfor %}")
METRICS = ["localisation", "perturbation"]


def write_pope_task(samples, folder: Path) -> Path:
    """lmms-eval's own POPE task (its yaml included: prompts, parsing, metrics) on these samples, as lmms-lab/POPE rows."""
    import datasets

    rows = []
    for sample in samples:
        category, question_id = sample.id.split("/")
        rows.append({"question_id": question_id, "question": sample.question, "answer": sample.references[0],
                     "image_source": sample.id, "image": sample.image, "category": category})
    features = datasets.Features({"question_id": datasets.Value("string"), "question": datasets.Value("string"),
                                  "answer": datasets.Value("string"), "image_source": datasets.Value("string"),
                                  "image": datasets.Image(), "category": datasets.Value("string")})
    folder.mkdir(parents=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(folder / "test.parquet"))
    pope = Path(importlib.util.find_spec("lmms_eval").submodule_search_locations[0]) / "tasks/pope/pope.yaml"
    (folder / f"{TASK}.yaml").write_text(
        f"include: {pope}\ntask: {TASK}\ndataset_path: parquet\n"
        f"dataset_kwargs:\n  data_files:\n    test: {folder / 'test.parquet'}\n"
        "generation_kwargs:\n  max_new_tokens: 10\n  temperature: 0\n  top_p: 1.0\n  num_beams: 1\n  do_sample: false\n"
        "lmms_eval_specific_kwargs:\n  default:\n    pre_prompt: \"\"\n    post_prompt: \"\"\n")
    return folder


def _llava_shapes(tmp: Path) -> tuple[Path, Path]:
    model = tmp / "tiny-llava-shapes"
    shutil.copytree(CHECKPOINTS / "tiny-llava-shapes", model)
    (model / "chat_template.jinja").write_text(LLAVA_SHAPES_TEMPLATE)
    return model, CHECKPOINTS / "fastrm-tiny-llava-shapes"


def _llava_next(tmp: Path) -> tuple[Path, Path]:
    """A random-weight LLaVA-NeXT and a random FastRM proxy of its width (the test compares two computations of one
    function; the proxy records no weights, so the harness takes it for this model)."""
    import torch

    from fastrm_bench.embedded.tiny_random import build_tiny_random
    from fastrm_bench.fastrm.model import FastRM
    from fastrm_bench.models.zoo import load_model

    model = build_tiny_random("llava_next", tmp / "tiny-llava-next", seed=0)
    torch.manual_seed(0)
    proxy = FastRM(load_model(str(model), device="cpu").hidden_size)
    proxy.save_pretrained(tmp / "proxy")
    return model, tmp / "proxy"


def _lmms_eval(model: str, model_args: str, tasks: Path, out: Path) -> dict[int, dict]:
    """lmms-eval's command line, as a user runs it; {doc_id: its sample-log line}."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lmms_eval", "--model", model, "--model_args", model_args, "--tasks", TASK,
               "--include_path", str(tasks), "--device", "cpu", "--batch_size", "1", "--log_samples",
               "--output_path", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    logs = sorted(out.rglob(f"*_samples_{TASK}.jsonl"))
    assert len(logs) == 1, logs
    lines = [json.loads(line) for line in logs[0].read_text().splitlines() if line.strip()]
    return {line["doc_id"]: line for line in lines}


@pytest.mark.parametrize("family", ["llava", "llava_next"])
def test_lmms_eval_answers_and_maps_match_the_harness(family, tmp_path, world_root):
    from fastrm_bench.builders import create_task

    model, proxy = (_llava_shapes if family == "llava" else _llava_next)(tmp_path)
    task, _ = create_task("pope", data_root=str(world_root))
    samples = [task.sample(r) for r in task.select(LIMIT, 0)]
    tasks = write_pope_task(samples, tmp_path / "tasks")
    base = f"pretrained={model},device_map=cpu"
    plain = _lmms_eval("llava_hf", base, tasks, tmp_path / "plain")
    out = tmp_path / "lmms-out"
    wrapped = _lmms_eval("fastrm_llava_hf", f"{base},maps_dir={out},fastrm_checkpoint={proxy}", tasks, out)
    assert sorted(wrapped) == sorted(plain) == list(range(LIMIT))
    assert [lmms_eval_response(wrapped[d]) for d in range(LIMIT)] == [lmms_eval_response(plain[d]) for d in range(LIMIT)]

    specs = tmp_path / "specs"
    (specs / "methods").mkdir(parents=True)
    (specs / "methods" / "fastrm-proxy.yaml").write_text(
        f"name: fastrm-proxy\nimplementation: fastrm\nparams: {{checkpoint: {proxy}}}\n")
    run_dir = tmp_path / "run"
    cli = CliRunner()
    ran = cli.invoke(app, ["--spec-dir", str(specs), "run", "--method", "fastrm-proxy", "--task", "pope", "--model",
                           str(model), "--data-root", str(world_root), "--limit", str(LIMIT), "--device", "cpu",
                           "--output-dir", str(run_dir), *[a for m in METRICS for a in ("--metric", m)]])
    assert ran.exit_code == 0, ran.output
    run_maps = load_token_maps(run_dir)
    lmms_maps = load_token_maps(out / MAPS_FOLDER / TASK)
    records = [json.loads(line) for line in (out / MAPS_FOLDER / TASK / "records.jsonl").read_text().splitlines()]
    assert [r["doc_id"] for r in records] == list(range(LIMIT))
    for doc_id, record in enumerate(records):
        assert record["prediction"] == lmms_eval_response(wrapped[doc_id])
        harness_id = f"{record['doc']['category']}/{record['doc']['question_id']}"
        assert lmms_maps[str(doc_id)].shape == run_maps[harness_id].shape
        np.testing.assert_allclose(lmms_maps[str(doc_id)], run_maps[harness_id], rtol=0, atol=1e-6)

    scored = cli.invoke(app, ["score", "--task", "pope", "--from-lmms-eval", str(out), "--model", str(model),
                              "--data-root", str(world_root), "--device", "cpu",
                              *[a for m in METRICS for a in ("--metric", m)]])
    assert scored.exit_code == 0, scored.output
    results = json.loads((out / "fastrm-scores" / TASK / "results.json").read_text())
    expected = json.loads((run_dir / "results.json").read_text())
    assert results["n"] == LIMIT and results["n_skipped"] == 0
    for key, entry in expected["metrics"].items():
        assert results["metrics"][key]["value"] == pytest.approx(entry["value"], abs=1e-6, nan_ok=True), key


def test_score_refuses_a_folder_without_maps(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / f"20260101_samples_{TASK}.jsonl").write_text(json.dumps({"doc_id": 0, "doc": {}}) + "\n")
    done = CliRunner().invoke(app, ["score", "--task", "pope", "--from-lmms-eval", str(tmp_path)])
    assert done.exit_code == 2
    assert MAPS_FOLDER in done.output and "maps_dir" in done.output

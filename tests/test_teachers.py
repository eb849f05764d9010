"""FastRM distilled from other teachers than Chefer: labels, records, proxy choice, the threshold metric's reference."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from fastrm_bench.builders import create_method, create_metric
from fastrm_bench.explainers.fastrm_method import SHIPPED, SHIPPED_BY_TEACHER, FastRMMethod
from fastrm_bench.fastrm.distill import DatasetConfig, TrainConfig, build_dataset, load_dataset, same_teacher, train_proxy
from fastrm_bench.fastrm.model import LEGACY_TEACHER, CheckpointError, FastRM
from fastrm_bench.metrics.threshold import binarise, confusion_counts
from fastrm_bench.models.zoo import load_model

QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def embedded():
    return load_model("tiny-llava-shapes")


def test_tam_labels_are_tams_maps_and_the_proxy_records_its_teacher(world_root, tmp_path, embedded):
    cfg = DatasetConfig(split="val", data_root=str(world_root), questions=6, max_new_tokens=3, shard_size=3, teacher="tam")
    build_dataset(cfg, tmp_path / "data", **QUIET)
    manifest = json.loads((tmp_path / "data" / "dataset.json").read_text())
    tam_spec = {"name": "tam", "implementation": "tam", "params": {"kernel_size": 3, "interference": True, "filtered": True}}
    assert manifest["teacher"] == tam_spec and manifest["config"]["teacher"] == "tam"
    # the stored maps are TAM's maps of the greedy answer, token by token (first question of the first shard)
    from fastrm_bench.builders import create_task

    task, _ = create_task("vqav2", data_root=str(world_root), split="val")
    sample = task.sample(task.select(6, 0)[0])
    inputs = replace(embedded.build_inputs([sample.image], [task.prompt(sample)]), sample_id=sample.id)
    generation = embedded.generate(inputs, 3, return_hidden=True)[0]
    tam, _ = create_method("tam")
    chefer, _ = create_method("chefer")
    data = load_dataset(tmp_path / "data")
    first = data["relevancy"][: generation.num_generated]
    torch.testing.assert_close(first, tam.explain(embedded, inputs, generation).maps.flatten(1).float())
    assert not torch.allclose(first, chefer.explain(embedded, inputs, generation).maps.flatten(1).float(), atol=1e-3)

    train_proxy(tmp_path / "data", tmp_path / "proxy", TrainConfig(steps=20, batch_size=16, eval_every=10),
                distilled_from="tiny-llava-shapes", **QUIET)
    proxy = FastRM.from_pretrained(tmp_path / "proxy")
    assert proxy.config.teacher == {**tam_spec, "model_weights_sha256": embedded.weights_sha256}
    assert proxy.config.teacher_name == "tam"
    FastRMMethod(checkpoint=str(tmp_path / "proxy"), teacher="tam").proxy_for(embedded)
    with pytest.raises(CheckpointError, match="distilled from 'tam' maps, not from 'chefer'"):
        FastRMMethod(checkpoint=str(tmp_path / "proxy"), teacher="chefer").proxy_for(embedded)
    # a dataset of one teacher is never resumed with another
    with pytest.raises(ValueError, match="another configuration"):
        build_dataset(replace(cfg, teacher="chefer"), tmp_path / "data", **QUIET)


def test_teachers_differing_only_in_cost_parameters_label_the_same_dataset():
    chefer = {"name": "chefer", "implementation": "chefer", "params": {}}
    assert same_teacher(chefer, {**chefer, "params": {"chunk_size": 16, "max_memory": 10**9}})
    dex = {"name": "dex-ar", "implementation": "dex-ar", "params": {"layers": 10}}
    assert same_teacher(dex, {**dex, "params": {"layers": 10, "chunk_size": 4}})
    assert not same_teacher(dex, {**dex, "params": {"layers": 5}})  # another map
    assert not same_teacher(chefer, {**chefer, "name": "chefer-stale", "implementation": "chefer-stale"})


def test_a_dataset_from_before_teachers_resumes_as_chefers(world_root, tmp_path):
    cfg = DatasetConfig(split="val", data_root=str(world_root), questions=2, max_new_tokens=2, shard_size=2)
    build_dataset(cfg, tmp_path / "data", **QUIET)
    manifest = tmp_path / "data" / "dataset.json"
    found = json.loads(manifest.read_text())
    # older datasets were labelled by the chefer spec of their day (chunks of 16 tokens): the same labels
    assert found["teacher"]["name"] == "chefer" and same_teacher(found["teacher"], LEGACY_TEACHER)
    old = {"config": {k: v for k, v in found["config"].items() if k != "teacher"},
           "model_weights_sha256": found["model_weights_sha256"]}
    manifest.write_text(json.dumps(old))
    build_dataset(cfg, tmp_path / "data", **QUIET)  # resumes: no error
    manifest.write_text(json.dumps(old))
    train_proxy(tmp_path / "data", tmp_path / "proxy", TrainConfig(steps=2, batch_size=4, eval_every=2), **QUIET)
    assert FastRM.from_pretrained(tmp_path / "proxy").config.teacher["name"] == "chefer"
    with pytest.raises(ValueError, match="another configuration"):
        build_dataset(replace(cfg, teacher="tam"), tmp_path / "data", **QUIET)


def test_shipped_proxies_by_teacher(embedded):
    assert SHIPPED_BY_TEACHER[("tiny-llava-shapes", "chefer")] == SHIPPED["tiny-llava-shapes"]
    for (model, teacher), path in SHIPPED_BY_TEACHER.items():
        adapter = embedded if model == embedded.name else load_model(model)
        proxy = FastRM.from_pretrained(path, expected_hidden_size=adapter.hidden_size)
        assert proxy.config.teacher_name == teacher and proxy.config.model_weights_sha256 == adapter.weights_sha256, path
        assert sum(p.stat().st_size for p in path.iterdir()) < 200_000  # small enough to ship
    for spec, teacher in (("fastrm", "chefer"), ("fastrm-tam", "tam")):
        method, _ = create_method(spec)
        assert method.proxy_for(embedded).config.teacher_name == teacher
    with pytest.raises(CheckpointError, match="no FastRM checkpoint distilled from 'gradcam'.*shipped teachers for it"):
        FastRMMethod(teacher="gradcam").proxy_for(embedded)


def test_threshold_metric_specs_reference_the_proxys_teacher(world_root, tmp_path):
    """`--method fastrm-tam --metric threshold-tam`: the counts are the proxy's maps against binarised TAM maps."""
    from fastrm_bench.runner import RunConfig, run

    assert create_metric("threshold-tam")[0].needs.reference_method == "tam"
    assert create_metric("threshold-dex-ar")[0].needs.reference_method == "dex-ar"
    out = tmp_path / "run"
    run(RunConfig(method="fastrm-tam", task="vqav2", limit=3, output_dir=str(out), data_root=str(world_root),
                  metrics=["threshold-tam"]), **QUIET)
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    adapter = load_model("tiny-llava-shapes")
    from fastrm_bench.builders import create_task

    task, _ = create_task("vqav2", data_root=str(world_root))
    proxy, tam = create_method("fastrm-tam")[0], create_method("tam")[0]
    by_id = {r.id: r for r in task.select(3, 0)}
    for record in records:
        sample = task.sample(by_id[record["id"]])
        inputs = replace(adapter.build_inputs([sample.image], [task.prompt(sample)]), sample_id=sample.id)
        generation = adapter.generate(inputs, 10, return_hidden=True)[0]
        labels = binarise(tam.explain(adapter, inputs, generation).maps.float(), 0.3)
        expected = confusion_counts(proxy.explain(adapter, inputs, generation).maps.float(), labels)
        assert record["threshold_counts"] == expected


def test_distill_cli_refuses_an_unknown_teacher(tmp_path):
    from fastrm_bench.cli import app

    result = CliRunner().invoke(app, ["distill", "--out", str(tmp_path / "p"), "--teacher", "chefr"])
    assert result.exit_code != 0 and "chefer" in result.output  # "did you mean"
    assert not (tmp_path / "p").exists()

"""The second embedded model's plumbing: the world a model was trained on, checks on variable-size scenes,
the report's model facet and the latency profile on natural answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fastrm_bench.interfaces import Sample
from fastrm_bench.models import zoo
from fastrm_bench.report import label_tasks, load_runs
from fastrm_bench.world import checks
from fastrm_bench.world.build import WorldSizes, WorldVariant, build_world, variant_of_recipe
from fastrm_bench.world.scenes import ImageSizes

SMALL = WorldSizes(train=8, val=12, test=12, pope_images=6)


@pytest.fixture(scope="module")
def variable_world(tmp_path_factory) -> Path:
    return build_world(tmp_path_factory.mktemp("variable") / "world", sizes=SMALL, image_sizes=ImageSizes(),
                       captions=True)


def test_the_world_variant_of_a_recipe():
    assert variant_of_recipe({"steps": 10}) == WorldVariant()
    assert WorldVariant().name == ""
    qwen = variant_of_recipe({"image_sizes": {"min_side": 48, "max_side": 96, "step": 8},
                              "type_weights": {"color": 1.0, "describe": 3.0}})
    assert qwen == WorldVariant(ImageSizes(48, 96, 8), captions=True) and qwen.name == "variable-describe"
    assert variant_of_recipe({"image_sizes": {"min_side": 48, "max_side": 96, "step": 8}}).name == "variable"


def test_a_model_runs_on_the_world_it_was_trained_on(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(WorldVariant, "ensure", lambda self, seed=0: built.append(self) or tmp_path / self.name)
    folder = tmp_path / "model"
    folder.mkdir()
    assert zoo.trained_world(str(folder)) is None  # no training.json: not a train-vlm model
    (folder / "training.json").write_text(json.dumps({"config": {"image_sizes": {"min_side": 48, "max_side": 96,
                                                                                  "step": 8},
                                                                  "type_weights": {"describe": 1.0}}}))
    assert zoo.trained_world(str(folder)) == tmp_path / "variable-describe"
    assert built == [WorldVariant(ImageSizes(), captions=True)]
    assert zoo.trained_world("tiny-llava-shapes") is None  # the default world: the tasks' own default applies
    assert zoo.trained_world("org/some-hub-model") is None


def test_create_task_for_model_uses_that_world_and_an_explicit_root_wins(variable_world, world_root, monkeypatch):
    from fastrm_bench.builders import create_task_for_model

    monkeypatch.setattr(zoo, "trained_world", lambda model: variable_world if model == "qwen" else None)
    task, _ = create_task_for_model("vqav2", "qwen")
    assert task.data_root == variable_world and task.uses_embedded_world and task.data_source == "shapes-variable"
    task, _ = create_task_for_model("vqav2", "qwen", str(world_root))
    assert task.data_root == world_root and not task.uses_embedded_world


def _sample(i: int, size: tuple[int, int]) -> Sample:
    return Sample(id=str(i), image=Image.new("RGB", size), question="q", references=["a"])


def test_checks_batch_samples_of_one_image_size_only():
    sizes = [(48, 64), (64, 48), (48, 64), (96, 96), (48, 64), (64, 48)]
    samples = [_sample(i, s) for i, s in enumerate(sizes)]
    batches = list(checks._batches(samples, 2))
    assert [[s.id for s in b] for b in batches] == [["0", "2"], ["4"], ["1", "5"], ["3"]]
    square = [_sample(i, (64, 64)) for i in range(5)]  # one size: the task's order, as before
    assert [[s.id for s in b] for b in checks._batches(square, 2)] == [["0", "1"], ["2", "3"], ["4"]]


def test_checks_ask_describe_only_on_a_world_with_captions(variable_world, world_root):
    names = [(t.name, tokens) for t, tokens in checks._tasks(variable_world, "test")]
    assert names == [("vqav2", checks.SHORT_ANSWER_TOKENS), ("gqa", checks.SHORT_ANSWER_TOKENS),
                     ("describe", checks.DESCRIBE_TOKENS)]
    assert [t.name for t, _ in checks._tasks(variable_world, "test", describe=False)] == ["vqav2", "gqa"]
    assert [t.name for t, _ in checks._tasks(world_root, "test")] == ["vqav2", "gqa"]


def _fake_run(folder: Path, task: str, model: str, source: str) -> None:
    folder.mkdir(parents=True)
    config = {"method_spec": {"name": "fastrm", "implementation": "fastrm", "params": {}},
              "task_spec": {"name": task, "implementation": task, "params": {}}, "model": model, "data_source": source}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "results.json").write_text(json.dumps({"n": 1, "metrics": {}}))


def test_report_labels_facet_tasks_by_model_and_data_source(tmp_path):
    _fake_run(tmp_path / "a", "vqav2", "tiny-llava-shapes", "shapes")
    _fake_run(tmp_path / "b", "vqav2", "/some/where/tiny-qwen-shapes", "shapes-variable")
    _fake_run(tmp_path / "c", "vqav2", "tiny-llava-shapes", "shapes-shifted")
    _fake_run(tmp_path / "d", "describe", "/some/where/tiny-qwen-shapes", "shapes-variable")
    runs, _ = load_runs([tmp_path])
    label_tasks(runs)
    assert {r.path.name: r.task_label for r in runs} == {
        "a": "vqav2 (shapes, tiny-llava-shapes)", "b": "vqav2 (shapes-variable, tiny-qwen-shapes)",
        "c": "vqav2 (shapes-shifted, tiny-llava-shapes)", "d": "describe"}


def test_natural_profile_times_the_models_own_answers(tiny_llava_dir, world_root, tmp_path):
    from fastrm_bench.profile import profile_natural, save

    torch.manual_seed(0)
    frame = profile_natural(("random", "chefer"), "vqav2", limit=3, model=str(tiny_llava_dir), max_new_tokens=4,
                            data_root=str(world_root), device="cpu")
    assert set(frame.method) == {"random", "chefer"}
    assert frame.groupby("method").samples.sum().to_dict() == {"chefer": 3, "random": 3}
    assert frame.tokens.between(1, 4).all() and (frame.map_seconds > 0).all()
    assert frame.peak_memory_mb.isna().all() and set(frame.answers) == {"natural vqav2"}
    save(frame, tmp_path / "profile")
    from fastrm_bench.report import Report, fig_latency

    report = Report(tmp_path, "test")
    fig_latency([tmp_path / "profile"], report)
    assert report.made and (tmp_path / "latency_memory.png").is_file()
    assert np.isfinite(frame.generation_seconds).all()


def test_distillation_pads_images_of_different_token_counts(variable_world, tmp_path):
    """A dynamic-resolution model's questions have different image-token counts: the dataset pads them, records
    each question's count, and training and its scores see only real image tokens."""
    from fastrm_bench.fastrm.distill import (
        DatasetConfig,
        TrainConfig,
        build_dataset,
        load_dataset,
        predict,
        split_tokens,
        train_proxy,
    )
    from fastrm_bench.metrics.threshold import binarise

    data_dir = tmp_path / "data"
    build_dataset(DatasetConfig(model="tiny-qwen-shapes", split="val", data_root=str(variable_world), questions=24,
                                shard_size=10), data_dir, log=lambda *_: None)
    data = load_dataset(data_dir)
    counts = data["key_mask"].sum(1)
    assert len(set(counts.tolist())) > 1 and data["keys"].shape[1] == int(counts.max())
    padded = ~data["key_mask"][data["owner"]]
    assert float(data["relevancy"][padded].abs().sum()) == 0.0 and float(data["keys"][~data["key_mask"]].abs().sum()) == 0
    recipe = TrainConfig(steps=20, lr=1e-3, eval_every=10)
    proxy = train_proxy(data_dir, tmp_path / "proxy", recipe, distilled_from="tiny-qwen-shapes", log=lambda *_: None)
    _, val = split_tokens(data, recipe)
    probs = predict(proxy, data, val)
    assert probs.numel() == int(data["key_mask"][data["owner"][val]].sum())  # real tokens only
    assert proxy.config.metrics["held_out_tokens"] == len(val)
    assert binarise(data["relevancy"], 0.3)[padded].sum() == 0


def test_one_proxy_learns_from_the_datasets_of_several_tasks(variable_world, tmp_path):
    """`distill --task vqav2 --task describe`: one dataset per task, one proxy trained on their union; datasets of
    another teacher cannot be mixed in."""
    from fastrm_bench.fastrm.distill import DatasetConfig, TrainConfig, build_dataset, data_hash, load_dataset, train_proxy

    dirs = [tmp_path / "vqav2", tmp_path / "describe"]
    for task, folder in zip(("vqav2", "describe"), dirs):
        build_dataset(DatasetConfig(model="tiny-qwen-shapes", task=task, split="val", data_root=str(variable_world),
                                    questions=6, max_new_tokens=20), folder, log=lambda *_: None)
    each = [load_dataset(d) for d in dirs]
    both = load_dataset(dirs)
    assert both["query"].shape[0] == sum(d["query"].shape[0] for d in each)
    assert both["keys"].shape[0] == 12 and int(both["owner"].max()) == 11
    assert each[1]["query"].shape[0] > 6 * 5  # captions: many tokens per question
    proxy = train_proxy(dirs, tmp_path / "proxy", TrainConfig(steps=4, batch_size=8, eval_every=2), log=lambda *_: None)
    assert proxy.config.training_data_sha256 == data_hash(dirs) != data_hash(dirs[0])
    build_dataset(DatasetConfig(model="tiny-qwen-shapes", task="gqa", split="val", data_root=str(variable_world),
                                questions=4, teacher="rollout"), tmp_path / "rollout", log=lambda *_: None)
    with pytest.raises(ValueError, match="another teacher"):
        train_proxy([dirs[0], tmp_path / "rollout"], tmp_path / "mixed", TrainConfig(steps=2), log=lambda *_: None)


def _curve_run(folder: Path, method: str, model: str, source: str, level: float) -> None:
    """A run whose every sample's PP and NP curve is flat at ``level`` (so both AUCs are ``level``)."""
    folder.mkdir(parents=True)
    config = {"method_spec": {"name": method, "implementation": method, "params": {}},
              "task_spec": {"name": "vqav2", "implementation": "vqav2", "params": {}}, "model": model,
              "data_source": source, "run": {"seed": 0}}
    (folder / "config.json").write_text(json.dumps(config))
    curves = {"positive": [level, level], "negative": [level, level]}
    (folder / "results.json").write_text(json.dumps({"n": 20, "metrics": {"pp_auc": {"value": level}},
                                                     "curves": {"fractions": [0.0, 1.0], **curves}}))
    (folder / "samples.jsonl").write_text("".join(json.dumps({"id": str(i), "curves": curves}) + "\n" for i in range(20)))


def test_rankings_across_models_say_which_pairs_hold_and_which_reverse(tmp_path):
    from fastrm_bench.report import Report, table_rankings_across_models

    levels = {"llava": {"a": 0.1, "b": 0.5, "c": 0.9, "d": 0.1}, "qwen": {"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.1}}
    for model, by_method in levels.items():
        for method, level in by_method.items():
            _curve_run(tmp_path / "runs" / model / method, method, model, f"world-{model}", level)
    _curve_run(tmp_path / "runs" / "shifted", "c", "llava", "world-shifted", 0.0)  # not the model's home world
    runs, _ = load_runs([tmp_path / "runs"])
    report = Report(tmp_path / "report", "test")
    report.out.mkdir()
    table_rankings_across_models(runs, report)
    text = (report.out / "rankings_across_models.md").read_text()
    rows = pd.read_csv(report.out / "rankings_across_models.csv").to_dict("records")
    verdicts = {(row["A"], row["B"]): row["PP"] for row in rows}
    assert verdicts[("a", "b")] == verdicts[("a", "c")] == "holds"  # a is better than b and c on both
    assert verdicts[("b", "c")] == "reversed"  # b beats c on llava, c beats b on qwen
    assert verdicts[("a", "d")] == "undecided"  # the same maps: no difference anywhere
    assert "vqav2 (llava, qwen; 4 methods, 6 pairs)" in text

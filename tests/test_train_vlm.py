"""The embedded model's training recipe: auxiliary targets, and resuming that loses nothing."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import fastrm_bench.embedded.train_tiny as train_tiny
from fastrm_bench.cli import app
from fastrm_bench.embedded.tiny_llava import TinyLlavaSize
from fastrm_bench.embedded.train_tiny import (
    TrainConfig,
    locate_targets,
    masked_mse,
    object_centres,
    patch_centres,
    patch_roles,
)
from fastrm_bench.models.zoo import CHECKPOINTS
from fastrm_bench.world.questions import QUESTION_TYPES
from fastrm_bench.world.scenes import generate_scene, patch_labels, patch_owners


def test_patch_centres_give_each_object_patch_its_object_centre_and_nan_elsewhere():
    for seed in range(30):
        scene = generate_scene(seed)
        owners = patch_owners(scene, 8).reshape(-1)
        centres = patch_centres(scene, 8)
        colour, _ = patch_labels(scene, 8)
        assert np.array_equal(np.isnan(centres[:, 0]), colour.reshape(-1) == 0)
        for i, obj in enumerate(scene.objects):
            x, y = obj.center
            expected = np.array([2 * x / 64 - 1, 2 * y / 64 - 1], dtype=np.float32)
            assert np.allclose(centres[owners == i], expected)
        assert np.all(np.abs(object_centres(scene)) < 1)


def test_locate_targets_order_target_and_anchor_as_the_relation_says():
    rng = np.random.default_rng(0)
    checked = 0
    for seed in range(300):
        scene = generate_scene(seed)
        q = QUESTION_TYPES["relate_verify"](scene, rng)
        if q is None:
            continue
        target_x, anchor_x = locate_targets(scene, q)
        says_left = " left of " in q.question
        assert (target_x < anchor_x) == (says_left == (q.answer == "yes"))
        checked += 1
        colour_q = QUESTION_TYPES["color"](scene, rng)
        if colour_q is not None:
            x, missing = locate_targets(scene, colour_q)
            assert math.isnan(missing) and x == pytest.approx(float(object_centres(scene)[colour_q.refs[0], 0]))
    assert checked > 50
    absent = next(q for q in (QUESTION_TYPES["exist"](generate_scene(s), rng) for s in range(50)) if q.answer == "no")
    assert all(math.isnan(v) for v in locate_targets(generate_scene(0), absent))


def test_patch_roles_mark_target_and_anchor_patches():
    rng = np.random.default_rng(1)
    seen = set()
    for seed in range(100):
        scene = generate_scene(seed)
        owners = patch_owners(scene, 8).reshape(-1)
        for name in ("relate_shape", "color", "exist"):
            q = QUESTION_TYPES[name](scene, rng)
            if q is None:
                continue
            role = patch_roles(owners, q)
            if name == "relate_shape":
                target, anchor = q.refs
                assert np.array_equal(role == 1, owners == target) and np.array_equal(role == 2, owners == anchor)
                seen.add(name)
            elif q.refs:
                assert np.array_equal(role == 1, owners == q.refs[0]) and not (role == 2).any()
                seen.add(name)
            else:  # "is there a ...?" answered no: nothing to point at
                assert not role.any()
                seen.add("none")
    assert seen == {"relate_shape", "color", "exist", "none"}


def test_masked_mse_ignores_missing_targets_and_is_zero_without_any():
    prediction = torch.tensor([[1.0, 5.0], [3.0, 0.0]], requires_grad=True)
    target = torch.tensor([[0.0, math.nan], [1.0, math.nan]])
    assert masked_mse(prediction, target).item() == pytest.approx((1 + 4) / 2)
    empty = masked_mse(prediction, torch.full((2, 2), math.nan))
    empty.backward()
    assert empty.item() == 0.0 and prediction.grad is not None


TINY = TrainConfig(steps=3, vision_steps=2, images_per_step=2, questions_per_image=2, warmup_steps=1,
                   checkpoint_every=1, eval_every=100, eval_images=50, centre_weight=1.0, locate_weight=1.0,
                   curriculum=((1, 2),), size=TinyLlavaSize(vision_hidden=32, vision_layers=1, text_hidden=32,
                                                            text_layers=2, heads=2, mlp_ratio=2))


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    straight = train_tiny.train(TINY, tmp_path / "straight", log=lambda _: None)

    real_make_batch, calls = train_tiny.make_batch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # after 2 vision steps and 1 full step: 3 checkpoints written
            raise KeyboardInterrupt
        return real_make_batch(*args, **kwargs)

    monkeypatch.setattr(train_tiny, "make_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_tiny.train(TINY, tmp_path / "resumed", log=lambda _: None)
    assert json.loads((tmp_path / "resumed/checkpoint/state.json").read_text())["step"] == 3
    monkeypatch.setattr(train_tiny, "make_batch", real_make_batch)
    resumed = train_tiny.train(TINY, tmp_path / "resumed", log=lambda _: None)

    assert resumed == straight
    a = load_file(str(tmp_path / "straight/model/model.safetensors"))
    b = load_file(str(tmp_path / "resumed/model/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "resumed/train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    assert all(r["locate"] > 0 and r["role"] > 0 for r in log if r["step"] > TINY.vision_steps)
    assert all(r["centre"] > 0 for r in log)


def test_a_recipe_round_trips_through_training_json_and_unknown_fields_are_refused(tmp_path):
    saved = json.loads(json.dumps({"config": asdict(TINY), "val": {}}))  # as train() writes it
    assert TrainConfig.from_dict(saved) == TINY
    assert TrainConfig.from_dict({"role_weight": 0.0}) == replace(TrainConfig(), role_weight=0.0)
    with pytest.raises(ValueError, match="unknown recipe field.*rol_weight"):
        TrainConfig.from_dict({"rol_weight": 0.0})
    bad = tmp_path / "recipe.json"
    bad.write_text(json.dumps({"rol_weight": 0.0}))
    result = CliRunner().invoke(app, ["train-vlm", "--out", str(tmp_path / "out"), "--recipe", str(bad)])
    assert result.exit_code == 2 and "rol_weight" in result.output
    assert not (tmp_path / "out").exists()


def test_the_default_recipe_is_the_shipped_checkpoints_recipe():
    """`train-vlm` with no options must retrain what ships, or the README's model card lies."""
    shipped = json.loads((CHECKPOINTS / "tiny-llava-shapes" / "training.json").read_text())
    assert TrainConfig.from_dict(shipped) == TrainConfig()


@pytest.mark.parametrize("recipe", sorted((Path(__file__).parents[1] / "docs" / "recipes").glob("*.json")), ids=lambda p: p.name)
def test_documented_recipes_parse(recipe):
    assert TrainConfig.from_dict(json.loads(recipe.read_text())) != TrainConfig()

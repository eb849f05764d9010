"""`train-multi`: fine-tuning a shipped model on two-image and clip questions (a few steps here; the shipped
fine-tuned model and its held-out numbers are made by the command itself, `docs/embedded-world.md`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fastrm_bench.embedded.train_multi import MultiTrainConfig, TrainItems, answer_loss, finetune
from fastrm_bench.interfaces import Video


@pytest.fixture
def tiny_qwen_adapter_copy(tmp_path):
    """A tiny random Qwen2-VL of its own (fine-tuning changes it)."""
    from fastrm_bench.embedded.tiny_random import build_tiny_random
    from fastrm_bench.models.adapter import HFVisionLanguageAdapter

    return HFVisionLanguageAdapter.from_pretrained(build_tiny_random("qwen2_vl", tmp_path / "qwen"), device="cpu")


def test_items_are_the_tasks_questions_drawn_from_the_train_split():
    items = TrainItems(None, scenes=50, seed=0)
    rng = np.random.default_rng(0)
    images, prompt, answer = items.pair(rng)
    assert len(images) == 2 and prompt.endswith("in the left image or the right image?") and answer in ("left", "right")
    video, prompt, answer = items.clip(rng)
    assert isinstance(video, Video) and prompt.endswith("moving left or right?") and answer in ("left", "right")
    image, prompt, answer = items.single(rng)
    assert prompt.endswith(("up to two words.", "single word or phrase.")) and answer
    again = TrainItems(None, scenes=50, seed=0).pair(np.random.default_rng(0))
    assert again[1:] == items.pair(np.random.default_rng(0))[1:]  # deterministic for a seed


def test_a_few_steps_lower_the_answer_loss_of_their_items(tiny_qwen_adapter_copy):
    """Three steps on one repeated batch: the loss of that batch falls (the loop trains what it is given)."""
    adapter = tiny_qwen_adapter_copy
    items = TrainItems(None, scenes=20, seed=0)
    fixed = [items.draw(kind, np.random.default_rng(k)) for k, kind in enumerate(("pairs", "clips", "single"))]

    class Fixed(TrainItems):
        def draw(self, kind, rng):
            return fixed[("pairs", "clips", "single").index(kind)]

    with torch.no_grad():
        before = sum(float(answer_loss(adapter, item)) for item in fixed)
    losses = finetune(adapter, Fixed(None, 20, 0), MultiTrainConfig(steps=4, accumulate=3, lr=1e-3), log=lambda *_: None)
    with torch.no_grad():
        after = sum(float(answer_loss(adapter, item)) for item in fixed)
    assert len(losses) == 4 and all(np.isfinite(losses)) and after < before


def test_train_multi_writes_a_model_that_runs_and_records_its_held_out_accuracy(tmp_path):
    from typer.testing import CliRunner

    from fastrm_bench.cli import app

    out = tmp_path / "multi"
    result = CliRunner().invoke(app, ["train-multi", "--out", str(out), "--steps", "1", "--eval-questions", "2",
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "training.json").read_text())
    assert set(record["finetune"]["heldout"]) == {"pairs", "clips", "vqav2", "gqa"}
    assert record["config"]["image_sizes"] is not None  # the base recipe: runs of it use the base model's world
    run = CliRunner().invoke(app, ["run", "--model", str(out), "--method", "chefer", "--task", "clips", "--limit", "1",
                                   "--output-dir", str(tmp_path / "run"), "--device", "cpu"])
    assert run.exit_code == 0, run.output

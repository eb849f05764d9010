"""Fine-tune a shipped model on questions about two images and about clips (`fastrm-bench train-multi`).

The embedded models learnt one image per question. This teaches one of them the `pairs` task ("Is the yellow
circle in the left image or the right image?") and the `clips` task ("Is the yellow circle moving left or
right?") while replaying its single-image questions, so that per-image and per-frame maps can be measured on a
model that answers them. Training items are drawn from the *train* split of the model's world: pairs of train
scenes where exactly one shows the object, clips of train seeds, and the world's VQAv2/GQA-style questions on
train scenes; the held-out numbers are the `pairs` task (built from the val POPE files) and the `clips` task's
val split, scored by the tasks themselves.

The loss is the answer's cross-entropy under teacher forcing (answer + end of sequence), every input built by
the harness's own adapter (`build_inputs`: several images, videos), so training sees exactly the prompts and
token layouts that runs see. Deterministic for a seed on CPU.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fastrm_bench.interfaces import Video
from fastrm_bench.world.clips import generate_clip
from fastrm_bench.world.questions import questions_for_scene
from fastrm_bench.world.scenes import ImageSizes, Scene, generate_scene, jpeg_roundtrip, scene_seed, scene_size

#: the tasks' own prompt suffixes for replayed single-image questions (VQAv2's, GQA's)
SUFFIXES = {"vqa": " Answer the question using up to two words.", "gqa": " Answer the question using a single word or phrase."}
#: clips of the train split are drawn from these seeds (the clips task offsets every split the same way)
CLIP_SEED_OFFSET = 1_000_000


@dataclass
class MultiTrainConfig:
    """What `train-multi` does; saved in the model folder's ``training.json`` under "finetune"."""

    steps: int = 1500
    accumulate: int = 8  # items per optimiser step
    lr: float = 3e-4
    seed: int = 0
    train_scenes: int = 2000  # train-split scenes (and clip seeds) items are drawn from
    #: relative frequency of each kind of item
    weights: dict[str, float] = field(default_factory=lambda: {"pairs": 1.0, "clips": 1.0, "single": 1.0})
    eval_questions: int = 200


Item = tuple[Any, str, str]  # (what build_inputs takes for the row, prompt, answer)


class TrainItems:
    """Training items of the three kinds, drawn from the train split with the model's image sizes."""

    def __init__(self, image_sizes: ImageSizes | None, scenes: int, seed: int):
        self.image_sizes, self.scenes, self.seed = image_sizes, scenes, seed

    def scene(self, index: int) -> Scene:
        seed = scene_seed("train", index, self.seed)
        return generate_scene(seed, size=scene_size(seed, self.image_sizes) if self.image_sizes else None)

    def pair(self, rng: np.random.Generator) -> Item:
        """Two train scenes, the object in exactly one of them; which side it is on is drawn."""
        while True:
            first, second = (self.scene(int(i)) for i in rng.integers(0, self.scenes, 2))
            absent = {o.category for o in second.objects}
            candidates = [o for o in first.objects if o.category not in absent]
            if candidates:
                break
        target = candidates[int(rng.integers(len(candidates)))]
        left = bool(rng.integers(2))
        images = (jpeg_roundtrip(first.image), jpeg_roundtrip(second.image))
        return (images if left else images[::-1]), f"Is the {target.category} in the left image or the right image?", \
            ("left" if left else "right")

    def clip(self, rng: np.random.Generator) -> Item:
        clip = generate_clip(scene_seed("train", int(rng.integers(0, self.scenes)), self.seed) + CLIP_SEED_OFFSET)
        return Video(tuple(Image.fromarray(f) for f in clip.frames)), f"Is the {clip.category} moving left or right?", \
            clip.direction

    def single(self, rng: np.random.Generator) -> Item:
        scene = self.scene(int(rng.integers(0, self.scenes)))
        questions = questions_for_scene(scene, rng)
        question = questions[int(rng.integers(len(questions)))]
        return jpeg_roundtrip(scene.image), question.question + SUFFIXES[question.family], question.answer

    def draw(self, kind: str, rng: np.random.Generator) -> Item:
        return {"pairs": self.pair, "clips": self.clip, "single": self.single}[kind](rng)


def answer_loss(adapter, item: Item) -> torch.Tensor:
    """Cross-entropy of the answer and end of sequence after the prompt (teacher forcing)."""
    images, prompt, answer = item
    inputs = adapter.build_inputs([images], [prompt])
    tokenizer = adapter.processor.tokenizer
    ids = tokenizer(" " + answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
    ids = torch.cat([ids, torch.tensor([[tokenizer.eos_token_id]])], dim=1).to(adapter.device)
    tensors = dict(inputs.tensors)
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        if key in tensors:
            tensors[key] = torch.cat([tensors[key], adapter.family_spec.answer_inputs(key, ids)], dim=1)
    labels = torch.full_like(tensors["input_ids"], -100)
    labels[:, -ids.shape[1] :] = ids
    return adapter.model(**tensors, labels=labels).loss


def finetune(adapter, items: TrainItems, cfg: MultiTrainConfig, log: Callable[[str], Any] = print) -> list[float]:
    """Train ``adapter.model`` in place; returns the loss of every step."""
    torch.manual_seed(cfg.seed)
    model = adapter.model
    model.train()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0 - step / max(cfg.steps, 1))
    kinds, weights = zip(*cfg.weights.items())
    probabilities = np.asarray(weights, dtype=float) / sum(weights)
    rng = np.random.default_rng(cfg.seed)
    losses, start = [], time.perf_counter()
    for step in range(cfg.steps):
        optimiser.zero_grad()
        total = 0.0
        for _ in range(cfg.accumulate):
            loss = answer_loss(adapter, items.draw(kinds[int(rng.choice(len(kinds), p=probabilities))], rng))
            (loss / cfg.accumulate).backward()
            total += float(loss.detach()) / cfg.accumulate
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        losses.append(total)
        if step % 100 == 0 or step == cfg.steps - 1:
            log(f"step {step}: loss {np.mean(losses[-100:]):.3f} ({time.perf_counter() - start:.0f} s)")
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return losses


def heldout_accuracy(adapter, task, questions: int, seed: int = 0) -> float:
    """The task's own score of greedy answers on a seeded subsample of its (held-out) questions."""
    scores = []
    for sample in task.samples(limit=questions, seed=seed):
        generation = adapter.generate(adapter.build_inputs([sample.model_images], [task.prompt(sample)]), 5)[0]
        scores.append(task.score(generation.text, sample))
    return float(np.mean(scores))


def save(adapter, out: Path, cfg: MultiTrainConfig, base: str, base_recipe: dict[str, Any], heldout: dict[str, float],
         seconds: float) -> Path:
    """The model folder: weights (safetensors), processor, and ``training.json`` (the base recipe, so runs use the
    base model's world, plus what the fine-tuning did and measured)."""
    out.mkdir(parents=True, exist_ok=True)
    adapter.model.save_pretrained(out)
    adapter.processor.save_pretrained(out)
    record = {**base_recipe, "finetune": {"base": base, "config": asdict(cfg), "heldout": heldout,
                                          "train_seconds": round(seconds, 1)}}
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return out

"""Quality checks of a model on the embedded world: held-out accuracy and grounding.

- `heldout_accuracy`: greedy answers to the test split's VQAv2- and GQA-format questions (and its
  describe captions, on a world built with them), scored by the tasks' own metrics, per question type.
- `grounding_check`: accuracy on the VQAv2- and GQA-format questions with (a) the image tokens of
  the referenced objects removed and (b) as many random tokens *not* touching a referenced object
  removed. A grounded model loses much in (a) and almost nothing in (b).

Both work on worlds of variable-size scenes: samples are batched by image size, so every image of a
batch has the same number of image tokens.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fastrm_bench.interfaces import ModelAdapter, ModelInputs, Sample, Task
from fastrm_bench.metrics.localisation import object_tokens
from fastrm_bench.tasks.describe import DescribeTask
from fastrm_bench.tasks.gqa import GQATask
from fastrm_bench.tasks.vqav2 import VQAv2Task

#: new tokens a short answer may take, and a describe caption (up to five objects, three words and a comma each)
SHORT_ANSWER_TOKENS = 5
DESCRIBE_TOKENS = 20


def _has_captions(data_root: Path | None) -> bool:
    manifest = data_root / "manifest.json" if data_root is not None else None
    return manifest is not None and manifest.is_file() and bool(json.loads(manifest.read_text()).get("captions"))


def _tasks(data_root: Path | None, split: str, describe: bool = True) -> list[tuple[Task, int]]:
    """(task, new tokens its answers may take): the question tasks of the world, and its describe task when the
    world has captions (and ``describe``)."""
    tasks: list[tuple[Task, int]] = [(VQAv2Task(data_root=data_root, split=split), SHORT_ANSWER_TOKENS),
                                     (GQATask(data_root=data_root, split=split), SHORT_ANSWER_TOKENS)]
    if describe and _has_captions(data_root):
        tasks.append((DescribeTask(data_root=data_root, split=split), DESCRIBE_TOKENS))
    return tasks


def _batches(samples: list[Sample], size: int) -> Iterator[list[Sample]]:
    """Batches of at most ``size`` samples of one image size each (the task's order within a size)."""
    by_size: dict[tuple[int, int], list[Sample]] = {}
    for sample in samples:
        by_size.setdefault(sample.image.size, []).append(sample)
    for group in by_size.values():
        for i in range(0, len(group), size):
            yield group[i : i + size]


def _inputs(adapter: ModelAdapter, task: Task, batch: list[Sample]) -> ModelInputs:
    return adapter.build_inputs([s.model_images for s in batch], [task.prompt(s) for s in batch])


def _answers(adapter: ModelAdapter, task: Task, batch: list[Sample], keep: torch.Tensor | None = None,
             inputs: ModelInputs | None = None, tokens: int = SHORT_ANSWER_TOKENS) -> list[str]:
    inputs = inputs or _inputs(adapter, task, batch)
    return [g.text for g in adapter.generate(inputs, max_new_tokens=tokens, image_keep=keep)]


def heldout_accuracy(adapter: ModelAdapter, data_root: Path | None = None, split: str = "test", limit: int | None = None,
                     batch_size: int = 32, seed: int = 0) -> dict[str, float]:
    """Accuracy per question type, ``overall`` (mean over the questions) and ``n`` on ``split``; on a world with
    captions also ``describe`` (exact match of the whole caption) and ``n_describe``.

    Captions are kept out of ``overall``: a 5-20 token exact match and a one-word answer are different scales, and
    averaging them would let the caption count move the question accuracy."""
    per_type: dict[str, list[float]] = defaultdict(list)
    captions: list[float] = []
    for task, tokens in _tasks(data_root, split):
        samples = list(task.samples(limit=limit, seed=seed))
        scores = captions if isinstance(task, DescribeTask) else None
        for batch in tqdm(list(_batches(samples, batch_size)), desc=f"accuracy {task.name}", leave=False):
            for sample, answer in zip(batch, _answers(adapter, task, batch, tokens=tokens)):
                (scores if scores is not None else per_type[sample.meta["type"]]).append(task.score(answer, sample))
    out = {t: float(np.mean(v)) for t, v in sorted(per_type.items())}
    out["overall"] = float(np.mean([s for v in per_type.values() for s in v]))
    out["n"] = float(sum(len(v) for v in per_type.values()))
    if captions:
        out["describe"] = float(np.mean(captions))
        out["n_describe"] = float(len(captions))
    return out


def grounding_check(adapter: ModelAdapter, data_root: Path | None = None, split: str = "test", limit: int | None = None,
                    batch_size: int = 32, seed: int = 0) -> dict[str, dict[str, float]]:
    """Accuracy unmasked / referenced objects removed / as many random other tokens removed, per type."""
    rng = np.random.default_rng(seed)
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for task, _ in _tasks(data_root, split, describe=False):
        samples = [s for s in task.samples(limit=limit, seed=seed) if s.mask is not None]
        for batch in tqdm(list(_batches(samples, batch_size)), desc=f"grounding {task.name}", leave=False):
            inputs = _inputs(adapter, task, batch)
            on_object = np.stack([object_tokens(layout, s.mask) for layout, s in zip(inputs.layouts, batch)])
            object_keep = torch.from_numpy(~on_object).float()
            random_keep = torch.ones_like(object_keep)
            for row, obj in enumerate(on_object):
                free = np.flatnonzero(~obj)
                random_keep[row, rng.choice(free, size=min(int(obj.sum()), len(free)), replace=False)] = 0
            for condition, keep in (("unmasked", None), ("object_removed", object_keep), ("random_removed", random_keep)):
                for sample, answer in zip(batch, _answers(adapter, task, batch, keep, inputs)):
                    scores[sample.meta["type"]][condition].append(task.score(answer, sample))
    out: dict[str, dict[str, float]] = {}
    for qtype, by_condition in sorted(scores.items()):
        out[qtype] = {c: float(np.mean(v)) for c, v in by_condition.items()}
        out[qtype]["n"] = float(len(by_condition["unmasked"]))
    everything = defaultdict(list)
    for by_condition in scores.values():
        for c, v in by_condition.items():
            everything[c] += v
    out["overall"] = {c: float(np.mean(v)) for c, v in everything.items()}
    out["overall"]["n"] = float(len(everything["unmasked"]))
    for row in out.values():
        row["drop_object"] = row["unmasked"] - row["object_removed"]
        row["drop_random"] = row["unmasked"] - row["random_removed"]
    return out

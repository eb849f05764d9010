"""Quality checks of a model on the embedded world: held-out accuracy and grounding.

- `heldout_accuracy`: greedy answers to the test split's VQAv2- and GQA-format questions,
  scored by the tasks' own metrics, per question type.
- `grounding_check`: accuracy with (a) the image tokens of the referenced objects removed and
  (b) as many random tokens *not* touching a referenced object removed. A grounded model loses
  much in (a) and almost nothing in (b).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fastrm_bench.interfaces import ModelAdapter, ModelInputs, Sample, Task
from fastrm_bench.metrics.localisation import object_tokens
from fastrm_bench.tasks.gqa import GQATask
from fastrm_bench.tasks.vqav2 import VQAv2Task


def _tasks(data_root: Path | None, split: str) -> list[Task]:
    return [VQAv2Task(data_root=data_root, split=split), GQATask(data_root=data_root, split=split)]


def _batches(samples: list[Sample], size: int) -> Iterator[list[Sample]]:
    for i in range(0, len(samples), size):
        yield samples[i : i + size]


def _inputs(adapter: ModelAdapter, task: Task, batch: list[Sample]) -> ModelInputs:
    return adapter.build_inputs([s.image for s in batch], [task.prompt(s) for s in batch])


def _answers(adapter: ModelAdapter, task: Task, batch: list[Sample], keep: torch.Tensor | None = None,
             inputs: ModelInputs | None = None) -> list[str]:
    inputs = inputs or _inputs(adapter, task, batch)
    return [g.text for g in adapter.generate(inputs, max_new_tokens=5, image_keep=keep)]


def heldout_accuracy(adapter: ModelAdapter, data_root: Path | None = None, split: str = "test", limit: int | None = None,
                     batch_size: int = 32, seed: int = 0) -> dict[str, float]:
    """Accuracy per question type and overall (mean over questions) on ``split``."""
    per_type: dict[str, list[float]] = defaultdict(list)
    for task in _tasks(data_root, split):
        samples = list(task.samples(limit=limit, seed=seed))
        for batch in tqdm(list(_batches(samples, batch_size)), desc=f"accuracy {task.name}", leave=False):
            for sample, answer in zip(batch, _answers(adapter, task, batch)):
                per_type[sample.meta["type"]].append(task.score(answer, sample))
    out = {t: float(np.mean(v)) for t, v in sorted(per_type.items())}
    out["overall"] = float(np.mean([s for v in per_type.values() for s in v]))
    out["n"] = float(sum(len(v) for v in per_type.values()))
    return out


def grounding_check(adapter: ModelAdapter, data_root: Path | None = None, split: str = "test", limit: int | None = None,
                    batch_size: int = 32, seed: int = 0) -> dict[str, dict[str, float]]:
    """Accuracy unmasked / referenced objects removed / as many random other tokens removed, per type."""
    rng = np.random.default_rng(seed)
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for task in _tasks(data_root, split):
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

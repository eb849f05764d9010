"""The three small contracts everything else plugs into: model adapter, task, explanation method.

Conventions (see shared SPEC section 1):
- image-token positions come from the input ids (`config.image_token_id`), never a constant;
- the LM position that predicts generated token t is ``p_t = prompt_length - 1 + t``;
- a method returns one map per generated token, ``[T, grid_h, grid_w]``, plus what it cost.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from PIL import Image


@dataclass
class Sample:
    """One question about one image, as every task yields it."""

    id: str
    image: Image.Image
    question: str
    references: list[str]  # accepted answers (VQAv2: the 10 human answers)
    meta: dict[str, Any] = field(default_factory=dict)
    #: union mask [H, W] of the objects the question is about, where the data provides one
    mask: np.ndarray | None = None


@dataclass
class ModelInputs:
    """A batch ready for the model (what the adapter's processor returns), plus bookkeeping."""

    tensors: dict[str, torch.Tensor]
    prompt_length: int  # L0: prompt tokens incl. image tokens (left-padded batch: padded length)
    sample: Sample | None = None  # the sample these inputs were built for (oracle maps read its mask)

    @property
    def input_ids(self) -> torch.Tensor:
        return self.tensors["input_ids"]

    def repeat(self, n: int) -> ModelInputs:
        """The same (single-sample) inputs ``n`` times along the batch dim, e.g. for perturbed variants."""
        return ModelInputs({k: v.repeat_interleave(n, dim=0) for k, v in self.tensors.items()}, self.prompt_length,
                           self.sample)


@dataclass
class Generation:
    """Greedy output of one sample: tokens, text, and the last hidden states FastRM reads."""

    sequences: torch.Tensor  # [1, L0 + T] prompt + generated ids
    prompt_length: int
    generated_ids: torch.Tensor  # [T]
    text: str
    last_hidden: torch.Tensor | None = None  # [L0 + T - 1, d] final-norm hidden states (optional)

    @property
    def num_generated(self) -> int:
        return int(self.generated_ids.numel())


class ModelAdapter(ABC):
    """What the harness needs from an LVLM. `LlavaHFAdapter` serves every LLaVA-1.5 checkpoint."""

    model: torch.nn.Module
    name: str

    @cached_property
    def weights_sha256(self) -> str:
        """SHA-256 of the weights (`zoo.weights_hash`), computed once per adapter: runs, distillation
        datasets and FastRM proxies record it, and hashing a 7B model takes seconds."""
        from fastrm_bench.models.zoo import weights_hash

        return weights_hash(self.model)

    @abstractmethod
    def build_inputs(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> ModelInputs:
        """Wrap prompts in the model's template and encode a batch (left padding)."""

    @abstractmethod
    def generate(
        self, inputs: ModelInputs, max_new_tokens: int, *, return_hidden: bool = False, image_keep: torch.Tensor | None = None,
        removal: str = "zero",
    ) -> list[Generation]:
        """Greedy generation; ``image_keep`` [B, n_image_tokens] (1 keep, 0 remove) perturbs images.

        With single-sample ``inputs`` and ``image_keep`` of K rows, the K perturbed variants of
        that sample are answered as one batch of K.
        """

    @abstractmethod
    def image_token_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Indices of the image tokens in one sequence ``[L]``."""

    @property
    @abstractmethod
    def grid_shape(self) -> tuple[int, int]:
        """Patch grid of the image tokens (rows, cols)."""


class Task(ABC):
    """A benchmark: samples, the prompt sent for each, and the scoring of predictions."""

    name: str
    data_source: str  # e.g. "shapes" (embedded world) or "coco"
    prompt_suffix: str = ""
    #: the named scoring convention in use (runs record it: several evaluators of one benchmark disagree)
    scoring: str = "default"

    @abstractmethod
    def samples(self, limit: int | None = None, seed: int = 0) -> Iterator[Sample]:
        """Samples in a deterministic order; ``limit`` takes a seeded subsample."""

    def prompt(self, sample: Sample) -> str:
        return f"{sample.question}{self.prompt_suffix}"

    @abstractmethod
    def score(self, prediction: str, sample: Sample) -> float:
        """Score of one prediction in [0, 1] with the task's own metric."""

    def aggregate(self, records: Sequence[dict[str, Any]]) -> dict[str, float]:
        """Task-level metrics from per-sample records (each has ``score`` and ``prediction``)."""
        scores = [r["score"] for r in records]
        return {"accuracy": float(np.mean(scores)) if scores else float("nan")}


@dataclass
class Explanation:
    """Maps of every generated token and what producing them cost."""

    maps: torch.Tensor  # [T, grid_h, grid_w]
    seconds: float = 0.0
    peak_memory_bytes: int | None = None
    is_probability: bool = False  # True when maps are calibrated per-patch probabilities (fastrm)


class ExplanationMethod(ABC):
    """Turns (adapter, inputs, generation) into one relevancy map per generated token."""

    name: str = ""

    @abstractmethod
    def explain(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> Explanation:
        """Maps for every token of ``generation`` (a batch of one sample)."""

"""The three small contracts everything else plugs into: model adapter, task, explanation method.

Conventions:
- the image tokens of an input are described by its `ImageLayout` (positions in the sequence, grouped
  into grids over image regions), computed by the adapter from the processor's output, never a constant;
- the LM position that predicts generated token t is ``p_t = prompt_length - 1 + t``;
- a method returns one map per generated token, ``[T, n_image_tokens]`` in the layout's token order,
  plus what it cost; the layout turns a map into an image-space heatmap.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fastrm_bench.layer_attention import LayerAttention
from fastrm_bench.layout import ImageLayout
from fastrm_bench.profiling import PeakMemory
from fastrm_bench.weights import weights_hash


@dataclass(frozen=True)
class Video:
    """A clip given to the model as its frames (in time order), for the families that take video."""

    frames: tuple[Image.Image, ...]
    #: frames per second of ``frames`` (as sampled), for families whose prompts give each time step its time
    #: (Qwen3-VL); None: 24, what transformers assumes for frames given without their video's metadata
    fps: float | None = None

    def __post_init__(self) -> None:
        if not self.frames:
            raise ValueError("a video needs at least one frame")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"a video's fps must be positive, got {self.fps}")
        sizes = {frame.size for frame in self.frames}
        if len(sizes) > 1:
            raise ValueError(f"a video's frames must share one size, got {sorted(sizes)}")


@dataclass
class Sample:
    """One question about one image (or several), as every task yields it."""

    id: str
    #: the image; for a sample of several images, the canvas showing them side by side (`layout.side_by_side_image`):
    #: maps are drawn, and masks given, over it
    image: Image.Image
    question: str
    references: list[str]  # accepted answers (VQAv2: the 10 human answers)
    meta: dict[str, Any] = field(default_factory=dict)
    #: union mask [H, W] of the objects the question is about, where the data provides one
    mask: np.ndarray | None = None
    #: each object's own mask [H, W] by its object id (COCO annotation id), for answers whose words name
    #: different objects: ``meta["token_objects"]`` then gives, per word of ``meta["words"]`` (the reference
    #: split into words), the id of the object it names or None. Empty where the task has no per-object truth.
    object_masks: dict[int, np.ndarray] = field(default_factory=dict)
    #: the images the model is given, in order, where there are several (``image`` is then their canvas)
    images: tuple[Image.Image, ...] = ()
    #: the clip the model is given, for a video sample (``image`` is then its frames side by side)
    video: Video | None = None

    @property
    def model_images(self) -> Image.Image | tuple[Image.Image, ...] | Video:
        """What `ModelAdapter.build_inputs` takes for this sample: its video, its several images, or its image."""
        if self.video is not None:
            return self.video
        return self.images if self.images else self.image

    def part_sizes(self) -> list[tuple[int, int]]:
        """(height, width) of each image (or video frame) the model is given, in the order ``image`` shows them
        side by side; [] for a sample of one image."""
        if self.video is not None:
            return [(f.height, f.width) for f in self.video.frames]
        return [(im.height, im.width) for im in self.images]


@dataclass
class ModelInputs:
    """A batch ready for the model (what the adapter's processor returns), plus bookkeeping."""

    tensors: dict[str, torch.Tensor]
    prompt_length: int  # L0: prompt tokens incl. image tokens (left-padded batch: padded length)
    layouts: list[ImageLayout]  # one per batch row, positions in that (padded) row
    #: the id of the sample these inputs were built for, and which independent explanation of it is asked
    #: for: stochastic methods seed from (seed, sample id, draw) (`fastrm_bench.seeding`), so a sample's
    #: maps never depend on call order. Identity only: ground truth reaches a method through `explain_sample`.
    sample_id: str = ""
    draw: int = 0
    #: the images the batch was built from, one entry per row, a tuple where a row has several (`ModelAdapter.build_inputs`
    #: records them): a method that asks the model another question about the same image (`rel-att`'s generic prompt)
    #: builds it from these
    images: tuple[Image.Image | tuple[Image.Image, ...] | Video, ...] = ()
    #: ``[B, prompt_length]`` the ids of the sequence maps and positions index, where it is not the model's own
    #: ``input_ids``: a cross-attention model's image keys come first, written as image tokens (`input_ids`)
    sequence_ids: torch.Tensor | None = None

    @property
    def input_ids(self) -> torch.Tensor:
        """The ids of the sequence the layouts' positions, ``prompt_length`` and every method index (the model's own
        ``tensors["input_ids"]`` but for cross-attention models, `sequence_ids`)."""
        return self.tensors["input_ids"] if self.sequence_ids is None else self.sequence_ids

    @property
    def layout(self) -> ImageLayout:
        """The layout of a single-sample batch."""
        if len(self.layouts) != 1:
            raise ValueError(f"a batch of {len(self.layouts)} inputs has no single layout; index `layouts`")
        return self.layouts[0]

    def repeat(self, n: int) -> ModelInputs:
        """The same single-sample inputs ``n`` times along the batch dim (e.g. perturbed variants).

        Every tensor is tiled along its first dim: for per-sample tensors ``[1, ...]`` that is the batch,
        for flattened per-patch tensors (Qwen2-VL's ``pixel_values``) it is whole copies of the image.
        """
        if len(self.layouts) != 1:
            raise ValueError("repeat() takes single-sample inputs")
        tensors = {k: v.repeat(n, *([1] * (v.dim() - 1))) for k, v in self.tensors.items()}
        ids = self.sequence_ids.repeat(n, 1) if self.sequence_ids is not None else None
        return ModelInputs(tensors, self.prompt_length, self.layouts * n, self.sample_id, self.draw, self.images * n, ids)


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


#: what a teacher-forced forward keeps of the LM's attention: nothing; each layer's inputs and output
#: (`LayerAttention`, recomputed on demand, the model's own attention running); eager probabilities as graph nodes
ATTENTION_KINDS = ("none", "capture", "eager")


@dataclass
class TeacherForced:
    """One forward over prompt + answer as the family's own forward computes it (positions, masks)."""

    logits: torch.Tensor  # [L, vocab] raw logits (no temperature, no processors)
    leaf: torch.Tensor  # what the graph starts from: the LM input embeddings, or the hooked vision activations
    #: with ``attention="capture"``: per LM layer its attention inputs and its output as a graph node
    attention: tuple[LayerAttention, ...] = ()
    #: with ``attention="eager"``: per LM layer [1, heads, L, L] eager probabilities, graph nodes between the leaf and
    #: the logits (the textbook path `chefer-reference` keeps for checks)
    probabilities: tuple[torch.Tensor, ...] = ()
    #: with ``hidden_states=True``: per LM layer [L, d] its output (the residual stream, before the final norm),
    #: graph nodes like the attentions; the logit lens reads them through the final norm and the LM head
    hidden_states: tuple[torch.Tensor, ...] | None = None


class ModelAdapter(ABC):
    """What the harness needs from an LVLM; `HFVisionLanguageAdapter` serves the supported HF families.

    Every forward the adapter makes itself (teacher-forced, perturbed) goes through the family's own
    forward with the family's own position ids, so its logits equal those of ``generate``.
    """

    model: torch.nn.Module
    name: str
    device: torch.device
    #: the family's name (``config.model_type`` family, e.g. "llava", "qwen2_vl")
    family: str
    #: removal strategies `generate(image_keep=...)` supports for this family ("zero", maybe "drop")
    removals: tuple[str, ...]
    #: whether `generate` takes ``keep_rows``: the removals of several samples of one batch answered together
    packs_removals: bool = False

    @cached_property
    def weights_sha256(self) -> str:
        """SHA-256 of the weights (`weights.weights_hash`), computed once per adapter: runs, distillation
        datasets and FastRM proxies record it, and hashing a 7B model takes seconds."""
        return weights_hash(self.model)

    @property
    @abstractmethod
    def tokenizer(self) -> Any:
        """The tokenizer (decoding answer tokens, telling content from format tokens)."""

    @property
    @abstractmethod
    def hidden_size(self) -> int:
        """Width of the LM's hidden states (what FastRM reads)."""

    @property
    @abstractmethod
    def num_layers(self) -> int:
        """Number of the language model's decoder layers (one captured attention each)."""

    @property
    @abstractmethod
    def attn_implementation(self) -> str:
        """The attention implementation the language model answers with (what a run records)."""

    @abstractmethod
    def stop_ids(self) -> set[int]:
        """The token ids an answer ends before (end of sequence, padding): never part of an answer."""

    @abstractmethod
    def language_model(self) -> torch.nn.Module:
        """The language model (its config's init re-draws layers in the sanity check)."""

    @abstractmethod
    def decoder_layers(self) -> torch.nn.ModuleList:
        """The language model's decoder layers, first to last (the sanity check randomises them from the top)."""

    @abstractmethod
    def final_norm(self) -> torch.nn.Module:
        """The norm after the last decoder layer: the logit lens reads hidden states through it, and its output
        is what FastRM reads (`Generation.last_hidden`)."""

    @abstractmethod
    def build_inputs(self, images: Sequence[Image.Image | Sequence[Image.Image] | Video], prompts: Sequence[str]
                     ) -> ModelInputs:
        """Wrap prompts in the model's prompt format and encode a batch (left padding), with a layout per row.

        A row's entry of ``images`` is one image, or several (a tuple): the prompt then shows them all, in order,
        and the row's layout draws them side by side (`layout.side_by_side`) on one canvas; or a `Video` (every row
        then a video), for families that take video: one layout group per time step, drawn side by side."""

    @abstractmethod
    def generate(
        self, inputs: ModelInputs, max_new_tokens: int, *, return_hidden: bool = False, image_keep: torch.Tensor | None = None,
        removal: str = "zero", min_new_tokens: int = 0, keep_rows: torch.Tensor | None = None,
    ) -> list[Generation]:
        """Greedy generation; ``image_keep`` [B, n_image_tokens] (1 keep, 0 remove) perturbs images.

        With single-sample ``inputs`` and ``image_keep`` of K rows, the K perturbed variants of
        that sample are answered as one batch of K. Where `packs_removals`, ``keep_rows`` [K] packs the
        removals of several samples of a (left-padded) batch: row k perturbs sample ``keep_rows[k]``.
        ``return_hidden`` adds the final-norm hidden states.

        Without ``image_keep``, a batch of several samples is answered together (left padding) and each
        row's `Generation` is the one that sample alone would give: its own prompt length, its sequence
        and hidden states without the padding.
        """

    @abstractmethod
    def teacher_forced(self, inputs: ModelInputs, generation: Generation, length: int | None = None,
                       vision_leaf: bool = False, hidden_states: bool = False, attention: str = "none") -> TeacherForced:
        """One forward over prompt + generated tokens (the first ``length`` positions) with the model's own attention.

        Gradients flow from the logits back to the leaf; the weights stay frozen. The graph starts at the LM
        input embeddings, or with ``vision_leaf`` at the vision activations Grad-CAM targets.
        ``hidden_states`` adds every LM layer's output before the final norm (for the logit lens).
        ``attention`` (`ATTENTION_KINDS`): "capture" records every LM layer's attention inputs and output
        (`TeacherForced.attention`); "eager" runs this forward with eager attention and returns its
        probabilities (`TeacherForced.probabilities`).
        """

    @abstractmethod
    def answer_logprobs(self, inputs: ModelInputs, generation: Generation, image_keep: torch.Tensor,
                        removal: str = "zero") -> torch.Tensor:
        """Log-probabilities ``[K, T]`` of the answer's tokens under teacher forcing, the image tokens removed
        where each of the K rows of ``image_keep`` is 0 (the probability curves' continuous score)."""

    @abstractmethod
    def vision_to_tokens(self, inputs: ModelInputs, values: torch.Tensor) -> torch.Tensor:
        """Per-patch values of the Grad-CAM vision layer ``[..., n_patches]`` as per-token values ``[..., n_tokens]``.

        The family's geometry (CLS token or not, merged or pooled patches, tiles), as pytorch-grad-cam's
        ``reshape_transform``; ``n_patches`` is the leaf's token dim of `teacher_forced(vision_leaf=True)`.
        """


class Task(ABC):
    """A benchmark: samples, the prompt sent for each, and the scoring of predictions."""

    name: str
    data_source: str  # e.g. "shapes" (embedded world) or "coco"
    prompt_suffix: str = ""
    #: the named scoring convention in use (runs record it: several evaluators of one benchmark disagree)
    scoring: str = "default"
    #: True when the samples come from the embedded synthetic world (a run says so, and how to use real files)
    uses_embedded_world: bool = False
    #: the folder the task reads its files from (a run records it); None when the task reads no files
    data_root: Path | None = None
    #: direction of the task's aggregates by name (a key ``a/b`` takes the first part that is named here)
    DIRECTIONS: dict[str, bool | None] = {"accuracy": True}

    def embedded_world_note(self) -> str:
        """What a run of a task on the embedded world says first: where its samples come from, and how to use real files."""
        where = self.data_root if self.data_root is not None else "drawn in memory, no files"
        return f"Data: the embedded synthetic world ({where}); pass --data-root DIR to use the real files."

    @abstractmethod
    def samples(self, limit: int | None = None, seed: int = 0) -> Iterator[Sample]:
        """Samples in a deterministic order; ``limit`` takes a seeded subsample."""

    def select(self, limit: int | None, seed: int) -> list[Any] | None:
        """Cheap handles of the samples a run evaluates (`sample` opens one), each with the sample's ``id``, so
        that a resumed run skips finished samples before any image is opened; None (the default): the run
        streams `samples`."""
        return None

    def handles(self) -> dict[str, Any]:
        """Every sample's handle by sample id: how a page showing given samples of a run (the report, the
        explorer) opens them; empty for a task whose samples are streamed."""
        return {handle.id: handle for handle in self.select(None, 0) or []}

    def sample(self, handle: Any) -> Sample:
        """The sample behind a handle of `select`."""
        raise NotImplementedError(f"{type(self).__name__} selects no handles; its samples are streamed")

    def higher_is_better(self, key: str) -> bool | None:
        """Direction of the aggregate ``key`` (e.g. "accuracy/color", "adversarial/f1"); None: descriptive."""
        for part in key.split("/"):
            if part in self.DIRECTIONS:
                return self.DIRECTIONS[part]
        return None

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

    maps: torch.Tensor  # [T, n_image_tokens] in the input layout's token order ([0, n] for an empty answer)
    seconds: float = 0.0
    peak_memory_bytes: int | None = None


#: how much of the LM's attention a method reads: none; the probability rows of the positions it explains,
#: recomputed from each layer's captured inputs (`teacher_forced(attention="capture")`); every row of every layer
#: (N x N per layer: rollout, stale rows, or the eager probabilities of `teacher_forced(attention="eager")`)
ATTENTION_NEEDS = ("none", "rows", "full")


@dataclass(frozen=True)
class MethodNeeds:
    """What a method reads and what its maps are, declared once on its class (`ExplanationMethod.needs`).

    Callers decide from it, never from a method's name: the runner asks generation for hidden states only
    when a method reads them, the profile and the report draw gradient-free methods apart, metrics that
    need probabilities skip other methods, perturbation metrics average ``draws`` maps.
    """

    #: backward passes through the model (memory grows with the graph; the weights' dtype matters)
    gradients: bool = False
    #: `ATTENTION_NEEDS`: how much of the LM's attention the method reads
    attention: str = "none"
    #: the final-norm hidden states generation computed (`generate(return_hidden=True)`, `Generation.last_hidden`)
    hidden_states: bool = False
    #: the sample's ground truth (its mask): the method overrides `ExplanationMethod.compute_sample_maps`
    ground_truth: bool = False
    #: independent maps (``inputs.draw`` 0, 1, ...) perturbation metrics average per sample: 1 for deterministic
    #: methods, more for stochastic ones (``random``: the paper's 5)
    draws: int = 1
    #: the maps are calibrated per-patch probabilities (what metrics with ``Needs.probabilities`` read)
    probabilities: bool = False

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_NEEDS:
            raise ValueError(f"MethodNeeds.attention must be one of {ATTENTION_NEEDS}, got {self.attention!r}")
        if self.draws < 1:
            raise ValueError(f"MethodNeeds.draws must be at least 1, got {self.draws}")

    @property
    def stochastic(self) -> bool:
        """Whether two draws of one sample give different maps."""
        return self.draws > 1


class ExplanationMethod(ABC):
    """Turns (adapter, inputs, generation) into one relevancy map per generated token.

    A method implements `compute_maps` (and declares `needs`); `explain` is the public call, which measures the
    time and peak memory of every method the same way (pytorch-grad-cam's template method). Maps are
    ``[T, n_image_tokens]`` for every answer length, ``[0, n_image_tokens]`` for an empty answer (`check_maps`;
    the runner refuses anything else).
    """

    name: str = ""
    #: what the method reads and what its maps are (every method declares its own)
    needs: MethodNeeds = MethodNeeds()
    #: parameters that change only the time and memory of `explain`, never its maps (e.g. how many tokens share a
    #: backward pass): a dataset labelled with other values of them is the same dataset
    cost_params: tuple[str, ...] = ()

    def prepare(self, adapter: ModelAdapter) -> None:
        """Load what the method needs for ``adapter`` (e.g. a checkpoint): a run calls it before writing anything,
        so that a bad checkpoint fails before a run directory is created."""
        return None

    def explain(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> Explanation:
        """The maps of every token of ``generation`` (a batch of one sample), with the time and peak memory that
        computing them took: measured here, the same way for every method (methods implement `compute_maps`)."""
        return _measured(adapter.device, lambda: self.compute_maps(adapter, inputs, generation))

    def explain_sample(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation, sample: Sample
                       ) -> Explanation:
        """What a run calls: `explain`, through `compute_sample_maps` (the sample's ground truth reaches only a
        method that declares ``needs.ground_truth`` and overrides it; model-based methods never see it)."""
        return _measured(adapter.device, lambda: self.compute_sample_maps(adapter, inputs, generation, sample))

    @abstractmethod
    def compute_maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        """``[T, n_image_tokens]`` for the T tokens of ``generation`` (``[0, n_image_tokens]`` for an empty answer)."""

    def compute_sample_maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation, sample: Sample
                            ) -> torch.Tensor:
        """`compute_maps`, unless the maps depend on the sample's ground truth (the oracle's mask)."""
        return self.compute_maps(adapter, inputs, generation)


def _measured(device: torch.device, compute: Callable[[], torch.Tensor]) -> Explanation:
    """``compute``'s maps with its wall time (the device synchronised) and its peak memory (`PeakMemory`); the
    memory bookkeeping itself is outside the timed span."""
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        maps = compute()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return Explanation(maps=maps, seconds=seconds, peak_memory_bytes=memory.peak_bytes)


def check_maps(method: str, explanation: Explanation, generation: Generation, layout: ImageLayout) -> None:
    """Refuse maps of another shape than ``[T, n_image_tokens]`` (``[0, n]`` for an empty answer), naming the method."""
    expected = (generation.num_generated, layout.num_tokens)
    if tuple(explanation.maps.shape) != expected:
        raise ValueError(f"method {method!r} returned maps of shape {tuple(explanation.maps.shape)} for an answer of "
                         f"{expected[0]} tokens and {expected[1]} image tokens; every method returns [T, n_image_tokens] "
                         "([0, n] for an empty answer)")

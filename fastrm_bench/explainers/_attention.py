"""Shared machinery of the attention/gradient methods (private: the API is the method classes).

- `explaining(model)`: eval mode, eager attention, frozen weights for the duration of a method,
  then the model is put back exactly as it was found;
- `teacher_forced`: one forward over prompt + answer that returns the raw logits and the
  attention probabilities of every LM layer, with a graph to them from the input embeddings
  (the weights stay frozen: no parameter ever gets a ``.grad``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from fastrm_bench.interfaces import Explanation, ExplanationMethod, Generation, ModelInputs
from fastrm_bench.profiling import PeakMemory


@contextmanager
def explaining(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode, eager attention and frozen parameters inside; the previous state restored after."""
    was_training = model.training
    implementation = getattr(model.config, "_attn_implementation", None)
    requires_grad = [p.requires_grad for p in model.parameters()]
    model.eval()
    if implementation not in (None, "eager"):
        model.set_attn_implementation("eager")
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), requires_grad):
            p.requires_grad_(flag)
        if implementation not in (None, "eager"):
            model.set_attn_implementation(implementation)
        model.train(was_training)


@dataclass
class TeacherForced:
    logits: torch.Tensor  # [L, vocab] raw logits (no temperature, no processors)
    attentions: tuple[torch.Tensor, ...]  # per LM layer [1, heads, L, L], as the model used them (graph nodes)
    embeds: torch.Tensor  # [L, d] the leaf the graph starts from


def answer_embeds(adapter, inputs: ModelInputs, generation: Generation, image_features: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """LM input embeddings [L0 + T - 1, d] of prompt + generated tokens (the last one predicts nothing we need).

    ``image_features`` (default: computed from the pixels) lets Grad-CAM keep a graph to them.
    """
    if image_features is None:
        image_features = adapter.image_features(inputs.tensors["pixel_values"])
    prompt = adapter.embed(inputs.input_ids, image_features)
    answer = generation.generated_ids[: max(generation.num_generated - 1, 0)].to(prompt.device)
    return torch.cat([prompt[0], adapter.model.get_input_embeddings()(answer)], dim=0)


def teacher_forced(adapter, embeds: torch.Tensor, keep_graph_from_inputs: bool = False) -> TeacherForced:
    """One forward with eager attention; gradients can flow from logits to every attention map.

    By default the graph starts at (a detached copy of) ``embeds``; with ``keep_graph_from_inputs``
    it reaches back to whatever ``embeds`` was computed from (Grad-CAM's vision features).
    """
    leaf = embeds if keep_graph_from_inputs else embeds.detach().to(adapter.model.dtype).requires_grad_(True)
    out = adapter.model(inputs_embeds=leaf.unsqueeze(0), attention_mask=torch.ones(1, leaf.shape[0], device=leaf.device,
                        dtype=torch.long), output_attentions=True, use_cache=False)
    attentions = tuple(out.attentions)  # not sliced: a slice would be a new node outside the logits' graph
    if any(a is None for a in attentions):
        raise RuntimeError("the model returned no attention probabilities; load it with attn_implementation='eager'")
    return TeacherForced(out.logits[0], attentions, leaf)


def predicting_positions(inputs: ModelInputs, generation: Generation) -> torch.Tensor:
    """p_t = L0 - 1 + t: the LM position whose logits choose generated token t."""
    return inputs.prompt_length - 1 + torch.arange(generation.num_generated)


def answer_scores(forward: TeacherForced, inputs: ModelInputs, generation: Generation) -> tuple[torch.Tensor, torch.Tensor]:
    """(p_t for every token, the raw logit Y_t of each generated token at its p_t)."""
    positions = predicting_positions(inputs, generation).to(forward.logits.device)
    targets = generation.generated_ids.to(forward.logits.device)
    return positions, forward.logits[positions, targets]


def token_gradients(scores: torch.Tensor, wrt: Sequence[torch.Tensor], chunk_size: int
                    ) -> Iterator[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]:
    """Gradients of each score w.r.t. ``wrt``, several tokens per batched `autograd.grad` call.

    Yields (token indices of the chunk, one tensor per ``wrt`` with a leading chunk dim). The
    gradients are returned, never accumulated into ``.grad``.
    """
    for chunk in torch.split(torch.arange(scores.numel()), chunk_size):
        selector = torch.zeros(len(chunk), scores.numel(), device=scores.device, dtype=scores.dtype)
        selector[torch.arange(len(chunk)), chunk.to(scores.device)] = 1.0
        yield chunk, torch.autograd.grad(scores, tuple(wrt), grad_outputs=selector, is_grads_batched=True, retain_graph=True)


class GradientMethod(ExplanationMethod):
    """A method whose maps come from `_maps` under `explaining`, timed, with its peak memory."""

    def explain(self, adapter, inputs: ModelInputs, generation: Generation) -> Explanation:
        start = time.perf_counter()
        with PeakMemory(adapter.device) as memory, explaining(adapter.model):
            maps = self._maps(adapter, inputs, generation)
        return Explanation(maps=maps, seconds=time.perf_counter() - start, peak_memory_bytes=memory.peak_bytes)

    def _maps(self, adapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        raise NotImplementedError

"""Shared machinery of the attention/gradient methods (private: the API is the method classes).

- `explaining(model)`: eval mode and frozen weights for the duration of a method, then the model is
  put back exactly as it was found; the model keeps the attention implementation it was loaded with;
- `answer_scores`: the raw logit of every generated token at its predicting position, from the
  adapter's teacher-forced forward (`ModelAdapter.teacher_forced`: one forward over prompt + answer
  through the family's own forward, with every LM layer's attention captured where the method reads
  it; the weights stay frozen, no parameter ever gets a ``.grad``);
- `row_update`: ``v @ Abar_l`` of Chefer's relevancy for every token of a chunk, the layer's
  probabilities and their gradients recomputed block by block of query rows;
- `token_gradients`: gradients of several tokens' scores per batched `autograd.grad` call;
- `SavedBytes`: how much memory a forward's graph holds for backward (what a chunk of batched
  gradients is sized against).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from fastrm_bench.interfaces import ExplanationMethod, Generation, ModelInputs, TeacherForced
from fastrm_bench.layer_attention import LayerAttention


@contextmanager
def explaining(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters inside; the previous state restored after."""
    was_training = model.training
    requires_grad = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), requires_grad):
            p.requires_grad_(flag)
        model.train(was_training)


class SavedBytes:
    """Context manager: ``bytes`` is the memory of the tensors autograd saved for backward in the block.

    Each storage is counted once, and the ``exclude`` module's own parameters and buffers (which a
    linear layer saves, but which exist anyway) not at all: what the graph adds to the model.
    """

    def __init__(self, exclude: torch.nn.Module | None = None):
        own = [*exclude.parameters(), *exclude.buffers()] if exclude is not None else []
        self._exclude = {t.untyped_storage().data_ptr() for t in own}
        self._storages: dict[int, int] = {}
        self.bytes = 0

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self._exclude:
            self._storages[storage.data_ptr()] = storage.nbytes()
        # detached: an op's own output packed as itself would hold its grad_fn, which holds it back (a reference
        # cycle through C++ that Python's collector cannot see: every forward's graph would outlive the method)
        return tensor.detach()

    def __enter__(self) -> SavedBytes:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
        self.bytes = sum(self._storages.values())


def predicting_positions(inputs: ModelInputs, generation: Generation) -> torch.Tensor:
    """p_t = L0 - 1 + t: the LM position whose logits choose generated token t."""
    return inputs.prompt_length - 1 + torch.arange(generation.num_generated)


def text_positions(inputs: ModelInputs, generation: Generation, length: int) -> torch.Tensor:
    """Positions ``j < length`` of prompt + answer that hold text: every token but the image placeholders.

    A placeholder is any position carrying the id found at the layout's positions, so slots that carry
    the image token without being a patch of the layout (LLaVA-NeXT's row-end newlines) are not text
    either; tile markers and template tokens are (the harness knows no family's template boundaries).
    """
    prompt = inputs.input_ids[0].cpu()
    ids = torch.cat([prompt, generation.generated_ids.cpu()])[:length]
    placeholders = prompt[inputs.layout.positions].unique()
    return torch.nonzero(~torch.isin(ids, placeholders)).flatten()


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


def chefer_abar(grads: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    """Chefer's ``Abar = mean_heads(relu(dY/dA * A))`` in float32: ``[..., H, r, N]`` x ``[H, r, N]`` -> ``[..., r, N]``."""
    return (grads.float() * probabilities.float()).clamp_min(0).mean(dim=-3)


def row_update(layer: LayerAttention, output_grads: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``v_c @ Abar_l^(c)`` for every token c of a chunk: ``v`` ``[c, N]``, ``output_grads`` ``[c, 1, N, H, d_v]`` (dY_c/dO_l).

    Only the query rows where some ``v`` is non-zero contribute; their probabilities and gradients
    ``dY/dA = dY/dO V^T`` are formed one block of rows at a time and consumed at once.
    """
    update = torch.zeros_like(v)
    rows = torch.nonzero(v.abs().sum(0)).flatten()
    for block in layer.row_blocks(rows, copies=v.shape[0]):
        abar = chefer_abar(layer.probability_gradients(output_grads, block), layer.probabilities(block))  # [c, r, N]
        update += torch.einsum("cr,crn->cn", v[:, block.to(v.device)], abar)
    return update


class GradientMethod(ExplanationMethod):
    """A method whose maps come from `_maps` under `explaining` (gradients on, the model's caches off)."""

    def compute_maps(self, adapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        with explaining(adapter.model):
            return self._maps(adapter, inputs, generation)

    def _maps(self, adapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        raise NotImplementedError

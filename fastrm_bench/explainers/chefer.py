"""Chefer et al. (2021) generic attention explainability on the LM, per generated token.

For LM layer l and output token t: ``Abar_l = mean_heads(relu(dY_t/dA_l * A_l))`` with ``Y_t``
the raw logit of token t at its predicting position ``p_t``; ``R = prod_l (I + Abar_l)``; the map
is ``R[p_t, image_positions]``. Every row comes from the gradient of the *current* token.

- `chefer` (exact and fast): one teacher-forced forward over prompt + answer with the model's own
  attention (SDPA by default), each layer's attention captured (`attention_capture`); the gradients
  of all answer tokens at the layers' attention *outputs* from batched `autograd.grad` calls
  (``dY/dA_l = dY/dO_l V_l^T`` per head, so no ``N x N`` probability is ever a graph node); and only
  the needed row: ``v = e_{p_t}; for l = L..1: v = v + v @ Abar_l`` (O(L N^2) per token), with
  ``Abar_l`` formed from the recomputed probabilities one block of query rows at a time
  (`row_update`), so that no two layers' ``N x N`` matrices, nor one whole, are ever held. The chunk
  of tokens per call is sized from a memory budget (`chunk_tokens`): by default so that the peak stays
  within ``margin`` (10%) of one forward graph and one token's gradients (its backward's transients
  included); ``max_memory`` (bytes) lets
  a user with room to spare buy speed with memory.
- `chefer-stale`: the row-reusing approximation of the most used LLaVA interpretability app
  (greedy decoding with the KV cache, relevancy built step by step): the attention rows of the
  prompt come from token 0's gradient, row p_s from token s's; rows are never recomputed, so
  token t's map mixes gradients of earlier tokens. Equals `chefer` at t = 0, differs after.
- `chefer-reference`: what public tools do, eager attention, one forward and one backward per token
  over the sequence up to ``p_t`` and full N x N products ``R = R + Abar_l @ R``; kept for equality
  tests and the latency comparison.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from fastrm_bench.explainers._attention import (
    GradientMethod,
    SavedBytes,
    answer_scores,
    chefer_abar,
    explaining,
    predicting_positions,
    row_update,
    token_gradients,
)
from fastrm_bench.interfaces import (
    ExplanationMethod,
    Generation,
    MethodNeeds,
    ModelAdapter,
    ModelInputs,
    TeacherForced,
)


def _gradient_nodes(forward: TeacherForced) -> list[torch.Tensor]:
    """Where the token gradients are taken: eager probabilities when the forward kept them, else attention outputs."""
    return list(forward.probabilities) or [layer.output for layer in forward.attention]


class Chefer(GradientMethod):
    """Exact Chefer relevancy of every generated token, fast: one forward, batched gradients, one row."""

    name = "chefer"
    needs = MethodNeeds(gradients=True, attention="full")  # every row v reaches, layer by layer
    cost_params = ("chunk_size", "max_memory", "margin", "attention")

    def __init__(self, chunk_size: int | None = None, max_memory: int | None = None, margin: float = 0.1,
                 attention: str = "capture"):
        """``chunk_size``: tokens per batched gradient call, fixed; None (default): from the memory budget, i.e.
        ``max_memory`` bytes for the forward graph and the gradients if given, else ``margin`` above the reference.
        ``attention``: "capture" (default) recomputes the attention from the model's own implementation;
        "eager" takes the gradients at eager attention probabilities held for every layer (the textbook graph,
        the same maps, kept to measure what capturing saves)."""
        if attention not in ("capture", "eager"):
            raise ValueError(f"attention must be 'capture' or 'eager', got {attention!r}")
        self.attention = attention
        if attention == "eager":  # every layer's eager probabilities, held
            self.needs = replace(type(self).needs, attention="full")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if max_memory is not None and max_memory <= 0:
            raise ValueError("max_memory must be a positive number of bytes")
        if margin < 0:
            raise ValueError("margin must be >= 0")
        self.chunk_size, self.max_memory, self.margin = chunk_size, max_memory, margin
        #: the chunk size of the last call (a fixed one, or the budget's)
        self.last_chunk_size: int | None = None

    def chunk_tokens(self, graph_bytes: int, per_token_bytes: int, free_bytes: int | None = None) -> int:
        """Tokens per gradient call: a forward graph of ``graph_bytes`` and ``per_token_bytes`` per token in a chunk.

        The reference holds at its peak one graph and one token's gradients (G + P). With a budget of
        ``max_memory`` bytes: ``(max_memory - G) // P``; without: the most tokens whose gradients keep
        the peak within ``margin`` of the reference's, ``G + c P <= (1 + margin)(G + P)``. Never more than
        ``free_bytes`` allow (the device's free memory), never fewer than 1.
        """
        if self.chunk_size is not None:
            return self.chunk_size
        p = max(per_token_bytes, 1)
        if self.max_memory is not None:
            chunk = (self.max_memory - graph_bytes) // p
        else:
            chunk = int(((1 + self.margin) * (graph_bytes + p) - graph_bytes) // p)
        if free_bytes is not None:
            chunk = min(chunk, free_bytes // p)
        return max(1, chunk)

    def _forward_and_chunk(self, adapter, inputs: ModelInputs, generation: Generation):
        """The teacher-forced forward and the chunk size its memory allows."""
        with SavedBytes(exclude=adapter.model) as saved:
            forward = adapter.teacher_forced(inputs, generation, attention=self.attention)
        outputs = _gradient_nodes(forward)
        per_token = sum(o.numel() * o.element_size() for o in outputs)  # the gradients a token returns
        if forward.probabilities:  # the backward's transient per layer; one layer's float32 Abar
            n = forward.logits.shape[0]
            per_token += 2 * max(o.numel() * o.element_size() for o in outputs) + 4 * n * n
        else:  # a batched backward holds, per token, the gradients of about one layer's saved activations
            per_token += saved.bytes // len(outputs)
        free = torch.cuda.mem_get_info(forward.logits.device)[0] if forward.logits.device.type == "cuda" else None
        self.last_chunk_size = self.chunk_tokens(saved.bytes, per_token, free)
        return forward, self.last_chunk_size

    def _maps(self, adapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        image_positions = inputs.layout.positions
        if generation.num_generated == 0:
            return torch.zeros(0, len(image_positions))
        forward, chunk_size = self._forward_and_chunk(adapter, inputs, generation)
        positions, scores = answer_scores(forward, inputs, generation)
        n = forward.logits.shape[0]
        rows = []
        eager = bool(forward.probabilities)
        for chunk, grads in token_gradients(scores, _gradient_nodes(forward), chunk_size):
            v = torch.zeros(len(chunk), n, device=scores.device, dtype=torch.float32)
            v[torch.arange(len(chunk)), positions[chunk]] = 1.0
            for layer in reversed(range(len(grads))):  # v + v @ Abar_l, l = L..1
                if eager:
                    abar = chefer_abar(grads[layer][:, 0], forward.probabilities[layer][0].detach())  # [c, N, N]
                    v = v + torch.einsum("cn,cnm->cm", v, abar)
                else:
                    v = v + row_update(forward.attention[layer], grads[layer], v)
            rows.append(v[:, image_positions.to(v.device)])
        return torch.cat(rows).detach().cpu()


class CheferReference(ExplanationMethod):
    """Reference Chefer relevancy: one forward + backward per token, full N x N products (slow, for checks)."""

    name = "chefer-reference"
    needs = MethodNeeds(gradients=True, attention="full")

    def compute_maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        image_positions = inputs.layout.positions
        maps = []
        with explaining(adapter.model):
            for t, p in enumerate(predicting_positions(inputs, generation).tolist()):
                forward = adapter.teacher_forced(inputs, generation, length=p + 1, attention="eager")
                score = forward.logits[p, int(generation.generated_ids[t])]
                grads = torch.autograd.grad(score, forward.probabilities)
                n = p + 1
                relevance = torch.eye(n, device=score.device)
                for grad, attention in zip(grads, forward.probabilities):
                    relevance = relevance + chefer_abar(grad[0], attention[0].detach()) @ relevance
                maps.append(relevance[p, image_positions.to(relevance.device)].detach().cpu())
        return torch.stack(maps) if maps else torch.zeros(0, len(image_positions))


class CheferStale(Chefer):
    """Chefer relevancy with stale rows, as an app that keeps each step's attention rows computes it.

    With the KV cache, step s only has the new query row p_s, and its gradient is that of token s;
    the rows of earlier positions were stored at earlier steps (the prompt's at step 0). One stale
    ``Abar_l`` per layer holds exactly those rows: rows 0..L0-1 from token 0's gradient, row p_s from
    token s's. In the teacher-forced forward, token s's gradient on row p_s equals the KV-cached
    step's (keys and values of earlier positions are constants of that step either way), so the
    rows are those the app computes; every map is a row of ``prod_l (I + Abar_l)`` over them.
    """

    name = "chefer-stale"
    needs = MethodNeeds(gradients=True, attention="full")  # every prompt row, then the own rows

    def _maps(self, adapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        image_positions = inputs.layout.positions
        if generation.num_generated == 0:
            return torch.zeros(0, len(image_positions))
        if self.attention != "capture":
            raise ValueError(f"{self.name} reads captured attention only (attention: capture)")
        forward, chunk_size = self._forward_and_chunk(adapter, inputs, generation)
        positions, scores = answer_scores(forward, inputs, generation)
        own_rows, first_grads = self._stale_rows(forward, positions, scores, chunk_size)
        prompt = torch.arange(inputs.prompt_length, device=scores.device)
        v = torch.zeros(len(positions), forward.logits.shape[0], device=scores.device)
        v[torch.arange(len(positions)), positions] = 1.0
        for layer in reversed(range(len(forward.attention))):  # v + v @ stale Abar_l, l = L..1
            attention = forward.attention[layer]
            update = torch.zeros_like(v)
            for block in attention.row_blocks(prompt, copies=1):  # the prompt's rows: token 0's gradient
                abar = chefer_abar(attention.probability_gradients(first_grads[layer], block), attention.probabilities(block))
                update += v[:, block] @ abar
            later = positions[1:]  # row p_s, s >= 1: token s's own gradient
            update += v[:, later] @ own_rows[layer][1:]
            v = v + update
        return v[:, image_positions.to(v.device)].detach().cpu()

    @staticmethod
    def _stale_rows(forward, positions: torch.Tensor, scores: torch.Tensor, chunk_size: int
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(per layer, row p_s of ``Abar_l`` from token s's gradient ``[T, N]``; per layer, token 0's ``dY/dO_l``)."""
        own_rows = [torch.zeros(len(positions), forward.logits.shape[0], device=scores.device) for _ in forward.attention]
        first_grads: list[torch.Tensor] = []
        for chunk, grads in token_gradients(scores, _gradient_nodes(forward), chunk_size):
            rows = positions[chunk]
            for layer, (grad, attention) in enumerate(zip(grads, forward.attention)):
                probabilities = attention.probabilities(rows).transpose(0, 1)  # [chunk, H, N]
                gradients = attention.own_row_gradients(grad, rows)  # [chunk, H, N]
                own_rows[layer][chunk] = (gradients * probabilities).clamp_min(0).mean(dim=1)
            if chunk[0] == 0:
                first_grads = [grad[0] for grad in grads]
        return own_rows, first_grads

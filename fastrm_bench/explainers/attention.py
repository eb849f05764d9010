"""Gradient-free attention baselines: raw attention and attention rollout (Abnar & Zuidema, 2020).

Both read the LM's attention probabilities recomputed from a captured forward (the model keeps its own
attention implementation): raw attention only the rows of the predicting positions, rollout every row,
one block of rows of one layer at a time.
"""

from __future__ import annotations

import torch

from fastrm_bench.explainers._attention import explaining, predicting_positions
from fastrm_bench.interfaces import ExplanationMethod, Generation, MethodNeeds, ModelAdapter, ModelInputs
from fastrm_bench.layer_attention import LayerAttention


def _captured(adapter, inputs: ModelInputs, generation: Generation) -> tuple[LayerAttention, ...]:
    with torch.no_grad():
        return adapter.teacher_forced(inputs, generation, attention="capture").attention


class RawAttention(ExplanationMethod):
    """Raw attention of the predicting position to the image tokens, mean over heads and chosen layers."""

    name = "attention"
    needs = MethodNeeds(attention="rows")

    def __init__(self, layers: list[int] | None = None):
        self.layers = layers

    def compute_maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        with explaining(adapter.model):
            image_positions = inputs.layout.positions
            layers = _captured(adapter, inputs, generation)
            chosen = [layers[i] for i in (self.layers or range(len(layers)))]
            rows = predicting_positions(inputs, generation)
            # per layer the head-mean rows of the predicting positions [T, N], then the mean over layers
            means = torch.stack([layer.probabilities(rows).mean(dim=0) for layer in chosen]).mean(0)
            return means[:, image_positions.to(means.device)].cpu()


class AttentionRollout(ExplanationMethod):
    """Attention rollout: product over layers of 0.5 * mean-head attention + 0.5 * I (rows renormalised)."""

    name = "rollout"
    needs = MethodNeeds(attention="full")

    def compute_maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        with explaining(adapter.model):
            image_positions = inputs.layout.positions
            layers = _captured(adapter, inputs, generation)
            rows = predicting_positions(inputs, generation)
            v = torch.zeros(len(rows), layers[0].length)
            v[torch.arange(len(rows)), rows] = 1.0
            for layer in reversed(layers):  # e_p^T (A_L' ... A_1'): apply the last layer first
                v = _rollout_step(layer, v)
            return v[:, image_positions]


def _rollout_step(layer: LayerAttention, v: torch.Tensor) -> torch.Tensor:
    """``v @ A'`` with ``A' = 0.5 mean_heads(A) + 0.5 I``, rows renormalised; only rows where ``v`` is non-zero are formed."""
    out = torch.zeros_like(v)
    for block in layer.row_blocks(torch.nonzero(v.abs().sum(0)).flatten()):
        mixed = 0.5 * layer.probabilities(block).mean(dim=0).cpu()  # [r, N]
        mixed[torch.arange(len(block)), block.cpu()] += 0.5
        out += v[:, block.cpu()] @ (mixed / mixed.sum(dim=-1, keepdim=True))
    return out

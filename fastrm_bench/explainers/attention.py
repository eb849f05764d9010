"""Gradient-free attention baselines: raw attention and attention rollout (Abnar & Zuidema, 2020)."""

from __future__ import annotations

import time

import torch

from fastrm_bench.explainers._attention import explaining, predicting_positions
from fastrm_bench.interfaces import Explanation, ExplanationMethod, Generation, ModelAdapter, ModelInputs


def _head_mean_attentions(adapter, inputs: ModelInputs, generation: Generation) -> list[torch.Tensor]:
    with torch.no_grad():
        forward = adapter.teacher_forced(inputs, generation)
    return [a[0].float().mean(dim=0) for a in forward.attentions]  # per layer [N, N]


class RawAttention(ExplanationMethod):
    """Raw attention of the predicting position to the image tokens, mean over heads and chosen layers."""

    name = "attention"

    def __init__(self, layers: list[int] | None = None):
        self.layers = layers

    def explain(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> Explanation:
        start = time.perf_counter()
        with explaining(adapter.model):
            image_positions = inputs.layout.positions
            attentions = _head_mean_attentions(adapter, inputs, generation)
            chosen = [attentions[i] for i in (self.layers or range(len(attentions)))]
            rows = predicting_positions(inputs, generation)
            maps = torch.stack(chosen).mean(0)[rows.to(chosen[0].device)][:, image_positions.to(chosen[0].device)]
        return Explanation(maps=maps.cpu(), seconds=time.perf_counter() - start)


class AttentionRollout(ExplanationMethod):
    """Attention rollout: product over layers of 0.5 * mean-head attention + 0.5 * I (rows renormalised)."""

    name = "rollout"

    def explain(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> Explanation:
        start = time.perf_counter()
        with explaining(adapter.model):
            image_positions = inputs.layout.positions
            attentions = _head_mean_attentions(adapter, inputs, generation)
            rows = predicting_positions(inputs, generation)
            n = attentions[0].shape[0]
            v = torch.zeros(len(rows), n)
            v[torch.arange(len(rows)), rows] = 1.0
            eye = torch.eye(n)
            for a in reversed(attentions):  # e_p^T (A_L' ... A_1'): apply the last layer first
                mixed = 0.5 * a.cpu() + 0.5 * eye
                v = v @ (mixed / mixed.sum(dim=-1, keepdim=True))
            maps = v[:, image_positions]
        return Explanation(maps=maps, seconds=time.perf_counter() - start)

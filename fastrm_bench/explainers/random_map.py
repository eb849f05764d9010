"""`random`: i.i.d. uniform scores per patch, seeded (the paper averages 5 seeds)."""

from __future__ import annotations

import time

import torch

from fastrm_bench.interfaces import Explanation, ExplanationMethod, Generation, ModelAdapter, ModelInputs


class RandomMap(ExplanationMethod):
    """Random baseline: i.i.d. uniform score per patch and token, seeded."""

    name = "random"
    #: perturbation metrics average this many independent random maps per sample (the paper: 5)
    perturbation_draws = 5

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._calls = 0

    def explain(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> Explanation:
        start = time.perf_counter()
        # one generator per (seed, call) so a sample's map does not depend on batch composition
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self._calls)
        self._calls += 1
        maps = torch.rand(max(generation.num_generated, 1), inputs.layout.num_tokens, generator=gen)
        return Explanation(maps=maps, seconds=time.perf_counter() - start)

"""`random`: i.i.d. uniform scores per patch, seeded (the paper averages 5 seeds)."""

from __future__ import annotations

import torch

from fastrm_bench.interfaces import ExplanationMethod, Generation, MethodNeeds, ModelAdapter, ModelInputs
from fastrm_bench.seeding import sample_seed


class RandomMap(ExplanationMethod):
    """Random baseline: i.i.d. uniform score per patch and token, seeded."""

    name = "random"
    needs = MethodNeeds(draws=5)  # the paper averages 5 random maps per sample

    def __init__(self, seed: int = 0):
        self.seed = seed

    def compute_maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        # seeded by (seed, sample id, draw): a sample's maps do not depend on which samples ran before it
        gen = torch.Generator().manual_seed(sample_seed(self.seed, inputs.sample_id, inputs.draw))
        return torch.rand(generation.num_generated, inputs.layout.num_tokens, generator=gen)

"""`oracle`: the ground-truth mask of the referenced objects as the map (upper bound where masks exist)."""

from __future__ import annotations

import torch

from fastrm_bench.interfaces import Explanation, ExplanationMethod, Generation, ModelAdapter, ModelInputs
from fastrm_bench.metrics.localisation import mask_to_patches


class OracleMap(ExplanationMethod):
    """Upper bound: the patches of the objects the question is about (needs ground-truth masks)."""

    name = "oracle"

    def explain(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> Explanation:
        sample = inputs.sample
        if sample is None or sample.mask is None:
            raise ValueError("oracle needs ground-truth masks: use a task with object masks (the embedded world)")
        patches = torch.from_numpy(mask_to_patches(sample.mask, adapter.grid_shape)).float()
        return Explanation(maps=patches.expand(max(generation.num_generated, 1), *patches.shape).clone())

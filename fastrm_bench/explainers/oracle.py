"""`oracle`: the ground-truth mask of the referenced objects as the map (upper bound where masks exist)."""

from __future__ import annotations

import torch

from fastrm_bench.interfaces import Explanation, ExplanationMethod, Generation, ModelAdapter, ModelInputs
from fastrm_bench.metrics.localisation import mask_to_patches


class OracleMap(ExplanationMethod):
    """Upper bound: the patches of the objects the question is about (constant where a question has none)."""

    name = "oracle"

    def explain(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> Explanation:
        sample = inputs.sample
        if sample is None:
            raise ValueError("oracle needs the sample (inputs.sample) and its ground-truth mask")
        if sample.mask is None:  # a question about nothing present ("is there a ...?" -> no): no ground truth,
            patches = torch.zeros(adapter.grid_shape)  # a constant map, i.e. a random removal order
        else:
            patches = torch.from_numpy(mask_to_patches(sample.mask, adapter.grid_shape)).float()
        return Explanation(maps=patches.expand(max(generation.num_generated, 1), *patches.shape).clone())

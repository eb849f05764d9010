"""`oracle`: the ground-truth mask of the referenced objects as the map (upper bound where masks exist)."""

from __future__ import annotations

import torch

from fastrm_bench.interfaces import ExplanationMethod, Generation, MethodNeeds, ModelAdapter, ModelInputs, Sample
from fastrm_bench.metrics.localisation import object_tokens


class OracleMap(ExplanationMethod):
    """Upper bound: the image tokens of the objects the question is about (constant where a question has none)."""

    name = "oracle"
    needs = MethodNeeds(ground_truth=True)

    def compute_maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        raise ValueError("oracle maps are the sample's ground-truth mask: call explain_sample(..., sample)")

    def compute_sample_maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation, sample: Sample
                            ) -> torch.Tensor:
        layout = inputs.layout
        if sample.mask is None:  # a question about nothing present ("is there a ...?" -> no): no ground truth,
            tokens = torch.zeros(layout.num_tokens)  # a constant map, i.e. a random removal order
        else:
            tokens = torch.from_numpy(object_tokens(layout, sample.mask)).float()
        return tokens.expand(generation.num_generated, -1).clone()

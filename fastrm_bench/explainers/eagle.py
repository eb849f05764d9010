"""EAGLE (Chen et al., CVPR 2026; github.com/RuoyuChen10/EAGLE): black-box attribution by greedy submodular
subset selection over image regions.

The authors' search (``interpretation/submodular_vision.py``, `MLLMSubModularExplanationVision`): starting from
the empty set, each step tries every region not chosen yet, added to the chosen ones, and scores the coalition
by ``lambda1 * insertion + lambda2 * (1 - deletion)``, mean over the explained answer tokens, where insertion is
each token's probability with only the coalition's regions kept and deletion its probability with them removed
(the "insight" and "necessity" of the paper); the best region joins the set, until every region is ordered.
Their map (``visualization/visualization.py``, ``add_value``): with ``s_k`` the chosen coalition's score at step
k and ``s_-1 = mean(1 - p(whole image) + p(no image))``, region k gets ``-sum_{j<=k} |s_j - s_{j-1}|``, min-max
normalised: the first region chosen 1, the last 0.

What differs here:
- regions are cells of ``cell`` x ``cell`` image tokens of each layout group (`captum_methods.region_ids`), not
  SLICO superpixels of the pixels; a region is removed as the harness' perturbation metrics remove tokens
  (``removal``, zeroed embeddings by default) instead of blacking its pixels out;
- every answer token is explained (the authors pick the words to explain); the search orders regions once for
  the whole answer, so every token gets the same map: EAGLE defines no per-token maps;
- the authors' faster variant (``efficient_attribution.py``: a search scope after the first step and a search
  from the other end) is not ported; this is the plain greedy search.

Cost: ``R (R + 1)`` forwards per answer for ``R`` regions (each step scores every remaining region twice),
batched ``batch_size`` at a time.
"""

from __future__ import annotations

import torch

from fastrm_bench.explainers._attention import explaining
from fastrm_bench.explainers.captum_methods import region_ids
from fastrm_bench.interfaces import ExplanationMethod, Generation, MethodNeeds, ModelAdapter, ModelInputs


def ranking_values(scores: list[float], empty_score: float) -> torch.Tensor:
    """The authors' map value of each chosen region, in the order chosen: ``-cumsum(|s_k - s_{k-1}|)``, min-max
    normalised (first chosen 1, last 0; all 0 when every step scored the same)."""
    steps = torch.tensor(scores, dtype=torch.float64)
    previous = torch.cat([torch.tensor([empty_score], dtype=torch.float64), steps[:-1]])
    values = -torch.cumsum((steps - previous).abs(), dim=0)
    span = values.max() - values.min()
    return (values - values.min()) / span if span > 0 else torch.zeros_like(values)


class EagleMap(ExplanationMethod):
    """EAGLE's greedy region search (insight + necessity of the answer's token probabilities); one map per answer."""

    name = "eagle"
    needs = MethodNeeds()

    def __init__(self, cell: int = 2, lambda1: float = 1.0, lambda2: float = 1.0, removal: str = "zero",
                 batch_size: int = 32):
        self.cell, self.lambda1, self.lambda2 = int(cell), float(lambda1), float(lambda2)
        self.removal, self.batch_size = removal, int(batch_size)

    def compute_maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        n, tokens = inputs.layout.num_tokens, generation.num_generated
        if tokens == 0:
            return torch.zeros(0, n)
        regions = region_ids(inputs.layout, self.cell)
        masks = torch.nn.functional.one_hot(regions).T.float()  # [R, N]

        def probabilities(keep: torch.Tensor) -> torch.Tensor:
            parts = [adapter.answer_logprobs(inputs, generation, block, self.removal)
                     for block in torch.split(keep, self.batch_size)]
            return torch.cat(parts).double().exp()  # [K, T]

        with explaining(adapter.model), torch.no_grad():
            whole, empty = probabilities(torch.stack([torch.ones(n), torch.zeros(n)]))
            order, scores = self._search(masks, probabilities)
        values = ranking_values(scores, float((1 - whole + empty).mean()))
        by_region = torch.zeros(len(masks), dtype=torch.float64)
        by_region[torch.tensor(order)] = values
        return by_region[regions].float().expand(tokens, -1).clone()

    def _search(self, masks: torch.Tensor, probabilities) -> tuple[list[int], list[float]]:
        """The greedy order of the regions and the chosen coalition's score at each step."""
        remaining, chosen = list(range(len(masks))), torch.zeros(masks.shape[1])
        order, scores = [], []
        while remaining:
            candidates = chosen[None] + masks[remaining]  # the chosen regions plus each remaining one
            insertion, deletion = probabilities(candidates), probabilities(1 - candidates)
            score = (self.lambda1 * insertion + self.lambda2 * (1 - deletion)).mean(dim=-1)
            best = int(score.argmax())
            chosen = candidates[best]
            order.append(remaining.pop(best))
            scores.append(float(score[best]))
        return order, scores

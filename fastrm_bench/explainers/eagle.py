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

Regions and budget: ``cell`` (2) cuts each layout group's token grid into ``cell`` x ``cell`` cells
(`captum_methods.region_ids`), the regions; the authors cut the pixels into about ``division_number`` SLICO
superpixels (64 in their evaluation scripts, 50 in their tutorials), which have no counterpart over image tokens
(a token is the smallest unit the harness can remove, and superpixels would cut across tokens): their 64 regions
correspond to ``cell = sqrt(tokens / 64)``, 1 on the shipped tiny models, 3 on LLaVA-1.5's 24 x 24 grid. ``steps``
(0: every region, as the authors) bounds the greedy steps: past it the regions left join together as one last
step, scored as any step (so ``steps = R - 1`` is the full search).

What differs here:
- the regions are token cells, not superpixels (above), and a region is removed as the harness' perturbation
  metrics remove tokens (``removal``, zeroed embeddings by default) instead of blacking its pixels out;
- every answer token is explained together (the authors' sentence-level explanation, every generated word
  selected), so every token gets the same map; ``per_token`` runs one search per answer token instead (their
  word-level explanation, one word selected), ``T`` times the cost;
- the ``steps`` budget is this harness' (the early-stop module a tutorial of theirs imports is not in their code);
- the authors' faster variant (``efficient_attribution.py``: a search scope after the first step and a search
  from the other end) is not ported; this is the plain greedy search.

Cost: ``R (R + 1)`` forwards per answer for ``R`` regions (step ``k`` scores the ``R - k`` regions left, kept and
removed), ``k (2R - k + 1) + 2`` with ``steps = k < R``; batched ``batch_size`` rows at a time. The shipped tiny
LLaVA has 8 x 8 image tokens: 16 regions, 272 forwards; the tiny Qwen's grid follows the image (10 x 6: 15, 240).
"""

from __future__ import annotations

from collections.abc import Callable

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


Probabilities = Callable[[torch.Tensor], torch.Tensor]  # keep rows [K, N] -> explained tokens' probabilities [K, T']


class EagleMap(ExplanationMethod):
    """EAGLE's greedy region search (insight + necessity of the answer's token probabilities): one map for the
    whole answer, as the authors explain the selected words together, or one search per token (``per_token``)."""

    name = "eagle"
    needs = MethodNeeds()  # black box: answer probabilities under removals, no gradients, no attention

    def __init__(self, cell: int = 2, steps: int = 0, per_token: bool = False, lambda1: float = 1.0,
                 lambda2: float = 1.0, removal: str = "zero", batch_size: int = 32):
        if cell < 1 or steps < 0 or batch_size < 1:
            raise ValueError(f"eagle needs cell >= 1, steps >= 0 (0: every region), batch_size >= 1; got cell={cell}, "
                             f"steps={steps}, batch_size={batch_size}")
        self.cell, self.steps, self.per_token = int(cell), int(steps), bool(per_token)
        self.lambda1, self.lambda2 = float(lambda1), float(lambda2)
        self.removal, self.batch_size = removal, int(batch_size)

    def compute_maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        n, tokens = inputs.layout.num_tokens, generation.num_generated
        if tokens == 0:
            return torch.zeros(0, n)
        regions = region_ids(inputs.layout, self.cell)

        def probabilities(keep: torch.Tensor) -> torch.Tensor:
            parts = [adapter.answer_logprobs(inputs, generation, block, self.removal)
                     for block in torch.split(keep, self.batch_size)]
            return torch.cat(parts).double().exp()  # [K, T]

        with explaining(adapter.model), torch.no_grad():
            if not self.per_token:  # the authors' sentence-level explanation: every answer token together
                return self.region_map(regions, probabilities).expand(tokens, -1).clone()
            return torch.stack([self.region_map(regions, lambda keep, t=t: probabilities(keep)[:, t:t + 1])
                                for t in range(tokens)])

    def region_map(self, regions: torch.Tensor, probabilities: Probabilities) -> torch.Tensor:
        """The authors' map ``[N]`` of the tokens ``probabilities`` reads: each region valued by when it was chosen."""
        masks = torch.nn.functional.one_hot(regions).T.float()  # [R, N]
        steps, scores, whole, empty = self.search(masks, probabilities)
        values = ranking_values(scores, float((1 - whole + empty).mean()))
        by_region = torch.zeros(len(masks), dtype=torch.float64)
        for chosen, value in zip(steps, values):
            by_region[chosen] = value
        return by_region[regions].float()

    def search(self, masks: torch.Tensor, probabilities: Probabilities
               ) -> tuple[list[list[int]], list[float], torch.Tensor, torch.Tensor]:
        """The regions chosen at each greedy step, the chosen coalition's score at each step, and the probabilities
        with every region kept and with every region removed (the last coalition's insertion and deletion).

        Past the ``steps`` budget the regions left join together as one last step, scored like any other."""
        remaining, chosen = list(range(len(masks))), torch.zeros(masks.shape[1])
        steps, scores = [], []
        budget = len(masks) if self.steps == 0 else min(self.steps, len(masks))
        while remaining:
            if len(steps) < budget:  # the chosen regions plus each remaining one
                groups = [[r] for r in remaining]
                candidates = chosen[None] + masks[remaining]
            else:  # budget spent: the chosen regions plus all the remaining ones
                groups = [remaining]
                candidates = (chosen + masks[remaining].sum(0))[None]
            insertion, deletion = probabilities(torch.cat([candidates, 1 - candidates])).split(len(candidates))
            score = (self.lambda1 * insertion + self.lambda2 * (1 - deletion)).mean(dim=-1)
            best = int(score.argmax())
            chosen = candidates[best]
            steps.append(groups[best])
            remaining = [r for r in remaining if r not in groups[best]]
            scores.append(float(score[best]))
        return steps, scores, insertion[best], deletion[best]

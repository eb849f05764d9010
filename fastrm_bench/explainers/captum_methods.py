"""Perturbation attributions through Captum: occlusion (`FeatureAblation`) and KernelSHAP over image regions.

What a user reaches for to run occlusion or KernelSHAP on an LVLM is Captum; these methods call it, rewriting
nothing of it. The features are regions of the input's image tokens: each layout group's grid is cut into
cells of ``cell`` x ``cell`` tokens (the last row and column of cells take what is left), so a region is a
patch of the image wherever the family puts its tokens (one grid, tiles, a non-square grid). The model's
response to a coalition of kept regions is the log-probability of every answer token, teacher-forced, with
the other regions' tokens removed as the harness' perturbation metrics remove them
(`ModelAdapter.answer_logprobs` with ``removal``: zeroed embeddings by default; the input with everything
kept is Captum's input, everything removed its baseline).

- ``occlusion``: `captum.attr.FeatureAblation`: a region's score is the answer token's log-probability with
  every region kept minus with that region removed. All answer tokens share the ablations: Captum attributes
  each output of the forward (one per token) from the same ``regions + 1`` forwards.
- ``kernel-shap``: `captum.attr.KernelShap` with ``n_samples`` coalitions (Captum's sampling, seeded per
  sample); an input of fewer than 3 regions (a tiny grid) has no coalitions to sample, and gets the exact Shapley
  values KernelSHAP estimates (`captum.attr.ShapleyValues`). Captum's KernelSHAP explains one output at a time; every token's call draws the same coalitions
  (the same seed), and a coalition's forward is computed once and reused, so the cost is ``n_samples``
  forwards per answer, not per token.

Each image token gets its region's attribution. Gradient-free and attention-free: they run on any family.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable

import torch

from fastrm_bench.explainers._attention import explaining
from fastrm_bench.interfaces import ExplanationMethod, Generation, MethodNeeds, ModelAdapter, ModelInputs
from fastrm_bench.layout import ImageLayout
from fastrm_bench.seeding import sample_seed

Forward = Callable[[torch.Tensor], torch.Tensor]


def region_ids(layout: ImageLayout, cell: int) -> torch.Tensor:
    """Region id of every image token ``[N]``: each group's grid cut into ``cell`` x ``cell`` blocks, numbered
    group after group in row-major order."""
    if cell < 1:
        raise ValueError(f"cell must be at least 1 token, got {cell}")
    ids, first = [], 0
    for group in layout.groups:
        rows, cols = group.grid
        block_rows, block_cols = -(-rows // cell), -(-cols // cell)
        r = torch.arange(rows)[:, None] // cell
        c = torch.arange(cols)[None, :] // cell
        ids.append((first + r * block_cols + c).flatten())
        first += block_rows * block_cols
    return torch.cat(ids)


def answer_logprob_forward(adapter: ModelAdapter, inputs: ModelInputs, generation: Generation, removal: str) -> Forward:
    """``keep [B, N] -> [B, T]``: each answer token's log-probability with the image tokens ``keep`` says (1 kept, 0
    removed); a row asked before is answered from memory (KernelSHAP asks the same coalitions once per token)."""
    memory: dict[bytes, torch.Tensor] = {}

    def forward(keep: torch.Tensor) -> torch.Tensor:
        keys = [row.to(torch.uint8).numpy().tobytes() for row in keep.detach().cpu()]
        todo = [i for i, k in enumerate(keys) if k not in memory]
        if todo:
            with torch.no_grad():
                values = adapter.answer_logprobs(inputs, generation, keep[todo].detach().float(), removal)
            memory.update({keys[i]: v for i, v in zip(todo, values.float())})
        return torch.stack([memory[k] for k in keys])

    return forward


class _CaptumRegions(ExplanationMethod):
    """Shared set-up: regions over the layout, the log-probability forward, the all-kept input and its baseline."""

    needs = MethodNeeds()

    def __init__(self, cell: int = 2, removal: str = "zero", batch_size: int = 16):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.cell, self.removal, self.batch_size = int(cell), removal, int(batch_size)

    def compute_maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        n = inputs.layout.num_tokens
        if generation.num_generated == 0:
            return torch.zeros(0, n)
        with explaining(adapter.model):
            forward = answer_logprob_forward(adapter, inputs, generation, self.removal)
            mask = region_ids(inputs.layout, self.cell)[None]
            return self.attribute(forward, torch.ones(1, n), torch.zeros(1, n), mask, generation.num_generated,
                                  inputs).detach().float().cpu()

    @abstractmethod
    def attribute(self, forward: Forward, keep_all: torch.Tensor, baseline: torch.Tensor, mask: torch.Tensor, tokens: int,
                  inputs: ModelInputs) -> torch.Tensor:
        """Captum's attributions ``[T, N]`` of the ``tokens`` outputs of ``forward``."""


class OcclusionMap(_CaptumRegions):
    """Occlusion of image regions (Captum `FeatureAblation`): the drop of each answer token's log-probability."""

    name = "occlusion"
    needs = MethodNeeds()

    def attribute(self, forward: Forward, keep_all: torch.Tensor, baseline: torch.Tensor, mask: torch.Tensor, tokens: int,
                  inputs: ModelInputs) -> torch.Tensor:
        from captum.attr import FeatureAblation

        out = FeatureAblation(forward).attribute(keep_all, baselines=baseline, feature_mask=mask,
                                                 perturbations_per_eval=self.batch_size)
        return out.reshape(tokens, -1)  # one row per output of the forward: the answer's tokens


class KernelShapMap(_CaptumRegions):
    """KernelSHAP over image regions (Captum `KernelShap`), each answer token's log-probability explained."""

    name = "kernel-shap"
    needs = MethodNeeds()

    def __init__(self, n_samples: int = 64, seed: int = 0, cell: int = 2, removal: str = "zero", batch_size: int = 16):
        super().__init__(cell, removal, batch_size)
        if n_samples < 2:
            raise ValueError(f"n_samples must be at least 2, got {n_samples}")
        self.n_samples, self.seed = int(n_samples), int(seed)

    def attribute(self, forward: Forward, keep_all: torch.Tensor, baseline: torch.Tensor, mask: torch.Tensor, tokens: int,
                  inputs: ModelInputs) -> torch.Tensor:
        from captum.attr import KernelShap, ShapleyValues

        if int(mask.max()) + 1 < 3:  # KernelSHAP samples coalitions of 1..M-1 regions: none to sample below 3
            exact = ShapleyValues(forward)  # the exact Shapley values KernelSHAP estimates, every ordering tried
            return torch.cat([exact.attribute(keep_all, baselines=baseline, feature_mask=mask, target=t)
                              for t in range(tokens)])
        seed = sample_seed(self.seed, inputs.sample_id, inputs.draw)
        rows = []
        for t in range(tokens):
            with torch.random.fork_rng(devices=[]):  # the same coalitions for every token, the caller's RNG untouched
                torch.manual_seed(seed)
                rows.append(KernelShap(forward).attribute(keep_all, baselines=baseline, feature_mask=mask, target=t,
                                                          n_samples=self.n_samples,
                                                          perturbations_per_eval=self.batch_size))
        return torch.cat(rows)

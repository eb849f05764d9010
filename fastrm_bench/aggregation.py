"""From a method's per-token maps to the one map per answer that sample-level metrics score.

A named choice, recorded in the run's config (``aggregation``), registered in ``registry.AGGREGATIONS``:

- ``mean``: the mean over the answer's content tokens (punctuation-only tokens left out; all tokens
  when none is content): the paper's choice and the default;
- ``last``: the map of the last content token;
- ``dex-ar``: DEX-AR's token weights ``delta_t = relu(max S_img - max S_txt)`` (SPEC 2b: a token whose
  strongest attention-gradient head looks at text more than at the image is linguistic and gets 0),
  computed from the model for the answer, then the weighted mean of the method's maps; all weights 0
  gives an all-zero map (no visual token, as `dex-ar-sentence`).

Every aggregation is a weighted mean ``sum_t w_t m_t / sum_t w_t`` with weights from `Aggregation.weights`.
"""

from __future__ import annotations

import string
from abc import ABC, abstractmethod

import torch

from fastrm_bench.interfaces import Explanation, Generation, ModelAdapter, ModelInputs

_FORMAT_ONLY = set(string.punctuation) | {" "}


def content_tokens(generation: Generation, tokenizer) -> torch.Tensor:
    """Boolean ``[T]``: the answer's tokens that carry content (not only punctuation or spaces)."""
    words = [tokenizer.decode([int(t)]).strip() for t in generation.generated_ids]
    return torch.tensor([bool(w) and not set(w) <= _FORMAT_ONLY for w in words], dtype=torch.bool)


def weighted_map(maps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_t w_t maps[t] / sum_t w_t``; all-zero weights give an all-zero map."""
    weights = weights.to(maps.dtype)
    total = weights.sum()
    if total <= 0:
        return torch.zeros(maps.shape[1:], dtype=maps.dtype)
    return (weights.unsqueeze(-1) * maps).sum(0) / total


class Aggregation(ABC):
    """Token weights that turn the per-token maps ``[T, n]`` of an answer into its sample map."""

    name: str = ""

    @abstractmethod
    def weights(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation, explanation: Explanation
                ) -> torch.Tensor:
        """Non-negative ``[T]`` weights of the answer's tokens."""

    def __call__(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation, explanation: Explanation
                 ) -> torch.Tensor:
        maps = explanation.maps.float().cpu()
        if generation.num_generated == 0:  # nothing answered: no map ([0, n]), the sample map is flat
            return torch.zeros(inputs.layout.num_tokens)
        return weighted_map(maps, self.weights(adapter, inputs, generation, explanation).float().cpu())


class MeanOverContent(Aggregation):
    """Mean over the content tokens (all tokens when none is content)."""

    name = "mean"

    def weights(self, adapter, inputs, generation, explanation) -> torch.Tensor:
        content = content_tokens(generation, adapter.tokenizer)
        return (content if content.any() else torch.ones_like(content)).float()


class LastContentToken(Aggregation):
    """The map of the last content token (the last token when none is content)."""

    name = "last"

    def weights(self, adapter, inputs, generation, explanation) -> torch.Tensor:
        content = content_tokens(generation, adapter.tokenizer)
        index = int(content.nonzero().max()) if content.any() else len(content) - 1
        weights = torch.zeros(len(content))
        weights[index] = 1.0
        return weights

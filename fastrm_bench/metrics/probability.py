"""Probability curves: the mean log-probability of the original answer as image tokens are removed.

Accuracy curves are coarse: a model that is right on nearly every question keeps answering
right long after a map's most relevant tokens are gone, and a curve can even come back up. The
log-probability of the answer it gave, under teacher forcing, still moves (DEX-AR's normalised
perplexity idea). At every fraction of the positive (deletion), negative and insertion orders
of `fastrm_bench.metrics.perturbation`, with the same tie-breaks and draws, the run records the
mean over the answer's tokens of ``log p(y_t | image with tokens removed, y_<t)``; the AUC is
the trapezoid over the fractions divided by their range (so it is a mean log-probability, <= 0).

Directions: deletion, lower is better (the answer loses its support fast); negative and
insertion, higher is better.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fastrm_bench.metrics.base import Metric, Needs, RunSettings, SampleContext
from fastrm_bench.metrics.perturbation import auc_entries, insertion_masks, keep_masks, mean_curve

#: record key per order, in the order the masks are batched
ORDERS = ("positive", "negative", "insertion")
SHORT = {"positive": "logprob_pp", "negative": "logprob_np", "insertion": "logprob_insertion"}


def order_masks(sample_map: torch.Tensor, fractions, seed: int) -> dict[str, torch.Tensor]:
    """Keep masks of the three orders ``{order: [len(fractions), n]}``."""
    masks = keep_masks(sample_map, fractions, seed)
    return {"positive": masks["positive"], "negative": masks["negative"],
            "insertion": insertion_masks(sample_map, fractions, seed)}


class AnswerProbability(Metric):
    """Mean log-probability of the original answer under deletion, negative and insertion orders."""

    name = "probability"
    needs = Needs(perturbation=True)
    higher_is_better = {f"{SHORT[o]}_{suffix}": o != "positive" for o in ORDERS for suffix in ("auc", "auc_first20")}
    columns = {"logprob_pp_auc": "logprob_pp_auc", "logprob_insertion_auc": "logprob_insertion_auc"}

    def update(self, context: SampleContext) -> dict[str, Any]:
        if context.generation.num_generated == 0:  # no answer token: no probability to follow
            return {}
        settings = context.settings
        n = len(settings.fractions)
        maps = context.sample_maps()
        curves = {o: np.zeros(n) for o in ORDERS}
        for draw, smap in enumerate(maps):
            masks = order_masks(smap, settings.fractions, settings.seed + draw)
            logprobs = context.answer_logprobs(torch.cat([masks[o] for o in ORDERS])).numpy()
            for i, o in enumerate(ORDERS):
                curves[o] += logprobs[i * n : (i + 1) * n] / len(maps)
        return {"logprob_curves": {o: c.tolist() for o, c in curves.items()}}

    def _curves(self, records) -> dict[str, np.ndarray]:
        found = {o: mean_curve(records, lambda r, o=o: r.get("logprob_curves", {}).get(o)) for o in ORDERS}
        return {o: c for o, c in found.items() if c is not None}

    def compute(self, records, settings: RunSettings) -> dict[str, float]:
        out: dict[str, float] = {}
        for order, curve in self._curves(records).items():
            out.update(auc_entries(SHORT[order], settings.fractions, curve))
        return out

    def sections(self, records, settings: RunSettings) -> dict[str, Any]:
        curves = self._curves(records)
        if not curves:
            return {}
        return {"curves": {"fractions": list(settings.fractions), **{f"logprob_{o}": c.tolist() for o, c in curves.items()}}}

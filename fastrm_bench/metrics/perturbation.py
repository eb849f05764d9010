"""Perturbation curves (paper Fig. 4 / 10): remove image tokens in order of a map, re-answer, re-score.

- positive (PP, deletion): most relevant first; a faithful map makes accuracy drop fast: lower AUC is better;
- negative (NP): least relevant first; accuracy should hold: higher AUC is better;
- insertion (RISE, EAGLE): start with every image token removed and put them back most relevant
  first at the same fractions (fraction f keeps the top f of the tokens): higher AUC is better.
The removal fractions default to 0, 0.1, ..., 0.9. AUC is the trapezoid of accuracy over the
fractions divided by their range (x normalised to [0, 1], as RISE), so AUC lies in [0, 1].
Ties in the map are broken by a seeded random order (seed: the run's seed plus the draw), so a
constant map behaves like random; stochastic methods average their curves over several draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fastrm_bench.metrics.base import Metric, Needs, RunSettings, SampleContext

DEFAULT_FRACTIONS = tuple(round(0.1 * i, 1) for i in range(10))
DIRECTIONS = ("positive", "negative")


def removal_order(sample_map: torch.Tensor, direction: str, seed: int = 0) -> torch.Tensor:
    """Patch indices in the order they are removed (ties broken by a seeded permutation)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    flat = sample_map.detach().flatten().double().cpu()
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(flat.numel()))
    shuffled = flat[perm]
    order = torch.argsort(shuffled, descending=direction == "positive", stable=True)
    return perm[order]


def keep_masks(sample_map: torch.Tensor, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0
               ) -> dict[str, torch.Tensor]:
    """{direction: [len(fractions), n_patches] keep masks (1 keep, 0 remove)}."""
    n = sample_map.numel()
    out = {}
    for direction in DIRECTIONS:
        order = removal_order(sample_map, direction, seed)
        masks = torch.ones(len(fractions), n)
        for i, f in enumerate(fractions):
            masks[i, order[: int(round(f * n))]] = 0.0
        out[direction] = masks
    return out


def insertion_masks(sample_map: torch.Tensor, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0
                    ) -> torch.Tensor:
    """``[len(fractions), n_patches]`` keep masks that keep the ``round(f * n)`` most relevant patches
    (the positive removal order, same tie-breaks): insertion is deletion's order read from the other end."""
    n = sample_map.numel()
    order = removal_order(sample_map, "positive", seed)
    masks = torch.zeros(len(fractions), n)
    for i, f in enumerate(fractions):
        masks[i, order[: int(round(f * n))]] = 1.0
    return masks


def curve_auc(fractions: Sequence[float], accuracy: Sequence[float]) -> float:
    """Trapezoid of accuracy over the removal fractions, divided by the fractions' range."""
    x = np.asarray(fractions, dtype=float)
    y = np.asarray(accuracy, dtype=float)
    if len(x) < 2:
        raise ValueError("an AUC needs at least two fractions")
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def mean_curve(records: Sequence[dict[str, Any]], get) -> np.ndarray | None:
    """The mean over records of the curve ``get(record)`` returns (None: the record has none)."""
    curves = [c for c in (get(r) for r in records) if c is not None]
    return np.mean(curves, axis=0) if curves else None


def auc_entries(prefix: str, fractions: Sequence[float], curve: np.ndarray) -> dict[str, float]:
    """``{prefix}_auc`` over all fractions and ``{prefix}_auc_first20`` over those <= 0.2 (paper Fig. 5)."""
    out = {f"{prefix}_auc": curve_auc(fractions, curve)}
    window = [i for i, f in enumerate(fractions) if f <= 0.2 + 1e-9]
    if len(window) >= 2:
        out[f"{prefix}_auc_first20"] = curve_auc([fractions[i] for i in window], curve[window])
    return out


class Perturbation(Metric):
    """Positive (deletion) and negative perturbation: task accuracy as image tokens are removed by relevance."""

    name = "perturbation"
    needs = Needs(perturbation=True)
    higher_is_better = {"pp_auc": False, "np_auc": True, "pp_auc_first20": False, "np_auc_first20": True}
    columns = {"pp_auc": "pp_auc", "np_auc": "np_auc"}

    @staticmethod
    def _masks(context: SampleContext) -> list[torch.Tensor]:
        """Per draw, the positive then the negative keep masks ``[2 * len(fractions), n]``."""
        settings = context.settings
        maps = context.sample_maps()
        draws = [keep_masks(smap, settings.fractions, seed=settings.seed + draw) for draw, smap in enumerate(maps)]
        return [torch.cat([masks[d] for d in DIRECTIONS]) for masks in draws]

    def removals(self, context: SampleContext) -> torch.Tensor:
        return torch.cat(self._masks(context))

    def update(self, context: SampleContext) -> dict[str, Any]:
        n = len(context.settings.fractions)
        curves = {d: np.zeros(n) for d in DIRECTIONS}
        draws = self._masks(context)
        for masks in draws:
            scores = context.answer_scores(masks)
            for i, d in enumerate(DIRECTIONS):
                curves[d] += np.asarray(scores[i * n : (i + 1) * n]) / len(draws)
        return {"curves": {d: c.tolist() for d, c in curves.items()}}

    def compute(self, records, settings: RunSettings) -> dict[str, float]:
        out: dict[str, float] = {}
        for direction, short in (("positive", "pp"), ("negative", "np")):
            curve = mean_curve(records, lambda r, d=direction: r.get("curves", {}).get(d))
            if curve is not None:
                out.update(auc_entries(short, settings.fractions, curve))
        return out

    def sections(self, records, settings: RunSettings) -> dict[str, Any]:
        curves = {d: mean_curve(records, lambda r, d=d: r.get("curves", {}).get(d)) for d in DIRECTIONS}
        return {"curves": {"fractions": list(settings.fractions), **{d: c.tolist() for d, c in curves.items() if c is not None}}}


class Insertion(Metric):
    """Insertion: task accuracy as image tokens are put back, most relevant first, from an image with none."""

    name = "insertion"
    needs = Needs(perturbation=True)
    higher_is_better = {"insertion_auc": True, "insertion_auc_first20": True}
    columns = {"insertion_auc": "insertion_auc"}

    @staticmethod
    def _masks(context: SampleContext) -> list[torch.Tensor]:
        settings = context.settings
        maps = context.sample_maps()
        return [insertion_masks(smap, settings.fractions, settings.seed + draw) for draw, smap in enumerate(maps)]

    def removals(self, context: SampleContext) -> torch.Tensor:
        return torch.cat(self._masks(context))

    def update(self, context: SampleContext) -> dict[str, Any]:
        draws = self._masks(context)
        curve = np.zeros(len(context.settings.fractions))
        for masks in draws:
            curve += np.asarray(context.answer_scores(masks))
        return {"insertion_curve": (curve / len(draws)).tolist()}

    def compute(self, records, settings: RunSettings) -> dict[str, float]:
        curve = mean_curve(records, lambda r: r.get("insertion_curve"))
        return {} if curve is None else auc_entries("insertion", settings.fractions, curve)

    def sections(self, records, settings: RunSettings) -> dict[str, Any]:
        curve = mean_curve(records, lambda r: r.get("insertion_curve"))
        return {} if curve is None else {"curves": {"fractions": list(settings.fractions), "insertion": curve.tolist()}}

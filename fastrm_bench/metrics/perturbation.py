"""Perturbation curves (paper Fig. 4 / 10): remove image tokens in order of a map, re-answer, re-score.

- positive (PP): most relevant first; a faithful map makes accuracy drop fast: lower AUC is better;
- negative (NP): least relevant first; accuracy should hold: higher AUC is better.
The removal fractions default to 0, 0.1, ..., 0.9. AUC is the trapezoid of accuracy over the
fractions divided by their range (x normalised to [0, 1], as RISE), so AUC lies in [0, 1].
Ties in the map are broken by a seeded random order, so a constant map behaves like random.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

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


def curve_auc(fractions: Sequence[float], accuracy: Sequence[float]) -> float:
    """Trapezoid of accuracy over the removal fractions, divided by the fractions' range."""
    x = np.asarray(fractions, dtype=float)
    y = np.asarray(accuracy, dtype=float)
    if len(x) < 2:
        raise ValueError("an AUC needs at least two fractions")
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))

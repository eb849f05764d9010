"""Threshold accuracy / F1 of per-patch probabilities against binarised Chefer labels (paper Fig. 3, Table 1).

Labels: ``y_j = 1 if R[j] >= labeling_threshold * max(R)`` per token map (SPEC section 3).
Predictions: ``prob_j >= c`` for classification thresholds c (default 0.1 ... 0.9).
Functional form `threshold_scores`, and a torchmetrics-style accumulator `ThresholdScores`.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score

DEFAULT_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))


def binarise(relevancy: torch.Tensor, labeling_threshold: float = 0.3) -> torch.Tensor:
    """Per map (last dims flattened): 1 where relevancy >= threshold * its max (maps with max <= 0: all 0)."""
    flat = relevancy.flatten(start_dim=1) if relevancy.dim() > 1 else relevancy.unsqueeze(0)
    peak = flat.max(dim=1, keepdim=True).values
    return ((flat >= labeling_threshold * peak) & (peak > 0)).reshape(relevancy.shape)


def threshold_scores(probs: torch.Tensor, labels: torch.Tensor, thresholds=DEFAULT_THRESHOLDS) -> dict[float, dict[str, float]]:
    """{c: {"accuracy", "f1"}} over all patches of all maps (sklearn)."""
    y = labels.flatten().cpu().numpy().astype(bool)
    p = probs.flatten().detach().cpu().numpy()
    return {c: {"accuracy": float(accuracy_score(y, p >= c)), "f1": float(f1_score(y, p >= c, zero_division=0))}
            for c in thresholds}


class ThresholdScores:
    """Accumulates (probs, labels) over samples: ``update`` per sample, ``compute`` at the end."""

    def __init__(self, thresholds=DEFAULT_THRESHOLDS, labeling_threshold: float = 0.3):
        self.thresholds = tuple(thresholds)
        self.labeling_threshold = labeling_threshold
        self.reset()

    def reset(self) -> None:
        self._probs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def update(self, probs: torch.Tensor, relevancy: torch.Tensor) -> None:
        self._probs.append(probs.detach().float().cpu().flatten().numpy())
        self._labels.append(binarise(relevancy.float(), self.labeling_threshold).cpu().flatten().numpy())

    def compute(self) -> dict[float, dict[str, float]]:
        if not self._probs:
            return {}
        return threshold_scores(torch.from_numpy(np.concatenate(self._probs)), torch.from_numpy(np.concatenate(self._labels)),
                                self.thresholds)

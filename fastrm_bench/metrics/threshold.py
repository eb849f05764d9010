"""Threshold accuracy / F1 of per-patch probabilities against binarised Chefer labels (paper Fig. 3, Table 1).

Labels: ``y_j = 1 if R[j] >= labeling_threshold * max(R)`` per token map (SPEC section 3).
Predictions: ``prob_j >= c`` for classification thresholds c (default 0.1 ... 0.9).
Functional form `threshold_scores`; the run's metric `ThresholdAgreement` keeps per-sample confusion counts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score

from fastrm_bench.metrics.base import Metric, Needs, RunSettings, SampleContext

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


def confusion_counts(probs: torch.Tensor, labels: torch.Tensor, thresholds=DEFAULT_THRESHOLDS) -> dict[str, list[int]]:
    """{str(c): [tp, fp, fn, tn]} of ``probs >= c`` against boolean ``labels`` over all patches."""
    p, y = probs.flatten(), labels.flatten().bool()
    out = {}
    for c in thresholds:
        pred = p >= c
        out[str(c)] = [int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum()), int((~pred & ~y).sum())]
    return out


def scores_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Accuracy and F1 of summed confusion counts (F1 is 0 without a true positive, as sklearn's zero_division=0)."""
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"accuracy": float((tp + tn) / (tp + fp + fn + tn)), "f1": float(f1)}


class ThresholdAgreement(Metric):
    """Per-patch accuracy and F1 of a probabilistic map (FastRM) against binarised Chefer labels, per threshold.

    State: each sample's confusion counts per threshold (summed at the end, so the scores are over
    all patches of all answer tokens, as `threshold_scores` on the concatenated maps).
    """

    name = "threshold"
    higher_is_better = {"threshold_accuracy": True, "threshold_f1": True}
    columns = {"threshold_accuracy": "threshold_accuracy", "threshold_f1": "threshold_f1"}

    def __init__(self, reference: str = "chefer", labeling_threshold: float = 0.3, thresholds=DEFAULT_THRESHOLDS):
        self.needs = Needs(probabilities=True, reference_method=reference)
        self.labeling_threshold = labeling_threshold
        self.thresholds = tuple(thresholds)

    def update(self, context: SampleContext) -> dict[str, Any]:
        if context.generation.num_generated == 0 or context.reference is None:
            return {}
        labels = binarise(context.reference.maps.float(), self.labeling_threshold)
        return {"threshold_counts": confusion_counts(context.explanation.maps.float().cpu(), labels.cpu(), self.thresholds)}

    def _sweep(self, records) -> dict[str, dict[str, float]]:
        counts = [r["threshold_counts"] for r in records if "threshold_counts" in r]
        if not counts:
            return {}
        return {c: scores_from_counts(*np.sum([x[c] for x in counts], axis=0)) for c in counts[0]}

    def compute(self, records, settings: RunSettings) -> dict[str, float]:
        sweep = self._sweep(records)
        if "0.5" not in sweep:
            return {}
        return {"threshold_accuracy": sweep["0.5"]["accuracy"], "threshold_f1": sweep["0.5"]["f1"]}

    def sections(self, records, settings: RunSettings) -> dict[str, Any]:
        return {"threshold_sweep": self._sweep(records)}

"""Entropy-based confidence (paper Fig. 9): a focused map should mean a trustworthy answer.

``p = map / sum(map)``, ``H = -sum p log p`` over patches (maps clipped at 0). On a calibration
part, the threshold is the mean of the mean entropies of correct and of wrong answers (the
means of their KDEs, scipy ``gaussian_kde``). On the disjoint evaluation part, an answer whose
map is below the threshold is predicted "correct": TP / FP rates are taken among the samples
below, TN / FN among those above, and the share below is reported.

One split of a few hundred samples is one draw of chance, so `entropy_over_splits` repeats the
measurement on many random splits and reports the mean and spread. Threshold-free, `entropy_auroc`
is the area under the ROC curve of low entropy as a detector of correct answers (0.5: no signal).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.stats import gaussian_kde
from sklearn.metrics import roc_auc_score

from fastrm_bench.metrics.base import Metric, RunSettings, SampleContext

#: an answer counts as correct for entropy confidence when the task scores it at least this (VQA: 3 of 10 humans agree
#: gives 1, one agrees gives 0.3)
CORRECT_SCORE = 0.5
#: random calibration/evaluation splits behind each entropy-confidence number
ENTROPY_SPLITS = 200
#: the AUROC is left undefined with fewer right or fewer wrong answers than this: one wrong answer in 300 ranks
#: against the others by chance, and bootstrap resamples of it give an interval that means nothing
AUROC_MIN_PER_CLASS = 10


def map_entropy(sample_map: torch.Tensor) -> float:
    m = sample_map.detach().double().clamp_min(0).flatten()
    total = m.sum()
    if total <= 0:
        return float(np.log(m.numel()))  # an empty map carries no information: maximal entropy
    p = m / total
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def calibration_split(n: int, seed: int = 0, fraction: float = 0.5) -> np.ndarray:
    """Boolean mask of the calibration part (seeded); the rest is the evaluation part."""
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[: int(round(fraction * n))]] = True
    return mask


def entropy_confidence(entropy: np.ndarray, correct: np.ndarray, calibration: np.ndarray) -> dict[str, float]:
    """Threshold from the calibration part; rates on the evaluation part (nan where undefined)."""
    entropy, correct, calibration = np.asarray(entropy, float), np.asarray(correct, bool), np.asarray(calibration, bool)
    cal_ok, cal_bad = entropy[calibration & correct], entropy[calibration & ~correct]
    ev = ~calibration
    if len(cal_ok) == 0 or len(cal_bad) == 0 or correct[ev].all() or not correct[ev].any():
        return {"threshold": float("nan")}  # both halves need right and wrong answers, or the rates are trivial
    threshold = float((cal_ok.mean() + cal_bad.mean()) / 2)
    below, above = ev & (entropy < threshold), ev & (entropy >= threshold)

    def rate(part: np.ndarray, want: bool) -> float:
        return float((correct[part] == want).mean()) if part.any() else float("nan")

    tp_below = rate(below, True)
    base = float(correct[ev].mean()) if ev.any() else float("nan")
    return {"threshold": threshold, "share_below": float(below.sum() / max(ev.sum(), 1)),
            "tp_rate_below": tp_below, "fp_rate_below": rate(below, False),
            "base_rate": base, "tp_gain_below": tp_below - base,
            "tn_rate_above": rate(above, False), "fn_rate_above": rate(above, True),
            "n_calibration": int(calibration.sum()), "n_evaluation": int(ev.sum())}


def entropy_over_splits(entropy: np.ndarray, correct: np.ndarray, seed: int = 0, splits: int = 200
                        ) -> dict[str, dict[str, float | None]]:
    """`entropy_confidence` on ``splits`` random calibration halves: {key: mean, std, central 95%, n}.

    Splits where either half lacks correct or wrong answers define nothing and are left out
    (``n`` counts the ones that did).
    """
    from fastrm_bench.metrics.uncertainty import spread

    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    for _ in range(splits):
        conf = entropy_confidence(entropy, correct, calibration_split(len(entropy), int(rng.integers(2**31))))
        for key, value in conf.items():
            if not key.startswith("n_"):
                values.setdefault(key, []).append(value)
    return {key: spread(v) for key, v in values.items()}


def entropy_kdes(entropy: np.ndarray, correct: np.ndarray, grid: np.ndarray) -> dict[str, np.ndarray]:
    """KDE densities of the entropy of correct and of wrong answers on ``grid`` (for Fig. 9)."""
    out = {}
    for name, part in (("correct", correct), ("wrong", ~correct)):
        values = np.asarray(entropy)[np.asarray(part, bool)]
        out[name] = gaussian_kde(values)(grid) if len(values) > 1 and np.ptp(values) > 0 else np.zeros_like(grid)
    return out


def entropy_auroc(entropy: np.ndarray, correct: np.ndarray, min_per_class: int = 1) -> float:
    """AUROC of ``-entropy`` as a score for "the answer is correct" (nan with fewer than ``min_per_class`` of a kind)."""
    correct = np.asarray(correct, bool)
    if min(correct.sum(), (~correct).sum()) < max(min_per_class, 1):
        return float("nan")
    return float(roc_auc_score(correct, -np.asarray(entropy, float)))


class EntropyConfidence(Metric):
    """Map entropy as a confidence signal: thresholded rates over random splits (paper Fig. 9) and the AUROC."""

    name = "entropy"
    higher_is_better = {"entropy_auroc": True, "entropy_tp_rate_below": True, "entropy_fp_rate_below": False,
                        "entropy_share_below": None, "entropy_tn_rate_above": True, "entropy_fn_rate_above": False,
                        "entropy_threshold": None, "entropy_base_rate": None, "entropy_tp_gain_below": True}
    columns = {"entropy_auroc": "entropy_auroc", "entropy_tp_rate_below": "entropy_tp_rate_below",
               "entropy_fp_rate_below": "entropy_fp_rate_below"}

    def update(self, context: SampleContext) -> dict[str, Any]:
        return {"entropy": map_entropy(context.sample_map)}

    @staticmethod
    def _arrays(records) -> tuple[np.ndarray, np.ndarray]:
        rows = [r for r in records if "entropy" in r]
        return np.array([r["entropy"] for r in rows], float), np.array([r["score"] >= CORRECT_SCORE for r in rows], bool)

    def compute(self, records, settings: RunSettings) -> dict[str, float]:
        entropy, correct = self._arrays(records)
        return {"entropy_auroc": entropy_auroc(entropy, correct, AUROC_MIN_PER_CLASS)} if len(entropy) else {}

    def interval_note(self, settings: RunSettings) -> str:
        return (f"mean over {ENTROPY_SPLITS} random calibration/evaluation halves (seed {settings.seed}); "
                "spread = their standard deviation, ci95 = their central 95%")

    def intervals(self, records, settings: RunSettings) -> dict[str, dict[str, Any]]:
        """The split-based rates carry the spread over splits; the AUROC is bootstrapped by the runner."""
        entropy, correct = self._arrays(records)
        if len(entropy) < 4:
            return {}
        out = {}
        for key, s in entropy_over_splits(entropy, correct, settings.seed, ENTROPY_SPLITS).items():
            if s["n"]:
                out[f"entropy_{key}"] = {"value": s["mean"], "ci95": [s["low"], s["high"]], "spread": s["std"],
                                         "splits": s["n"]}
        return out

"""Seeded bootstrap intervals: a few hundred samples per run leave room for chance in every aggregate.

- `bootstrap_intervals`: percentile 95% interval of every aggregate of a function of the samples,
  recomputed on samples drawn with replacement (the aggregates need not be means: F1, AUC of the
  mean curve, POPE's per-category metrics are recomputed as they are).
- `paired_difference`: the difference of two methods' means on the same samples, resampled
  together, so that what the samples share (easy and hard questions) cancels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95


def _percentiles(draws: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(draws, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_intervals(records: Sequence[Any], statistic: Callable[[list[Any]], dict[str, float]], seed: int,
                        resamples: int = RESAMPLES) -> dict[str, tuple[float, float] | None]:
    """{key: (low, high)} for every key ``statistic`` returns; None where no resample defines it."""
    rng = np.random.default_rng(seed)
    n = len(records)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        values = statistic([records[i] for i in rng.integers(0, n, n)])
        for key, value in values.items():
            draws.setdefault(key, []).append(np.nan if value is None else float(value))
    out: dict[str, tuple[float, float] | None] = {}
    for key, values in draws.items():
        arr = np.asarray(values, float)
        out[key] = _percentiles(arr) if np.isfinite(arr).any() else None
    return out


def percentile_interval(draws: np.ndarray) -> tuple[float, float]:
    """The central 95% of bootstrap draws (NaNs left out by the caller)."""
    return _percentiles(np.asarray(draws, float))


def paired_difference(a: np.ndarray, b: np.ndarray, seed: int, resamples: int = RESAMPLES) -> dict[str, float]:
    """mean(a - b) over paired samples with its bootstrap 95% interval; ``significant`` when 0 is outside it."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or len(a) == 0:
        raise ValueError(f"paired samples need equal, non-empty lengths, got {a.shape} and {b.shape}")
    diff = a - b
    idx = np.random.default_rng(seed).integers(0, len(diff), (resamples, len(diff)))
    lo, hi = _percentiles(diff[idx].mean(axis=1))
    return {"difference": float(diff.mean()), "low": lo, "high": hi, "significant": bool(lo > 0 or hi < 0)}


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """Mean, standard deviation and central 95% range of repeated measurements (NaNs left out)."""
    arr = np.asarray(values, float)
    arr = arr[np.isfinite(arr)]
    if len(arr) == 0:
        return {"mean": None, "std": None, "low": None, "high": None, "n": 0}
    lo, hi = _percentiles(arr)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "low": lo, "high": hi,
            "n": int(len(arr))}

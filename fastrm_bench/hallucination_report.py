"""Which method's maps detect hallucinated words, and by how much over random maps (the report's table).

Runs of one group (`fastrm_bench.image_dependence.group_of`: same model, data, task, seed and limit) answer the
same questions with the same greedy answers, so their object words and labels are the same and only the maps
differ. Each method's AUROC per detector score comes from its results.json; its difference from the group's
``random`` run is a paired bootstrap over questions (the same resampled questions for both, words of one answer
kept together), so the interval is that of the difference itself, not of two overlapping intervals.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fastrm_bench.image_dependence import Group, group_of, interval_cell
from fastrm_bench.metrics.hallucination import ORIENTATION, detection
from fastrm_bench.metrics.uncertainty import RESAMPLES, percentile_interval
from fastrm_bench.rundir import Run, read_records

#: the method every other one is compared with
BASELINE = "random"


def _words(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {r["id"]: r["hallucination_words"] for r in records if "hallucination_words" in r}


def _auroc(words_by_id: dict[str, list[dict[str, Any]]], ids: np.ndarray, score: str) -> float:
    entries = [e for i in ids for e in words_by_id[i]]
    return detection([ORIENTATION[score] * e[score] for e in entries], [bool(e["hallucinated"]) for e in entries])["auroc"]


def paired_auroc_difference(method: dict[str, list[dict[str, Any]]], baseline: dict[str, list[dict[str, Any]]],
                            score: str, seed: int = 0, resamples: int = RESAMPLES) -> dict[str, float]:
    """AUROC(method) - AUROC(baseline) on the questions both answered, with a paired bootstrap 95% interval."""
    ids = np.array(sorted(set(method) & set(baseline)))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        pick = ids[rng.integers(0, len(ids), len(ids))]
        draws.append(_auroc(method, pick, score) - _auroc(baseline, pick, score))
    arr = np.asarray(draws, float)
    low, high = percentile_interval(arr[np.isfinite(arr)]) if np.isfinite(arr).any() else (float("nan"), float("nan"))
    return {"difference": _auroc(method, ids, score) - _auroc(baseline, ids, score), "low": low, "high": high}


def detection_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per run and detector score: AUROC with its interval, and its paired difference from random."""
    groups: dict[Group, dict[str, Run]] = {}
    for run in runs:
        if "hallucination_n_hallucinated" in run.results.get("metrics", {}):
            groups.setdefault(group_of(run), {})[run.method] = run
    rows = []
    for group, by_method in groups.items():
        words = {m: _words(read_records(r.path)) for m, r in by_method.items()}
        for method, run in sorted(by_method.items()):
            metrics = run.results["metrics"]
            for score in ORIENTATION:
                entry = metrics.get(f"hallucination_auroc_{score}", {})
                row = {"model": group[0], "data_source": group[1], "task": group[2], "method": method, "score": score,
                       "n_hallucinated": metrics["hallucination_n_hallucinated"]["value"],
                       "n_grounded": metrics["hallucination_n_grounded"]["value"],
                       "auroc": entry.get("value"), "auroc_ci95": entry.get("ci95")}
                if BASELINE in words and method != BASELINE and row["n_hallucinated"]:
                    diff = paired_auroc_difference(words[method], words[BASELINE], score)
                    row.update(vs_random=diff["difference"], vs_random_ci95=[diff["low"], diff["high"]])
                rows.append(row)
    return pd.DataFrame(rows)


def render_markdown(frame: pd.DataFrame) -> str:
    """Per group: the words, then each method's AUROC per score and its difference from random."""
    parts = []
    for (model, source, task), group in frame.groupby(["model", "data_source", "task"], sort=True):
        first = group.iloc[0]
        parts.append(f"### {task} ({source}, {model}): {int(first.n_hallucinated)} hallucinated and "
                     f"{int(first.n_grounded)} grounded object words")
        wide = []
        for method, rows in group.groupby("method", sort=True):
            row = {"method": method}
            for r in rows.itertuples():
                row[f"AUROC {r.score}"] = interval_cell(r.auroc, r.auroc_ci95)
                if "vs_random" in rows and r.vs_random == r.vs_random:
                    row[f"{r.score} vs random"] = interval_cell(r.vs_random, r.vs_random_ci95, sign=True)
            wide.append(row)
        parts.append(pd.DataFrame(wide).fillna("-").to_markdown(index=False))
    return "\n\n".join(parts)

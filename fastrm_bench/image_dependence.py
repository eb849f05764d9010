"""Faithfulness on the image-dependent questions (SPEC 4c): every run's metrics again on the samples whose answers
need the image.

A sample is image-dependent when its answer changes without the image or its log-probability drops by more than
the ``image-reliance`` metric's threshold. That is a property of the sample, the model and the removal, not of
the method: one run of a group (same model, data, task, seed and limit) that measured ``image-reliance`` tells it
for every method's run of the group, runs made before the metric existed included. Perturbation metrics collapse
where the answer can come from the text alone (arXiv 2605.22168); this table shows how far each method's scores
move once those samples are left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fastrm_bench.rundir import Run, read_records

#: the columns the table compares (leaderboard column -> results.json key): the faithfulness metrics
FAITHFULNESS = {"pp_auc": "pp_auc", "np_auc": "np_auc", "insertion_auc": "insertion_auc",
                "logprob_pp_auc": "logprob_pp_auc", "logprob_insertion_auc": "logprob_insertion_auc"}

Group = tuple[str, str, str, int, Any]


def group_of(run: Run) -> Group:
    """Runs of one group answer the same samples with the same model: model, data, task, seed and limit."""
    cfg = run.config.get("run", {})  # a run of an older layout records no options: its own group
    return run.model, run.data_source, run.task, int(cfg.get("seed", 0)), cfg.get("limit")


def dependence(runs: list[Run]) -> dict[Group, dict[str, bool]]:
    """Per group, each sample's verdict (id -> image-dependent), from the group's runs that measured it."""
    found: dict[Group, dict[str, bool]] = {}
    for run in runs:
        verdicts = {r["id"]: bool(r["image_dependent"]) for r in read_records(run.path) if "image_dependent" in r}
        if verdicts:
            found.setdefault(group_of(run), {}).update(verdicts)
    return found


def subset_metrics(run_dir: Path, dependent: set[str]) -> dict[str, Any]:
    """The run's results.json metrics recomputed on the dependent samples (with their bootstrap intervals)."""
    from fastrm_bench.runner import summarise, summary_inputs

    task, records, cfg, _ = summary_inputs(run_dir)
    subset = [r for r in records if r["id"] in dependent]
    return summarise(task, subset, cfg, subsets=False)["metrics"] if subset else {}


def image_dependent_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per run and faithfulness metric: its value and interval on all samples and on the image-dependent ones."""
    verdicts = dependence(runs)
    rows = []
    for run in runs:
        group = verdicts.get(group_of(run))
        if not group:
            continue
        ids = {r["id"] for r in read_records(run.path)}
        judged = {i: group[i] for i in ids if i in group}
        dependent = {i for i, yes in judged.items() if yes}
        subset = subset_metrics(run.path, dependent)
        for column, key in FAITHFULNESS.items():
            whole, part = run.results["metrics"].get(key), subset.get(key)
            if whole is None or part is None:
                continue
            rows.append({"model": run.model, "data_source": run.data_source, "task": run.task, "method": run.method,
                         "metric": column, "n": len(ids), "n_dependent": len(dependent),
                         "dependent_share": len(dependent) / len(judged) if judged else float("nan"),
                         "all": whole["value"], "all_ci95": whole["ci95"], "dependent": part["value"],
                         "dependent_ci95": part["ci95"]})
    return pd.DataFrame(rows)


def interval_cell(value: Any, interval: Any, sign: bool = False) -> str:
    """``0.123 [0.100, 0.150]`` (``+0.123 [...]`` with ``sign``); "-" where the value is missing or undefined."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    form = "{:+.3f}" if sign else "{:.3f}"
    text = form.format(value)
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and all(v is not None for v in interval):
        text += " [" + ", ".join(form.format(v) for v in interval) + "]"
    return text


def render_markdown(frame: pd.DataFrame) -> str:
    """Per group the share of image-dependent questions, then each method's PP/NP/insertion AUC on all and on them."""
    parts = []
    for (model, source, task), group in frame.groupby(["model", "data_source", "task"], sort=True):
        first = group.iloc[0]
        parts.append(f"### {task} ({source}, {model}): {int(first.n_dependent)} of {int(first.n)} questions image-dependent "
                     f"({first.dependent_share:.0%})")
        wide = []
        for method, rows in group.groupby("method", sort=True):
            row = {"method": method}
            for r in rows.itertuples():
                row[f"{r.metric} (all)"] = interval_cell(r.all, r.all_ci95)
                row[f"{r.metric} (image-dependent)"] = interval_cell(r.dependent, r.dependent_ci95)
            wide.append(row)
        parts.append(pd.DataFrame(wide).to_markdown(index=False))
    return "\n\n".join(parts)

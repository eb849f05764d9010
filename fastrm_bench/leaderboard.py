"""Leaderboards: one pandas row per run directory (``results.json`` + ``config.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

#: column name -> metric key in results.json (None: taken from the run's config)
COLUMNS: dict[str, str | None] = {
    "model": None, "data_source": None, "task": None, "method": None, "n": None,
    "task_accuracy": "accuracy", "pp_auc": "pp_auc", "np_auc": "np_auc",
    "threshold_accuracy": "threshold_accuracy", "threshold_f1": "threshold_f1",
    "entropy_tp_rate_below": "entropy_tp_rate_below", "entropy_fp_rate_below": "entropy_fp_rate_below",
    "pointing_game": "pointing_game", "relevance_mass": "relevance_mass",
    "relevance_mass_correct": "relevance_mass_correct", "map_seconds": "map_seconds",
}


def find_runs(root: Path) -> list[Path]:
    return sorted(p.parent for p in Path(root).rglob("results.json") if (p.parent / "config.json").exists())


def _interval_columns(column: str) -> tuple[str, str]:
    return f"{column}_ci_low", f"{column}_ci_high"


def leaderboard(root: Path) -> pd.DataFrame:
    """All runs under ``root``, sorted by task then PP AUC (lower is better)."""
    rows = []
    for run_dir in find_runs(root):
        results = json.loads((run_dir / "results.json").read_text())
        config = json.loads((run_dir / "config.json").read_text())
        metrics = results["metrics"]
        row = {"model": Path(config["model"]).name, "data_source": config["data_source"], "task": config["task_spec"]["name"],
               "method": config["method_spec"]["name"], "n": results["n"]}
        for column, key in COLUMNS.items():
            if key is not None:
                entry = metrics.get(key, {})
                row[column] = entry.get("value")
                low, high = _interval_columns(column)
                row[low], row[high] = entry.get("ci95") or (None, None)
        row["run_dir"] = str(run_dir)
        rows.append(row)
    intervals = [c for column, key in COLUMNS.items() if key is not None for c in _interval_columns(column)]
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *intervals, "run_dir"])
    return frame.sort_values(["task", "pp_auc"], na_position="last").reset_index(drop=True)


def _cell(value: float | None, low: float | None, high: float | None) -> str:
    if value is None or pd.isna(value):
        return "--"
    return f"{value:.3f}" if low is None or pd.isna(low) else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def with_intervals(frame: pd.DataFrame) -> pd.DataFrame:
    """Each metric as text "value [low, high]" (its 95% interval), for tables read by people."""
    shown = frame.drop(columns=["run_dir"]).copy()
    for column, key in COLUMNS.items():
        if key is None:
            continue
        low, high = _interval_columns(column)
        shown[column] = [_cell(v, lo, hi) for v, lo, hi in zip(shown[column], shown[low], shown[high])]
        shown = shown.drop(columns=[low, high])
    return shown


def render(frame: pd.DataFrame, fmt: str) -> str:
    """csv keeps every number (intervals as ``*_ci_low`` / ``*_ci_high`` columns); the others show "value [low, high]"."""
    if fmt == "csv":
        return frame.to_csv(index=False)
    shown = with_intervals(frame)
    if fmt == "markdown":
        return shown.to_markdown(index=False)
    if fmt == "latex":
        return shown.to_latex(index=False)
    if fmt == "table":
        return shown.to_string(index=False)
    raise ValueError(f"unknown format {fmt!r}; expected table, csv, markdown or latex")

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
                row[column] = metrics.get(key, {}).get("value")
        row["run_dir"] = str(run_dir)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "run_dir"])
    return frame.sort_values(["task", "pp_auc"], na_position="last").reset_index(drop=True)


def render(frame: pd.DataFrame, fmt: str) -> str:
    shown = frame.drop(columns=["run_dir"])
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "markdown":
        return shown.to_markdown(index=False, floatfmt=".3f")
    if fmt == "latex":
        return shown.to_latex(index=False, float_format="%.3f", na_rep="--")
    if fmt == "table":
        return shown.to_string(index=False, float_format=lambda v: f"{v:.3f}")
    raise ValueError(f"unknown format {fmt!r}; expected table, csv, markdown or latex")

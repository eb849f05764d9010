"""Leaderboards: one pandas row per run directory (``results.json`` + ``config.json``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fastrm_bench.rundir import Run, find_runs, read_run

#: the run's identity columns, and the task's own score
BASE_COLUMNS: dict[str, str | None] = {
    "model": None, "data_source": None, "task": None, "method": None, "n": None, "task_accuracy": "accuracy",
}


def metric_columns() -> dict[str, str]:
    """Leaderboard columns the metrics declare (column name -> key in results.json), the default metrics first."""
    from fastrm_bench.builders import create_metric
    from fastrm_bench.metrics import DEFAULT_METRICS
    from fastrm_bench.registry import METRICS

    names = [*DEFAULT_METRICS, *(n for n in METRICS.names() if n not in DEFAULT_METRICS)]
    columns: dict[str, str] = {}
    for name in names:
        columns.update(create_metric(name)[0].columns)
    return columns


def _interval_columns(column: str) -> tuple[str, str]:
    return f"{column}_ci_low", f"{column}_ci_high"


def _row(run: Run, columns: dict[str, str | None]) -> dict[str, object]:
    """One run's row: its identity, then each metric column's value and 95% interval, then its folder."""
    row: dict[str, object] = {"model": run.model, "data_source": run.data_source, "task": run.task,
                              "method": run.method, "n": run.n}
    for column, key in columns.items():
        if key is not None:
            entry = run.results["metrics"].get(key, {})
            row[column] = entry.get("value")
            low, high = _interval_columns(column)
            row[low], row[high] = entry.get("ci95") or (None, None)
    row["run_dir"] = str(run.path)
    return row


def leaderboard(root: Path, problems: list[str] | None = None) -> pd.DataFrame:
    """All runs under ``root``, sorted by task, model, then PP AUC (lower is better); metric columns no run has are left out.

    A run whose files cannot be read is left out and named in ``problems`` (without it, it is an error).
    """
    columns: dict[str, str | None] = {**BASE_COLUMNS, **metric_columns()}
    rows = []
    for run_dir in find_runs(root):
        try:
            run = read_run(run_dir)
            row = _row(run, columns)
        except (ValueError, KeyError, TypeError) as err:
            message = str(err) if isinstance(err, ValueError) else f"{run_dir}: results.json or config.json lacks {err}"
            if problems is None:
                raise ValueError(message) from None
            problems.append(message)
            continue
        rows.append(row)
    measured = {c: k for c, k in columns.items() if k is None or c in BASE_COLUMNS or any(r[c] is not None for r in rows)}
    intervals = [c for column, key in measured.items() if key is not None for c in _interval_columns(column)]
    frame = pd.DataFrame(rows, columns=[*measured, *intervals, "run_dir"])
    order = ["task", "model", "pp_auc"] if "pp_auc" in frame else ["task", "model"]
    return frame.sort_values(order, na_position="last").reset_index(drop=True)


def _cell(value: float | None, low: float | None, high: float | None) -> str:
    if value is None or pd.isna(value):
        return "--"
    return f"{value:.3f}" if low is None or pd.isna(low) else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def with_intervals(frame: pd.DataFrame) -> pd.DataFrame:
    """Each metric as text "value [low, high]" (its 95% interval), for tables read by people; the run's folder last,
    so that copies of a run can be told apart."""
    shown = frame.copy()
    for column in [c for c in frame.columns if f"{c}_ci_low" in frame.columns]:
        low, high = _interval_columns(column)
        shown[column] = [_cell(v, lo, hi) for v, lo, hi in zip(shown[column], shown[low], shown[high])]
        shown = shown.drop(columns=[low, high])
    return shown[[c for c in shown.columns if c != "run_dir"] + ["run_dir"]]


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


def save(frame: pd.DataFrame, out: Path, fmt: str) -> None:
    """Write the table to ``out``: ``parquet`` keeps every column and its type, as data (``pandas.read_parquet``,
    ``datasets.load_dataset("parquet", ...)``); the text formats are what `render` shows."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        frame.to_parquet(out, index=False)
    else:
        out.write_text(render(frame, fmt))

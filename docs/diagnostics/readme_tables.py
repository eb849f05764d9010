"""Print the README's results tables from a results folder (the numbers are never typed by hand).

    python docs/diagnostics/readme_tables.py results

One table of the main runs (every method on every task of the embedded world, sorted by PP AUC
within a task), one of the same runs' probability and insertion scores, and the TAM vs FastRM
comparison (quality from the runs, cost from the profile).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fastrm_bench.leaderboard import leaderboard


def cell(row, column: str, digits: int = 3) -> str:
    value, low, high = row.get(column), row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
    if value is None or value != value:
        return "--"
    if low is None or low != low:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def main(root: Path) -> None:
    frame = leaderboard(root / "runs")
    frame = frame[frame.data_source == "shapes"]
    print("| task (model accuracy) | method | PP AUC [95% CI] (lower better) | NP AUC (higher better) | "
          "insertion AUC (higher better) | pointing game | mass on objects, correct answers | map ms |")
    print("|---|---|---|---|---|---|---|---|")
    for task, group in frame.groupby("task", sort=True):
        for i, (_, row) in enumerate(group.iterrows()):
            first = f"{task} ({row.task_accuracy:.3f})" if i == 0 else ""
            print(f"| {first} | {row.method} | {cell(row, 'pp_auc')} | {cell(row, 'np_auc')} | {cell(row, 'insertion_auc')} | "
                  f"{cell(row, 'pointing_game')[:5]} | {cell(row, 'relevance_mass_correct')[:5]} | "
                  f"{row.map_seconds * 1000:.1f} |")
    print()
    print("| task | method | log p(answer) AUC, deletion (lower better) | log p(answer) AUC, insertion (higher better) |")
    print("|---|---|---|---|")
    for task, group in frame.groupby("task", sort=True):
        group = group.sort_values("logprob_pp_auc")
        for i, (_, row) in enumerate(group.iterrows()):
            print(f"| {task if i == 0 else ''} | {row.method} | {cell(row, 'logprob_pp_auc', 2)} | "
                  f"{cell(row, 'logprob_insertion_auc', 2)} |")
    profile = root / "profile" / "profile.json"
    if profile.exists():
        data = json.loads(profile.read_text())
        print()
        print("profile summary:", json.dumps(data.get("summary", {}), indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results"))

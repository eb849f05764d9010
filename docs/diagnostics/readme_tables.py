"""Print the README's results tables from a results folder (the numbers are never typed by hand).

    python docs/diagnostics/readme_tables.py results

One table of the main runs (every method on every task of the embedded world, sorted by PP AUC
within a task), one of the same runs' probability and insertion scores, and the TAM vs FastRM
comparison (quality from the runs, cost from the profile); then the two models side by side (each
method's PP AUC rank on each), the second model's per-token localisation on captions and its latency
on its own (natural) answers.
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
    second_model(root)


def value(metrics: dict, key: str, digits: int = 3) -> str:
    """A results.json metric with its interval."""
    entry = metrics.get(key, {})
    if entry.get("value") is None:
        return "--"
    ci = entry.get("ci95")
    return f"{entry['value']:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def second_model(root: Path) -> None:
    """Both models on the tasks they share (each on its own world), describe, and the natural-answer profile."""
    import pandas as pd

    frame = leaderboard(root / "runs")
    home = frame[frame.data_source != "shapes-shifted"]
    models = sorted(home.model.unique())
    if len(models) < 2:
        return
    print()
    header = " | ".join(f"{m}: PP AUC [95% CI] (rank) | NP AUC | pointing" for m in models)
    print(f"| task | method | {header} |")
    print("|---|---|" + "---|---|---|" * len(models))
    shared = sorted(set.intersection(*(set(home[home.model == m].task) for m in models)))
    for task in shared:
        rows = {m: home[(home.model == m) & (home.task == task)].sort_values("pp_auc").reset_index(drop=True)
                for m in models}
        methods = sorted(set.intersection(*(set(r.method) for r in rows.values())),
                         key=lambda x: rows[models[0]].set_index("method").pp_auc[x])
        for i, method in enumerate(methods):
            cells = []
            for m in models:
                r = rows[m][rows[m].method.isin(methods)].reset_index(drop=True)
                rank = int(r.index[r.method == method][0]) + 1
                row = r[r.method == method].iloc[0]
                cells.append(f"{cell(row, 'pp_auc')} ({rank}) | {cell(row, 'np_auc')} | {cell(row, 'pointing_game')[:5]}")
            print(f"| {task if i == 0 else ''} | {method} | {' | '.join(cells)} |")
    describe = home[home.task == "describe"]
    if not describe.empty:
        print()
        print("| method | own object: pointing | other objects: pointing | own object: mass | mass of a uniform map | "
              "tokens | PP AUC [95% CI] | map ms |")
        print("|---|---|---|---|---|---|---|---|")
        for _, row in describe.sort_values("token_pointing_own", ascending=False).iterrows():
            metrics = json.loads((Path(row.run_dir) / "results.json").read_text())["metrics"]
            print(f"| {row.method} | {value(metrics, 'token_pointing_own')} | {value(metrics, 'token_pointing_other')} | "
                  f"{value(metrics, 'token_mass_own')} | {value(metrics, 'token_own_patch_share')} | "
                  f"{int(metrics['n_tokens_localised']['value'])} | {cell(row, 'pp_auc')} | {row.map_seconds * 1000:.1f} |")
    for natural in sorted((root / "profile").glob("*/profile.json")):
        rows = pd.DataFrame(json.loads(natural.read_text())["rows"])
        print()
        print(f"natural answers, {natural.parent.name}: map ms (median over answers of that length; answers)")
        table = rows.pivot_table(index="method", columns="tokens", values="map_seconds") * 1000
        counts = rows.pivot_table(index="method", columns="tokens", values="samples")
        gen = rows.groupby("tokens").generation_seconds.median() * 1000
        print("| method | " + " | ".join(f"{t} tokens" for t in table.columns) + " |")
        print("|---|" + "---|" * len(table.columns))
        for method, r in table.iterrows():
            print(f"| `{method}` | " + " | ".join(f"{v:,.1f} ({int(counts.loc[method, t])})" for t, v in r.items()) + " |")
        print("| greedy generation | " + " | ".join(f"{v:,.0f}" for v in gen) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results"))

"""`fastrm-bench report`: paper-style figures and tables from run and profile directories.

Each figure is made from whatever runs are given; a figure whose inputs are missing is
skipped with a note in the index (never a crash). Outputs: PNG + PDF figures, Markdown +
LaTeX tables, and ``index.md`` that shows them all and names the command that made them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fastrm_bench.layout import ImageLayout
from fastrm_bench.maps_io import record_layout
from fastrm_bench.rundir import ABLATION, Run, label_tasks, load_runs

if TYPE_CHECKING:  # the agreement module (scipy, the metrics) is imported when the table is made
    from fastrm_bench.agreement import GroupAgreement

#: FastRM-7 on LLaVA-1.5-7B (paper Table 1), by task implementation; other tasks get no paper column values
PAPER_TABLE1 = pd.DataFrame(
    {"accuracy": {"vqav2": 0.981, "gqa": 0.999, "pope": 0.99}, "f1": {"vqav2": 0.57, "gqa": 0.66, "pope": 0.63}}
)


@dataclass
class Report:
    out: Path
    command: str
    made: list[tuple[str, list[str]]] = field(default_factory=list)  # (title, files)
    skipped: list[str] = field(default_factory=list)


def fig_sanity(roots: list[Path], report: Report) -> None:
    """Model-randomisation sanity check: correlation with the original maps vs randomised top layers, and its table."""
    from fastrm_bench.sanity import figure_title, markdown_table, plot_sanity

    found = sorted(p for root in roots for p in Path(root).rglob("sanity.json"))
    if not found:
        report.skipped.append("Sanity check: no sanity.json (run `fastrm-bench sanity`)")
        return
    for i, path in enumerate(found):
        result = json.loads(path.read_text())
        name = "sanity" if len(found) == 1 else f"sanity_{i}"
        plot_sanity(result["rows"], report.out / name, figure_title(result["config"]))
        (report.out / f"{name}.md").write_text(
            "Spearman correlation of each method's maps with its maps on the original model [95% CI], by the number "
            "of top LM layers re-initialised; a method passes when the interval at full depth lies below 0.5.\n\n"
            + markdown_table(result) + "\n")
        report.made.append((f"Sanity check ({result['config']['task']})", [f"{name}.png", f"{name}.pdf", f"{name}.md"]))


def _slug(label: str) -> str:
    return label.replace(" (", "_").replace(")", "").replace(", ", "_").replace(" ", "_")


def _style():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    plt.rcParams["figure.constrained_layout.use"] = True  # keeps two-line suptitles clear of the axes titles
    return plt


def _title(runs: list[Run], what: str) -> str:
    models = sorted({r.model for r in runs})
    sources = sorted({r.data_source for r in runs})
    n = sorted({r.n for r in runs})
    n_text = f"n={n[0]}" if len(n) == 1 else f"n={n[0]}-{n[-1]}"
    return f"{what}\n{', '.join(models)} on {'/'.join(sources)} data, {n_text} per run"


def _save(fig, report: Report, name: str, title: str) -> None:
    files = []
    for ext in ("png", "pdf"):
        path = report.out / f"{name}.{ext}"
        metadata = {"CreationDate": None} if ext == "pdf" else None  # no timestamp: reruns give equal files
        fig.savefig(path, dpi=150, bbox_inches="tight", metadata=metadata)
        files.append(path.name)
    report.made.append((title, files))


#: colour-blind-safe colours, none repeated for up to 12 methods: Okabe and Ito's eight, then four of Paul Tol's muted set.
#: No twelve colours all stay apart under every colour-vision deficiency, so each method also gets its own marker and
#: line style (`method_styles`): two methods whose curves coincide (chefer, chefer-stale) still both show.
PALETTE = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
           "#882255", "#44AA99", "#999933", "#AA4499")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p", "8")
LINESTYLES = ("-", "--", "-.", ":")


def method_styles(methods: list[str] | set[str]) -> dict[str, dict[str, Any]]:
    """A distinct colour, marker and line style per method (matplotlib ``plot`` keywords), by sorted name, so that a
    method looks the same in every figure of one report."""
    return {m: {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)],
                "ls": LINESTYLES[i % len(LINESTYLES)], "ms": 4, "markevery": (i % 3, 3)}
            for i, m in enumerate(sorted(set(methods)))}


def curve_band(curves: list[list[float]], seed: int = 0, draws: int = 1000) -> tuple[np.ndarray, np.ndarray] | None:
    """The 95% bootstrap interval of the mean curve over samples (rows resampled together); None with under 2 samples."""
    values = np.asarray([c for c in curves if c is not None], dtype=float)
    if values.ndim != 2 or len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = np.stack([np.nanmean(values[rng.integers(0, len(values), len(values))], axis=0) for _ in range(draws)])
    return np.nanpercentile(means, 2.5, axis=0), np.nanpercentile(means, 97.5, axis=0)


def _plot_curve(ax, run: Run, x: list[float], mean: list[float], per_sample: Callable[[dict[str, Any]], Any],
                style: dict[str, Any], label: str) -> None:
    """A run's mean curve in its method's style, and its 95% bootstrap band over the run's samples."""
    ax.plot(x, mean, label=label, lw=1.4, **style)
    band = curve_band([per_sample(s) for s in run.records()])
    if band is not None and len(band[0]) == len(x):
        ax.fill_between(x, band[0], band[1], color=style["color"], alpha=0.15, lw=0)


def _band_note() -> str:
    return "shaded: 95% bootstrap interval of the mean over samples"


def fig_perturbation(runs: list[Run], report: Report) -> None:
    """Fig. 4 / 10: accuracy vs fraction of image tokens removed, PP and NP, per task."""
    with_curves = [r for r in runs if r.results.get("curves", {}).get("positive")]
    if not with_curves:
        report.skipped.append("Perturbation curves (Fig. 4/10): no run with perturbation curves")
        return
    plt = _style()
    styles = method_styles({r.method for r in runs})
    for task in sorted({r.task_label for r in with_curves}):
        group = sorted([r for r in with_curves if r.task_label == task], key=lambda r: r.method)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
        for ax, direction, short, better in ((axes[0], "positive", "pp", "lower"), (axes[1], "negative", "np", "higher")):
            for r in group:
                _plot_curve(ax, r, r.results["curves"]["fractions"], r.results["curves"][direction],
                            lambda s, d=direction: s.get("curves", {}).get(d), styles[r.method],
                            f"{r.method} (AUC {r.metric(short + '_auc'):.3f})")
            ax.set_xlabel("fraction of image tokens removed")
            ax.set_title(f"{direction} perturbation ({short.upper()}: {better} AUC is better)")
            ax.legend(fontsize=8)
        axes[0].set_ylabel("task accuracy (fraction correct)")
        fig.suptitle(_title(group, f"Perturbation, task {task} ({_band_note()})"), fontsize=10)
        _save(fig, report, f"perturbation_{_slug(task)}", f"Perturbation curves, {task} (Fig. 4/10)")
        plt.close(fig)


def fig_insertion(runs: list[Run], report: Report) -> None:
    """Insertion curves: accuracy as image tokens are put back most relevant first, per task."""
    with_curves = [r for r in runs if r.results.get("curves", {}).get("insertion")]
    if not with_curves:
        report.skipped.append("Insertion curves: no run with insertion curves")
        return
    plt = _style()
    styles = method_styles({r.method for r in runs})
    tasks = sorted({r.task_label for r in with_curves})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4.2), sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for r in sorted([r for r in with_curves if r.task_label == task], key=lambda r: r.method):
            _plot_curve(ax, r, r.results["curves"]["fractions"], r.results["curves"]["insertion"],
                        lambda s: s.get("insertion_curve"), styles[r.method],
                        f"{r.method} (AUC {r.metric('insertion_auc'):.3f})")
        ax.set_xlabel("fraction of image tokens present (most relevant first)")
        ax.set_title(f"{task} (higher AUC is better)")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("task accuracy (fraction correct)")
    fig.suptitle(_title(with_curves, f"Insertion: image tokens put back in order of relevance ({_band_note()})"), fontsize=10)
    _save(fig, report, "insertion", "Insertion curves")
    plt.close(fig)


def fig_probability(runs: list[Run], report: Report) -> None:
    """Probability curves: mean log-probability of the original answer under deletion and insertion, per task."""
    with_curves = [r for r in runs if r.results.get("curves", {}).get("logprob_positive")]
    if not with_curves:
        report.skipped.append("Probability curves: no run with answer log-probability curves")
        return
    plt = _style()
    styles = method_styles({r.method for r in runs})
    tasks = sorted({r.task_label for r in with_curves})
    orders = (("logprob_positive", "logprob_pp_auc", "deletion, most relevant first (lower AUC is better)"),
              ("logprob_insertion", "logprob_insertion_auc", "insertion, most relevant first (higher AUC is better)"))
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 3.8 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        group = sorted([r for r in with_curves if r.task_label == task], key=lambda r: r.method)
        for col, (curve, auc, what) in enumerate(orders):
            ax = axes[row][col]
            for r in group:
                _plot_curve(ax, r, r.results["curves"]["fractions"], r.results["curves"][curve],
                            lambda s, c=curve: s.get("logprob_curves", {}).get(c.removeprefix("logprob_")),
                            styles[r.method], f"{r.method} (AUC {r.metric(auc):.2f})")
            ax.set_xlabel("fraction of image tokens removed" if col == 0 else "fraction of image tokens present")
            ax.set_ylabel("mean log p(original answer)")
            ax.set_title(f"{task}: {what}", fontsize=9)
            ax.legend(fontsize=7)
    fig.suptitle(_title(with_curves, f"Probability of the original answer under teacher forcing ({_band_note()})"),
                 fontsize=10)
    _save(fig, report, "probability", "Probability curves")
    plt.close(fig)


def _per_sample_aucs(run: Run) -> dict[str, dict[str, float]]:
    """{sample id: {"pp": AUC, "np": AUC}}: the AUC of the mean curve is the mean of these (the trapezoid is linear)."""
    from fastrm_bench.metrics.perturbation import curve_auc

    fractions = run.results["curves"]["fractions"]
    return {s["id"]: {"pp": curve_auc(fractions, s["curves"]["positive"]), "np": curve_auc(fractions, s["curves"]["negative"])}
            for s in run.records() if "curves" in s}


def _interval(run: Run, key: str) -> str:
    entry = run.results["metrics"].get(key, {})
    if entry.get("value") is None:
        return "--"
    ci = entry.get("ci95")
    return f"{entry['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def table_perturbation(runs: list[Run], report: Report) -> None:
    """PP / NP AUC per task with 95% intervals; each method against the one ranked above it by a paired bootstrap.

    The two runs answer the same questions, so the difference of their per-sample AUCs is resampled
    over those questions together; "n.s." marks a difference whose 95% interval contains 0.
    """
    from fastrm_bench.metrics.uncertainty import paired_difference

    with_curves = [r for r in runs if r.results.get("curves", {}).get("positive")]
    if not with_curves:
        report.skipped.append("Perturbation AUC table: no run with perturbation curves")
        return
    rows = []
    for task in sorted({r.task_label for r in with_curves}):
        group = sorted([r for r in with_curves if r.task_label == task], key=lambda r: (r.metric("pp_auc"), r.method))
        aucs = {r.method: _per_sample_aucs(r) for r in group}
        for i, r in enumerate(group):
            row = {"task": task, "method": r.method, "n": r.n, "PP AUC [95% CI]": _interval(r, "pp_auc"),
                   "NP AUC [95% CI]": _interval(r, "np_auc")}
            for short in ("pp", "np"):
                column = f"{short.upper()} vs the method above"
                if i == 0:
                    row[column] = ""
                    continue
                above = group[i - 1]
                shared = sorted(set(aucs[r.method]) & set(aucs[above.method]))
                if not shared:
                    row[column] = "no shared samples"
                    continue
                d = paired_difference(np.array([aucs[r.method][s][short] for s in shared]),
                                      np.array([aucs[above.method][s][short] for s in shared]), seed=r.seed)
                mark = "" if d["significant"] else " n.s."
                row[column] = f"{d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{mark}"
            rows.append(row)
    frame = pd.DataFrame(rows)
    note = ("Rows in order of PP AUC (lower is better; NP: higher is better). \"vs the method above\": this method's AUC "
            "minus that of the row above on the same samples, with a paired bootstrap 95% interval; n.s.: not significant "
            "(the interval contains 0).")
    (report.out / "perturbation_auc.md").write_text(note + "\n\n" + frame.to_markdown(index=False) + "\n")
    (report.out / "perturbation_auc.tex").write_text(frame.to_latex(index=False))
    report.made.append(("Perturbation AUC with intervals and paired differences",
                        ["perturbation_auc.md", "perturbation_auc.tex"]))


def _home_runs(runs: list[Run]) -> dict[tuple[str, str], dict[str, Run]]:
    """{(task, model): {method: run}} on each model's own data source for the task: the source with the most
    methods (a shifted world run with FastRM alone is not where a model's methods are ranked)."""
    by_source: dict[tuple[str, str, str], dict[str, Run]] = {}
    for r in runs:
        if r.results.get("curves", {}).get("positive"):
            by_source.setdefault((r.task, r.model, r.data_source), {})[r.method] = r
    home: dict[tuple[str, str], dict[str, Run]] = {}
    for (task, model, _), methods in sorted(by_source.items()):
        if len(methods) > len(home.get((task, model), {})):
            home[(task, model)] = methods
    return home


def _verdict(differences: list[dict[str, float]]) -> str:
    """holds / reversed / significant on some / undecided, for one pair of methods' differences on several models."""
    significant = [d for d in differences if d["significant"]]
    signs = {np.sign(d["difference"]) for d in significant}
    if len(signs) == 2:
        return "reversed"
    if not significant:
        return "undecided"
    return "holds" if len(significant) == len(differences) else "significant on some"


def table_rankings_across_models(runs: list[Run], report: Report) -> None:
    """Which method rankings hold across models: for every task run on several models and every pair of methods
    run on all of them, the paired PP and NP AUC differences on each model (A minus B, same questions, bootstrap 95%
    interval) and whether their signs agree.

    "holds": significant with the same sign on every model; "reversed": significant with opposite signs;
    "significant on some": significant (with one sign) on some models only; "undecided": significant nowhere.
    """
    from fastrm_bench.metrics.uncertainty import paired_difference

    home = _home_runs(runs)
    tasks = sorted({task for task, _ in home if sum(t == task for t, _ in home) > 1})
    if not tasks:
        report.skipped.append("Rankings across models: no task with perturbation runs of two models")
        return
    rows, summary = [], []
    for task in tasks:
        models = sorted(m for t, m in home if t == task)
        common = sorted(set.intersection(*(set(home[(task, m)]) for m in models)))
        first = home[(task, models[0])]
        common.sort(key=lambda method: (first[method].metric("pp_auc"), method))  # the first model's PP order
        aucs = {m: {method: _per_sample_aucs(home[(task, m)][method]) for method in common} for m in models}
        counts: dict[str, int] = {}
        for i, a in enumerate(common):
            for b in common[i + 1:]:
                row: dict[str, Any] = {"task": task, "A": a, "B": b}
                for short in ("pp", "np"):
                    differences = []
                    for m in models:
                        shared = sorted(set(aucs[m][a]) & set(aucs[m][b]))
                        d = paired_difference(np.array([aucs[m][a][s][short] for s in shared]),
                                              np.array([aucs[m][b][s][short] for s in shared]),
                                              seed=home[(task, m)][a].seed)
                        differences.append(d)
                        mark = "" if d["significant"] else " n.s."
                        row[f"{short.upper()} A-B, {m}"] = f"{d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{mark}"
                    row[f"{short.upper()}"] = _verdict(differences)
                    if short == "pp":
                        counts[row["PP"]] = counts.get(row["PP"], 0) + 1
                rows.append(row)
        summary.append(f"- {task} ({', '.join(models)}; {len(common)} methods, {len(common) * (len(common) - 1) // 2} "
                       f"pairs), PP AUC: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    frame = pd.DataFrame(rows)
    note = ("Pairs of methods in the first model's PP AUC order (lower is better; NP: higher is better). A-B: method A's "
            "AUC minus B's on one model's questions, paired bootstrap 95% interval (n.s.: contains 0). holds: "
            "significant with the same sign on every model; reversed: significant with opposite signs; significant on "
            "some: on some models only; undecided: significant nowhere.\n\n" + "\n".join(summary))
    (report.out / "rankings_across_models.md").write_text(note + "\n\n" + frame.to_markdown(index=False) + "\n")
    (report.out / "rankings_across_models.csv").write_text(frame.to_csv(index=False))
    report.made.append(("Method rankings across models", ["rankings_across_models.md", "rankings_across_models.csv"]))


def fig_threshold(runs: list[Run], report: Report) -> None:
    """Fig. 3: FastRM accuracy and F1 vs classification threshold, per task."""
    swept = [r for r in runs if r.results.get("threshold_sweep")]
    if not swept:
        report.skipped.append("Threshold accuracy/F1 (Fig. 3): no run of a probabilistic method (fastrm)")
        return
    plt = _style()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    styles = method_styles({f"{r.task_label}, {r.method}" for r in swept})  # the colour-blind-safe palette, one per line
    for r in sorted(swept, key=lambda r: r.task_label):
        sweep = r.results["threshold_sweep"]
        c = [float(k) for k in sweep]
        label = f"{r.task_label}, {r.method}"
        for ax, key in zip(axes, ("accuracy", "f1")):
            ax.plot(c, [v[key] for v in sweep.values()], label=label, **{**styles[label], "markevery": 1})
    for ax, key in zip(axes, ("accuracy", "F1")):
        ax.set_xlabel("classification threshold c (prob >= c)")
        ax.set_ylabel(f"per-patch {key} vs binarised Chefer labels")
        ax.legend(fontsize=8)
    fig.suptitle(_title(swept, "FastRM vs Chefer labels (labeling threshold 0.3)"), fontsize=10)
    _save(fig, report, "threshold_sweep", "Threshold accuracy and F1 (Fig. 3)")
    plt.close(fig)


def table1(runs: list[Run], report: Report) -> None:
    """Table 1: FastRM threshold accuracy and F1 at c = 0.5 per task, beside the paper's FastRM-7."""
    swept = [r for r in runs if r.results.get("threshold_sweep")]
    if not swept:
        report.skipped.append("Table 1: no run of a probabilistic method (fastrm)")
        return
    rows = {}
    for r in swept:
        v = r.results["threshold_sweep"]["0.5"]
        rows[r.task_label] = {"accuracy (ours)": v["accuracy"], "F1 (ours)": v["f1"],
                              "F1 (ours) 95% CI": _interval(r, "threshold_f1"),
                              "accuracy (paper, 7B)": PAPER_TABLE1["accuracy"].get(r.task_implementation),
                              "F1 (paper, 7B)": PAPER_TABLE1["f1"].get(r.task_implementation)}
    frame = pd.DataFrame(rows).T.sort_index().rename_axis("task")
    (report.out / "table1.md").write_text(frame.to_markdown(floatfmt=".3f") + "\n")
    (report.out / "table1.tex").write_text(frame.to_latex(float_format="%.3f"))
    report.made.append(("Table 1: FastRM accuracy and F1 at c = 0.5", ["table1.md", "table1.tex"]))


def _gives_probabilities(run: Run) -> bool:
    """Whether the run's method gives calibrated probabilities (a FastRM proxy), as its class declares."""
    from fastrm_bench.builders import recorded_method_needs

    needs = recorded_method_needs(run.method_spec)
    return needs is not None and needs.probabilities


def fig_entropy(runs: list[Run], report: Report) -> None:
    """Fig. 9: entropy of the maps for correct vs wrong answers, with the calibrated threshold."""
    from fastrm_bench.metrics.entropy import entropy_kdes

    chosen = [r for r in runs if r.metric("entropy_threshold") is not None and _gives_probabilities(r)] or \
             [r for r in runs if r.metric("entropy_threshold") is not None]
    if not chosen:
        report.skipped.append("Entropy confidence (Fig. 9): no run with both correct and wrong answers")
        return
    plt = _style()
    chosen = sorted(chosen, key=lambda r: (r.task_label, r.method))[:6]
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.5 * len(chosen), 3.8), squeeze=False)
    for ax, r in zip(axes[0], chosen):
        rows = r.records()
        h = np.array([s["entropy"] for s in rows])
        ok = np.array([s["score"] >= 0.5 for s in rows])
        grid = np.linspace(h.min() - 0.2, h.max() + 0.2, 200)
        for name, density in entropy_kdes(h, ok, grid).items():
            ax.plot(grid, density, label=f"{name} ({int(ok.sum()) if name == 'correct' else int((~ok).sum())})")
        t = r.metric("entropy_threshold")
        ax.axvline(t, color="k", ls="--", lw=1, label=f"threshold {t:.2f} (mean over splits)")
        tp, fp = r.metric("entropy_tp_rate_below"), r.metric("entropy_fp_rate_below")
        share, gain = r.metric("entropy_share_below"), r.metric("entropy_tp_gain_below")
        if tp is not None:
            entry = r.results["metrics"]["entropy_tp_rate_below"]
            text = (f"mean over {entry.get('splits')} random splits\nbelow: {share:.0%} of samples\n"
                    f"TP {tp:.0%} \u00b1 {entry.get('spread') or 0:.0%} / FP {fp:.0%}")
            if gain is not None:
                text += f"\nTP minus base accuracy {gain:+.1%}"
            ax.text(0.02, 0.97, text, transform=ax.transAxes, va="top", fontsize=8)
        ax.set_xlabel("map entropy H (nats)")
        ax.set_ylabel("density (KDE)")
        ax.set_title(f"{r.method} on {r.task_label}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(_title(chosen, "Entropy of the maps, correct vs wrong answers"), fontsize=10)
    _save(fig, report, "entropy", "Entropy confidence (Fig. 9)")
    plt.close(fig)


def fig_latency(profiles: list[Path], report: Report) -> None:
    """Fig. 7: map latency and peak memory vs number of output tokens (log scale), one figure per profiled model.

    Gradient-free methods (FastRM, TAM, ...) are drawn solid and first, gradient methods dashed; a
    method keeps its colour in both panels. The first profile's model gets ``latency_memory``, any
    other ``latency_memory_<model>``.
    """
    frames = [pd.DataFrame(json.loads((p / "profile.json").read_text())["rows"]) for p in profiles]
    if not frames:
        report.skipped.append("Latency and memory (Fig. 7): no profile directory (run `fastrm-bench profile`)")
        return
    frame = pd.concat(frames)
    if "answers" not in frame:  # profiles written before natural answers were profiled: all forced
        frame["answers"] = "forced"
    frame["answers"] = frame["answers"].fillna("forced")
    for i, model in enumerate(dict.fromkeys(frame.model)):
        name = "latency_memory" if i == 0 else f"latency_memory_{_slug(model)}"
        _latency_figure(frame[frame.model == model], report, name)


def _latency_figure(frame: pd.DataFrame, report: Report, name: str) -> None:
    from fastrm_bench.profile import gradient_free

    plt = _style()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    free_of = {m: gradient_free(m) for m in frame.method.unique()}
    methods = sorted(free_of, key=lambda m: (not free_of[m], m))
    styles = method_styles(methods)
    for method in methods:
        g = frame[frame.method == method].sort_values("tokens")
        free = free_of[method]
        style = {"marker": styles[method]["marker"], "color": styles[method]["color"], "ls": "-" if free else "--",
                 "label": f"{method} ({'gradient-free' if free else 'gradient'})"}
        axes[0].plot(g.tokens, g.map_seconds, **style)
        if g.peak_memory_mb.notna().all():
            axes[1].plot(g.tokens, g.peak_memory_mb, **style)
    gen = frame.groupby("tokens").generation_seconds.median()
    axes[0].plot(gen.index, gen.values, ls=":", color="gray", label="greedy generation (apart)")
    axes[0].set(xscale="log", yscale="log", xlabel="output tokens", ylabel="time to produce all maps (s)")
    axes[1].set(xscale="log", yscale="log", xlabel="output tokens", ylabel="peak memory, generation + maps (MiB)")
    if frame.peak_memory_mb.isna().all():
        axes[1].text(0.5, 0.5, "peak memory not measured\n(natural answers: CUDA only)", ha="center", va="center",
                     transform=axes[1].transAxes, fontsize=9)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    device, model, answers = frame.device.iloc[0], frame.model.iloc[0], frame.answers.iloc[0]
    if answers == "forced":
        what = f"one fixed test question of the shapes world (n=1), median of {int(frame.repeats.max())} repeats"
    else:
        answered = int(frame.samples.sum() / len(methods))
        what = f"the model's own answers ({answers.removeprefix('natural ')} task, n={answered}), median per length"
    fig.suptitle(f"Map latency and peak memory (solid: gradient-free methods, dashed: gradient methods)\n{model} on {device}, "
                 f"{what}", fontsize=10)
    title = "Latency and memory vs output length (Fig. 7)" + ("" if name == "latency_memory" else f", {model}")
    _save(fig, report, name, title)
    plt.close(fig)


#: the colour map of every map drawn unless another is asked for: perceptually uniform and readable with the common
#: colour-vision deficiencies (jet is neither: its bright bands read as edges, and red and green ends look alike)
DEFAULT_CMAP = "viridis"


def draw_map(ax, image: np.ndarray, layout: ImageLayout, values: np.ndarray, alpha: float = 0.6,
             vmin: float | None = None, vmax: float | None = None, cmap: str = DEFAULT_CMAP):
    """A map over its image, in image space: every layout group spread over its region (tiles, crops,
    non-square grids); pixels no token sees stay uncovered. The image is drawn in grey beneath the map, so that
    the colours are the map's alone (a red object does not tint a low value). Returns the overlay (for a colour bar)."""
    grey = image.mean(axis=-1) if image.ndim == 3 else image
    ax.imshow(grey, cmap="gray", vmin=0, vmax=255 if image.dtype == np.uint8 else 1)
    return ax.imshow(layout.to_image(values, size=image.shape[:2]), cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax)


QUALITATIVE_METHODS = ("chefer", "fastrm", "chefer-stale", "dex-ar", "tam", "gradcam")
#: {sample id: record} of each run, by the run's folder
Records = dict[Path, dict[str, dict[str, Any]]]


def fig_qualitative(runs: list[Run], report: Report, n: int = 4, methods: tuple[str, ...] = QUALITATIVE_METHODS) -> None:
    """Fig. 6: images with the maps of the answer token overlaid, one column per method, same samples.

    The columns are the ``methods`` that have a run of the chosen task, in that order (at least two
    are needed). The task is the one with runs of chefer and fastrm, then of the most methods, then
    whose correct one-token answers vary most. Runs store one map per sample (the mean over answer
    tokens), so the rows are samples that every run answered correctly with one token: their sample
    map is the map of that answer token.
    """
    from fastrm_bench.builders import create_task

    candidates = _qualitative_candidates(runs, methods)
    if not candidates:
        report.skipped.append(f"Qualitative maps (Fig. 6): needs runs of two of {', '.join(methods)} on one task")
        return
    records = {r.path: {s["id"]: s for s in r.records()} for found in candidates.values() for r in found.values()}
    label = max(candidates, key=lambda label: _qualitative_rank(label, candidates[label], records))
    by_method = candidates[label]
    first = next(iter(by_method.values()))
    task, _ = create_task(first.task, data_root=first.data_root)
    task_records = task.handles()
    maps = {m: r.sample_maps() for m, r in by_method.items()}
    ids = [i for i in _one_token_shared(by_method, records)
           if i in task_records and all(i in maps[m] for m in by_method)][:n]
    if not ids:
        report.skipped.append(f"Qualitative maps (Fig. 6): no correctly answered one-token sample shared by "
                              f"{', '.join(by_method)} on {label}")
        return
    images = {i: np.asarray(task.sample(task_records[i]).image) for i in ids}
    _draw_qualitative(by_method, records, maps, images, report)


def _qualitative_candidates(runs: list[Run], methods: tuple[str, ...]) -> dict[str, dict[str, Run]]:
    """{task label: {method: run}} in ``methods``' order, for the tasks with runs of at least two of them."""
    by_task: dict[str, dict[str, Run]] = {}
    for r in runs:
        if r.method in methods:
            by_task.setdefault(r.task_label, {})[r.method] = r
    return {label: {m: found[m] for m in methods if m in found} for label, found in by_task.items() if len(found) >= 2}


def _one_token_shared(by_method: dict[str, Run], records: Records) -> list[str]:
    """The samples every run answered right in one token (their sample map is that token's), in the first run's order."""
    common = set.intersection(*({i for i, s in records[r.path].items() if s["score"] >= 1 and s.get("num_tokens") == 1}
                                for r in by_method.values()))
    return [i for i in records[next(iter(by_method.values())).path] if i in common]


def _qualitative_rank(label: str, by_method: dict[str, Run], records: Records) -> tuple[bool, int, int, str]:
    """How well a task shows the methods: chefer and fastrm both, more methods, then more varied answers (a figure of
    yes/no answers shows less than one of varied answers)."""
    first = records[next(iter(by_method.values())).path]
    variety = len({first[i]["prediction"] for i in _one_token_shared(by_method, records)})
    return {"chefer", "fastrm"} <= set(by_method), len(by_method), variety, label


def _draw_qualitative(by_method: dict[str, Run], records: Records, maps: dict[str, dict[str, np.ndarray]],
                      images: dict[str, np.ndarray], report: Report) -> None:
    """One row per sample: its image with the question and answer, then each method's map over it."""
    plt = _style()
    first = next(iter(by_method.values()))
    columns = 1 + len(by_method)
    scales = {m: _column_scale([maps[m][i] for i in images]) for m in by_method}
    fig, axes = plt.subplots(len(images), columns, figsize=(2.5 * columns, 2.6 * len(images) + 0.6), squeeze=False)
    for i, (sample_id, image) in enumerate(images.items()):
        s = records[first.path][sample_id]
        axes[i][0].imshow(image)
        axes[i][0].set_title(f"{s['question']}\nanswer: {s['prediction']}", fontsize=7)
        for j, (m, r) in enumerate(by_method.items(), start=1):
            layout = record_layout(records[r.path][sample_id], r.config, image.shape[:2])
            shown = draw_map(axes[i][j], image, layout, maps[m][sample_id], vmin=scales[m][0], vmax=scales[m][1])
            axes[i][j].set_title(f"{m}: map of '{s['prediction']}'", fontsize=7)
            if i == len(images) - 1:  # one colour bar under each method's column: its scale, shared by its rows
                bar = fig.colorbar(shown, ax=axes[:, j].tolist(), location="bottom", shrink=0.9, aspect=12, pad=0.02)
                bar.solids.set_alpha(1.0)
                bar.set_label(f"{m} relevance", fontsize=7)
                bar.ax.tick_params(labelsize=6)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(_title(list(by_method.values()), f"Maps of the answer token ({', '.join(by_method)}), {first.task_label}"),
                 fontsize=9)
    _save(fig, report, "qualitative", "Qualitative maps (Fig. 6)")
    plt.close(fig)


def _column_scale(maps: list[np.ndarray]) -> tuple[float, float]:
    """One method's colour scale over the figure's samples: 0 (or the minimum, if negative) to the maximum."""
    values = np.concatenate([np.asarray(m, dtype=float).reshape(-1) for m in maps])
    low, high = min(0.0, float(np.nanmin(values))), float(np.nanmax(values))
    return low, high if high > low else low + 1.0


def fig_relevancy_distribution(runs: list[Run], report: Report) -> None:
    """Fig. 2: the relevancy scores of a FastRM proxy and of its teacher on the same samples, and the answers' lengths.

    One figure for every run of a proxy (implementation ``fastrm``) that has a run of its teacher on the same task
    and model. The teacher is the spec's ``teacher`` parameter, else the one the checkpoint records (a proxy that
    records none, like the shipped one, was distilled from ``chefer``). Scores are each map's values over its
    maximum (maps whose maximum is not positive are left out): every answer token's map from ``token_maps.npz``,
    or, where either run has none (runs from before per-token maps were kept), every sample map from ``maps.npz``.
    Left: the scores of at least 5% of the map's maximum (as the paper shows them), inset: all of them; right: the
    number of tokens of the answers (samples.jsonl's ``num_tokens``). A table gives, per method, the share of
    scores at or above 5% and 30% (the labeling threshold) of the maximum.
    """
    pairs, unmatched = _proxies_and_teachers(runs)
    if not pairs:
        report.skipped.append("Relevancy score distributions (Fig. 2): no run of a FastRM proxy with a run of its teacher "
                              "on the same task" + (f": {', '.join(unmatched)} lack one" if unmatched else ""))
        return
    for proxy, teacher in sorted(pairs, key=lambda p: (p[0].task_label, p[0].method)):
        per_token = proxy.has_token_maps and teacher.has_token_maps
        maps = {r.method: r.token_maps() if per_token else r.sample_maps() for r in (teacher, proxy)}
        records = {s["id"]: s for s in proxy.records()}
        ids = [i for i in records if all(i in m for m in maps.values())]
        values = {m: _relative_scores(found, ids) for m, found in maps.items()}
        if not ids or not all(len(v) for v in values.values()):
            report.skipped.append(f"Relevancy score distributions (Fig. 2): {proxy.method} and {teacher.method} on "
                                  f"{proxy.task_label} share no sample with a positive map")
            continue
        what = "answer token maps" if per_token else "sample maps (these runs kept no per-token maps)"
        lengths = np.array([records[i].get("num_tokens", 0) for i in ids])
        name = _draw_relevancy(proxy, teacher, values, lengths, what, report)
        _relevancy_table(teacher, values, what, len(ids), report.out / f"{name}.md")
        report.made[-1][1].append(f"{name}.md")


def _teacher_of(run: Run) -> str | None:
    """The method a FastRM proxy was distilled from: its spec's ``teacher``, else what its checkpoint records."""
    from fastrm_bench.fastrm.model import CONFIG_NAME, LEGACY_TEACHER

    params = run.method_spec.get("params") or {}
    if params.get("teacher"):
        return params["teacher"]
    if not params.get("checkpoint"):  # the shipped proxy of the model
        return LEGACY_TEACHER["name"]
    for base in (Path.cwd(), run.path):
        found = base / params["checkpoint"] / CONFIG_NAME
        if found.is_file():
            return json.loads(found.read_text()).get("teacher", {}).get("name") or LEGACY_TEACHER["name"]
    return None


def _proxies_and_teachers(runs: list[Run]) -> tuple[list[tuple[Run, Run]], list[str]]:
    """(proxy run, its teacher's run on the same task and model) pairs, and the proxies that have no such run."""
    pairs, unmatched = [], []
    for proxy in (r for r in runs if _gives_probabilities(r)):  # proxies: maps of calibrated probabilities
        teacher = _teacher_of(proxy)
        found = [r for r in runs if r.method == teacher and r.task_label == proxy.task_label
                 and r.model_ref == proxy.model_ref]
        (pairs.append((proxy, found[0])) if found and teacher else
         unmatched.append(f"{proxy.method} on {proxy.task_label} (teacher {teacher or 'unknown'})"))
    return pairs, unmatched


def _relative_scores(maps: dict[str, np.ndarray], ids: list[str]) -> np.ndarray:
    """Every value of the samples' maps over its map's maximum (maps whose maximum is not positive left out)."""
    rows = [np.atleast_2d(np.asarray(maps[i], dtype=np.float64)) for i in ids]
    rows = [m for r in rows if r.size for m in r if m.max() > 0]
    return np.concatenate([m / m.max() for m in rows]) if rows else np.zeros(0)


def _draw_relevancy(proxy: Run, teacher: Run, values: dict[str, np.ndarray], lengths: np.ndarray, what: str,
                    report: Report) -> str:
    """Fig. 2 of one proxy and its teacher: the score histograms (left, inset) and the answers' lengths (right);
    returns the figure's name."""
    plt = _style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), width_ratios=(3, 2))
    _score_histograms(left, values, teacher.method, what)
    edges = np.arange(lengths.min(), lengths.max() + 2) - 0.5
    right.hist(lengths, bins=edges, color="tab:gray", rwidth=0.8)
    right.set_xticks(np.arange(lengths.min(), lengths.max() + 1))
    right.set_xlabel("output length (generated tokens)")
    right.set_ylabel("answers")
    right.set_title(f"{len(lengths)} answers, mean {lengths.mean():.2f} tokens", fontsize=9)
    fig.suptitle(_title([proxy, teacher], f"Relevancy scores of {proxy.method} and its teacher {teacher.method}, "
                        f"{proxy.task_label} (Fig. 2)"), fontsize=10)
    name = f"relevancy_distribution_{_slug(proxy.task_label)}_{proxy.method}"
    _save(fig, report, name,
          f"Relevancy score distributions, {proxy.method} vs {teacher.method}, {proxy.task_label} (Fig. 2)")
    plt.close(fig)
    return name


def _score_histograms(left, values: dict[str, np.ndarray], teacher: str, what: str) -> None:
    """The scores of at least 5% of their map's maximum on ``left`` (as the paper shows them), all of them in an inset."""
    inset = left.inset_axes((0.5, 0.5, 0.46, 0.4))
    bins = np.linspace(0, 1, 41)
    tallest = 0.0
    for (method, v), colour in zip(values.items(), ("tab:orange", "tab:blue")):
        label = f"{method}{' (teacher)' if method == teacher else ' (proxy)'}: {np.mean(v >= 0.05):.1%} >= 5%"
        heights, _, _ = left.hist(v[v >= 0.05], bins=bins, weights=np.full((v >= 0.05).sum(), 1 / len(v)),
                                  histtype="stepfilled", alpha=0.45, color=colour, label=label)
        tallest = max(tallest, float(np.max(heights)))
        inset.hist(v, bins=bins, weights=np.full(len(v), 1 / len(v)), histtype="step", color=colour)
    left.set_xlim(0, 1)
    left.set_ylim(0, 2.2 * tallest)  # room for the inset above the bars
    left.set_xlabel("relevancy score / the map's maximum (scores >= 5% of it)")
    left.set_ylabel("share of all scores")
    left.set_title(what, fontsize=9)
    left.legend(fontsize=8, loc="upper left")
    inset.set_yscale("log")
    inset.set_title("all scores (log scale)", fontsize=7)
    inset.tick_params(labelsize=6)


def _relevancy_table(teacher: Run, values: dict[str, np.ndarray], what: str, samples: int, path: Path) -> None:
    """Per method, the share of scores at or above 5% and 30% (the labeling threshold) of the maximum, and the median."""
    table = pd.DataFrame({m: {"role": "teacher" if m == teacher.method else "proxy", "scores": len(v),
                              "share >= 5% of max": np.mean(v >= 0.05), "share >= 30% of max": np.mean(v >= 0.3),
                              "median score": np.median(v)} for m, v in values.items()}).T.rename_axis("method")
    path.write_text(f"{what.capitalize()} of {samples} shared samples.\n\n" + table.to_markdown(floatfmt=".3f") + "\n")


def _ranking_text(group: GroupAgreement, key: str) -> str:
    """The methods best first, ``>`` between ranks and ``=`` between methods the metric ties."""
    k = group.keys.index(key)
    value = dict(zip(group.methods, group.means[k]))
    ranked = group.ranking(key)
    text = ranked[0]
    for before, method in zip(ranked, ranked[1:]):
        text += (" = " if np.isclose(value[before], value[method], rtol=0, atol=1e-12) else " > ") + method
    return text


def _agreement_section(group: GroupAgreement) -> str:
    """One group's rankings and its tau matrix (upper triangle: tau-b [95% interval], † where the pair disagrees)."""
    from fastrm_bench.agreement import DISAGREE_AT_OR_BELOW

    rankings = pd.DataFrame({"metric": [f"{k} ({'higher' if up else 'lower'} is better)"
                                        for k, up in zip(group.keys, group.directions)],
                             "ranking (best first)": [_ranking_text(group, k) for k in group.keys]})
    matrix = pd.DataFrame("", index=group.keys, columns=group.keys)
    for pair in group.pairs():
        mark = " †" if pair["disagree"] else ""
        matrix.loc[pair["a"], pair["b"]] = f"{pair['tau']:+.2f} [{pair['low']:+.2f}, {pair['high']:+.2f}]{mark}"
    for key in group.keys:
        matrix.loc[key, key] = "1"
    disagree = [f"{p['a']} / {p['b']}" for p in group.pairs() if p["disagree"]]
    lines = [f"### {group.label}: {len(group.methods)} methods, {group.n} questions", "",
             rankings.to_markdown(index=False), "", matrix.rename_axis("tau-b").to_markdown(), "",
             f"Pairs whose interval reaches {DISAGREE_AT_OR_BELOW:g} (disagree): {', '.join(disagree) or 'none'}."]
    if group.dropped_questions:
        lines.append(f"{group.dropped_questions} question(s) some run lacks are left out.")
    if group.left_out:
        lines.append("Not compared: " + "; ".join(f"{k} ({why})" for k, why in group.left_out.items()) + ".")
    return "\n".join(lines)


def _agreement_heatmap(group: GroupAgreement, report: Report) -> None:
    """The group's tau matrix as a heatmap (-1 to 1), † on the pairs whose interval reaches 0."""
    plt = _style()
    import seaborn as sns

    text = np.vectorize(lambda v: "" if v != v else f"{v:.2f}")(group.tau).astype(object)
    for pair in group.pairs():
        i, j = group.keys.index(pair["a"]), group.keys.index(pair["b"])
        if pair["disagree"]:
            text[i, j] = text[j, i] = f"{text[i, j]}†"
    size = len(group.keys)
    fig, ax = plt.subplots(figsize=(1.0 * size + 2.5, 0.8 * size + 1.8))
    sns.heatmap(pd.DataFrame(group.tau, index=group.keys, columns=group.keys), vmin=-1, vmax=1, center=0,
                cmap="vlag_r", annot=text, fmt="", square=True, cbar_kws={"label": "Kendall's tau-b"}, ax=ax)
    ax.tick_params(axis="x", labelrotation=45)
    ax.set_title(f"Agreement of the metrics' method rankings: {group.label}\n{len(group.methods)} methods, "
                 f"{group.n} questions; †: 95% interval (paired bootstrap, {group.resamples} draws) reaches 0", fontsize=9)
    _save(fig, report, f"metric_agreement_{_slug(group.label)}", f"Metric agreement, {group.label}")
    plt.close(fig)


def table_metric_agreement(runs: list[Run], report: Report) -> None:
    """LATEC's question: do the metrics rank the methods alike? Per (model, task, data source), each metric's ranking
    and Kendall's tau-b between every two metrics' rankings, with a paired bootstrap interval (`fastrm_bench.agreement`)."""
    from fastrm_bench.agreement import RESAMPLES, agreements

    found, skipped = agreements(runs)
    report.skipped += [f"Metric agreement, {why}" for why in skipped]
    if not found:
        report.skipped.append("Metric agreement: no group of runs of three methods with two metrics measured on every run")
        return
    note = ("Kendall's tau-b between the method rankings two metrics give (each metric in its own direction), per model, "
            f"task and data source; [95% interval] from {RESAMPLES} bootstrap draws of the questions, the same draw for "
            "every method's run (paired). †: the interval reaches 0, the two metrics are not shown to rank alike. Only "
            "metrics measured on every run of the group that are means over questions (`fastrm_bench.agreement`).")
    (report.out / "metric_agreement.md").write_text(note + "\n\n" + "\n\n".join(_agreement_section(g) for g in found) + "\n")
    rows = [{"model": g.model, "task": g.task, "data_source": g.data_source, "methods": len(g.methods), "n": g.n, **pair}
            for g in found for pair in g.pairs()]
    (report.out / "metric_agreement.csv").write_text(pd.DataFrame(rows).to_csv(index=False))
    report.made.append(("Metric agreement (Kendall's tau-b between the metrics' method rankings)",
                        ["metric_agreement.md", "metric_agreement.csv"]))
    for group in found:
        _agreement_heatmap(group, report)


ABLATION_AXES = {"data_size": "training data (token samples)", "labeling_threshold": "labeling threshold (x max of the map)",
                 "steps": "training steps (batch 128)"}


def table_image_dependent(runs: list[Run], report: Report) -> None:
    """The faithfulness metrics of every run on all questions and on the image-dependent ones, with the share of those
    (`fastrm_bench.image_dependence`); groups without an ``image-reliance`` verdict are named as skipped."""
    from fastrm_bench.image_dependence import image_dependent_frame, render_markdown

    frame = image_dependent_frame(runs)
    if frame.empty:
        report.skipped.append("Image-dependent questions: no run measured image-reliance")
        return
    note = ("A question is image-dependent when its answer changes without the image or its log-probability drops by "
            "more than the `image-reliance` threshold (SPEC 4c); values are means with 95% bootstrap intervals.")
    (report.out / "image_dependent.md").write_text(note + "\n\n" + render_markdown(frame) + "\n")
    (report.out / "image_dependent.csv").write_text(frame.to_csv(index=False))
    report.made.append(("Faithfulness on the image-dependent questions", ["image_dependent.md", "image_dependent.csv"]))


def table_hallucination(runs: list[Run], report: Report) -> None:
    """Each method's AUROC at detecting hallucinated object words, and its paired difference from random maps
    (`fastrm_bench.hallucination_report`)."""
    from fastrm_bench.hallucination_report import detection_frame, render_markdown

    frame = detection_frame(runs)
    if frame.empty:
        report.skipped.append("Hallucination detection: no run measured hallucination")
        return
    note = ("AUROC at telling hallucinated object words from grounded ones (0.5: no signal; scores oriented so that "
            "high flags a hallucination), 95% bootstrap intervals over questions; 'vs random' is the paired "
            "difference from the random maps of the same answers.")
    (report.out / "hallucination.md").write_text(note + "\n\n" + render_markdown(frame) + "\n")
    (report.out / "hallucination.csv").write_text(frame.to_csv(index=False))
    report.made.append(("Hallucinated words: detection by each method's maps", ["hallucination.md", "hallucination.csv"]))


def fig_ablation(runs: list[Run], report: Report) -> None:
    """Fig. 5: FastRM ablations (labeling threshold, data size, training steps) as PP AUC over the first 20%."""
    rows = []
    for r in runs:
        if r.is_ablation and r.metric("pp_auc") is not None:
            rows += [{**tag, "pp_auc_first20": r.metric("pp_auc"), "run": r} for tag in r.ablation_tags()]
    if not rows:
        report.skipped.append("Ablations (Fig. 5): no ablation runs (made by `fastrm-bench reproduce`)")
        return
    fig = draw_ablation(rows)
    _save(fig, report, "ablations", "Ablations (Fig. 5)")
    _style().close(fig)


def draw_ablation(rows: list[dict[str, Any]]):
    """The ablation figure: one panel per kind, bars from 0 (a bar's length is its value) with the 95% interval's
    error bar where the run has one. Returns the figure."""
    plt = _style()
    kinds = sorted({row["kind"] for row in rows})
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        part = sorted((row for row in rows if row["kind"] == kind),  # numeric order, "all" last
                      key=lambda row: (isinstance(row["value"], str), row["value"] if not isinstance(row["value"], str) else 0))
        values = np.array([row["pp_auc_first20"] for row in part])
        cis = [row["run"].results["metrics"].get("pp_auc", {}).get("ci95") for row in part]
        errors = np.array([[v - ci[0], ci[1] - v] if ci else [0.0, 0.0] for v, ci in zip(values, cis)]).T.clip(0)
        bars = ax.bar([str(row["value"]) for row in part], values, color=PALETTE[5], yerr=errors, capsize=4,
                      error_kw={"elinewidth": 1, "ecolor": "#333333"})
        ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2, label_type="center", color="white")
        ax.set_xlabel(ABLATION_AXES.get(kind, kind.replace("_", " ")))
        ax.set_ylabel("PP AUC, first 20% removed (lower is better)")
        ax.set_ylim(0.0, max(1.0, float((values + errors[1]).max()) * 1.05))
    fig.suptitle(_title([row["run"] for row in rows], "FastRM ablations (VQAv2-style questions; error bars: 95% "
                        "bootstrap interval over questions)"), fontsize=10)
    return fig


def leaderboard_tables(roots: list[Path], report: Report) -> None:
    from fastrm_bench.leaderboard import leaderboard, render

    frames = [leaderboard(r) for r in roots]
    frame = pd.concat(frames) if frames else pd.DataFrame()
    if not frame.empty:  # ablation variants are compared in their own figure (Fig. 5), not ranked here
        frame = frame[[not (Path(d) / ABLATION).exists() for d in frame.run_dir]]
    if frame.empty:
        report.skipped.append("Leaderboard: no runs")
        return
    (report.out / "leaderboard.md").write_text(render(frame, "markdown") + "\n")
    (report.out / "leaderboard.tex").write_text(render(frame, "latex"))
    (report.out / "leaderboard.csv").write_text(render(frame, "csv"))
    report.made.append(("Leaderboard", ["leaderboard.md", "leaderboard.tex", "leaderboard.csv"]))


def builtin_figures() -> dict[type, tuple[Callable[[list[Run], Report], None], ...]]:
    """The report makers of the built-in metrics, by metric class (a subclass gets its base's)."""
    from fastrm_bench.metrics.entropy import EntropyConfidence
    from fastrm_bench.metrics.perturbation import Insertion, Perturbation
    from fastrm_bench.metrics.probability import AnswerProbability
    from fastrm_bench.metrics.threshold import ThresholdAgreement

    return {Perturbation: (fig_perturbation, table_perturbation), Insertion: (fig_insertion,),
            ThresholdAgreement: (fig_threshold, table1), AnswerProbability: (fig_probability,),
            EntropyConfidence: (fig_entropy,)}


def metric_figures() -> list[Callable[[list[Run], Report], None]]:
    """The report makers of every registered metric (the built-in ones by class, a plug-in's `Metric.figures`),
    the default metrics' first, each once."""
    from fastrm_bench.builders import create_metric
    from fastrm_bench.metrics import DEFAULT_METRICS
    from fastrm_bench.registry import METRICS

    builtin = builtin_figures()
    names = [*DEFAULT_METRICS, *(n for n in METRICS.names() if n not in DEFAULT_METRICS)]
    figures: dict[Callable[[list[Run], Report], None], None] = {}
    for name in names:
        metric = create_metric(name)[0]
        own = next((makers for cls in type(metric).__mro__ for makers in [builtin.get(cls)] if makers), ())
        figures.update(dict.fromkeys([*own, *metric.figures]))
    return list(figures)


def make_report(roots: list[Path], out: Path, command: str) -> Report:
    out.mkdir(parents=True, exist_ok=True)
    if (out / "index.md").exists():  # a report made here before: drop its files, so none of them outlives its inputs
        for old in out.iterdir():
            if old.is_file() and old.suffix in (".png", ".pdf", ".md", ".tex", ".csv"):
                old.unlink()
    runs, profiles = load_runs(roots)
    label_tasks(runs)
    report = Report(out, command)
    leaderboard_tables(roots, report)
    ablation_runs = [r for r in runs if r.is_ablation]
    main_runs = [r for r in runs if r not in ablation_runs]
    for figure in [*metric_figures(), fig_qualitative, fig_relevancy_distribution, table_rankings_across_models,
                   table_metric_agreement, table_image_dependent, table_hallucination]:
        figure(main_runs, report)
    fig_ablation(ablation_runs, report)
    fig_latency(profiles, report)
    fig_sanity(roots, report)
    from fastrm_bench.explorer import write_explorer  # explorer.html: the interactive page beside the figures
    write_explorer(main_runs, report)
    lines = ["# fastrm-bench report", "", f"Made by `{command}` from {len(runs)} runs and {len(profiles)} profiles.", ""]
    for title, files in report.made:
        lines += [f"## {title}", ""]
        for f in files:
            if f.endswith(".png"):
                lines.append(f"![{title}]({f})")
            elif f.endswith(".md"):
                lines.append((out / f).read_text())
            else:
                lines.append(f"[{f}]({f})")
        lines.append("")
    if report.skipped:
        lines += ["## Skipped", ""] + [f"- {s}" for s in report.skipped] + [""]
    (out / "index.md").write_text("\n".join(lines))
    return report

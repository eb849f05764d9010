"""The report's figures read as they should: a distinct colour, marker and line style per method, a 95% band on every
curve, ablation bars from 0 with error bars."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer

from fastrm_bench import report as report_module
from fastrm_bench.report import curve_band, draw_ablation, method_styles
from fastrm_bench.runner import RunConfig, run

METHODS = ["chefer", "chefer-stale", "dex-ar", "dex-ar-sentence", "fastrm", "gradcam", "oracle", "random", "rollout",
           "tam", "gradcam-lm", "chefer-reference"]


def test_twelve_methods_get_twelve_colours_and_each_its_own_marker_and_line_style():
    styles = method_styles(METHODS)
    assert len({s["color"] for s in styles.values()}) == len(METHODS)  # no colour repeats
    assert len({(s["marker"], s["ls"]) for s in styles.values()}) == len(METHODS)
    chefer, stale = styles["chefer"], styles["chefer-stale"]  # their curves coincide: both must show
    assert chefer["marker"] != stale["marker"] and chefer["ls"] != stale["ls"] and chefer["markevery"] != stale["markevery"]
    assert method_styles(METHODS[:3])["chefer"] == method_styles(["chefer", "tam"])["chefer"]  # same in every figure


def test_the_band_holds_the_mean_curve_and_narrows_with_more_samples():
    rng = np.random.default_rng(0)
    few = rng.random((10, 5)).tolist()
    many = rng.random((400, 5)).tolist()
    for curves in (few, many):
        low, high = curve_band(curves)
        mean = np.mean(curves, axis=0)
        assert np.all(low <= mean) and np.all(mean <= high)
    assert np.mean(np.subtract(*curve_band(few)[::-1])) > 2 * np.mean(np.subtract(*curve_band(many)[::-1]))
    assert curve_band([[1.0, 0.0]]) is None  # one sample: no interval


def test_ablation_bars_start_at_zero_with_their_intervals_as_error_bars():
    def row(kind, value, auc, ci):
        result = {"metrics": {"pp_auc": {"value": auc, "ci95": ci}}}
        return {"kind": kind, "value": value, "pp_auc_first20": auc,
                "run": SimpleNamespace(results=result, model="tiny-llava-shapes", data_source="shapes", n=300)}

    rows = [row("data_size", 1000, 0.61, [0.58, 0.64]), row("data_size", "all", 0.59, [0.57, 0.62]),
            row("training_steps", 100, 0.66, [0.62, 0.7])]
    fig = draw_ablation(rows)
    for ax in fig.axes:
        assert ax.get_ylim()[0] == 0.0  # a bar's length is its value
        errors = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert len(errors) == 1
    segments = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)][0].lines[2][0].get_segments()
    assert np.allclose(sorted(seg[:, 1].min() for seg in segments), [0.57, 0.58])  # the intervals' lower ends


def test_perturbation_curves_have_a_band_and_a_style_per_method(world_root, tiny_llava_dir, tmp_path, monkeypatch):
    for method in ("random", "chefer"):
        run(RunConfig(method=method, task="pope-random", model=str(tiny_llava_dir), limit=6, seed=0, max_new_tokens=3,
                      output_dir=str(tmp_path / "runs" / method), data_root=str(world_root), device="cpu"), log=lambda *_: None)
    runs, _ = report_module.load_runs([tmp_path / "runs"])
    report_module.label_tasks(runs)
    figures = []
    monkeypatch.setattr(report_module, "_save", lambda fig, *args: figures.append(fig))
    made = report_module.Report(tmp_path / "report", "test")
    report_module.fig_perturbation(runs, made)
    for ax in figures[0].axes:
        lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
        assert len({(line.get_color(), line.get_marker(), line.get_linestyle()) for line in lines}) == 2
        assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 2  # one band per method

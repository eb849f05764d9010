"""The latency/memory profile: default methods, the tam-vs-fastrm ratios, and the figure's line styles."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fastrm_bench import profile as profile_module
from fastrm_bench import report as report_module
from fastrm_bench.builders import create_method
from fastrm_bench.profile import DEFAULT_METHODS, gradient_free, pair_ratios, save


def test_the_default_methods_put_the_two_gradient_free_ones_side_by_side_with_the_gradient_ones():
    methods = list(DEFAULT_METHODS)
    assert {"fastrm", "tam", "chefer", "chefer-reference", "chefer-stale", "dex-ar"} <= set(methods)
    assert abs(methods.index("tam") - methods.index("fastrm")) == 1
    assert all(gradient_free(m) for m in ("fastrm", "tam"))
    assert not any(gradient_free(m) for m in ("chefer", "chefer-reference", "chefer-stale", "dex-ar", "no-such-method"))
    for name in methods:
        create_method(name)  # every default is a registered method


def _frame(seconds: dict[str, list[float]], memory: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"method": m, "tokens": n, "map_seconds": s, "generation_seconds": 0.1, "peak_memory_mb": memory[m][i],
                          "repeats": 1, "device": "cpu", "model": "tiny"}
                         for m, values in seconds.items() for i, (n, s) in enumerate(zip((1, 5), values))])


def test_the_summary_has_the_ratios_of_every_profiled_pair_and_keeps_the_callers_entries(tmp_path):
    frame = _frame({"fastrm": [1.0, 1.0], "tam": [2.0, 4.0], "chefer-reference": [10.0, 30.0]},
                   {"fastrm": [20.0, 20.0], "tam": [10.0, 30.0], "chefer-reference": [40.0, 40.0]})
    ratios = pair_ratios(frame)
    assert set(ratios) == {"tam_vs_fastrm", "fastrm_vs_chefer-reference"}  # chefer was not profiled
    assert ratios["tam_vs_fastrm"]["mean_speedup"] == pytest.approx((1 / 2 + 1 / 4) / 2)  # below 1: tam is slower
    assert ratios["tam_vs_fastrm"]["memory_saved_share"] == pytest.approx(1 - (10 / 20 + 30 / 20) / 2)
    assert ratios["fastrm_vs_chefer-reference"]["mean_speedup"] == pytest.approx(20.0)
    save(frame, tmp_path, {"mean_speedup": 3.0})
    summary = json.loads((tmp_path / "profile.json").read_text())["summary"]
    assert summary["mean_speedup"] == 3.0 and summary["tam_vs_fastrm"] == ratios["tam_vs_fastrm"]


def test_tam_and_fastrm_profiled_on_the_shipped_model_give_the_tam_vs_fastrm_ratios(tmp_path, monkeypatch):
    # each CPU peak is measured in a fresh process (~30 s a point on 2 busy cores; the CLI test in test_run.py
    # covers that path): here a fixed peak per point, so the memory ratio is known exactly
    peaks = {"tam": 3 * 2**20, "fastrm": 2 * 2**20}
    monkeypatch.setattr(profile_module, "_fresh_process_peak", lambda name, n, *_: peaks[name] * n)
    frame = profile_module.profile(["tam", "fastrm"], lengths=(1, 2), repeats=1, model="tiny-llava-shapes", device="cpu")
    assert {(r.method, r.tokens) for r in frame.itertuples()} == {(m, n) for m in ("tam", "fastrm") for n in (1, 2)}
    assert (frame.map_seconds > 0).all() and (frame.generation_seconds > 0).all(), frame
    save(frame, tmp_path)
    summary = json.loads((tmp_path / "profile.json").read_text())["summary"]
    assert set(summary) == {"tam_vs_fastrm"}
    times = frame.pivot(index="tokens", columns="method", values="map_seconds")
    assert summary["tam_vs_fastrm"]["mean_speedup"] == pytest.approx((times.fastrm / times.tam).mean())
    assert summary["tam_vs_fastrm"]["memory_saved_share"] == pytest.approx(1 - 3 / 2)  # tam needs more here


def test_the_latency_figure_draws_gradient_free_methods_solid_and_gradient_methods_dashed(tmp_path, monkeypatch):
    frame = _frame({"fastrm": [1.0, 1.0], "tam": [2.0, 4.0], "chefer": [5.0, 9.0], "dex-ar": [6.0, 8.0]},
                   {"fastrm": [20.0, 20.0], "tam": [10.0, 30.0], "chefer": [40.0, 50.0], "dex-ar": [45.0, 55.0]})
    save(frame, tmp_path / "profile")
    figures = []
    save_figure = report_module._save
    monkeypatch.setattr(report_module, "_save", lambda fig, *args: (figures.append(fig), save_figure(fig, *args)))
    made = report_module.Report(tmp_path / "report", "test")
    made.out.mkdir()
    report_module.fig_latency([tmp_path / "profile"], made)
    assert made.made == [("Latency and memory vs output length (Fig. 7)", ["latency_memory.png", "latency_memory.pdf"])]
    (fig,) = figures
    for ax in fig.axes[:2]:
        styles = {line.get_label().split(" ")[0]: (line.get_linestyle(), line.get_color()) for line in ax.get_lines()
                  if not line.get_label().startswith("greedy")}
        assert {m: s[0] for m, s in styles.items()} == {"fastrm": "-", "tam": "-", "chefer": "--", "dex-ar": "--"}
        assert len({s[1] for s in styles.values()}) == 4  # one colour per method
    colours = [{line.get_label(): line.get_color() for line in ax.get_lines()} for ax in fig.axes[:2]]
    assert colours[0]["tam (gradient-free)"] == colours[1]["tam (gradient-free)"]  # the same colour in both panels
    assert "solid: gradient-free" in fig._suptitle.get_text()


def test_profile_by_image_tokens_writes_every_case_and_refuses_a_grid_that_is_not_square(tmp_path):
    """`profile --image-tokens`: baselines, the methods and eager Chefer, one fresh process each, peaks and times."""
    from typer.testing import CliRunner

    from fastrm_bench.cli import app

    out = tmp_path / "scale"
    result = CliRunner().invoke(app, ["profile", "--image-tokens", "36", "--max-new-tokens", "2", "--method", "chefer",
                                      "--method", "rollout", "--repeats", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "image_tokens.csv")
    assert list(frame["case"]) == ["answer", "answer + backward", "chefer", "rollout", "chefer (eager probabilities)"]
    assert set(frame["image_tokens"]) == {36} and set(frame["answer_tokens"]) == {2}
    assert list(frame["attn_implementation"]) == ["sdpa"] * 4 + ["eager"]
    assert frame["peak_memory_mb"].notna().all() and (frame["seconds"] > 0).all()
    assert "Ratios of peaks" in (out / "image_tokens.md").read_text()
    refused = CliRunner().invoke(app, ["profile", "--image-tokens", "35", "--out", str(tmp_path / "no")])
    assert refused.exit_code != 0 and "square numbers" in refused.output and "Traceback" not in refused.output

"""Metric agreement (`fastrm_bench.agreement`): Kendall's tau-b between the metrics' method rankings, with a paired
bootstrap over questions, on run directories written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau

from fastrm_bench.agreement import agreements, group_agreement, tau_b
from fastrm_bench.metrics.base import RunSettings
from fastrm_bench.metrics.localisation import Localisation
from fastrm_bench.metrics.perturbation import Perturbation
from fastrm_bench.report import Report, table_metric_agreement
from fastrm_bench.rundir import Run, read_run

FRACTIONS = (0.0, 0.5, 1.0)
SETTINGS = RunSettings(FRACTIONS, "zero", 0, 10)


def _record(qid: str, pp: float, np_: float, mass: float, score: float = 1.0) -> dict:
    """A question's record: flat perturbation curves (their AUC is the curve's value) and a relevance mass."""
    return {"id": qid, "score": score, "curves": {"positive": [pp] * 3, "negative": [np_] * 3},
            "relevance_mass": mass, "pointing_game": float(mass > 0.5), "object_patch_share": 0.2}


def _write_run(folder: Path, method: str, records: list[dict], task: str = "vqav2", model: str = "tiny") -> Run:
    """A finished run directory whose results.json holds what the metrics compute on its records, as the runner's."""
    folder.mkdir(parents=True)
    config = {"method_spec": {"name": method, "implementation": method, "params": {}},
              "task_spec": {"name": task, "implementation": task, "params": {}}, "model": f"/models/{model}",
              "data_source": "shapes", "data_root": None, "run": {"seed": 0, "fractions": list(FRACTIONS)}}
    values = {**Perturbation().compute(records, SETTINGS), **Localisation().compute(records, SETTINGS)}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "results.json").write_text(json.dumps({"n": len(records), "metrics": {k: {"value": v} for k, v in values.items()}}))
    return read_run(folder)


def _runs(root: Path, per_method: dict[str, list[dict]], **kwargs) -> list[Run]:
    return [_write_run(root / method, method, records, **kwargs) for method, records in per_method.items()]


def test_tau_is_the_hand_computed_one(tmp_path):
    """PP AUC ranks a > b > c > d, relevance mass a > c > b > d: 5 concordant pairs, 1 discordant, tau = 4/6."""
    pp = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}
    mass = {"a": 0.9, "b": 0.5, "c": 0.6, "d": 0.2}
    runs = _runs(tmp_path, {m: [_record(f"q{i}", pp[m], 0.5, mass[m]) for i in range(5)] for m in pp})
    result = group_agreement(runs, resamples=50)
    i, j = result.keys.index("pp_auc"), result.keys.index("relevance_mass")
    assert result.tau[i, j] == pytest.approx(4 / 6) and result.tau[j, i] == pytest.approx(4 / 6)
    assert result.ranking("pp_auc") == ["a", "b", "c", "d"] and result.ranking("relevance_mass") == ["a", "c", "b", "d"]
    assert result.n == 5 and result.dropped_questions == 0


def _spread_runs(root: Path, rng: np.random.Generator, n: int = 40, reverse_np: bool = False) -> list[Run]:
    """Four methods a < b < c < d by a small offset on every question, over a spread of question difficulty far wider
    than the offsets: PP AUC and NP AUC rank them the same way (or, reverse_np, oppositely) on any draw of questions."""
    base = rng.uniform(0.1, 0.6, n)
    per_method = {}
    for k, method in enumerate("abcd"):
        pp = base + 0.01 * k
        per_method[method] = [_record(f"q{i}", pp[i], pp[i] if reverse_np else 1 - pp[i], 0.5) for i in range(n)]
    return _runs(root, per_method)


def test_identical_rankings_give_one_with_a_degenerate_interval_and_reversed_ones_minus_one(tmp_path):
    rng = np.random.default_rng(0)
    same = group_agreement(_spread_runs(tmp_path / "same", rng))
    i, j = same.keys.index("pp_auc"), same.keys.index("np_auc")
    assert (same.tau[i, j], same.low[i, j], same.high[i, j]) == (1.0, 1.0, 1.0)
    reversed_ = group_agreement(_spread_runs(tmp_path / "reversed", rng, reverse_np=True))
    assert (reversed_.tau[i, j], reversed_.low[i, j], reversed_.high[i, j]) == (-1.0, -1.0, -1.0)
    assert {(p["a"], p["b"]) for p in reversed_.pairs() if p["disagree"]} >= {("pp_auc", "np_auc")}


def test_the_bootstrap_draws_the_same_questions_for_every_run(tmp_path):
    """Two metrics, each a method offset plus its own per-question difficulty (shared by the methods): on any one draw
    of questions for all runs they rank the methods alike (interval [1, 1]); drawn apart for each run, the difficulty
    of each run's draw would outweigh the offsets and the interval would reach well below 1. One run lists its
    questions in another order: they are matched by id, not by line."""
    rng = np.random.default_rng(1)
    n = 40
    hard, spread = rng.uniform(0.1, 0.6, n), rng.uniform(0.2, 0.8, n)
    per_method = {m: [_record(f"q{i}", hard[i] + 0.01 * k, 0.5, spread[i] - 0.01 * k) for i in range(n)]
                  for k, m in enumerate("abcd")}
    per_method["c"] = per_method["c"][::-1]
    result = group_agreement(_runs(tmp_path, per_method))
    i, j = result.keys.index("pp_auc"), result.keys.index("relevance_mass")
    assert (result.tau[i, j], result.low[i, j], result.high[i, j]) == (1.0, 1.0, 1.0)


def test_questions_some_run_lacks_are_left_out_and_counted(tmp_path):
    per_method = {m: [_record(f"q{i}", 0.1 * k + 0.01 * i, 0.5, 0.5 - 0.1 * k) for i in range(6)] for k, m in enumerate("abc")}
    per_method["b"] = per_method["b"][:4]
    result = group_agreement(_runs(tmp_path, per_method), resamples=20)
    assert (result.n, result.dropped_questions) == (4, 2)


def test_only_metrics_every_run_measured_as_means_over_questions_are_compared(tmp_path):
    runs = _runs(tmp_path, {m: [_record(f"q{i}", 0.1 * k + 0.01 * i, 0.5, 0.2 * k + 0.01 * i) for i in range(5)]
                            for k, m in enumerate("abc")})
    (runs[0].path / "results.json").write_text(json.dumps({**runs[0].results, "metrics": {
        **runs[0].results["metrics"], "np_auc": {"value": 0.9}}}))  # not the mean of its questions' NP AUCs
    result = group_agreement([read_run(runs[0].path), *runs[1:]], resamples=20)
    assert "np_auc" not in result.keys and "not a mean over questions" in result.left_out["np_auc"]
    assert "insertion_auc" not in result.keys and result.left_out["insertion_auc"] == "not measured on every run"
    assert {"pp_auc", "relevance_mass", "pointing_game"} <= set(result.keys)


def test_the_vectorised_tau_is_scipys_tau_b_with_ties():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 4, (3, 5, 7)).astype(float)  # 3 metrics, 5 draws, 7 methods with ties
    taus = tau_b(scores)
    for a in range(3):
        for b in range(3):
            for d in range(5):
                assert taus[a, b, d] == pytest.approx(kendalltau(scores[a, d], scores[b, d]).statistic)


def test_groups_of_too_few_methods_are_named_not_compared(tmp_path):
    runs = _runs(tmp_path / "big", {m: [_record("q0", 0.1 * k, 0.5, 0.5)] for k, m in enumerate("abc")})
    runs += _runs(tmp_path / "small", {m: [_record("q0", 0.1 * k, 0.5, 0.5)] for k, m in enumerate("ab")}, task="gqa")
    found, skipped = agreements(runs, resamples=10)
    assert [g.task for g in found] == ["vqav2"] and skipped == ["gqa (shapes, tiny): fewer than 3 methods"]


def test_the_report_writes_the_table_and_a_heatmap_per_group(tmp_path):
    pp = {"a": 0.1, "b": 0.2, "c": 0.3}
    runs = _runs(tmp_path / "runs", {m: [_record(f"q{i}", pp[m] + 0.01 * i, 1 - pp[m], 0.8 - pp[m]) for i in range(8)]
                                     for m in pp})
    report = Report(tmp_path / "report", "test")
    report.out.mkdir()
    table_metric_agreement(runs, report)
    table = (report.out / "metric_agreement.md").read_text()
    assert "### vqav2 (shapes, tiny): 3 methods, 8 questions" in table and "a > b > c" in table
    assert "+1.00 [+1.00, +1.00]" in table  # PP and NP AUC rank the three methods alike on every draw
    figure = "metric_agreement_vqav2_shapes_tiny"
    assert (report.out / f"{figure}.png").stat().st_size > 10_000 and (report.out / f"{figure}.pdf").exists()
    assert ("Metric agreement, vqav2 (shapes, tiny)", [f"{figure}.png", f"{figure}.pdf"]) in report.made
    assert "pp_auc,np_auc" in (report.out / "metric_agreement.csv").read_text()

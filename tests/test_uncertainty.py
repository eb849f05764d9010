"""Bootstrap intervals, entropy confidence over splits, re-aggregation of a finished run, and the paired table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fastrm_bench.cli import app
from fastrm_bench.metrics.entropy import calibration_split, entropy_confidence, entropy_over_splits
from fastrm_bench.metrics.uncertainty import bootstrap_intervals, paired_difference


def test_bootstrap_interval_of_a_mean_matches_the_normal_approximation_and_is_seeded():
    rng = np.random.default_rng(1)
    values = list(rng.random(400) < 0.7)

    def mean(rows: list) -> dict[str, float]:
        return {"accuracy": float(np.mean(rows))}

    low, high = bootstrap_intervals(values, mean, seed=0)["accuracy"]
    p, half = np.mean(values), 1.96 * np.sqrt(np.mean(values) * (1 - np.mean(values)) / len(values))
    assert low == pytest.approx(p - half, abs=0.01) and high == pytest.approx(p + half, abs=0.01)
    assert bootstrap_intervals(values, mean, seed=0)["accuracy"] == (low, high)
    assert bootstrap_intervals(values, mean, seed=1)["accuracy"] != (low, high)


def test_paired_difference_sees_a_small_shift_that_unpaired_intervals_would_hide():
    rng = np.random.default_rng(0)
    hard = rng.random(300)  # per-question difficulty, shared by both methods
    a, b = hard + 0.02, hard + rng.normal(0, 0.01, 300)
    d = paired_difference(a, b, seed=0)
    assert d["significant"] and d["low"] > 0 and d["difference"] == pytest.approx(0.02, abs=0.005)
    same = paired_difference(hard + rng.normal(0, 0.01, 300), hard + rng.normal(0, 0.01, 300), seed=0)
    assert not same["significant"] and same["low"] < 0 < same["high"]
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_difference(a, b[:10], seed=0)


def test_entropy_over_splits_is_the_mean_of_the_single_splits():
    rng = np.random.default_rng(0)
    correct = rng.random(200) < 0.8
    entropy = rng.normal(2.0, 0.3, 200) - 0.2 * correct
    over = entropy_over_splits(entropy, correct, seed=3, splits=50)
    # the same 50 splits by hand
    seeds = np.random.default_rng(3)
    singles = [entropy_confidence(entropy, correct, calibration_split(200, int(seeds.integers(2**31))))["tp_rate_below"]
               for _ in range(50)]
    assert over["tp_rate_below"]["n"] == 50
    assert over["tp_rate_below"]["mean"] == pytest.approx(np.mean(singles))
    assert over["tp_rate_below"]["std"] == pytest.approx(np.std(singles, ddof=1)) and over["tp_rate_below"]["std"] > 0
    assert over["tp_gain_below"]["mean"] == pytest.approx(np.mean(singles) - over["base_rate"]["mean"])


def _fake_run(root: Path, method: str, world_root: Path, pp_shift: float, noise_seed: int, n: int = 60) -> Path:
    """A finished run directory of the vqav2 task with synthetic per-sample records (no model)."""
    rng = np.random.default_rng(0)  # per-question difficulty and entropy: the same in every run
    noise = np.random.default_rng(noise_seed).normal(0, 0.05, n)  # each method's own noise
    out = root / method
    out.mkdir(parents=True)
    fractions = [0.0, 0.5, 1.0]
    config = {"run": {"method": method, "task": "vqav2", "model": "m", "limit": n, "seed": 0, "output_dir": str(out),
                      "data_root": str(world_root), "max_new_tokens": 3, "device": "cpu", "fractions": fractions,
                      "removal": "zero", "perturbation": True, "aggregation": "mean"},
              "task_spec": {"name": "vqav2", "implementation": "vqav2", "description": "", "params": {}, "path": None},
              "method_spec": {"name": method, "implementation": method, "description": "", "params": {}, "path": None},
              "model": "m", "model_weights_sha256": "x", "data_source": "shapes", "data_root": str(world_root),
              "grid": [2, 2], "versions": {}, "device": "cpu"}
    (out / "config.json").write_text(json.dumps(config))
    lines = []
    for i in range(n):
        level = rng.random()
        pp = [1.0, float(np.clip(level - 0.3 + pp_shift + noise[i], 0, 1)), 0.0]
        lines.append({"id": str(i), "prediction": "red", "score": float(i % 5 != 0), "meta": {"type": "color"},
                      "entropy": float(2 + 0.1 * (i % 5 == 0) + rng.normal(0, 0.05)), "map_seconds": 0.01,
                      "curves": {"positive": pp, "negative": [1.0, 1.0, 0.0]}})
    (out / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (out / "results.json").write_text("{}")
    return out


def test_summarise_rewrites_results_with_intervals_and_the_report_marks_what_is_not_significant(world_root, tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs, "chefer", world_root, pp_shift=0.0, noise_seed=1)
    _fake_run(runs, "rollout", world_root, pp_shift=0.0, noise_seed=2)  # as good, other noise: not significant
    _fake_run(runs, "random", world_root, pp_shift=0.3, noise_seed=3)  # far worse: significant
    result = CliRunner().invoke(app, ["summarise", str(runs)])
    assert result.exit_code == 0, result.output
    res = json.loads((runs / "chefer" / "results.json").read_text())
    assert res["config"]["scoring"] == "vqaeval" and res["n"] == 60
    for key, entry in res["metrics"].items():
        if entry["value"] is not None and not key.startswith("entropy_"):
            assert entry["ci95"] is not None and entry["ci95"][0] <= entry["value"] + 1e-12 <= entry["ci95"][1] + 2e-12, key
    assert res["metrics"]["accuracy"]["value"] == pytest.approx(0.8) and res["metrics"]["accuracy"]["ci95"][1] > 0.8
    assert res["metrics"]["entropy_tp_rate_below"]["splits"] == 200
    assert res["metrics"]["entropy_tp_rate_below"]["spread"] > 0

    from fastrm_bench.leaderboard import leaderboard, render

    frame = leaderboard(runs)
    assert {"pp_auc_ci_low", "pp_auc_ci_high"} <= set(frame.columns)
    assert "pp_auc_ci_low" in render(frame, "csv")
    row = frame[frame.method == "chefer"].iloc[0]
    assert f"{row.pp_auc:.3f} [{row.pp_auc_ci_low:.3f}, {row.pp_auc_ci_high:.3f}]" in render(frame, "markdown")

    from fastrm_bench.report import make_report

    make_report([runs], tmp_path / "report", "test")
    table = (tmp_path / "report" / "perturbation_auc.md").read_text()
    lines = {line.split("|")[2].strip(): line for line in table.splitlines() if line.startswith("| vqav2")}
    assert "n.s." in lines["rollout"].split("|")[6]  # rollout vs chefer: PP difference not significant
    assert "n.s." not in lines["random"].split("|")[6]

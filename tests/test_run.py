"""`fastrm-bench run` end to end on a small world and a tiny model: outputs, resume, determinism, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fastrm_bench.cli import app
from fastrm_bench.maps_io import load_sample_maps
from fastrm_bench.runner import RunConfig, run


def _config(world_root, tiny_llava_dir, out, **kw) -> RunConfig:
    base = dict(method="chefer", task="vqav2", model=str(tiny_llava_dir), limit=6, seed=0, output_dir=str(out),
                data_root=str(world_root), max_new_tokens=3, device="cpu")
    return RunConfig(**{**base, **kw})


def _without_timings(path):
    """Sample records without the measurements that depend on the machine's moment (time, memory)."""
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    for r in rows:
        r.pop("map_seconds"), r.pop("generation_seconds"), r.pop("peak_memory_bytes")
    return rows


def test_run_writes_a_complete_run_directory(world_root, tiny_llava_dir, tmp_path):
    result = run(_config(world_root, tiny_llava_dir, tmp_path / "run"), log=lambda *_: None)
    out = tmp_path / "run"
    config = json.loads((out / "config.json").read_text())
    assert config["data_source"] == "shapes" and len(config["model_weights_sha256"]) == 64
    assert config["method_spec"]["implementation"] == "chefer" and config["versions"]["torch"]
    # the model answered and was explained with its own SDPA attention, never switched to eager
    assert config["attn_implementation"] == "sdpa" and config["run"]["attn_implementation"] == "sdpa"
    rows = _without_timings(out / "samples.jsonl")
    assert len(rows) == 6 and any("relevance_mass" in r for r in rows)
    # localisation only where the question has objects: "is there ...? no" / "how many ...? 0" have none
    assert all(r["reference"] in ("no", "0") for r in rows if "relevance_mass" not in r)
    maps = load_sample_maps(out / "maps.npz")
    assert len(maps) == 6 and all(m.shape == (36,) for m in maps.values())  # one value per image token (6x6)
    results = json.loads((out / "results.json").read_text())
    assert results["n"] == 6 and results["metrics"]["accuracy"]["higher_is_better"] is True
    pointing = [r["pointing_game"] for r in rows if "pointing_game" in r]
    assert result["metrics"]["pointing_game"]["value"] == pytest.approx(np.mean(pointing))


def test_cli_unknown_names_exit_nonzero_with_the_closest_match():
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--method", "chefr", "--task", "pope"])
    assert result.exit_code == 2 and "Did you mean 'chefer'" in result.output
    result = runner.invoke(app, ["run", "--method", "random", "--task", "gqa2"])
    assert result.exit_code == 2 and "Did you mean 'gqa'" in result.output


def test_cli_lists_methods_and_tasks_with_descriptions():
    runner = CliRunner()
    methods = runner.invoke(app, ["list", "methods"]).output
    for name in ("random", "chefer", "chefer-reference"):
        assert any(line.startswith(name + " ") and len(line.split()) > 2 for line in methods.splitlines()), methods
    tasks = runner.invoke(app, ["list", "tasks"]).output
    for name in ("vqav2", "gqa", "pope", "pope-random", "pope-popular", "pope-adversarial"):
        assert any(line.startswith(name + " ") for line in tasks.splitlines()), tasks


def test_leaderboard_csv_has_one_row_per_run(world_root, tiny_llava_dir, tmp_path):
    for method in ("random", "chefer"):
        run(_config(world_root, tiny_llava_dir, tmp_path / "runs" / method, method=method, limit=4), log=lambda *_: None)
    result = CliRunner().invoke(app, ["leaderboard", str(tmp_path / "runs"), "--format", "csv"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    header = lines[0].split(",")
    for column in ("model", "data_source", "task", "method", "n", "task_accuracy", "pp_auc", "np_auc", "insertion_auc",
                   "logprob_pp_auc", "pointing_game", "relevance_mass", "map_seconds"):
        assert column in header
    # columns no run has are left out: neither method gives probabilities; 4 right answers define no entropy rates
    assert "threshold_f1" not in header and "entropy_tp_rate_below" not in header
    assert len(lines) == 3 and {line.split(",")[header.index("method")] for line in lines[1:]} == {"random", "chefer"}


def test_profile_reports_both_methods_and_the_ratio(tiny_llava_dir, tmp_path):
    result = CliRunner().invoke(app, ["profile", "--method", "random", "--method", "chefer-reference", "--max-new-tokens",
                                      "1,3", "--repeats", "1", "--model", str(tiny_llava_dir), "--device", "cpu",
                                      "--out", str(tmp_path / "profile")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "profile" / "profile.json").read_text())
    assert {(r["method"], r["tokens"]) for r in data["rows"]} == {(m, n) for m in ("random", "chefer-reference") for n in (1, 3)}
    assert data["summary"]["mean_speedup"] > 1
    # CPU peaks come from a fresh process per point: memory reused from earlier work would read as 0
    assert all(r["peak_memory_mb"] > 0 for r in data["rows"]), data["rows"]


def test_same_seed_twice_gives_identical_results(world_root, tiny_llava_dir, tmp_path):
    outs = []
    for name in ("a", "b"):
        result = run(_config(world_root, tiny_llava_dir, tmp_path / name, method="random", limit=5), log=lambda *_: None)
        for metrics in (result["metrics"], result.get("image_dependent", {}).get("metrics", {})):
            for key in ("map_seconds", "generation_seconds"):
                metrics.pop(key, None)
        result.pop("output_dir")
        outs.append(result)
    assert outs[0] == outs[1]


def test_cli_refuses_an_unknown_attention_implementation_before_loading_anything(tmp_path):
    result = CliRunner().invoke(app, ["run", "--method", "chefer", "--task", "pope", "--attn-implementation", "fast",
                                      "--output-dir", str(tmp_path / "run")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "--attn-implementation must be one of sdpa, eager, flash_attention_2, got 'fast'" in result.output
    assert not (tmp_path / "run").exists()

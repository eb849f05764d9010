"""An external package adds a metric through the `fastrm_bench.metrics` entry point.

The code and entry point are taken verbatim from the guide's (docs/extending.md) "Add your own metric" section,
installed as a real distribution (a .dist-info on sys.path), selected by a run on a tiny LLaVA,
aggregated with an interval into results.json, shown in the leaderboard, and listed by the CLI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fastrm_bench.registry import METRICS
from tests.test_plugin import install_guide_package


@pytest.fixture
def installed_metric(tmp_path, monkeypatch) -> Path:
    install_guide_package(tmp_path, "my_metrics", "metric-plugin", "fastrm_bench.metrics")
    monkeypatch.syspath_prepend(str(tmp_path))
    # the process-wide registry looks for plugins once: let it look again, and forget the plugin afterwards
    monkeypatch.setattr(METRICS, "_entries", dict(METRICS._entries))
    monkeypatch.setattr(METRICS, "_plugins_loaded", False)
    return tmp_path


def test_the_readme_metric_runs_aggregates_and_ranks(installed_metric, world_root, tiny_llava_dir, tmp_path):
    from fastrm_bench.leaderboard import leaderboard
    from fastrm_bench.runner import RunConfig, run

    assert METRICS.entry("top-decile-share").source == "plugin:my-metrics"
    out = tmp_path / "runs" / "chefer"
    result = run(RunConfig(method="chefer", task="pope", model=str(tiny_llava_dir), limit=4, output_dir=str(out),
                           data_root=str(world_root), device="cpu", max_new_tokens=3, fractions=[0.0, 0.5],
                           metrics=["top-decile-share", "perturbation"]), log=lambda *_: None)
    entry = result["metrics"]["top_decile_share"]
    shares = [json.loads(x)["top_decile_share"] for x in (out / "samples.jsonl").read_text().splitlines()]
    assert entry["value"] == pytest.approx(sum(shares) / len(shares))
    assert 0.1 <= entry["value"] <= 1 and entry["higher_is_better"] is None
    assert entry["ci95"][0] <= entry["value"] <= entry["ci95"][1]
    assert "pp_auc" in result["metrics"]
    board = leaderboard(tmp_path / "runs")
    assert board.loc[0, "top_decile_share"] == pytest.approx(entry["value"])


def test_cli_lists_the_metric(installed_metric):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed_metric), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "fastrm_bench.cli", "list", "metrics"], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert re.search(r"^top-decile-share\s+Share of the sample map's mass", out, re.M), out
    assert re.search(r"^insertion\s+", out, re.M)

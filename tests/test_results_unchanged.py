"""The committed results stay true: 20 samples of committed runs, recomputed by today's code, equal them.

Per sample: the answer, its score, the perturbation curves, threshold counts against Chefer labels
(fastrm), localisation and entropy, and the stored sample map. `fastrm` exercises generation with
hidden states, the proxy, exact Chefer labels and perturbation; `gradcam` the vision-side hooks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fastrm_bench.builders import create_method, create_task
from fastrm_bench.maps_io import load_sample_maps
from fastrm_bench.models.zoo import load_model
from fastrm_bench.runner import Evaluator, RunConfig, create_metrics

RUNS = Path(__file__).resolve().parent.parent / "results" / "runs"
#: samples recomputed per run, and the relative tolerance of continuous values: float32 sums are evaluated in
#: another order than when the results were made; Grad-CAM's signed channel sums cancel, which amplifies that
CASES = {"vqav2/fastrm": (20, 1e-5), "pope/gradcam": (5, 1e-3)}


@pytest.fixture(scope="module")
def embedded():
    return load_model("tiny-llava-shapes", device="cpu")


@pytest.mark.parametrize("run", sorted(CASES))
def test_committed_samples_are_recomputed_equal(run, embedded):
    n, rel = CASES[run]
    run_dir = RUNS / run
    config = json.loads((run_dir / "config.json").read_text())
    committed = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()[:n]]
    committed_maps = load_sample_maps(run_dir / "maps.npz")
    cfg = RunConfig.from_dict(config["run"])  # the metrics the committed run measured
    task, _ = create_task(config["task_spec"]["name"])  # the default embedded world, built as the run built it
    records = {r.id: r for r in task.select(cfg.limit, cfg.seed)}
    method, _ = create_method(config["method_spec"]["name"])
    evaluate = Evaluator(cfg, embedded, task, method, create_metrics(cfg.metrics))
    for old in committed:
        new, smap, _ = evaluate(task.sample(records[old["id"]]))
        assert new["prediction"] == old["prediction"] and new["score"] == old["score"], old["id"]
        assert new["curves"] == old["curves"], old["id"]
        assert new.get("threshold_counts") == old.get("threshold_counts"), old["id"]
        for key in ("entropy", "relevance_mass", "pointing_game", "object_patch_share"):
            if key in old:
                assert new[key] == pytest.approx(old[key], rel=rel, abs=1e-7), (old["id"], key)
        np.testing.assert_allclose(smap.reshape(-1), committed_maps[old["id"]], rtol=max(rel, 1e-4), atol=1e-6)

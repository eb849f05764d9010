"""The committed results stay true: samples of committed runs, recomputed by today's code, equal them.

Per sample, every field a metric wrote (answer and score, deletion/NP and insertion curves, the
log-probability curves, threshold counts, localisation, entropy, the generated tokens), the stored
sample map and the per-token maps; only measurements of the moment (times, peak memory) are left out.
`fastrm` exercises lean generation, the proxy, exact Chefer labels and perturbation; `tam` and
`dex-ar-sentence` the methods beyond the paper; `gradcam` the vision-side hooks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fastrm_bench.builders import create_method, create_task
from fastrm_bench.maps_io import load_sample_maps, load_token_maps
from fastrm_bench.models.zoo import load_model
from fastrm_bench.runner import Evaluator, RunConfig, create_metrics

RUNS = Path(__file__).resolve().parent.parent / "results" / "runs"
#: samples recomputed per run, and the relative tolerance of continuous values: float32 sums are evaluated in
#: another order than when the results were made; Grad-CAM's signed channel sums cancel, which amplifies that
CASES = {"vqav2/fastrm": (20, 1e-5), "vqav2/tam": (10, 1e-5), "gqa/dex-ar-sentence": (5, 1e-4), "pope/gradcam": (5, 1e-3)}
#: measurements of the moment, not results
MOMENT = {"map_seconds", "generation_seconds", "peak_memory_bytes"}


def assert_same(new, old, rel: float, where: str) -> None:
    """Equal structure; floats equal within ``rel`` (and 1e-6 absolute, for values near zero)."""
    if isinstance(old, dict):
        assert isinstance(new, dict) and set(new) == set(old), (where, sorted(set(new) ^ set(old)))
        for key in old:
            assert_same(new[key], old[key], rel, f"{where}.{key}")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(new) == len(old), where
        for i, (a, b) in enumerate(zip(new, old)):
            assert_same(a, b, rel, f"{where}[{i}]")
    elif isinstance(old, float):
        assert new == pytest.approx(old, rel=rel, abs=1e-6, nan_ok=True), where
    else:
        assert new == old, where


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
    committed_tokens = load_token_maps(run_dir)
    cfg = RunConfig.from_dict(config["run"])  # the metrics the committed run measured
    task, _ = create_task(config["task_spec"]["name"])  # the default embedded world, built as the run built it
    records = {r.id: r for r in task.select(cfg.limit, cfg.seed)}
    method, _ = create_method(config["method_spec"]["name"])
    evaluate = Evaluator(cfg, embedded, task, method, create_metrics(cfg.metrics))
    for old in committed:
        new, smap, token_maps = evaluate(task.sample(records[old["id"]]))
        keep = {k: v for k, v in old.items() if k not in MOMENT}
        assert_same({k: v for k, v in new.items() if k not in MOMENT}, keep, rel, old["id"])
        np.testing.assert_allclose(smap.reshape(-1), committed_maps[old["id"]], rtol=max(rel, 1e-4), atol=1e-6)
        stored = np.asarray(committed_tokens[old["id"]])
        np.testing.assert_allclose(np.asarray(token_maps).reshape(stored.shape), stored,
                                   rtol=max(rel, 1e-4), atol=1e-6)

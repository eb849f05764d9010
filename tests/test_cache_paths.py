"""Runs name their data by a path that holds on another machine: inside the cache as ``$FASTRM_BENCH_CACHE/...``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fastrm_bench.cache import portable_path, resolve_portable
from fastrm_bench.rundir import read_run
from fastrm_bench.runner import RunConfig, run

RESULTS = Path(__file__).resolve().parent.parent / "results"


def test_paths_inside_the_cache_round_trip_and_others_stay_absolute(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTRM_BENCH_CACHE", str(tmp_path / "cache"))
    inside = tmp_path / "cache" / "data" / "shapes"
    assert portable_path(inside) == "$FASTRM_BENCH_CACHE/data/shapes"
    assert resolve_portable("$FASTRM_BENCH_CACHE/data/shapes") == inside
    elsewhere = tmp_path / "mine" / "coco"
    assert portable_path(elsewhere) == str(elsewhere.resolve()) and resolve_portable(str(elsewhere)) == elsewhere
    monkeypatch.setenv("FASTRM_BENCH_CACHE", str(tmp_path / "other"))
    assert resolve_portable("$FASTRM_BENCH_CACHE/data/shapes") == tmp_path / "other" / "data" / "shapes"


def test_a_run_on_data_in_the_cache_resumes_from_another_cache(world_root, tiny_llava_dir, tmp_path, monkeypatch):
    """Recorded as the cache's folder, the run is the same run when the cache moves: a resume finds it finished."""
    first, second = tmp_path / "cache-a", tmp_path / "cache-b"
    shutil.copytree(world_root, first / "data" / "shapes")
    shutil.copytree(world_root, second / "data" / "shapes")
    out = tmp_path / "run"

    def config(cache: Path) -> RunConfig:
        return RunConfig(method="random", task="pope", model=str(tiny_llava_dir), limit=2, output_dir=str(out),
                         data_root=str(cache / "data" / "shapes"), max_new_tokens=2, device="cpu", fractions=[0.0, 0.5])

    monkeypatch.setenv("FASTRM_BENCH_CACHE", str(first))
    run(config(first), log=lambda *_: None)
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["data_root"] == recorded["run"]["data_root"] == "$FASTRM_BENCH_CACHE/data/shapes"
    assert recorded["task_spec"]["path"] == "tasks/pope.yaml"  # named inside the spec folder, not by this machine's path
    monkeypatch.setenv("FASTRM_BENCH_CACHE", str(second))
    assert read_run(out).data_root == str(second / "data" / "shapes")
    said: list[str] = []
    result = run(config(second), resume=True, log=said.append)
    assert result["n"] == 2 and json.loads((out / "config.json").read_text())["fingerprint"] == recorded["fingerprint"]


def test_committed_runs_name_no_machine_s_cache():
    for path in RESULTS.rglob("*.json"):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("data_root"), str):
            assert not Path(data["data_root"]).is_absolute(), (path, data["data_root"])
        for kind in ("task_spec", "method_spec"):
            if isinstance(data, dict) and isinstance(data.get(kind), dict) and data[kind].get("path"):
                assert not Path(data[kind]["path"]).is_absolute(), (path, data[kind]["path"])


def _strings(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def test_committed_run_configs_name_no_absolute_path_at_all():
    """Spec parameters too (an ablation's proxy folder): a record names paths as its command named them."""
    for path in RESULTS.rglob("config.json"):
        absolute = [s for s in _strings(json.loads(path.read_text())) if s.startswith("/")]
        assert not absolute, (path, absolute)

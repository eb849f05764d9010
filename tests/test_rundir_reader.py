"""Reading run directories: one reader (`fastrm_bench.rundir`) for the report, explorer, leaderboard, explain and
summarise, which names the damaged file instead of failing with a decoder's error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fastrm_bench.maps_io import save_sample_maps, save_token_maps
from fastrm_bench.rundir import RunDirError, find_runs, read_config, read_records, read_run, unfinished_runs

CONFIG = {"method_spec": {"name": "fastrm", "implementation": "fastrm", "params": {}},
          "task_spec": {"name": "pope-random", "implementation": "pope", "params": {}},
          "model": "/models/tiny-llava-shapes", "model_weights_sha256": "a" * 64, "data_source": "shapes",
          "data_root": "/data/shapes", "run": {"seed": 3, "aggregation": "max", "fractions": [0.0, 0.5, 1.0]}}


def _write_run(folder: Path, ids: list[str], finished: bool = True) -> Path:
    """A run directory as the runner writes it: config, one line per sample, and (finished) results and maps."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(CONFIG))
    (folder / "samples.jsonl").write_text("".join(json.dumps({"id": i, "score": 1.0}) + "\n" for i in ids))
    if finished:
        (folder / "results.json").write_text(json.dumps({"n": len(ids), "metrics": {"pp_auc": {"value": 0.25}}}))
        save_sample_maps(folder / "maps.npz", ids, [np.full(4, k, np.float32) for k in range(len(ids))])
        save_token_maps(folder / "token_maps.npz", ids, [np.full((2, 4), k, np.float32) for k in range(len(ids))])
    return folder


def test_a_finished_run_is_read_with_its_config_results_records_and_maps(tmp_path):
    run = read_run(_write_run(tmp_path / "runs" / "a", ["q3", "q1", "q2"]))
    assert (run.method, run.task, run.task_implementation) == ("fastrm", "pope-random", "pope")
    assert (run.model, run.model_ref, run.weights_sha256) == ("tiny-llava-shapes", "/models/tiny-llava-shapes", "a" * 64)
    assert (run.data_source, run.data_root, run.seed, run.aggregation) == ("shapes", "/data/shapes", 3, "max")
    assert run.n == 3 and run.metric("pp_auc") == 0.25 and run.metric("np_auc") is None
    assert run.fractions == [0.0, 0.5, 1.0] and not run.is_ablation
    assert [r["id"] for r in run.records()] == ["q3", "q1", "q2"]  # the file's order, not sorted
    assert run.has_sample_maps and run.has_token_maps
    assert list(run.sample_maps()) == ["q3", "q1", "q2"] and run.sample_maps()["q2"].tolist() == [2.0] * 4
    assert run.token_maps()["q1"].shape == (2, 4)


def test_records_keep_the_file_order_skip_blank_lines_and_name_a_torn_line(tmp_path):
    folder = _write_run(tmp_path / "run", ["b", "a"])
    with (folder / "samples.jsonl").open("a") as fh:
        fh.write("\n" + json.dumps({"id": "c"}) + "\n")
    assert [r["id"] for r in read_records(folder)] == ["b", "a", "c"]
    with (folder / "samples.jsonl").open("a") as fh:
        fh.write('{"id": "d", "pred')
    with pytest.raises(RunDirError, match=rf"{folder / 'samples.jsonl'}:5 is not a complete JSON line"):
        read_run(folder).records()


@pytest.mark.parametrize(("name", "text", "message"), [
    ("results.json", '{"n": 3, "metr', "results.json cannot be read"),
    ("results.json", "[1, 2]", "results.json is not a JSON object"),
    ("results.json", '{"metrics": {}}', "results.json lacks n"),
    ("config.json", json.dumps({**CONFIG, "method_spec": {}}), "config.json lacks method_spec.name"),
])
def test_a_damaged_or_incomplete_file_is_an_error_naming_it(tmp_path, name, text, message):
    folder = _write_run(tmp_path / "run", ["a"])
    (folder / name).write_text(text)
    with pytest.raises(RunDirError, match=f"{folder}/{message}"):
        read_run(folder)


def test_a_missing_config_is_named_and_summarise_reads_no_results(tmp_path):
    folder = _write_run(tmp_path / "run", ["a"])
    (folder / "results.json").write_text("damaged")  # re-aggregation rewrites it: reading the config must not need it
    assert read_config(folder)["task_spec"]["name"] == "pope-random"
    (folder / "config.json").unlink()
    with pytest.raises(RunDirError, match=f"{folder / 'config.json'} cannot be read"):
        read_config(folder)


def test_finished_and_unfinished_runs_are_found_apart_with_the_samples_so_far(tmp_path):
    root = tmp_path / "runs"
    _write_run(root / "b", ["1", "2"])
    _write_run(root / "a", ["1"])
    _write_run(root / "stopped", ["1", "2", "3"], finished=False)
    _write_run(root / "stopped" / "shards" / "rank1-of-2", ["4"], finished=False)  # part of its run
    _write_run(root / "fresh", [], finished=False)
    (root / "fresh" / "samples.jsonl").unlink()
    (root / "no-config").mkdir()
    (root / "no-config" / "results.json").write_text("{}")
    assert find_runs(root) == [root / "a", root / "b"]
    assert unfinished_runs(root) == [(root / "fresh", 0), (root / "stopped", 3)]

"""Runs of several processes (torchrun ranks on CPU, gloo) write the run directory of one process.

Each rank answers its share of the samples into its own shard; the main process merges them in the
task's order. The merged samples.jsonl, maps.npz, token_maps.npz and results.json equal a
one-process run's except timings; a rank killed mid-run and a resume (with the same or another
number of processes) end in the same files.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastrm_bench.maps_io import load_token_maps
from fastrm_bench.parallel import Ranks, as_argv
from fastrm_bench.rundir import TEST_HOOK_ENV, TEST_HOOK_RANK_ENV
from fastrm_bench.runner import Evaluator, RunInterrupted, run
from fastrm_bench.specs import SPEC_PATH_ENV
from tests.test_reliability import (
    _specs,
    assert_same_run,
    cli_args,
    cli_process,
    comparable_outputs,
    config,
    quiet,
    spec_dir,
    subprocess_env,
)

__all__ = ["_specs", "spec_dir"]  # fixtures shared with the fault-injection tests

LIMIT = 5  # shares of 3 and 2 samples
METHOD = "fastrm-tiny"
#: these tests check that shards merge into the one-process run bit for bit; SDPA's CPU kernels round differently
#: with a rank's thread count (torchrun gives each rank one thread) and process, eager attention does not
ATTENTION = "eager"


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, world_root, tiny_llava_dir, spec_dir):
    out = tmp_path_factory.mktemp("one") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SPEC_PATH_ENV, str(spec_dir))
        run(config(world_root, tiny_llava_dir, out, METHOD, limit=LIMIT, attn_implementation=ATTENTION), log=quiet)
    return out


def launched(world_root, tiny_llava_dir, out, processes: int, *extra: str, **env: str) -> subprocess.CompletedProcess:
    args = [*cli_args(world_root, tiny_llava_dir, out, METHOD), "--attn-implementation", ATTENTION]
    args[args.index("--limit") + 1] = str(LIMIT)
    return subprocess.run(cli_process([*args, "--num-processes", str(processes), *extra]), env=subprocess_env(**env),
                          capture_output=True, text=True, timeout=600)


def assert_same_files(a, b) -> None:
    assert_same_run(a, b)
    ta, tb = load_token_maps(a), load_token_maps(b)
    assert list(ta) == list(tb)
    for key in ta:
        np.testing.assert_array_equal(ta[key], tb[key])
    assert not (a / "shards").exists()


def test_two_processes_write_the_run_of_one(world_root, tiny_llava_dir, tmp_path, one_process):
    out = tmp_path / "run"
    proc = launched(world_root, tiny_llava_dir, out, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 2/2" in proc.stderr  # each rank shows its own progress
    assert_same_files(out, one_process)


@pytest.mark.slow
def test_accelerate_launch_writes_the_run_of_one(world_root, tiny_llava_dir, tmp_path, one_process):
    """The README's ``accelerate launch --multi_gpu --num_processes 2 -m fastrm_bench run ...`` (on CPU: gloo)."""
    args = [*cli_args(world_root, tiny_llava_dir, tmp_path / "run", METHOD), "--attn-implementation", ATTENTION]
    args[args.index("--limit") + 1] = str(LIMIT)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "fastrm_bench", *args]
    proc = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(f"({LIMIT} samples") == 1  # the main process alone reports
    assert_same_files(tmp_path / "run", one_process)


def killed_rank(world_root, tiny_llava_dir, out) -> None:
    """Rank 1 dies at its second sample; torchrun stops rank 0 (wherever it is): an unfinished run."""
    proc = launched(world_root, tiny_llava_dir, out, 2, **{TEST_HOOK_ENV: "map@2:KILL", TEST_HOOK_RANK_ENV: "1"})
    assert proc.returncode != 0 and not (out / "results.json").exists(), proc.stderr[-3000:]
    assert (out / "shards" / "rank1-of-2" / "samples.jsonl").read_text().count("\n") == 1  # its first sample is kept


@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_a_killed_rank_then_resume_gives_the_same_run(processes, world_root, tiny_llava_dir, tmp_path, one_process):
    out = tmp_path / "run"
    killed_rank(world_root, tiny_llava_dir, out)
    if processes == 1:
        run(config(world_root, tiny_llava_dir, out, METHOD, limit=LIMIT, attn_implementation=ATTENTION), resume=True, log=quiet)
    else:
        proc = launched(world_root, tiny_llava_dir, out, processes, "--resume")
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_files(out, one_process)


def test_shares_cover_every_item_once():
    items = list(range(7))
    shares = [Ranks(i, 3).share(items) for i in range(3)]
    assert sorted(sum(shares, [])) == items and [len(s) for s in shares] == [3, 2, 2]


def test_options_are_written_back_as_arguments():
    from enum import Enum

    class Kind(Enum):
        a = "a-value"

    argv = as_argv("run", {"method": "chefer", "limit": 3, "metric": ["perturbation", "entropy"], "resume": True,
                           "overwrite": False, "device": None, "on_error": Kind.a, "num_processes": 2},
                   leave_out=("num_processes",))
    assert argv == ["run", "--method", "chefer", "--limit", "3", "--metric", "perturbation", "--metric", "entropy",
                    "--resume", "--no-overwrite", "--on-error", "a-value"]


def test_distill_on_two_ranks_writes_the_dataset_and_proxy_of_one(world_root, tiny_llava_dir, tmp_path):
    """Byte for byte, at one thread per process (the launcher's default on 2 cores): the number of threads, not of
    ranks, changes the order of float sums in training."""

    def distill(name: str, processes: int) -> Path:
        args = ["distill", "--model", str(tiny_llava_dir), "--data-root", str(world_root), "--split", "val",
                "--questions", "4", "--shard-size", "2", "--steps", "20", "--batch-size", "8",
                "--data-dir", str(tmp_path / name / "data"), "--out", str(tmp_path / name / "proxy"),
                "--num-processes", str(processes)]
        proc = subprocess.run(cli_process(args), env=subprocess_env(OMP_NUM_THREADS="1"), capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return tmp_path / name

    one, two = distill("one", 1), distill("two", 2)
    shards = sorted(p.name for p in (one / "data").glob("shard_*.safetensors"))
    assert len(shards) == 2 and shards == sorted(p.name for p in (two / "data").glob("shard_*.safetensors"))
    for name in [*shards, "dataset.json"]:
        assert (one / "data" / name).read_bytes() == (two / "data" / name).read_bytes(), name
    assert (one / "proxy" / "model.safetensors").read_bytes() == (two / "proxy" / "model.safetensors").read_bytes()


def _close(x, y) -> bool:
    """Equal JSON values, numbers up to float rounding."""
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(_close(x[k], y[k]) for k in x)
    if isinstance(x, list):
        return isinstance(y, list) and len(x) == len(y) and all(_close(u, v) for u, v in zip(x, y))
    if isinstance(x, float) and isinstance(y, (int, float)):
        return y == pytest.approx(x, rel=1e-4, abs=1e-6)
    return x == y


def assert_close_runs(a: Path, b: Path) -> None:
    """The same run up to float rounding: equal answers, scores, curves and counts; close floats and maps."""
    ra, rb = comparable_outputs(a), comparable_outputs(b)
    assert ra[3] == rb[3]  # the same samples, in the same order
    assert _close(ra[1], rb[1])  # results.json
    for x, y in zip(ra[0], rb[0]):
        assert x.keys() == y.keys()
        for key in x:
            assert _close(x[key], y[key]), (x["id"], key, x[key], y[key])
    np.testing.assert_allclose(ra[2], rb[2], rtol=1e-4, atol=1e-6)
    ta, tb = load_token_maps(a), load_token_maps(b)
    assert list(ta) == list(tb)
    for key in ta:
        np.testing.assert_allclose(ta[key], tb[key], rtol=1e-4, atol=1e-6)


def test_batches_of_samples_give_the_run_of_one_at_a_time(world_root, tiny_llava_dir, tmp_path, one_process):
    """``--batch-size 3``: answers left-padded together, removals packed; only float rounding may differ."""
    out = tmp_path / "run"
    run(config(world_root, tiny_llava_dir, out, METHOD, limit=LIMIT, attn_implementation=ATTENTION, batch_size=3), log=quiet)
    assert_close_runs(out, one_process)


def test_an_interrupted_run_resumes_with_another_batch_size(world_root, tiny_llava_dir, tmp_path, one_process, monkeypatch):
    out = tmp_path / "run"
    real, calls = Evaluator.evaluate, []

    def stop_at_the_second_batch(self, samples):
        calls.append(len(samples))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, samples)

    monkeypatch.setattr(Evaluator, "evaluate", stop_at_the_second_batch)
    with pytest.raises(RunInterrupted):
        run(config(world_root, tiny_llava_dir, out, METHOD, limit=LIMIT, attn_implementation=ATTENTION), log=quiet)
    monkeypatch.setattr(Evaluator, "evaluate", real)
    assert (out / "samples.jsonl").read_text().count("\n") == 1
    run(config(world_root, tiny_llava_dir, out, METHOD, limit=LIMIT, attn_implementation=ATTENTION, batch_size=3),
        resume=True, log=quiet)
    assert_close_runs(out, one_process)


def test_batch_size_must_be_positive(world_root, tiny_llava_dir, tmp_path):
    with pytest.raises(ValueError, match="--batch-size must be at least 1, got 0"):
        run(config(world_root, tiny_llava_dir, tmp_path / "run", METHOD, batch_size=0, attn_implementation=ATTENTION), log=quiet)
    assert not (tmp_path / "run").exists()

"""Scale: run throughput at batch size 1 vs 8 and on 1 vs 2 processes, and chefer's peak memory against the reference's.

Run: ``python -m pytest benchmarks/test_bench_scale.py -m benchmark --benchmark-only -s``. Each prints
its ratios; nothing asserts a speed. Throughput is the wall time of the whole command (model
loading and the merge included) for the same samples, so it is what a user waits for.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.benchmark
SAMPLES = int(os.environ.get("FASTRM_BENCH_SCALE_SAMPLES", "120"))
REPEATS = int(os.environ.get("FASTRM_BENCH_SCALE_REPEATS", "3"))


def _run(out: Path, processes: int = 1, batch_size: int = 1) -> float:
    command = [sys.executable, "-m", "fastrm_bench", "run", "--method", "fastrm", "--task", "vqav2", "--limit", str(SAMPLES),
               "--output-dir", str(out), "--num-processes", str(processes),
               "--batch-size", str(batch_size)]  # every default metric, as users run it
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def test_run_throughput_one_vs_two_processes(benchmark, tmp_path):
    def both() -> dict[str, float]:
        one, two = _run(tmp_path / "one", 1), _run(tmp_path / "two", 2)
        return {"one_process_s": one, "two_processes_s": two, "speedup": one / two}

    result = benchmark.pedantic(both, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print(f"\nrun --method fastrm, {SAMPLES} samples: 1 process {result['one_process_s']:.1f} s "
          f"({SAMPLES / result['one_process_s']:.2f} samples/s), 2 processes {result['two_processes_s']:.1f} s "
          f"({SAMPLES / result['two_processes_s']:.2f} samples/s): x{result['speedup']:.2f}")


def test_run_throughput_batch_size_one_vs_eight(benchmark, tmp_path):
    """Interleaved repeats (1, 8, 1, 8, ...): the spread of identical runs is printed beside the ratio."""
    def runs() -> dict[str, list[float]]:
        times: dict[str, list[float]] = {"1": [], "8": []}
        for repeat in range(REPEATS):
            for size in ("1", "8"):
                times[size].append(_run(tmp_path / f"b{size}-{repeat}", batch_size=int(size)))
        return times

    times = benchmark.pedantic(runs, rounds=1, iterations=1)
    one, eight = statistics.median(times["1"]), statistics.median(times["8"])
    benchmark.extra_info.update({"batch_1_s": times["1"], "batch_8_s": times["8"], "speedup": one / eight})
    print(f"\nrun --method fastrm, {SAMPLES} samples, {REPEATS} runs each: --batch-size 1 "
          f"{', '.join(f'{t:.1f}' for t in times['1'])} s, --batch-size 8 {', '.join(f'{t:.1f}' for t in times['8'])} s; "
          f"medians {one:.1f} / {eight:.1f} s ({SAMPLES / one:.2f} / {SAMPLES / eight:.2f} samples/s): x{one / eight:.2f}")


def test_chefer_peak_memory_against_the_reference(benchmark):
    """`fastrm-bench profile` points (fresh process each): chefer against the reference: peaks and times."""
    from fastrm_bench.profile import profile

    frame = benchmark.pedantic(profile, args=(["chefer", "chefer-reference"], [32, 100]), kwargs={"repeats": 3},
                               rounds=1, iterations=1)
    table = frame.pivot_table(index="tokens", columns="method", values=["map_seconds", "peak_memory_mb"])
    print("\n" + table.to_string())
    for tokens in (32, 100):
        memory = table.loc[tokens, ("peak_memory_mb", "chefer")] / table.loc[tokens, ("peak_memory_mb", "chefer-reference")]
        speed = table.loc[tokens, ("map_seconds", "chefer-reference")] / table.loc[tokens, ("map_seconds", "chefer")]
        benchmark.extra_info[f"memory_ratio_{tokens}"] = memory
        benchmark.extra_info[f"speedup_{tokens}"] = speed
        print(f"{tokens} tokens: chefer peak / reference peak {memory:.2f}, reference time / chefer time {speed:.2f}")

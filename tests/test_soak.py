"""The soak summary reads memory, time and directory growth off a watched run."""

from __future__ import annotations

import pytest

from fastrm_bench.soak import soak, summarise


def _observations(rss_per_sample: float, bytes_per_sample: float, seconds_per_sample: float) -> list[dict[str, float]]:
    return [{"seconds": 5.0 + seconds_per_sample * n, "samples": n, "rss_bytes": 500 * 2**20 + rss_per_sample * n,
             "dir_bytes": 1000 + bytes_per_sample * n} for n in range(0, 1001, 10)]


def test_summary_of_a_flat_run_and_of_a_leaking_one():
    flat = summarise(_observations(0.0, 400.0, 0.2))
    assert flat["samples"] == 1000 and flat["rss_slope_mib_per_1000_samples"] == pytest.approx(0.0, abs=1e-9)
    assert flat["dir_bytes_per_sample"] == pytest.approx(400.0)
    assert flat["dir_largest_deviation_from_line_bytes"] == pytest.approx(0.0, abs=1e-6)
    assert flat["seconds_per_sample_first_quarter"] == pytest.approx(0.2)
    assert flat["seconds_per_sample_last_quarter"] == pytest.approx(0.2)
    leaking = summarise(_observations(2**20 / 100, 400.0, 0.2))  # 1 MiB every 100 samples
    assert leaking["rss_slope_mib_per_1000_samples"] == pytest.approx(10.0)


@pytest.mark.slow
def test_a_long_run_holds_flat_memory(tmp_path):
    """300 POPE questions answered and explained by FastRM: after the warm-up, resident memory grows by less than
    20 MiB per 1,000 samples and the run directory grows linearly."""
    summary = summarise(soak("fastrm", "pope", 300, tmp_path / "run", interval=0.5))
    assert summary["samples"] == 300
    assert summary["rss_slope_mib_per_1000_samples"] < 20
    assert summary["dir_largest_deviation_from_line_bytes"] < 0.05 * summary["dir_bytes_final"]

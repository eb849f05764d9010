"""A long run watched from outside: does memory stay flat, time per sample constant, the run directory linear?

`soak` starts ``fastrm-bench run`` in a child process and samples, every ``interval`` seconds, the child's
resident memory (``/proc/PID/status`` VmRSS), the samples written so far (lines of ``samples.jsonl``) and the
run directory's size. `summarise` fits straight lines after the warm-up: resident memory against samples
(MiB per 1,000 samples), seconds per sample in the first and the last quarter, bytes per sample of the
directory and how far the directory strays from its line. Linux only (``/proc``).

    python -m fastrm_bench.soak --method fastrm --task pope --limit 5000 --out results/soak
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _samples_written(run_dir: Path) -> int:
    path = run_dir / "samples.jsonl"
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(1 for line in f if line.endswith(b"\n"))


def _dir_bytes(run_dir: Path) -> int:
    return sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file()) if run_dir.exists() else 0


def soak(method: str, task: str, limit: int, run_dir: Path, interval: float = 2.0, extra: list[str] | None = None
         ) -> list[dict[str, float]]:
    """Run ``fastrm-bench run`` to the end, sampling it; returns one dict per observation (time, samples, rss, dir)."""
    command = [sys.executable, "-m", "fastrm_bench", "run", "--method", method, "--task", task, "--limit", str(limit),
               "--output-dir", str(run_dir), *(extra or [])]
    start = time.monotonic()
    log = run_dir.parent / f"{run_dir.name}.log"  # a file, not a pipe: a full pipe would stall the run's progress bar
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    observations = []
    with log.open("w") as stderr:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        while child.poll() is None:
            rss = _rss_bytes(child.pid)
            if rss is not None:
                observations.append({"seconds": time.monotonic() - start, "samples": _samples_written(run_dir),
                                     "rss_bytes": rss, "dir_bytes": _dir_bytes(run_dir)})
            time.sleep(interval)
    if child.returncode != 0:
        raise RuntimeError(f"the soaked run failed ({child.returncode}): {log.read_text().strip()[-2000:]}")
    return observations


def summarise(observations: list[dict[str, float]], warmup_fraction: float = 0.1) -> dict[str, Any]:
    """Slopes after the warm-up (the first ``warmup_fraction`` of the samples): memory, time, directory size.

    Each sample count is taken at its first observation: once the last sample is written the run aggregates and
    packs its maps, which is neither per-sample time nor per-sample growth (``final_*`` report that phase).
    """
    seen: set[float] = set()
    points = [o for o in observations if o["samples"] > 0 and not (o["samples"] in seen or seen.add(o["samples"]))]
    total = max(o["samples"] for o in points)
    after = [o for o in points if o["samples"] >= warmup_fraction * total]
    samples = np.array([o["samples"] for o in after], dtype=float)
    rss = np.array([o["rss_bytes"] for o in after], dtype=float) / 2**20
    size = np.array([o["dir_bytes"] for o in after], dtype=float)
    rss_slope = float(np.polyfit(samples, rss, 1)[0]) * 1000 if len(set(samples)) > 1 else float("nan")
    size_fit = np.polyfit(samples, size, 1) if len(set(samples)) > 1 else np.array([float("nan"), 0.0])
    residual = size - np.polyval(size_fit, samples)

    def seconds_per_sample(lo: float, hi: float) -> float:
        chunk = [o for o in points if lo * total <= o["samples"] <= hi * total]
        if len(chunk) < 2 or chunk[-1]["samples"] == chunk[0]["samples"]:
            return float("nan")
        return (chunk[-1]["seconds"] - chunk[0]["seconds"]) / (chunk[-1]["samples"] - chunk[0]["samples"])

    return {"samples": int(total), "observations": len(points), "warmup_samples": int(warmup_fraction * total),
            "rss_mib_after_warmup": [float(rss.min()), float(rss.max())],
            "rss_slope_mib_per_1000_samples": rss_slope,
            "seconds_per_sample_first_quarter": seconds_per_sample(warmup_fraction, 0.25 + warmup_fraction),
            "seconds_per_sample_last_quarter": seconds_per_sample(0.75, 1.0),
            "dir_bytes_per_sample": float(size_fit[0]), "dir_bytes_final": int(size[-1]) if len(size) else 0,
            "dir_largest_deviation_from_line_bytes": float(np.abs(residual).max()) if len(residual) else 0.0,
            "final_seconds_after_last_sample": float(observations[-1]["seconds"] - points[-1]["seconds"]),
            "final_rss_mib_max": float(max(o["rss_bytes"] for o in observations) / 2**20),
            "final_dir_bytes": int(observations[-1]["dir_bytes"])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="fastrm")
    parser.add_argument("--task", default="pope")
    parser.add_argument("--limit", type=int, default=5000)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=Path("results/soak"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:  # the run itself is not kept: its summary is the result
        observations = soak(args.method, args.task, args.limit, Path(tmp) / "run", args.interval)
    summary = {"command": f"fastrm-bench run --method {args.method} --task {args.task} --limit {args.limit}",
               **summarise(observations)}
    (args.out / "soak.json").write_text(json.dumps({"summary": summary, "observations": observations}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

"""What a map costs: seconds to produce the maps, seconds to generate the answer, peak memory."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastrm_bench.metrics.base import Metric, RunSettings, SampleContext


class Cost(Metric):
    """Map and generation seconds per sample (means), and the map's peak memory where measured."""

    name = "cost"
    higher_is_better = {"map_seconds": False, "generation_seconds": False, "peak_memory_mb": False}
    columns = {"map_seconds": "map_seconds"}

    def update(self, context: SampleContext) -> dict[str, Any]:
        return {"map_seconds": context.explanation.seconds, "generation_seconds": context.generation_seconds,
                "peak_memory_bytes": context.explanation.peak_memory_bytes}

    def compute(self, records, settings: RunSettings) -> dict[str, float]:
        out = {}
        for key in ("map_seconds", "generation_seconds"):
            values = [r[key] for r in records if r.get(key) is not None]
            if values:
                out[key] = float(np.mean(values))
        peaks = [r["peak_memory_bytes"] for r in records if r.get("peak_memory_bytes") is not None]
        if peaks:
            out["peak_memory_mb"] = float(np.max(peaks)) / 2**20
        return out

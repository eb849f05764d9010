"""Paired differences between two runs on the same questions: PP AUC, NP AUC, relevance mass on objects.

    python docs/diagnostics/paired_difference.py RUN_A RUN_B [RUN_A2 RUN_B2 ...]

For each pair: A minus B over the samples both answered, with the seeded paired bootstrap the
report uses (`fastrm_bench.metrics.uncertainty.paired_difference`, seed of run A); relevance mass
over the correctly answered samples with a mask where both maps are defined.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from fastrm_bench.metrics.perturbation import curve_auc
from fastrm_bench.metrics.uncertainty import paired_difference


def per_sample(run: Path) -> tuple[dict[str, dict[str, float]], int]:
    results = json.loads((run / "results.json").read_text())
    fractions = results["curves"]["fractions"]
    out = {}
    for line in (run / "samples.jsonl").read_text().splitlines():
        s = json.loads(line)
        curves = s["curves"]
        values = {"PP AUC": curve_auc(fractions, curves["positive"]), "NP AUC": curve_auc(fractions, curves["negative"])}
        mass = s.get("relevance_mass")
        if mass is not None and s["score"] >= 1 and mass == mass:
            values["mass on objects"] = mass
        out[s["id"]] = values
    return out, results["config"]["seed"]


def main(paths: list[str]) -> None:
    for a_path, b_path in zip(paths[::2], paths[1::2]):
        (a, seed), (b, _) = per_sample(Path(a_path)), per_sample(Path(b_path))
        print(f"{a_path} minus {b_path}")
        for key in ("PP AUC", "NP AUC", "mass on objects"):
            shared = sorted(i for i in set(a) & set(b) if key in a[i] and key in b[i])
            d = paired_difference(np.array([a[i][key] for i in shared]), np.array([b[i][key] for i in shared]), seed=seed)
            mark = "" if d["significant"] else " (n.s.)"
            print(f"  {key}: {d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{mark}, n={len(shared)}")


if __name__ == "__main__":
    main(sys.argv[1:])

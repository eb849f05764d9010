"""Which teacher makes the best FastRM proxy? Proxies distilled from several methods with the same data and recipe.

For each teacher: the token dataset of the ablations (`fastrm-bench reproduce`: 4,000 VQAv2-style train
questions of the embedded world, seed 0) labelled by that teacher, a proxy trained with the shipped
proxy's recipe (`FastRM.from_pretrained(...).config.recipe`), then `fastrm-bench run --task vqav2
--limit 200` of the proxy (the threshold metric against its own teacher) and of the teacher itself
(for the report's Fig. 2), and the report of those runs. Resumable: finished datasets, proxies and
runs are kept. Prints the comparison table.
Usage (from the repository root):
    python docs/diagnostics/teacher_comparison.py [OUT] [TEACHERS]   (default: results/teachers chefer,tam,dex-ar)
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

#: the threshold metric spec that scores a proxy against each teacher's binarised maps
THRESHOLD_METRIC = {"chefer": "threshold", "tam": "threshold-tam", "dex-ar": "threshold-dex-ar"}
PROXY_METRICS = ["perturbation", "localisation", "entropy", "cost"]
TEACHER_METRICS = ["perturbation", "localisation", "cost"]
QUESTIONS, LIMIT, SEED = 4000, 200, 0


def main() -> None:
    from fastrm_bench.explainers.fastrm_method import SHIPPED
    from fastrm_bench.fastrm.distill import DatasetConfig, TrainConfig, build_dataset, train_proxy
    from fastrm_bench.fastrm.model import FastRM
    from fastrm_bench.models.zoo import load_model
    from fastrm_bench.report import make_report
    from fastrm_bench.runner import RunConfig, run
    from fastrm_bench.specs import add_spec_dir
    from fastrm_bench.world.build import cache_root

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "results/teachers")
    teachers = (sys.argv[2] if len(sys.argv) > 2 else "chefer,tam,dex-ar").split(",")
    recipe = TrainConfig(**FastRM.from_pretrained(SHIPPED["tiny-llava-shapes"]).config.recipe)
    weights = load_model("tiny-llava-shapes", device="cpu").weights_sha256[:12]
    specs = out / "specs" / "methods"
    specs.mkdir(parents=True, exist_ok=True)
    rows = []
    for teacher in teachers:
        proxy_dir = out / "proxies" / teacher
        if not (proxy_dir / "fastrm_config.json").exists():
            data_dir = cache_root() / "distill" / f"teachers-vqav2-train-q{QUESTIONS}-s{SEED}-{teacher}-{weights}"
            build_dataset(DatasetConfig(task="vqav2", split="train", questions=QUESTIONS, seed=SEED, teacher=teacher),
                          data_dir, workers=2)
            train_proxy(data_dir, proxy_dir, replace(recipe, seed=SEED), distilled_from="tiny-llava-shapes")
        name = f"fastrm-{teacher}-q{QUESTIONS}"
        (specs / f"{name}.yaml").write_text(json.dumps({
            "name": name, "implementation": "fastrm", "description": f"FastRM distilled from {teacher} ({QUESTIONS} questions)",
            "params": {"checkpoint": str(proxy_dir), "teacher": teacher}}))
        add_spec_dir(specs.parent)
        for method, metrics in ((name, [THRESHOLD_METRIC[teacher], *PROXY_METRICS]), (teacher, TEACHER_METRICS)):
            run_dir = out / "runs" / method
            cfg = RunConfig(method=method, task="vqav2", limit=LIMIT, seed=SEED, output_dir=str(run_dir), metrics=metrics)
            if not (run_dir / "results.json").exists():  # a finished run is kept as it is (specs may have changed since)
                run(cfg, resume=run_dir.exists())
        results = {r: json.loads((out / "runs" / r / "results.json").read_text())["metrics"] for r in (name, teacher)}
        proxy = FastRM.from_pretrained(proxy_dir).config.metrics

        def value(method: str, key: str, results=results) -> str:
            entry = results[method].get(key)
            if not entry or entry.get("value") is None:
                return "-"
            ci = entry.get("ci95")
            return f"{entry['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

        rows.append(f"| {teacher} | {proxy['train_tokens']:,} | {proxy['threshold_scores']['0.5']['f1']:.3f} | "
                    f"{value(name, 'threshold_f1')} | {value(name, 'pp_auc')} | {value(name, 'np_auc')} | "
                    f"{value(name, 'relevance_mass_correct')} | {value(teacher, 'pp_auc')} | {value(teacher, 'np_auc')} | "
                    f"{value(teacher, 'relevance_mass_correct')} |")
    make_report([out / "runs"], out / "report", f"python docs/diagnostics/teacher_comparison.py {out} {','.join(teachers)}")
    print("| teacher | train tokens | held-out F1@0.5 vs teacher | run F1@0.5 vs teacher [95% CI] | proxy PP AUC | "
          "proxy NP AUC | proxy mass on objects (correct) | teacher PP AUC | teacher NP AUC | teacher mass on objects |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

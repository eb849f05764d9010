"""How far the stale-row Chefer of the LLaVA interpretability app is from exact Chefer (README, methods).

For VQAv2-style val questions of the embedded world, answers forced to exactly N_TOKENS tokens
(`min_new_tokens`: the world's answers are one or two words, and the stale rows only matter from
the second token on), both maps of every token position t; per position the mean over answers of
the Spearman rank correlation between the two maps and of the largest difference relative to the
exact map's maximum.
Usage:
    python docs/diagnostics/chefer_stale_distance.py [MODEL] [N_QUESTIONS] [N_TOKENS]   (default: shipped model, 120, 4)
"""

import sys

import numpy as np
from scipy.stats import spearmanr

from fastrm_bench.builders import create_method, create_task
from fastrm_bench.models.zoo import load_model

adapter = load_model(sys.argv[1] if len(sys.argv) > 1 else "tiny-llava-shapes", device="cpu")
limit = int(sys.argv[2]) if len(sys.argv) > 2 else 120
n_tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 4
task, _ = create_task("vqav2")
exact_method, stale_method = create_method("chefer")[0], create_method("chefer-stale")[0]
rho: list[list[float]] = [[] for _ in range(n_tokens)]
error: list[list[float]] = [[] for _ in range(n_tokens)]
for sample in task.samples(limit=limit, seed=0):
    inputs = adapter.build_inputs([sample.image], [task.prompt(sample)])
    generation = adapter.generate(inputs, n_tokens, min_new_tokens=n_tokens)[0]
    exact = exact_method.explain(adapter, inputs, generation).maps.double().numpy()
    stale = stale_method.explain(adapter, inputs, generation).maps.double().numpy()
    for t in range(generation.num_generated):
        rho[t].append(float(spearmanr(exact[t], stale[t]).statistic))
        error[t].append(float(np.abs(exact[t] - stale[t]).max() / max(np.abs(exact[t]).max(), 1e-12)))
print(f"{len(rho[0])} answers of {n_tokens} tokens")
print("token  mean Spearman(chefer, chefer-stale)  min  mean max|diff|/max|chefer|  range")
for t in range(n_tokens):
    print(f"{t:5d}  {np.nanmean(rho[t]):.4f}  {np.nanmin(rho[t]):.4f}  {np.mean(error[t]):.2e}  "
          f"{np.min(error[t]):.1e}..{np.max(error[t]):.1e}")

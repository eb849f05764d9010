"""How long after a token is chosen its FastRM map is ready, in the live demo's code path (README, live demo).

For VQAv2-style val questions of the embedded world, `fastrm_bench.live.stream_fastrm` answers greedily and
hands over every answer token with its map; per token we record the time from the moment generation
hands the token over to the moment its map is computed (``token_to_map``), and to the moment the
overlay picture the demo shows is drawn as well (``token_to_overlay``, `fastrm_bench.explain.overlay`),
and the time between consecutive tokens (one decoding step) for scale. The first question is a warm-up
and is not counted. Prints the median, the 95th percentile and the maximum of each, in ms.
Usage:
    python docs/diagnostics/token_to_map.py [MODEL] [N_QUESTIONS] [THREADS]   (default: the shipped model, 100, 1)
"""

import sys
import time

import numpy as np
import torch

from fastrm_bench.builders import create_method, create_task
from fastrm_bench.explain import overlay
from fastrm_bench.live import StreamEnd, stream_fastrm
from fastrm_bench.models.zoo import load_model

torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
adapter = load_model(sys.argv[1] if len(sys.argv) > 1 else "tiny-llava-shapes", device="cpu")
limit = int(sys.argv[2]) if len(sys.argv) > 2 else 100
method = create_method("fastrm")[0]
method.prepare(adapter)
proxy = method.proxy_for(adapter)
task, _ = create_task("vqav2")
times: dict[str, list[float]] = {"token_to_map": [], "token_to_overlay": [], "between_tokens": []}
for i, sample in enumerate(task.samples(limit=limit + 1, seed=0)):
    inputs = adapter.build_inputs([sample.image], [task.prompt(sample)])
    previous = None
    for item in stream_fastrm(adapter, proxy, inputs):
        if isinstance(item, StreamEnd):
            break
        overlay(sample.image, inputs.layout, item.map.numpy(), (0.0, 1.0))
        drawn = time.perf_counter()
        if i == 0:
            continue
        times["token_to_map"].append((item.map_at - item.token_at) * 1000)
        times["token_to_overlay"].append((drawn - item.token_at) * 1000)
        if previous is not None:
            times["between_tokens"].append((item.token_at - previous) * 1000)
        previous = item.token_at
for key, values in times.items():
    v = np.array(values)
    print(f"{key:<18} n={len(v):<4} median {np.median(v):7.2f} ms   p95 {np.percentile(v, 95):7.2f} ms   max {v.max():7.2f} ms")

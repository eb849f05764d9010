"""Peak memory of FastRM generation: the lean path (a hook on the final norm) vs ``output_hidden_states=True``.

For each length N, generation is forced to exactly N new tokens and FastRM explains them all, as
`fastrm-bench profile` measures a point: the peak memory of generation + maps, each point in a fresh
process (on CPU the growth of the resident high-water mark, `fastrm_bench.profiling.PeakMemory`; on a
GPU ``max_memory_allocated``), median over REPEATS processes. Beside it, the exact bytes of hidden
states each path holds when generation ends (the hook's outputs, or transformers' tuple of every
layer's states of the prompt and of every step). The ratio is lean / output_hidden_states.
Usage:
    python docs/diagnostics/lean_generation_memory.py [MODEL] [REPEATS] [LENGTHS]   (default: shipped model, 5, 1,25,100)
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor

MODES = ("final_norm", "all_layers")


def held_hidden_bytes(model: str, n: int, mode: str) -> int:
    """Bytes of the hidden states the generation holds when it ends (prefill + every step)."""
    import torch

    from fastrm_bench.profile import _case

    adapter, inputs = _case(model, "cpu", 0)
    kept: list[torch.Tensor] = []
    original = adapter.model.generate

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        if kwargs.get("output_hidden_states"):
            kept.extend(h for step in out.hidden_states for h in step)
        return out

    adapter.model.generate = spy
    with adapter._final_norm_outputs(mode == "final_norm") as normed:  # a second hook beside generate's own: read only
        adapter.generate(inputs, n, min_new_tokens=n, return_hidden=True, hidden_from=mode)
    tensors = kept if mode == "all_layers" else normed
    return sum(t.numel() * t.element_size() for t in tensors)


def peak(model: str, n: int, mode: str, device: str | None) -> int | None:
    """Peak memory of generating ``n`` tokens with ``mode`` and explaining them with FastRM, in this process."""
    from fastrm_bench.explainers.fastrm_method import FastRMMethod
    from fastrm_bench.profile import _case
    from fastrm_bench.profiling import PeakMemory

    adapter, inputs = _case(model, device, 0)
    method = FastRMMethod()
    method.prepare(adapter)
    with PeakMemory(adapter.device) as memory:
        generation = adapter.generate(inputs, n, min_new_tokens=n, return_hidden=True, hidden_from=mode)[0]
        maps = method.explain(adapter, inputs, generation).maps
    assert maps.shape[0] == n
    return memory.peak_bytes


def fresh(fn, *args):
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "tiny-llava-shapes"
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    lengths = [int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "1,25,100").split(",")]
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"{model} on {device}, peak memory of generation + FastRM maps, median of {repeats} fresh processes")
    print("| tokens | lean peak (MiB) | output_hidden_states peak (MiB) | peak ratio lean / full | "
          "hidden states held, lean / full (KiB) | held ratio |")
    print("|---|---|---|---|---|---|")
    for n in lengths:
        peaks = {}
        for mode in MODES:
            runs = [fresh(peak, model, n, mode, device) for _ in range(repeats)]
            peaks[mode] = statistics.median(runs) / 2**20 if None not in runs else float("nan")
        held = {mode: held_hidden_bytes(model, n, mode) / 2**10 for mode in MODES}  # exact: no fresh process needed
        print(f"| {n} | {peaks['final_norm']:.2f} | {peaks['all_layers']:.2f} | "
              f"{peaks['final_norm'] / peaks['all_layers']:.3f} | {held['final_norm']:.1f} / {held['all_layers']:.1f} | "
              f"{held['final_norm'] / held['all_layers']:.3f} |", flush=True)


if __name__ == "__main__":
    main()

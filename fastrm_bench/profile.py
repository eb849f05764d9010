"""`fastrm-bench profile`: map latency and peak memory against the number of output tokens (paper Fig. 7).

For each length N, generation is forced to exactly N new tokens (EOS suppressed), then each
method explains all N tokens. Reported per (method, N): median seconds over repeats for the maps
and, apart, for generation; and the peak memory of the generation + explanation phase
(CUDA ``max_memory_allocated``; on CPU the growth of the resident high-water mark, measured in a
fresh process per point, after one warm-up answer to a probe question (`warm_up`): in a process that
already did similar work the allocator reuses freed
memory and the growth would read as ~0).

By default (`DEFAULT_METHODS`) the two gradient-free methods, `fastrm` and `tam`, are profiled side
by side with the gradient methods `chefer`, `chefer-reference`, `chefer-stale` and `dex-ar`. The
saved summary holds the paper's two numbers (`ratios`) for every pair of `SUMMARY_PAIRS` that was
profiled, e.g. ``fastrm_vs_chefer-reference`` and ``tam_vs_fastrm``.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from fastrm_bench.builders import create_method
from fastrm_bench.profiling import PeakMemory, in_fresh_process

DEFAULT_LENGTHS = (1, 5, 10, 25, 50, 100)
#: the methods profiled by default: the gradient-free ones side by side, then the gradient ones
DEFAULT_METHODS = ("fastrm", "tam", "chefer", "chefer-reference", "chefer-stale", "dex-ar")
#: (fast, slow) pairs whose `ratios` the summary records as ``"{fast}_vs_{slow}"`` when both were profiled
SUMMARY_PAIRS = (("fastrm", "chefer-reference"), ("chefer", "chefer-reference"), ("tam", "fastrm"))


def gradient_free(name: str) -> bool:
    """Whether the profiled method ``name`` needs no gradients (the latency figure draws those apart); a name no
    longer registered counts as a gradient method."""
    from fastrm_bench.builders import method_needs

    try:
        return not method_needs(name).gradients
    except (KeyError, ValueError):  # unknown name, or a spec file not at hand
        return False


def _case(model: str, device: str | None, seed: int, attn_implementation: str = "sdpa"):
    """The model and one fixed test-split question (the same for every method and length)."""
    from fastrm_bench.models.zoo import load_model
    from fastrm_bench.world.scenes import generate_scene, jpeg_roundtrip, scene_seed

    adapter = load_model(model, device=device, attn_implementation=attn_implementation)
    scene = generate_scene(scene_seed("test", seed))
    question = f"What color is the {scene.objects[0].shape}? Answer the question using up to two words."
    return adapter, adapter.build_inputs([jpeg_roundtrip(scene.image)], [question])


def warm_up(adapter) -> None:
    """Answer a probe question (a plain grey image, 8 tokens) so that the process's one-time allocations (about
    20 MiB on CPU: generation's first-call state) happen before a measured phase, not inside it."""
    from PIL import Image

    probe = adapter.build_inputs([Image.new("RGB", (64, 48), (120, 130, 140))], ["Describe the image."])
    adapter.generate(probe, 8, min_new_tokens=8)


def _phase(adapter, inputs, method, n: int) -> tuple[float, float]:
    """(generation seconds, map seconds) of generating exactly ``n`` tokens and explaining them all."""
    t0 = time.perf_counter()
    generation = adapter.generate(inputs, n, min_new_tokens=n, return_hidden=method.needs.hidden_states)[0]
    t1 = time.perf_counter()
    explanation = method.explain(adapter, inputs, generation)
    t2 = time.perf_counter()
    assert explanation.maps.shape[0] == n
    return t1 - t0, t2 - t1


def _phase_peak(method_name: str, n: int, model: str, device: str | None, seed: int,
                attn_implementation: str = "sdpa") -> int | None:
    """Peak memory of one phase, in this process (run it in a fresh one on CPU), after a warm-up answer."""
    adapter, inputs = _case(model, device, seed, attn_implementation)
    warm_up(adapter)
    with PeakMemory(adapter.device) as memory:
        _phase(adapter, inputs, create_method(method_name)[0], n)
    return memory.peak_bytes


def _fresh_process_peak(method_name: str, n: int, model: str, device: str | None, seed: int,
                        attn_implementation: str = "sdpa") -> int | None:
    return in_fresh_process(_phase_peak, method_name, n, model, device, seed, attn_implementation)


def profile(methods=DEFAULT_METHODS, lengths=DEFAULT_LENGTHS, repeats: int = 3, model: str = "tiny-llava-shapes",
            device: str | None = None, seed: int = 0, attn_implementation: str = "sdpa") -> pd.DataFrame:
    """One row per (method, length): median map and generation seconds over ``repeats``, peak memory (MiB)."""
    adapter, inputs = _case(model, device, seed, attn_implementation)
    rows: list[dict[str, Any]] = []
    for name in methods:
        method, spec = create_method(name)
        for n in tqdm(lengths, desc=f"profile {spec.name}", leave=False):
            times = [_phase(adapter, inputs, method, n) for _ in range(repeats)]
            if adapter.device.type == "cuda":  # the allocator's peak counter is exact in-process
                with PeakMemory(adapter.device) as memory:
                    _phase(adapter, inputs, method, n)
                peak = memory.peak_bytes
            else:
                peak = _fresh_process_peak(name, n, model, device, seed, attn_implementation)
            rows.append({"method": spec.name, "tokens": n, "map_seconds": statistics.median(t[1] for t in times),
                         "generation_seconds": statistics.median(t[0] for t in times),
                         "peak_memory_mb": None if peak is None else peak / 2**20,
                         "repeats": repeats, "device": str(adapter.device), "model": Path(adapter.name).name,
                         "answers": "forced"})
    return pd.DataFrame(rows)


def profile_natural(methods=DEFAULT_METHODS, task: str = "describe", limit: int = 30, repeats: int = 1,
                    model: str = "tiny-qwen-shapes", device: str | None = None, seed: int = 0,
                    max_new_tokens: int = 20, data_root: str | None = None, attn_implementation: str = "sdpa") -> pd.DataFrame:
    """Latency against output length with the model's own answers: each of ``limit`` questions of ``task`` is
    answered greedily to its natural end (EOS, at most ``max_new_tokens``) and every answer token explained.

    One row per (method, output length): median map and generation seconds over the answers of that length
    (``samples`` of them, ``repeats`` timings each). Peak memory is measured on CUDA only (on CPU it would take a
    fresh process per answer), else left empty. The task's data is ``data_root``, else the model's
    (`create_task_for_model`).
    """
    from fastrm_bench.builders import create_task_for_model
    from fastrm_bench.models.zoo import load_model

    adapter = load_model(model, device=device, attn_implementation=attn_implementation)
    task_obj, task_spec = create_task_for_model(task, model, data_root)
    samples = list(task_obj.samples(limit=limit, seed=seed))
    inputs = [adapter.build_inputs([s.model_images], [task_obj.prompt(s)]) for s in samples]
    timings: list[dict[str, Any]] = []
    for name in methods:
        method, spec = create_method(name)
        method.prepare(adapter)
        for one in tqdm(inputs, desc=f"profile {spec.name} ({task_spec.name} answers)", leave=False):
            peak = None
            times = []
            for _ in range(repeats):
                with PeakMemory(adapter.device) as memory:
                    t0 = time.perf_counter()
                    generation = adapter.generate(one, max_new_tokens, return_hidden=method.needs.hidden_states)[0]
                    t1 = time.perf_counter()
                    method.explain(adapter, one, generation)
                    times.append((t1 - t0, time.perf_counter() - t1))
                peak = memory.peak_bytes if adapter.device.type == "cuda" else None
            timings.append({"method": spec.name, "tokens": generation.num_generated,
                            "map_seconds": statistics.median(t[1] for t in times),
                            "generation_seconds": statistics.median(t[0] for t in times),
                            "peak_memory_mb": None if peak is None else peak / 2**20})
    per_answer = pd.DataFrame(timings)
    frame = (per_answer.groupby(["method", "tokens"], sort=True)
             .agg(map_seconds=("map_seconds", "median"), generation_seconds=("generation_seconds", "median"),
                  peak_memory_mb=("peak_memory_mb", "max"), samples=("map_seconds", "size")).reset_index())
    return frame.assign(repeats=repeats, device=str(adapter.device), model=Path(adapter.name).name,
                        answers=f"natural {task_spec.name}")


def ratios(frame: pd.DataFrame, fast: str, slow: str) -> dict[str, float]:
    """The paper's two numbers for ``fast`` against ``slow``, over the lengths both were profiled at:
    ``mean_speedup``, the mean of slow / fast map seconds (above 1: ``fast`` is faster), and, when
    every peak was measured, ``memory_saved_share``, the mean of 1 - fast / slow peak memory
    (negative: ``fast`` needs more)."""
    a = frame[frame.method == fast].set_index("tokens")
    b = frame[frame.method == slow].set_index("tokens")
    common = a.index.intersection(b.index)
    speedup = float((b.loc[common, "map_seconds"] / a.loc[common, "map_seconds"]).mean())
    out = {"mean_speedup": speedup}
    if a["peak_memory_mb"].notna().all() and (b["peak_memory_mb"] > 0).all():
        out["memory_saved_share"] = float(1 - (a.loc[common, "peak_memory_mb"] / b.loc[common, "peak_memory_mb"]).mean())
    return out


def pair_ratios(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """`ratios` of every pair of `SUMMARY_PAIRS` whose two methods are in ``frame``, keyed ``"{fast}_vs_{slow}"``."""
    present = set(frame.method)
    return {f"{fast}_vs_{slow}": ratios(frame, fast, slow) for fast, slow in SUMMARY_PAIRS if {fast, slow} <= present}


def save(frame: pd.DataFrame, out: Path, summary: dict[str, Any] | None = None) -> None:
    """Write ``profile.csv`` and ``profile.json``: the rows, and a summary of `pair_ratios` with ``summary``'s
    entries added (they win on equal keys)."""
    out.mkdir(parents=True, exist_ok=True)
    summary = {**pair_ratios(frame), **(summary or {})}
    frame.to_csv(out / "profile.csv", index=False)
    (out / "profile.json").write_text(json.dumps({"rows": frame.to_dict(orient="records"), "summary": summary}, indent=2))


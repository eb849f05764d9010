"""`fastrm-bench profile --image-tokens`: peak memory and time of explanations against the number of image tokens.

A LLaVA of the shipped model's widths (4 layers, 4 heads, width 128) with random weights sees one image of
``n`` image tokens (a CLIP grid of 4 px patches, ``side = sqrt(n)``), answers with exactly ``tokens`` tokens
and is explained. Each case runs in a fresh process (the CPU peak is the growth of the resident high-water
mark; on CUDA the allocator's peak), one after the other:

- ``answer``: greedy generation alone, the model's own attention (SDPA): what a user pays without maps;
- ``answer + backward``: generation, then one teacher-forced forward and the backward of one answer logit
  (the least any gradient explanation must hold);
- each method asked for, with the model loaded with SDPA (methods that read attention recompute it from
  the captured forward);
- ``chefer (eager probabilities)``: the model loaded with eager attention and Chefer's gradients taken at
  every layer's eager probabilities (``attention: eager``), the textbook graph that capturing replaces.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from fastrm_bench.profiling import PeakMemory, in_fresh_process

DEFAULT_IMAGE_TOKENS = (484, 1024, 2025, 4096)
DEFAULT_SCALE_METHODS = ("chefer",)
PATCH = 4  # pixels per patch side of the profiled tower
QUESTION = "What color is the circle?"


@dataclass(frozen=True)
class Case:
    """One profiled computation: a method (or None: the baselines) on a model loaded with ``attn_implementation``."""

    label: str
    method: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    attn_implementation: str = "sdpa"
    backward: bool = False  # for the baselines: add one teacher-forced forward and backward


def cases(methods: tuple[str, ...] | list[str]) -> list[Case]:
    """The baselines, the methods asked for, and Chefer on eager probabilities."""
    found = [Case("answer"), Case("answer + backward", backward=True)]
    found += [Case(name, name) for name in methods]
    found.append(Case("chefer (eager probabilities)", "chefer", {"attention": "eager"}, "eager"))
    return found


def build_model_folder(image_tokens: int, out: Path, seed: int = 0) -> Path:
    """A random LLaVA of the shipped widths whose image has ``image_tokens`` tokens (a square number)."""
    from fastrm_bench.embedded.tiny_llava import TinyLlavaSize, build_model, build_processor, save_template

    side = math.isqrt(image_tokens)
    if side * side != image_tokens:
        raise ValueError(f"--image-tokens takes square numbers (a square grid of patches), got {image_tokens}")
    size = TinyLlavaSize(image_size=side * PATCH, patch_size=PATCH)
    torch.manual_seed(seed)
    processor = build_processor(size)
    model = build_model(processor.tokenizer, size)
    model.config.text_config.max_position_embeddings = image_tokens + 256
    model.save_pretrained(out)
    processor.save_pretrained(out)
    save_template(out)
    return out


def _measure(case: Case, folder: str, tokens: int, device: str | None) -> dict[str, Any]:
    """Seconds and peak bytes of generation + the case's work, in this (fresh) process."""
    from PIL import Image

    from fastrm_bench.builders import create_method
    from fastrm_bench.models.zoo import load_model

    adapter = load_model(folder, device=device, attn_implementation=case.attn_implementation)
    inputs = adapter.build_inputs([Image.new("RGB", (64, 64), (200, 40, 40))], [QUESTION])
    method = create_method(case.method, **case.overrides)[0] if case.method else None
    if method is not None:
        method.prepare(adapter)
    start = time.perf_counter()
    with PeakMemory(adapter.device) as memory:
        generation = adapter.generate(inputs, tokens, min_new_tokens=tokens)[0]
        if method is not None:
            method.explain(adapter, inputs, generation)
        elif case.backward:
            forward = adapter.teacher_forced(inputs, generation)
            score = forward.logits[inputs.prompt_length - 1, int(generation.generated_ids[0])]
            torch.autograd.grad(score, forward.leaf)
    return {"seconds": time.perf_counter() - start, "peak_bytes": memory.peak_bytes,
            "sequence": inputs.prompt_length + tokens - 1, "image_tokens": inputs.layout.num_tokens}


def profile_image_tokens(image_tokens=DEFAULT_IMAGE_TOKENS, methods=DEFAULT_SCALE_METHODS, tokens: int = 8,
                         repeats: int = 1, device: str | None = None, log=print) -> pd.DataFrame:
    """One row per (image tokens, case): median seconds and peak MiB over ``repeats`` fresh processes."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in image_tokens:
            folder = build_model_folder(n, Path(tmp) / f"grid{n}")
            for case in cases(methods):
                runs = [in_fresh_process(_measure, case, str(folder), tokens, device) for _ in range(repeats)]
                peaks = [r["peak_bytes"] for r in runs if r["peak_bytes"] is not None]
                row = {"image_tokens": runs[0]["image_tokens"], "sequence": runs[0]["sequence"], "case": case.label,
                       "attn_implementation": case.attn_implementation, "answer_tokens": tokens,
                       "seconds": statistics.median(r["seconds"] for r in runs),
                       "peak_memory_mb": statistics.median(peaks) / 2**20 if peaks else None, "repeats": repeats}
                log(f"{row['image_tokens']:>5} image tokens  {case.label:<30} {row['seconds']:8.2f} s  "
                    f"{row['peak_memory_mb'] or float('nan'):9.1f} MiB")
                rows.append(row)
    return pd.DataFrame(rows)


def ratios(frame: pd.DataFrame, method: str = "chefer") -> pd.DataFrame:
    """Per image-token count: ``method``'s peak over eager Chefer's and over answering plus one backward."""
    wide = frame.pivot(index="image_tokens", columns="case", values="peak_memory_mb")
    return pd.DataFrame({
        f"{method} / eager chefer": wide[method] / wide["chefer (eager probabilities)"],
        f"{method} / (answer + backward)": wide[method] / wide["answer + backward"],
    })


def save_image_tokens(frame: pd.DataFrame, out: Path) -> list[Path]:
    """``image_tokens.csv`` (every row) and ``image_tokens.md`` (peak MiB and seconds per case, and the ratios)."""
    out.mkdir(parents=True, exist_ok=True)
    csv, md = out / "image_tokens.csv", out / "image_tokens.md"
    frame.to_csv(csv, index=False)
    peaks = frame.pivot(index="image_tokens", columns="case", values="peak_memory_mb")
    seconds = frame.pivot(index="image_tokens", columns="case", values="seconds")
    order = list(dict.fromkeys(frame["case"]))
    parts = ["Peak memory (MiB) of answering and explaining, by image tokens:", "",
             peaks[order].to_markdown(floatfmt=".1f"), "", "Seconds:", "", seconds[order].to_markdown(floatfmt=".2f")]
    if {"chefer", "chefer (eager probabilities)", "answer + backward"} <= set(order):
        parts += ["", "Ratios of peaks:", "", ratios(frame).to_markdown(floatfmt=".3f")]
    md.write_text("\n".join(parts) + "\n")
    return [csv, md]

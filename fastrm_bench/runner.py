"""`fastrm-bench run`: answer every sample, score it, explain it, and save a run directory.

Run directory::

    config.json     everything needed to reproduce (versions, seed, resolved specs, model hash)
    samples.jsonl   one line per sample (appended and flushed as it finishes: nothing lost)
    maps.npz        the sample maps [N, grid_h, grid_w] in samples.jsonl order
    results.json    aggregates, each with higher_is_better

A run interrupted at any point continues with ``resume=True``: samples already in
``samples.jsonl`` are skipped (a partially written last line is discarded).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fastrm_bench.builders import create_method, create_task
from fastrm_bench.metrics.localisation import mask_to_patches, pointing_game, relevance_mass
from fastrm_bench.specs import resolve

HIGHER_IS_BETTER = {"accuracy": True, "relevance_mass": True, "pointing_game": True, "map_seconds": False,
                    "generation_seconds": False, "f1": True, "precision": True, "recall": True, "mean_f1": True}


@dataclass
class RunConfig:
    method: str
    task: str
    model: str = "tiny-llava-shapes"
    limit: int | None = 200
    seed: int = 0
    output_dir: str | None = None
    data_root: str | None = None
    max_new_tokens: int = 10
    device: str | None = None


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 over parameter names and bytes (identifies the exact weights a run used)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _versions() -> dict[str, str]:
    import transformers

    from fastrm_bench import __version__

    return {"fastrm_bench": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_done(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    done = []
    for line in path.read_text().splitlines():
        try:
            done.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill: redo that sample
            break
    path.write_text("".join(json.dumps(r) + "\n" for r in done))
    return done


def run(cfg: RunConfig, resume: bool = False, log=print) -> dict[str, Any]:
    """Evaluate one method on one task; returns the aggregated results."""
    from fastrm_bench.models.zoo import load_model

    torch.manual_seed(cfg.seed)
    method, method_spec = create_method(cfg.method)  # cheap: bad names fail before any data or model work
    resolve("tasks", cfg.task)
    task, task_spec = create_task(cfg.task, data_root=cfg.data_root)
    if getattr(task, "uses_embedded_world", False):
        log(f"Data: the embedded synthetic world ({task.data_root}); pass --data-root DIR to use the real files.")
    adapter = load_model(cfg.model, device=cfg.device)
    out = Path(cfg.output_dir or f"runs/{adapter.name.replace('/', '_')}/{task_spec.name}/{method_spec.name}")
    out.mkdir(parents=True, exist_ok=True)
    config = {"run": asdict(cfg), "task_spec": asdict(task_spec), "method_spec": asdict(method_spec),
              "model": adapter.name, "model_weights_sha256": weights_hash(adapter.model), "data_source": task.data_source,
              "data_root": str(task.data_root), "grid": list(adapter.grid_shape), "versions": _versions()}
    config_path = out / "config.json"
    if resume and config_path.exists():
        previous = json.loads(config_path.read_text())
        if previous["run"] != config["run"] or previous["model_weights_sha256"] != config["model_weights_sha256"]:
            raise ValueError(f"{out} holds a run with another configuration; use another --output-dir")
    _atomic_write(config_path, json.dumps(config, indent=2))

    samples_path = out / "samples.jsonl"
    done = _read_done(samples_path) if resume else []
    if not resume and samples_path.exists():
        samples_path.unlink()
    maps_dir = out / "maps"
    maps_dir.mkdir(exist_ok=True)
    done_ids = {r["id"] for r in done}
    samples = list(task.samples(limit=cfg.limit, seed=cfg.seed))
    records = list(done)
    with samples_path.open("a") as fh:
        for sample in tqdm(samples, desc=f"{method_spec.name} on {task_spec.name}", unit="sample"):
            if sample.id in done_ids:
                continue
            inputs = adapter.build_inputs([sample.image], [task.prompt(sample)])
            t0 = time.perf_counter()
            generation = adapter.generate(inputs, cfg.max_new_tokens, return_hidden=True)[0]
            gen_seconds = time.perf_counter() - t0
            explanation = method.explain(adapter, inputs, generation)
            sample_map = explanation.maps.float().mean(0)
            record: dict[str, Any] = {
                "id": sample.id, "question": sample.question, "prediction": generation.text,
                "references": sample.references[:1], "score": task.score(generation.text, sample), "meta": sample.meta,
                "num_tokens": generation.num_generated, "map_seconds": explanation.seconds, "generation_seconds": gen_seconds,
            }
            if sample.mask is not None:
                on_object = mask_to_patches(sample.mask, adapter.grid_shape)
                record["relevance_mass"] = relevance_mass(sample_map, on_object)
                record["pointing_game"] = pointing_game(sample_map, on_object)
                record["object_patch_share"] = float(on_object.mean())
            np.save(maps_dir / f"{len(records):06d}.npy", sample_map.cpu().numpy())
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            records.append(record)

    results = summarise(task, records)
    maps = np.stack([np.load(maps_dir / f"{i:06d}.npy") for i in range(len(records))]) if records else np.zeros((0,))
    np.savez_compressed(out / "maps.npz", maps=maps, ids=np.array([r["id"] for r in records]))
    _atomic_write(out / "results.json", json.dumps(results, indent=2))
    return {"output_dir": str(out), **results}


def summarise(task, records: list[dict[str, Any]]) -> dict[str, Any]:
    metrics: dict[str, float] = dict(task.aggregate(records))
    for key in ("relevance_mass", "pointing_game", "object_patch_share", "map_seconds", "generation_seconds"):
        values = [r[key] for r in records if key in r and r[key] == r[key]]
        if values:
            metrics[key] = float(np.mean(values))
    return {
        "n": len(records),
        "metrics": {k: {"value": v, "higher_is_better": HIGHER_IS_BETTER.get(k.split("/")[-1])} for k, v in metrics.items()},
    }

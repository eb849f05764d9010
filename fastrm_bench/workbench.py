"""Inside the model, for the run explorer: every LM layer's and head's attention of each answer token to the image
and prompt tokens of a few samples of a run (`fastrm-bench workbench RUN_DIR`).

A run keeps the maps of its method, not the model's attention, and the report has no model: this command loads the
run's model, answers the chosen samples again (greedy, as the run did), runs one teacher-forced forward over prompt +
answer with the attention captured (`ModelAdapter.teacher_forced(..., attention="capture")`) and recomputes, per LM
layer, the probabilities ``[heads, rows, keys]`` of the answer's rows (`LayerAttention.probabilities`). It writes
``workbench.json`` into the run directory; the next `fastrm-bench report` inlines it into ``explorer.html``.

- rows: the answer token t's *predicting position* ``L0 - 1 + t`` (the position whose logits choose the token, the
  row the attention-reading methods explain it with), for the first ``max_tokens`` tokens;
- columns: the image tokens in the layout's order (drawn as a map), then the prompt's text tokens (every prompt
  position that is not an image placeholder: template and question tokens), with their strings;
- size: each row of a layer and head is quantised to 8 bits on its own scale (its largest value over these columns,
  kept as ``row_max``); the rows' total attention to the image and to the prompt's text are kept unquantised
  (``mass``); what is left (to the answer's earlier tokens) is one minus both.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastrm_bench.explorer import WORKBENCH, choose_samples, open_task
from fastrm_bench.rundir import read_run

FORMAT = 1


def write_workbench(run_dir: Path, samples: int = 4, sample_ids: list[str] | None = None, max_tokens: int = 16,
                    device: str | None = None, log: Callable[[str], Any] = print) -> Path:
    """Compute the per-layer, per-head attention of ``samples`` samples of the run (or ``sample_ids``) and write
    ``workbench.json`` into the run directory; return its path."""
    from fastrm_bench.models.zoo import load_model

    run = read_run(run_dir)
    task, note = open_task(run)
    if task is None:
        raise ValueError(f"cannot reopen the run's images: {note}")
    records = {r["id"]: r for r in run.records()}
    ids = sample_ids or choose_samples(list(records.values()), samples)[:samples]
    unknown = [i for i in ids if i not in records]
    if unknown:
        raise ValueError(f"not samples of {run_dir}: {', '.join(unknown)}")
    settings = run.config.get("run", {})
    adapter = load_model(run.model_ref, device=device, dtype=settings.get("dtype", "float32"),
                         attn_implementation=settings.get("attn_implementation", "sdpa"))
    task_records = task.handles()
    out: dict[str, Any] = {"format": FORMAT, "model": run.model, "weights_sha256": adapter.weights_sha256,
                           "layers": adapter.num_layers, "rows": "predicting position of each answer token",
                           "samples": {}}
    for sample_id in ids:
        sample = task.sample(task_records[sample_id])
        out["samples"][sample_id] = sample_attention(adapter, task.prompt(sample), sample.image,
                                                     int(settings.get("max_new_tokens", 10)), max_tokens,
                                                     records[sample_id].get("prediction"))
        log(f"{sample_id}: {len(out['samples'][sample_id]['tokens'])} answer tokens")
    path = Path(run_dir) / WORKBENCH
    path.write_text(json.dumps(out, separators=(",", ":")))
    return path


def sample_attention(adapter: Any, prompt: str, image: Any, max_new_tokens: int, max_tokens: int,
                     recorded_answer: str | None = None) -> dict[str, Any]:
    """One sample's attention rows, per layer and head, to its image and prompt tokens (see the module docstring)."""
    from fastrm_bench.explainers._attention import predicting_positions, text_positions

    inputs = adapter.build_inputs([image], [prompt])
    generation = adapter.generate(inputs, max_new_tokens)[0]
    rows = predicting_positions(inputs, generation)[:max_tokens]
    image_columns = torch.as_tensor(inputs.layout.positions).flatten().long()
    prompt_columns = text_positions(inputs, generation, inputs.prompt_length)
    columns = torch.cat([image_columns.cpu(), prompt_columns.cpu()])
    with torch.no_grad():
        forward = adapter.teacher_forced(inputs, generation, attention="capture")
        layers = [layer.probabilities(rows)[:, :, columns.to(layer.query.device)].cpu().numpy()
                  for layer in forward.attention]
    values = np.stack(layers)  # [L, H, T, C]
    n_image = len(image_columns)
    row_max = values.max(axis=-1)
    scaled = values / np.where(row_max > 0, row_max, 1)[..., None]
    mass = np.stack([values[..., :n_image].sum(-1), values[..., n_image:].sum(-1)], axis=-1)
    tokenizer = adapter.tokenizer
    ids = generation.generated_ids.cpu().tolist()[: len(rows)]
    prompt_ids = inputs.input_ids[0, prompt_columns].cpu().tolist()
    return {
        "answer": generation.text, "same_answer": recorded_answer is None or generation.text.strip() == recorded_answer.strip(),
        "tokens": [tokenizer.decode([i]) for i in ids], "prompt_tokens": [tokenizer.decode([i]) for i in prompt_ids],
        "heads": int(values.shape[1]), "n_image": n_image, "n_prompt": len(prompt_columns),
        "attention": base64.b64encode(np.round(scaled * 255).astype(np.uint8).tobytes()).decode(),
        "row_max": [float(f"{x:.4g}") for x in row_max.reshape(-1)],
        "mass": [round(float(x), 4) for x in mass.reshape(-1)],
    }


"""FastRM maps beside an lmms-eval evaluation, and their scoring with the harness' metrics.

Two halves, neither importing lmms-eval:

- `MapsRecorder` serves the lmms-eval plug-in model (`fastrm_bench.lmms_models`): around each answer the wrapped
  lmms-eval model generates, it keeps the final-norm hidden states that generation computes (a forward hook) and the
  inputs it was given, and the `fastrm` method turns them into one map per answer token, as `fastrm-bench run` does
  from its own generation. Per lmms-eval task it writes ``fastrm-maps/TASK/`` under the model's ``maps_dir``:
  ``records.jsonl`` (one line per document: ``doc_id``, the answer, its tokens and ids, the image ``layout``),
  ``token_maps.npz`` and ``maps.npz`` (`fastrm_bench.maps_io`, ids the documents' ``doc_id``) and ``config.json``.
- `score_lmms_eval` (``fastrm-bench score --from-lmms-eval DIR``) joins those files with lmms-eval's sample log
  (``*_samples_TASK.jsonl``) by ``doc_id``, finds each document's sample in a harness task (POPE-format documents:
  ``category`` and ``question_id``, as lmms-lab/POPE has them), and measures the stored maps with the harness'
  metrics. Perturbation metrics need the model: it answers each question again, and a sample whose answer is not
  the recorded one is skipped (named in ``skipped.jsonl``), so that a map is never scored against another answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fastrm_bench.interfaces import Explanation, ExplanationMethod, Generation, MethodNeeds, ModelAdapter, ModelInputs, Sample
from fastrm_bench.maps_io import load_token_maps, save_sample_maps, save_token_maps

#: the folder under ``maps_dir`` the plug-in writes, one subfolder per lmms-eval task
MAPS_FOLDER = "fastrm-maps"
RECORDS = "records.jsonl"


@dataclass
class Capture:
    """What one wrapped answer left: the ``generate`` calls (keyword inputs, output) and every final-norm output."""

    calls: list[tuple[dict[str, Any], Any]] = field(default_factory=list)
    hidden: list[torch.Tensor] = field(default_factory=list)


def hidden_sequence(outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[L0 + steps - 1, d]`` of one sample from its final-norm outputs: the prompt's, then one row per step
    (with a KV cache); without a cache each step covers the whole sequence, and the last one holds every row."""
    if all(o.shape[1] == 1 for o in outputs[1:]):
        return torch.cat([o[0] for o in outputs], dim=0)
    return max(outputs, key=lambda o: o.shape[1])[0]


class MapsRecorder:
    """FastRM maps of the answers an lmms-eval model gives, written per task under ``maps_dir/fastrm-maps``."""

    def __init__(self, adapter: ModelAdapter, maps_dir: str | Path, checkpoint: str | None = None):
        from fastrm_bench.builders import create_aggregation
        from fastrm_bench.explainers.fastrm_method import FastRMMethod

        self.adapter = adapter
        self.out = Path(maps_dir) / MAPS_FOLDER
        self.method = FastRMMethod(checkpoint=checkpoint)
        self.method.prepare(adapter)  # a proxy of other weights fails here, before any answer
        self.aggregate = create_aggregation("mean")[0]
        self.config = {"model": adapter.name, "model_weights_sha256": adapter.weights_sha256, "method": "fastrm",
                       "checkpoint": checkpoint or f"the proxy fastrm-bench ships for {adapter.name}",
                       "proxy_distilled_from": self.method.proxy_for(adapter).config.distilled_from,
                       "aggregation": "mean", "family": adapter.family}
        self.tasks: dict[str, dict[int, tuple[dict[str, Any], np.ndarray, np.ndarray]]] = {}

    @contextmanager
    def capturing(self) -> Iterator[Capture]:
        """Inside: every ``model.generate`` call is recorded with its inputs and output, and every output of the
        final norm kept (what `fastrm` reads); the model's own ``generate`` runs unchanged."""
        capture = Capture()
        model = self.adapter.model
        original = model.generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            output = original(*args, **kwargs)
            capture.calls.append((kwargs, output))
            return output

        def keep(module: torch.nn.Module, args: Any, output: Any) -> None:
            capture.hidden.append((output[0] if isinstance(output, tuple) else output).detach())

        hook = self.adapter.final_norm().register_forward_hook(keep)
        model.generate = generate
        try:
            yield capture
        finally:
            del model.generate  # the class's own method again
            hook.remove()

    def record(self, capture: Capture, images: Sequence[Image.Image], task: str, doc_id: int, doc: dict[str, Any],
               answer: str) -> None:
        """Explain the one answer ``capture`` holds (the document ``doc_id`` of ``task``) and keep it for `write`.

        The document's plain fields (not its image) are kept too: lmms-eval's sample log leaves documents out, and
        the scoring finds each document's harness sample from them."""
        if len(capture.calls) != 1:
            raise ValueError(f"{task} document {doc_id}: the model called generate {len(capture.calls)} times for one "
                             "answer; FastRM maps need exactly one generation per answer (batch size 1)")
        kwargs, output = capture.calls[0]
        tensors = {k: v for k, v in kwargs.items() if torch.is_tensor(v)}
        prompt_length = int(tensors["input_ids"].shape[1])
        sequences = output if torch.is_tensor(output) else output.sequences
        new = sequences[0, prompt_length:]
        stops = self.adapter.stop_ids()
        cut = next((i for i, t in enumerate(new.tolist()) if t in stops), len(new))
        generated = new[:cut]
        adapter = self.adapter
        layouts = adapter.family_spec.layouts(adapter.model, adapter.processor, tensors, list(images))
        inputs = ModelInputs(tensors, prompt_length, layouts, sample_id=f"{task}/{doc_id}", images=tuple(images))
        generation = Generation(sequences=torch.cat([tensors["input_ids"][0], generated]).unsqueeze(0),
                                prompt_length=prompt_length, generated_ids=generated,
                                text=adapter.tokenizer.decode(generated, skip_special_tokens=True).strip(),
                                last_hidden=hidden_sequence(capture.hidden))
        explanation = self.method.explain(adapter, inputs, generation)
        smap = self.aggregate(adapter, inputs, generation, explanation)
        plain = {k: v for k, v in doc.items() if v is None or isinstance(v, (str, int, float, bool))}
        record = {"id": str(doc_id), "doc_id": doc_id, "task": task, "doc": plain, "prediction": answer,
                  "tokens": [adapter.tokenizer.decode([int(t)]) for t in generated],
                  "generated_ids": [int(t) for t in generated], "layout": inputs.layout.to_dict(),
                  "fastrm_seconds": explanation.seconds}
        self.tasks.setdefault(task, {})[doc_id] = (record, smap.float().cpu().numpy(),
                                                   explanation.maps.float().cpu().numpy())

    def write(self) -> None:
        """Write every task's files (again, with what this process has recorded so far), in ``doc_id`` order."""
        for task, docs in self.tasks.items():
            folder = self.out / task
            folder.mkdir(parents=True, exist_ok=True)
            order = sorted(docs)
            ids = [str(d) for d in order]
            save_sample_maps(folder / "maps.npz", ids, [docs[d][1] for d in order])
            save_token_maps(folder / "token_maps.npz", ids, [docs[d][2] for d in order])
            (folder / RECORDS).write_text("".join(json.dumps(docs[d][0]) + "\n" for d in order))
            (folder / "config.json").write_text(json.dumps({**self.config, "task": task}, indent=2))


# ------------------------------------------------------------------------------------------ reading and scoring
@dataclass
class StoredAnswer:
    """One document's recorded answer and maps, and the answer lmms-eval's sample log holds for it."""

    record: dict[str, Any]
    token_maps: np.ndarray  # [T, n]
    doc: dict[str, Any]
    response: str


def lmms_eval_samples(root: Path, task: str) -> Path:
    """The newest lmms-eval sample log of ``task`` under ``root`` (``*_samples_TASK.jsonl``, written with --log_samples)."""
    logs = sorted(root.rglob(f"*_samples_{task}.jsonl"), key=lambda p: p.stat().st_mtime)
    if not logs:
        raise FileNotFoundError(f"{root}: no lmms-eval sample log *_samples_{task}.jsonl (run lmms-eval with "
                                "--log_samples and --output_path under this folder)")
    return logs[-1]


def lmms_eval_response(line: dict[str, Any]) -> str:
    """The answer an lmms-eval sample-log line holds: its raw response (``resps``, left out of the log where the
    filtered one is the same: ``filtered_resps``)."""
    response: Any = line.get("resps", line.get("filtered_resps", ""))
    while isinstance(response, list):
        response = response[0] if response else ""
    return str(response)


def read_lmms_eval(root: str | Path) -> dict[str, list[StoredAnswer]]:
    """{lmms-eval task: its documents' recorded answers and maps, joined with the sample log by ``doc_id``}."""
    root = Path(root)
    folders = sorted(p.parent for p in root.rglob(f"{MAPS_FOLDER}/*/{RECORDS}"))
    if not folders:
        raise FileNotFoundError(f"{root}: no {MAPS_FOLDER}/TASK/{RECORDS}; evaluate with a fastrm_* model of lmms-eval "
                                f"and pass it maps_dir={root}")
    out: dict[str, list[StoredAnswer]] = {}
    for folder in folders:
        task = folder.name
        log = {}
        for line in lmms_eval_samples(root, task).read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                log[int(entry["doc_id"])] = entry
        maps = load_token_maps(folder)
        answers = []
        for line in (folder / RECORDS).read_text().splitlines():
            record = json.loads(line)
            entry = log.get(record["doc_id"])
            if entry is None:
                raise ValueError(f"{folder}: document {record['doc_id']} is not in lmms-eval's sample log of {task}")
            answers.append(StoredAnswer(record, maps[record["id"]], record["doc"], lmms_eval_response(entry)))
        out[task] = answers
    return out


class StoredMaps(ExplanationMethod):
    """The maps an lmms-eval evaluation recorded, by harness sample id; refused for another answer than recorded."""

    name = "fastrm"
    needs = MethodNeeds(probabilities=True)

    def __init__(self, answers: dict[str, StoredAnswer]):
        self.answers = answers

    def explain_sample(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation, sample: Sample
                       ) -> Explanation:
        """The recorded maps, with the time FastRM took to make them during lmms-eval's answer (the cost metric's)."""
        stored = self.answers[inputs.sample_id]
        return Explanation(self.compute_maps(adapter, inputs, generation), seconds=stored.record["fastrm_seconds"])

    def compute_maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        stored = self.answers[inputs.sample_id]
        recorded = stored.record["generated_ids"]
        if generation.generated_ids.tolist() != recorded:
            raise ValueError(f"the model answers {generation.text!r} here but lmms-eval recorded "
                             f"{stored.record['prediction']!r}: not the same prompt, weights or dtype")
        return torch.from_numpy(stored.token_maps)


def harness_ids(task: Any, answers: list[StoredAnswer]) -> dict[str, StoredAnswer]:
    """{harness sample id: answer}: each lmms-eval document as the harness task reads such a row (`hf_record`)."""
    out = {}
    for answer in answers:
        record = task.hf_record(answer.doc, None)
        if record is None:
            raise ValueError(f"document {answer.record['doc_id']} ({answer.doc}) is not one of {task.name}'s samples")
        out[record.id] = answer
    return out


def score_lmms_eval(root: str | Path, task_name: str, model: str, out: str | Path | None = None,
                    data_root: str | None = None, metrics: list[str] | None = None, device: str | None = None,
                    dtype: str = "float32") -> dict[str, Any]:
    """Measure the maps of an lmms-eval output folder with the harness' metrics; write ``results.json`` and
    ``samples.jsonl`` per lmms-eval task under ``out`` (default ``ROOT/fastrm-scores``) and return the results."""
    from fastrm_bench.builders import create_task_for_model
    from fastrm_bench.metrics import DEFAULT_METRICS
    from fastrm_bench.models.zoo import load_model
    from fastrm_bench.runner import Evaluator, RunConfig, create_metrics, summarise

    root = Path(root)
    stored = read_lmms_eval(root)
    cfg = RunConfig(method="fastrm", task=task_name, model=model, limit=None, data_root=data_root, device=device,
                    dtype=dtype, metrics=list(metrics or DEFAULT_METRICS))
    task, _ = create_task_for_model(task_name, model, data_root)
    records = {r.id: r for r in task.select(None, 0)}
    adapter = load_model(model, device=device, dtype=dtype)
    results: dict[str, Any] = {}
    for lmms_task, answers in stored.items():
        by_id = harness_ids(task, answers)
        missing = sorted(set(by_id) - set(records))
        if missing:
            raise ValueError(f"{lmms_task}: {len(missing)} document(s) are not in {task_name} ({missing[:3]}...): "
                             "pass the --data-root the documents were made from")
        evaluator = Evaluator(cfg, adapter, task, StoredMaps(by_id), create_metrics(cfg.metrics))
        rows, skipped = _measure_all(evaluator, task, [records[i] for i in by_id])
        summary = summarise(task, rows, cfg)
        summary.update(n_skipped=len(skipped), lmms_eval_task=lmms_task, model=adapter.name)
        folder = Path(out) if out is not None else root / "fastrm-scores"
        _write_scores(folder / lmms_task, summary, rows, skipped)
        results[lmms_task] = summary
    return results


def _measure_all(evaluator: Any, task: Any, handles: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Every sample's record; a sample whose answer differs from the recorded one is skipped with the reason."""
    rows, skipped = [], []
    for handle in handles:
        sample: Sample = task.sample(handle)
        try:
            record, _, _ = evaluator.evaluate([sample])[0]
        except ValueError as err:
            skipped.append({"id": sample.id, "reason": str(err)})
            continue
        rows.append(record)
    return rows, skipped


def _write_scores(folder: Path, summary: dict[str, Any], rows: list[dict[str, Any]], skipped: list[dict[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(summary, indent=2, default=float))
    (folder / "samples.jsonl").write_text("".join(json.dumps(r, default=float) + "\n" for r in rows))
    (folder / "skipped.jsonl").write_text("".join(json.dumps(s) + "\n" for s in skipped))

"""`fastrm-bench run`: answer, score, explain and perturb every sample; save a run directory.

The run directory (layout, locking, resume) is `fastrm_bench.rundir`'s job; this module checks
the configuration, evaluates samples and aggregates. Order of work: every argument and spec is
checked, the task, model and method (with its checkpoint) are loaded, and only then is the run
directory created or opened, so that a bad argument never touches it.

Per-sample work depends only on (config, sample): random maps are seeded by (seed, sample id,
draw) and perturbation tie-breaks by (seed, draw), so a resumed run equals an uninterrupted one and samples
could be sharded across processes later. A sample whose data is bad (missing or corrupt image,
unparsable entry) is skipped and recorded under ``--on-error skip`` (the default) or stops the
run under ``--on-error fail``; any other error stops the run.

Run directory: ``config.json`` (everything needed to reproduce), ``samples.jsonl`` (one line per
sample, with its image ``layout``), ``maps.npz`` (every sample map, one value per image token of its
layout: `fastrm_bench.maps_io`), ``results.json``; see `fastrm_bench.rundir`.
"""

from __future__ import annotations

import json
import platform
import signal
import string
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fastrm_bench.builders import create_method, create_task
from fastrm_bench.data_errors import SampleDataError
from fastrm_bench.interfaces import Explanation, Generation, ModelInputs, Sample
from fastrm_bench.metrics.entropy import map_entropy
from fastrm_bench.metrics.localisation import object_tokens, pointing_game, relevance_mass
from fastrm_bench.metrics.perturbation import DEFAULT_FRACTIONS, DIRECTIONS, curve_auc, keep_masks
from fastrm_bench.metrics.threshold import DEFAULT_THRESHOLDS, binarise
from fastrm_bench.models.adapter import REMOVAL_STRATEGIES
from fastrm_bench.rundir import RunDir, replace_file

HIGHER_IS_BETTER = {
    "accuracy": True, "f1": True, "precision": True, "recall": True, "mean_f1": True, "yes_ratio": None,
    "pp_auc": False, "np_auc": True, "pp_auc_first20": False, "np_auc_first20": True,
    "relevance_mass": True, "pointing_game": True, "object_patch_share": None,
    "relevance_mass_correct": True, "pointing_game_correct": True, "n_correct_localised": None,
    "map_seconds": False, "generation_seconds": False, "threshold_accuracy": True, "threshold_f1": True,
    "entropy_tp_rate_below": True, "entropy_fp_rate_below": False, "entropy_share_below": None,
    "entropy_tn_rate_above": True, "entropy_fn_rate_above": False, "entropy_threshold": None,
    "entropy_base_rate": None, "entropy_tp_gain_below": True,
}


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
    fractions: list[float] = field(default_factory=lambda: list(DEFAULT_FRACTIONS))
    removal: str = "zero"  # how perturbation removes image tokens: "zero" (embeddings zeroed) or "drop"
    perturbation: bool = True
    aggregation: str = "mean"  # sample map = mean of the per-token maps over the answer tokens
    dtype: str = "float32"  # the weights' dtype (gradient methods accumulate in float32 whatever it is)
    device_map: str | None = None  # "auto": accelerate spreads a model larger than one GPU
    on_error: str = "skip"  # a sample with bad data (missing/corrupt image, unparsable entry): "skip" it or "fail"

    def check(self) -> None:
        """Refuse values no run can use, before anything is loaded or written."""
        problems = []
        if self.limit is not None and self.limit < 1:
            problems.append(f"--limit must be a positive number of questions, got {self.limit}")
        if self.max_new_tokens < 1:
            problems.append(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.seed < 0:
            problems.append(f"--seed must be >= 0, got {self.seed}")
        if self.on_error not in ON_ERROR:
            problems.append(f"--on-error must be one of {', '.join(ON_ERROR)}, got {self.on_error!r}")
        if self.removal not in REMOVAL_STRATEGIES:
            problems.append(f"removal must be one of {', '.join(REMOVAL_STRATEGIES)}, got {self.removal!r}")
        if self.aggregation != "mean":
            problems.append(f"unknown aggregation {self.aggregation!r}; only 'mean' is implemented")
        fr = list(self.fractions)
        if len(fr) < 2 or any(not 0 <= f < 1 for f in fr) or fr != sorted(set(fr)):
            problems.append(f"fractions must be at least two increasing values in [0, 1), got {fr}")
        if self.device is not None:
            try:
                device = torch.device(self.device)
            except RuntimeError:
                problems.append(f"--device {self.device!r} is not a device (cpu, cuda, cuda:1 ...)")
            else:
                if device.type == "cuda" and not torch.cuda.is_available():
                    problems.append(f"--device {self.device}: no CUDA device is available here")
        if problems:
            raise ValueError("; ".join(problems))


ON_ERROR = ("skip", "fail")


class RunInterrupted(Exception):
    """SIGTERM or Ctrl-C stopped a run; what it wrote is consistent and --resume continues it."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def _versions() -> dict[str, str]:
    import transformers

    from fastrm_bench import __version__

    return {"fastrm_bench": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


_FORMAT_ONLY = set(string.punctuation) | {" "}


def sample_map(explanation: Explanation, generation: Generation, tokenizer, aggregation: str = "mean") -> torch.Tensor:
    """One map per answer: the mean of the per-token maps, format-only tokens (punctuation) left out."""
    if aggregation != "mean":
        raise ValueError(f"unknown aggregation {aggregation!r}; only 'mean' is implemented")
    maps = explanation.maps.float()
    if generation.num_generated == 0:
        return maps.mean(0) if len(maps) else torch.zeros(maps.shape[1:])
    words = [tokenizer.decode([int(t)]).strip() for t in generation.generated_ids]
    content = [i for i, w in enumerate(words) if w and not set(w) <= _FORMAT_ONLY]
    return maps[content or list(range(len(maps)))].mean(0)


class Evaluator:
    """Per-sample work of a run: everything here depends only on (config, sample)."""

    def __init__(self, cfg: RunConfig, adapter, task, method):
        self.cfg, self.adapter, self.task, self.method = cfg, adapter, task, method
        self._chefer = None

    def answers(self, inputs: ModelInputs, sample: Sample, keeps: torch.Tensor) -> list[float]:
        """Scores of the answers with each row of ``keeps`` applied, in one batch."""
        outs = self.adapter.generate(inputs, self.cfg.max_new_tokens, image_keep=keeps, removal=self.cfg.removal)
        return [self.task.score(g.text, sample) for g in outs]

    def perturbation(self, inputs: ModelInputs, sample: Sample, generation: Generation, first_map: torch.Tensor
                     ) -> dict[str, list[float]]:
        draws = int(getattr(self.method, "perturbation_draws", 1))
        curves = {d: np.zeros(len(self.cfg.fractions)) for d in DIRECTIONS}
        for draw in range(draws):
            smap = first_map if draw == 0 else sample_map(
                self.method.explain(self.adapter, replace(inputs, draw=draw), generation), generation,
                self.adapter.tokenizer, self.cfg.aggregation)
            masks = keep_masks(smap, self.cfg.fractions, seed=self.cfg.seed + draw)  # tie-breaks: (seed, draw), any sample
            scores = self.answers(inputs, sample, torch.cat([masks[d] for d in DIRECTIONS]))
            n = len(self.cfg.fractions)
            for i, d in enumerate(DIRECTIONS):
                curves[d] += np.asarray(scores[i * n : (i + 1) * n]) / draws
        return {d: c.tolist() for d, c in curves.items()}

    def threshold_counts(self, inputs: ModelInputs, generation: Generation, probs: torch.Tensor) -> dict[str, list[int]]:
        """Confusion counts of prob >= c against binarised Chefer labels, per threshold c."""
        from fastrm_bench.explainers.chefer import Chefer

        self._chefer = self._chefer or Chefer()
        labels = binarise(self._chefer.explain(self.adapter, inputs, generation).maps, 0.3).flatten()
        p = probs.flatten()
        out = {}
        for c in DEFAULT_THRESHOLDS:
            pred = p >= c
            out[str(c)] = [int((pred & labels).sum()), int((pred & ~labels).sum()), int((~pred & labels).sum()),
                           int((~pred & ~labels).sum())]
        return out

    def __call__(self, sample: Sample) -> tuple[dict[str, Any], np.ndarray]:
        inputs = self.adapter.build_inputs([sample.image], [self.task.prompt(sample)])
        inputs.sample = sample
        t0 = time.perf_counter()
        generation = self.adapter.generate(inputs, self.cfg.max_new_tokens, return_hidden=True)[0]
        generation_seconds = time.perf_counter() - t0
        explanation = self.method.explain(self.adapter, inputs, generation)
        smap = sample_map(explanation, generation, self.adapter.tokenizer, self.cfg.aggregation)
        record: dict[str, Any] = {
            "id": sample.id, "question": sample.question, "prediction": generation.text, "reference": sample.references[0],
            "score": self.task.score(generation.text, sample), "meta": sample.meta, "num_tokens": generation.num_generated,
            "map_seconds": explanation.seconds, "generation_seconds": generation_seconds,
            "peak_memory_bytes": explanation.peak_memory_bytes, "entropy": map_entropy(smap),
            "layout": inputs.layout.to_dict(),
        }
        if self.cfg.perturbation:
            record["curves"] = self.perturbation(inputs, sample, generation, smap)
        if explanation.is_probability and generation.num_generated:
            record["threshold_counts"] = self.threshold_counts(inputs, generation, explanation.maps)
        if sample.mask is not None:
            on_object = object_tokens(inputs.layout, sample.mask)
            record["relevance_mass"] = relevance_mass(smap, on_object)
            record["pointing_game"] = pointing_game(smap, on_object)
            record["object_patch_share"] = float(on_object.mean())
        return record, smap.cpu().numpy()


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into `RunInterrupted` while a run writes, so that it ends like Ctrl-C: files closed, lock released."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise RunInterrupted(signum)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(cfg: RunConfig, resume: bool = False, log: Callable[[str], Any] = print, overwrite: bool = False
        ) -> dict[str, Any]:
    """Evaluate one method on one task; returns the aggregated results (with ``output_dir`` and ``n_skipped``).

    ``resume`` continues the run already in the output directory (matched by its configuration's
    fingerprint, not by the directory's name); ``overwrite`` discards whatever run is there. Without
    either, a directory that holds a run is refused and left as it is.
    """
    from fastrm_bench.models.adapter import DTYPES
    from fastrm_bench.models.zoo import load_model

    cfg.check()
    torch.manual_seed(cfg.seed)
    method, method_spec = create_method(cfg.method)  # cheap: bad names and params fail before any data or model work
    task, task_spec = create_task(cfg.task, data_root=cfg.data_root)
    if getattr(task, "uses_embedded_world", False):
        log(f"Data: the embedded synthetic world ({task.data_root}); pass --data-root DIR to use the real files.")
    selected = task.select(cfg.limit, cfg.seed) if hasattr(task, "select") else None
    if cfg.dtype not in DTYPES:
        raise ValueError(f"unknown dtype {cfg.dtype!r}; expected one of {sorted(DTYPES)}")
    adapter = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype, device_map=cfg.device_map)
    if cfg.perturbation and cfg.removal not in adapter.removals:
        raise ValueError(f"removal {cfg.removal!r} is not supported for the {adapter.family} family of {adapter.name}; "
                         f"use one of {adapter.removals}")
    if adapter.eager_check and adapter.eager_check.get("equal") is False:
        log(f"Warning: {adapter.name} answers a probe input differently with eager and SDPA attention "
            f"({adapter.eager_check['eager']!r} vs {adapter.eager_check['sdpa']!r}); the maps explain the eager model.")
    method.prepare(adapter)  # e.g. the FastRM checkpoint: a bad one fails here, before the run directory is touched
    out = Path(cfg.output_dir or f"runs/{Path(adapter.name).name}/{task_spec.name}/{method_spec.name}")
    config = {"run": asdict(cfg), "task_spec": asdict(task_spec), "method_spec": asdict(method_spec),
              "model": adapter.name, "model_weights_sha256": adapter.weights_sha256, "data_source": task.data_source,
              "scoring": task.scoring, "data_root": str(Path(task.data_root).resolve()), "family": adapter.family,
              "eager_check": adapter.eager_check, "versions": _versions(), "device": str(adapter.device)}
    with RunDir.open(out, config, resume=resume, overwrite=overwrite) as rundir, _stop_on_sigterm():
        if rundir.finished:  # resumed to report it, or killed after results.json was in place (only the clean-up left)
            rundir.clean_up()
            results = rundir.results()
            return {"output_dir": str(out), "n_skipped": results.get("n_skipped", 0), **results}
        done = rundir.done_ids
        evaluate = Evaluator(cfg, adapter, task, method)
        if selected is not None:
            todo: list[Any] = [r for r in selected if r.id not in done]
            stream: Iterator[Any] = iter(todo)
        else:
            todo, stream = [], (s for s in task.samples(limit=cfg.limit, seed=cfg.seed) if s.id not in done)
        try:
            for item in tqdm(stream, total=len(todo) if selected is not None else None,
                             desc=f"{method_spec.name} on {task_spec.name}", unit="sample"):
                try:
                    sample = task.sample(item) if selected is not None else item
                except SampleDataError as err:
                    if cfg.on_error == "fail":
                        raise
                    log(f"skipped: {err}")
                    rundir.add_skipped(err.sample_id, str(err))
                    continue
                record, smap = evaluate(sample)
                rundir.add_sample(record, smap)
        except KeyboardInterrupt:
            raise RunInterrupted(signal.SIGINT) from None
        results = summarise(task, rundir.records, cfg)
        results["n_skipped"] = len(rundir.skipped)
        results["config"] = _results_config(config, task.scoring)
        rundir.finish(results)
    return {"output_dir": str(out), **results}


def _results_config(config: dict[str, Any], scoring: str) -> dict[str, Any]:
    """The options a results.json repeats from its run's config.json."""
    run_cfg = config["run"]
    return {"model": config["model"], "task": config["task_spec"]["name"], "method": config["method_spec"]["name"],
            "data_source": config["data_source"], "scoring": scoring, "removal": run_cfg["removal"],
            "seed": run_cfg["seed"]}


def resummarise(run_dir: str | Path) -> dict[str, Any]:
    """Aggregate a finished run again from its samples.jsonl and rewrite its results.json.

    Needs neither the model nor the images: the per-sample records hold every score, curve and
    count, so a change of aggregation (intervals, splits) costs seconds instead of a re-run.
    Its scores are the recorded ones: a run scored under another convention must be run again.
    """
    from fastrm_bench.registry import TASKS

    out = Path(run_dir)
    config = json.loads((out / "config.json").read_text())
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines() if line.strip()]
    spec = config["task_spec"]
    params = dict(spec["params"])
    if Path(config["data_root"]).is_dir():  # aggregation reads no data: a moved data root is no obstacle
        params["data_root"] = config["data_root"]
    task = TASKS.create(spec["implementation"], **params)
    task.name = spec["name"]
    results = summarise(task, records, RunConfig(**config["run"]))
    results["config"] = _results_config(config, config.get("scoring", task.scoring))  # runs made before it was recorded
    replace_file(out / "results.json", lambda fh: fh.write(json.dumps(results, indent=2).encode()))
    return {"output_dir": str(out), **results}


#: random calibration/evaluation splits behind each entropy-confidence number
ENTROPY_SPLITS = 200


def _aggregates(task, records: list[dict[str, Any]], cfg: RunConfig
                ) -> tuple[dict[str, float], dict[str, list[float]], dict[str, dict[str, float]]]:
    """Task metrics, localisation, timings, perturbation AUCs and threshold scores of ``records``."""
    metrics: dict[str, float] = dict(task.aggregate(records))
    for key in ("relevance_mass", "pointing_game", "object_patch_share", "map_seconds", "generation_seconds"):
        values = [r[key] for r in records if r.get(key) is not None and r[key] == r[key]]
        if values:
            metrics[key] = float(np.mean(values))
    # maps of wrong answers need not show the question's object: the localisation of right answers apart
    for key in ("relevance_mass", "pointing_game"):
        values = [r[key] for r in records if r["score"] >= 1 and r.get(key) is not None and r[key] == r[key]]
        if values:
            metrics[f"{key}_correct"] = float(np.mean(values))
            metrics.setdefault("n_correct_localised", float(len(values)))  # questions behind relevance_mass_correct
    curves: dict[str, list[float]] = {}
    with_curves = [r for r in records if "curves" in r]
    if with_curves:
        fr = cfg.fractions
        for d, short in (("positive", "pp"), ("negative", "np")):
            mean_curve = np.mean([r["curves"][d] for r in with_curves], axis=0)
            curves[d] = mean_curve.tolist()
            metrics[f"{short}_auc"] = curve_auc(fr, mean_curve)
            window = [i for i, f in enumerate(fr) if f <= 0.2 + 1e-9]
            if len(window) >= 2:
                metrics[f"{short}_auc_first20"] = curve_auc([fr[i] for i in window], mean_curve[window])
    counts = [r["threshold_counts"] for r in records if "threshold_counts" in r]
    threshold: dict[str, dict[str, float]] = {}
    if counts:
        for c in counts[0]:
            tp, fp, fn, tn = np.sum([x[c] for x in counts], axis=0)
            f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
            threshold[c] = {"accuracy": float((tp + tn) / (tp + fp + fn + tn)), "f1": float(f1)}
        metrics["threshold_accuracy"] = threshold["0.5"]["accuracy"]
        metrics["threshold_f1"] = threshold["0.5"]["f1"]
    return metrics, curves, threshold


def _entry(key: str, value: float | None, interval: tuple[float, float] | None, **extra: Any) -> dict[str, Any]:
    """One metric of results.json; NaN (undefined, e.g. no wrong answer) is written as null."""
    clean = None if value is None or value != value else float(value)
    return {"value": clean, "ci95": list(interval) if interval else None,
            "higher_is_better": HIGHER_IS_BETTER.get(key.split("/")[-1]), **extra}


def summarise(task, records: list[dict[str, Any]], cfg: RunConfig) -> dict[str, Any]:
    """Aggregate per-sample records into the run's metrics (pure: used by resume, `summarise` and leaderboards).

    Every aggregate carries a seeded percentile-bootstrap 95% interval over samples (``ci95``);
    entropy confidence is the mean over `ENTROPY_SPLITS` random calibration/evaluation splits,
    with their standard deviation (``spread``) and central 95% range (``ci95``).
    """
    from fastrm_bench.metrics.entropy import entropy_over_splits
    from fastrm_bench.metrics.uncertainty import RESAMPLES, bootstrap_intervals

    metrics, curves, threshold = _aggregates(task, records, cfg)
    intervals = bootstrap_intervals(records, lambda rs: _aggregates(task, rs, cfg)[0], cfg.seed) if records else {}
    out = {k: _entry(k, v, intervals.get(k)) for k, v in metrics.items()}
    if len(records) >= 4:
        entropy = np.array([r["entropy"] for r in records])
        correct = np.array([r["score"] >= 0.5 for r in records])
        for key, s in entropy_over_splits(entropy, correct, cfg.seed, ENTROPY_SPLITS).items():
            if s["n"]:
                out[f"entropy_{key}"] = _entry(f"entropy_{key}", s["mean"], (s["low"], s["high"]), spread=s["std"],
                                               splits=s["n"])
    return {
        "n": len(records),
        "metrics": out,
        "curves": {"fractions": list(cfg.fractions), **curves},
        "threshold_sweep": threshold,
        "uncertainty": {"ci95": f"percentile bootstrap over samples, {RESAMPLES} resamples, seed {cfg.seed}",
                        "entropy": f"mean over {ENTROPY_SPLITS} random calibration/evaluation halves (seed {cfg.seed}); "
                                   "spread = their standard deviation, ci95 = their central 95%"},
    }

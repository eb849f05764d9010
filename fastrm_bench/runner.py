"""`fastrm-bench run`: answer, score, explain and perturb every sample; save a run directory.

The run directory (layout, locking, resume) is `fastrm_bench.rundir`'s job; this module checks
the configuration, evaluates samples and aggregates. Order of work: every argument and spec is
checked, the task, model and method (with its checkpoint) are loaded, and only then is the run
directory created or opened, so that a bad argument never touches it.

Per-sample work depends only on (config, sample): random maps are seeded by (seed, sample id,
draw) and perturbation tie-breaks by (seed, draw), so a resumed run equals an uninterrupted one,
and a run of several processes (each answering its share of the samples) equals a run of one. A
sample whose data is bad (missing or corrupt image, unparsable entry), or on which the method or a
metric raises, is skipped and recorded under ``--on-error skip`` (the default) or stops the run in
one line under ``--on-error fail``; model, memory, run-directory and configuration errors stop the run.

What is measured is the run's list of metrics (`fastrm_bench.metrics.base.Metric` plug-ins, ``--metric``):
the runner gives each the sample context it declares it needs and knows none of them by name.

Run directory: ``config.json`` (everything needed to reproduce), ``samples.jsonl`` (one line per
sample, with its image ``layout``, its answer tokens and every metric's fields), ``maps.npz`` (every
sample map) and ``token_maps.npz`` (every answer token's map; both `fastrm_bench.maps_io`),
``results.json``; see `fastrm_bench.rundir`.
"""

from __future__ import annotations

import json
import platform
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fastrm_bench.builders import create_aggregation, create_method, create_metric, create_task_for_model
from fastrm_bench.cache import portable_path, resolve_portable
from fastrm_bench.data_errors import SampleDataError
from fastrm_bench.interfaces import Explanation, Sample, check_maps
from fastrm_bench.metrics import DEFAULT_METRICS, legacy_metrics
from fastrm_bench.metrics.base import Metric, RunSettings, SampleContext
from fastrm_bench.metrics.perturbation import DEFAULT_FRACTIONS
from fastrm_bench.models.adapter import REMOVAL_STRATEGIES
from fastrm_bench.parallel import Ranks, current_ranks
from fastrm_bench.rundir import RESULTS, RunDir, RunDirError, replace_file, shard_dir
from fastrm_bench.specs import recorded


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
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    aggregation: str = "mean"  # per-token maps -> sample map (`fastrm_bench.aggregation`)
    dtype: str = "float32"  # the weights' dtype (gradient methods accumulate in float32 whatever it is)
    device_map: str | None = None  # "auto": accelerate spreads a model larger than one GPU
    batch_size: int = 1  # samples answered together (left padding); their removals packed where the model allows
    on_error: str = "skip"  # a sample with bad data (missing/corrupt image, unparsable entry): "skip" it or "fail"
    attn_implementation: str = "sdpa"  # what the model answers with; methods recompute the attention they read

    @classmethod
    def from_dict(cls, run: dict[str, Any]) -> RunConfig:
        """The configuration a run directory's config.json records (older runs: what they measured then)."""
        run = dict(run)
        if "metrics" not in run:
            run["metrics"] = legacy_metrics(run)
        return cls(**run)

    @property
    def settings(self) -> RunSettings:
        return RunSettings(tuple(self.fractions), self.removal, self.seed, self.max_new_tokens)

    def check(self) -> None:
        """Refuse names and values no run can use, before anything is loaded or written."""
        from fastrm_bench.checks import check_run
        from fastrm_bench.models.adapter import DTYPES
        from fastrm_bench.models.attention_capture import ATTN_IMPLEMENTATIONS
        from fastrm_bench.registry import AGGREGATIONS

        check_run(self.method, self.task, self.metrics, self.aggregation, self.model, self.output_dir)
        problems = answering_problems(self.limit, self.max_new_tokens, self.seed)
        choices = {"dtype": (self.dtype, tuple(DTYPES)),
                   "--attn-implementation": (self.attn_implementation, ATTN_IMPLEMENTATIONS),
                   "--on-error": (self.on_error, ON_ERROR), "removal": (self.removal, REMOVAL_STRATEGIES),
                   "aggregation": (self.aggregation, tuple(AGGREGATIONS.names()))}
        problems += [f"{option} must be one of {', '.join(allowed)}, got {value!r}"
                     for option, (value, allowed) in choices.items() if value not in allowed]
        if self.batch_size < 1:
            problems.append(f"--batch-size must be at least 1, got {self.batch_size}")
        if len(set(self.metrics)) != len(self.metrics):
            problems.append(f"--metric names a metric twice: {self.metrics}")
        fr = list(self.fractions)
        if len(fr) < 2 or any(not 0 <= f < 1 for f in fr) or fr != sorted(set(fr)):
            problems.append(f"fractions must be at least two increasing values in [0, 1), got {fr}")
        problems += _device_problems(self.device)
        if problems:
            raise ValueError("; ".join(problems))


ON_ERROR = ("skip", "fail")


def _device_problems(device: str | None) -> list[str]:
    """What is wrong with ``--device`` (empty: nothing, or not given)."""
    if device is None:
        return []
    try:
        parsed = torch.device(device)
    except RuntimeError:
        return [f"--device {device!r} is not a device (cpu, cuda, cuda:1 ...)"]
    if parsed.type == "cuda" and not torch.cuda.is_available():
        return [f"--device {device}: no CUDA device is available here"]
    return []


def answering_problems(limit: int | None, max_new_tokens: int, seed: int) -> list[str]:
    """What is wrong with the options every command that answers questions takes (empty: nothing)."""
    problems = []
    if limit is not None and limit < 1:
        problems.append(f"--limit must be a positive number of questions, got {limit}")
    if max_new_tokens < 1:
        problems.append(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if seed < 0:
        problems.append(f"--seed must be >= 0, got {seed}")
    return problems


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


def create_metrics(names: list[str]) -> list[Metric]:
    return [create_metric(name)[0] for name in names]


Evaluated = tuple[dict[str, Any], np.ndarray, np.ndarray]  # a sample's record, its sample map [n], its token maps [T, n]


class Evaluator:
    """Per-sample work of a run: everything here depends only on (config, sample).

    Samples come in batches (``--batch-size``): the batch is answered as one left-padded batch (each
    answer is the one the sample alone gets: `ModelAdapter.generate`), each sample is explained on its
    own inputs, and where the model packs removals the perturbed answers the metrics will ask for
    (`Metric.removals`) are answered for the whole batch at once. Batching changes float rounding only.
    """

    def __init__(self, cfg: RunConfig, adapter, task, method, metrics: list[Metric]):
        self.cfg, self.adapter, self.task, self.method, self.metrics = cfg, adapter, task, method, metrics
        self.aggregate = create_aggregation(cfg.aggregation)[0]
        self.references = {}  # the methods metrics take labels from, by name (one instance each)
        for metric in metrics:
            name = metric.needs.reference_method
            if name is not None and name not in self.references:
                self.references[name] = create_method(name)[0]
                self.references[name].prepare(adapter)
        #: generation keeps its final-norm hidden states only for a method that reads them
        self.return_hidden = any(m.needs.hidden_states for m in [method, *self.references.values()])

    def __call__(self, sample: Sample) -> Evaluated:
        """One sample's record, its sample map ``[n]`` and its per-token maps ``[T, n]``."""
        return self.evaluate([sample])[0]

    def evaluate(self, samples: list[Sample]) -> list[Evaluated]:
        """What `__call__` gives for each sample, the batch answered together."""
        adapter = self.adapter
        inputs = [replace(adapter.build_inputs([s.model_images], [self.task.prompt(s)]), sample_id=s.id) for s in samples]
        t0 = time.perf_counter()
        if len(samples) == 1:
            generations = adapter.generate(inputs[0], self.cfg.max_new_tokens, return_hidden=self.return_hidden)
        else:
            batch = adapter.build_inputs([s.model_images for s in samples], [self.task.prompt(s) for s in samples])
            generations = adapter.generate(batch, self.cfg.max_new_tokens, return_hidden=self.return_hidden)
        seconds = (time.perf_counter() - t0) / len(samples)  # a batch's answering time, shared equally
        contexts = [self._context(*args, seconds) for args in zip(samples, inputs, generations)]
        if len(samples) > 1 and adapter.packs_removals:
            self._answer_removals_together(contexts)
        return [self._measure(context) for context in contexts]

    def _context(self, sample: Sample, inputs, generation, generation_seconds: float) -> SampleContext:
        adapter, method = self.adapter, self.method
        explanation = self._explain(method, inputs, generation, sample)
        smap = self.aggregate(adapter, inputs, generation, explanation)
        score = self.task.score(generation.text, sample)

        def draw_map(draw: int):
            again = replace(inputs, draw=draw)
            return self.aggregate(adapter, again, generation, self._explain(method, again, generation, sample))

        return SampleContext(sample, inputs, generation, explanation, smap, score, generation_seconds, self.cfg.settings,
                             adapter, self.task, draw_map=draw_map, draws=method.needs.draws)

    def _explain(self, method, inputs, generation, sample: Sample) -> Explanation:
        """The method's maps, refused unless ``[T, n_image_tokens]`` (metrics and the saved maps rely on it)."""
        explanation = method.explain_sample(self.adapter, inputs, generation, sample)
        check_maps(method.name, explanation, generation, inputs.layout)
        return explanation

    def _applies(self, metric: Metric, context: SampleContext) -> bool:
        needs = metric.needs
        return not ((needs.mask and context.sample.mask is None)
                    or (needs.probabilities and not self.method.needs.probabilities))

    def _answer_removals_together(self, contexts: list[SampleContext]) -> None:
        """Answer every sample's declared removals in one batch per image-token count (`keep_rows`)."""
        wanted = [self._unanswered_removals(context) for context in contexts]
        groups: dict[int, list[int]] = {}
        for i, context in enumerate(contexts):
            if wanted[i] is not None and len(wanted[i]):
                groups.setdefault(context.inputs.layout.num_tokens, []).append(i)
        for members in groups.values():
            self._answer_group([contexts[i] for i in members], [wanted[i] for i in members])

    def _unanswered_removals(self, context: SampleContext) -> torch.Tensor | None:
        """The keep-masks the sample's metrics will ask answers for that it has not got yet (None: none asked)."""
        rows = [m.removals(context) for m in self.metrics if self._applies(m, context)]
        rows = [r for r in rows if r is not None]
        return context.unanswered(torch.cat(rows)) if rows else None

    def _answer_group(self, contexts: list[SampleContext], wanted: list[torch.Tensor]) -> None:
        """Answer the removals of samples with one image-token count in one batch, and give each its scores."""
        samples = [c.sample for c in contexts]
        batch = self.adapter.build_inputs([s.model_images for s in samples], [self.task.prompt(s) for s in samples])
        keep = torch.cat(wanted)
        owner = torch.cat([torch.full((len(rows),), j) for j, rows in enumerate(wanted)])
        answers = self.adapter.generate(batch, self.cfg.max_new_tokens, image_keep=keep, removal=self.cfg.removal,
                                        keep_rows=owner)
        start = 0
        for context, rows in zip(contexts, wanted):
            texts = [g.text for g in answers[start : start + len(rows)]]
            context.remember_scores(rows, [self.task.score(text, context.sample) for text in texts])
            start += len(rows)

    def _measure(self, context: SampleContext) -> Evaluated:
        adapter, sample, inputs, generation = self.adapter, context.sample, context.inputs, context.generation
        record: dict[str, Any] = {
            "id": sample.id, "question": sample.question, "prediction": generation.text, "reference": sample.references[0],
            "score": context.score, "meta": sample.meta, "num_tokens": generation.num_generated,
            "tokens": [adapter.tokenizer.decode([int(t)]) for t in generation.generated_ids],
            "layout": inputs.layout.to_dict(),
        }
        labels: dict[str, Explanation] = {}
        for metric in self.metrics:
            if not self._applies(metric, context):
                continue
            name = metric.needs.reference_method
            if name is not None:
                if name not in labels:
                    labels[name] = self._explain(self.references[name], inputs, generation, sample)
                context.reference = labels[name]
            fields = metric.update(context)
            context.reference = None
            clash = set(fields) & set(record)
            if clash:
                raise ValueError(f"metric {metric.name!r} writes {sorted(clash)}, already in the sample's record")
            record.update(fields)
        token_maps = context.explanation.maps.float().cpu().numpy()  # [T, n], [0, n] for an empty answer
        return record, context.sample_map.cpu().numpy(), token_maps


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


@dataclass
class PreparedRun:
    """What a run has checked and loaded before its run directory is touched (`prepare_run`)."""

    cfg: RunConfig
    task: Any
    selected: list[Any] | None  # the task's entries in order; None for a task that streams its samples
    evaluator: Evaluator
    out: Path
    config: dict[str, Any]  # config.json
    description: str  # the progress bar's label

    @property
    def order(self) -> list[str] | None:
        return [r.id for r in self.selected] if self.selected is not None else None


def run(cfg: RunConfig, resume: bool = False, log: Callable[[str], Any] = print, overwrite: bool = False,
        ranks: Ranks | None = None) -> dict[str, Any]:
    """Evaluate one method on one task; returns the aggregated results (with ``output_dir`` and ``n_skipped``).

    ``resume`` continues the run already in the output directory (matched by its configuration's
    fingerprint, not by the directory's name); ``overwrite`` discards whatever run is there. Without
    either, a directory that holds a run is refused and left as it is.

    Launched as several processes (``accelerate launch`` or torchrun; ``ranks`` defaults to the
    launcher's), each process answers its share of what is left and the main one merges the shares:
    the run directory is the one a single process writes, samples in the task's order. A resume may
    use another number of processes.
    """
    ranks = ranks or current_ranks()
    prepared = prepare_run(cfg, ranks, log)
    with ExitStack() as stack:
        plan = _open_main(stack, prepared, ranks, resume=resume, overwrite=overwrite)
        if plan.finished:  # resumed to report it, or killed after results.json was in place (only the clean-up left)
            results = ranks.from_main(_finished_results(plan.rundir, prepared.out) if ranks.is_main else None)
            return {"output_dir": str(prepared.out), "n_skipped": results.get("n_skipped", 0), **results}
        rundir = plan.rundir if ranks.is_main else _open_shard(stack, prepared, ranks)
        _evaluate_share(stack, prepared, rundir, set(plan.done), ranks, log)
        ranks.wait_for_everyone()
        results = ranks.from_main(_finish(prepared, rundir) if ranks.is_main else None)
    return {"output_dir": str(prepared.out), **results}


def prepare_run(cfg: RunConfig, ranks: Ranks, log: Callable[[str], Any]) -> PreparedRun:
    """Check every argument, load the task, the model and the method: a bad one fails before any file is written."""
    from fastrm_bench.models.zoo import load_model

    cfg.check()
    torch.manual_seed(cfg.seed)
    method, method_spec = create_method(cfg.method)  # cheap: bad names and params fail before any data or model work
    metrics = create_metrics(cfg.metrics)
    for name in {m.needs.reference_method for m in metrics} - {None}:
        create_method(name)  # the methods metrics take labels from: checked now, prepared once the model is loaded
    with ranks.main_first():  # the embedded world is built once, by the main process
        task, task_spec = create_task_for_model(cfg.task, cfg.model, cfg.data_root)
    if task.uses_embedded_world and ranks.is_main:
        log(task.embedded_world_note())
    selected = task.select(cfg.limit, cfg.seed)
    if selected is None and ranks.parallel:
        raise ValueError(f"{task_spec.name} streams its samples and cannot be shared between processes: run it in one")
    adapter = load_model(cfg.model, device=cfg.device or ranks.device, dtype=cfg.dtype, device_map=cfg.device_map,
                         attn_implementation=cfg.attn_implementation)
    perturbing = [m.name for m in metrics if m.needs.perturbation]
    if perturbing and cfg.removal not in adapter.removals:
        raise ValueError(f"removal {cfg.removal!r} (for {', '.join(perturbing)}) is not supported for the {adapter.family} "
                         f"family of {adapter.name}; use one of {adapter.removals}")
    method.prepare(adapter)  # e.g. the FastRM checkpoint: a bad one fails here, before the run directory is touched
    evaluator = Evaluator(cfg, adapter, task, method, metrics)  # the metrics' reference methods are prepared here too
    out = Path(cfg.output_dir or f"runs/{Path(adapter.name).name}/{task_spec.name}/{method_spec.name}")
    data_root = None if task.data_root is None else portable_path(task.data_root)
    recorded_run = {**asdict(cfg), "data_root": None if cfg.data_root is None else portable_path(cfg.data_root)}
    config = {"run": recorded_run, "task_spec": recorded(task_spec), "method_spec": recorded(method_spec),
              "model": adapter.name, "model_weights_sha256": adapter.weights_sha256, "data_source": task.data_source,
              "scoring": task.scoring, "data_root": data_root, "family": adapter.family,
              "attn_implementation": adapter.attn_implementation, "versions": _versions(), "device": str(adapter.device)}
    description = f"{method_spec.name} on {task_spec.name}"
    description += f" (rank {ranks.index + 1}/{ranks.count})" if ranks.parallel else ""
    return PreparedRun(cfg, task, selected, evaluator, out, config, description)


@dataclass
class _Plan:
    """What the main process found in the run directory, shared with every process."""

    finished: bool
    done: list[str]
    rundir: RunDir | None = None  # the main process's open run directory


def _open_main(stack: ExitStack, prepared: PreparedRun, ranks: Ranks, *, resume: bool, overwrite: bool) -> _Plan:
    """The main process opens the run directory under its lock and tells every process what is left to do."""
    plan: dict[str, Any] | None = None
    rundir = None
    if ranks.is_main:
        try:
            rundir = stack.enter_context(RunDir.open(prepared.out, prepared.config, resume=resume, overwrite=overwrite))
            stack.enter_context(_stop_on_sigterm())
            plan = {"finished": rundir.finished, "done": sorted(rundir.done_ids) if not rundir.finished else []}
        except Exception as err:
            ranks.from_main({"error": f"{type(err).__name__}: {err}"})
            raise
    plan = ranks.from_main(plan)
    if "error" in plan:
        raise RunDirError(f"the main process could not open the run directory ({plan['error']})")
    return _Plan(plan["finished"], plan["done"], rundir)


def _finished_results(rundir: RunDir, out: Path) -> dict[str, Any]:
    """A finished run's results, its leftovers cleaned up."""
    rundir.clean_up()
    return json.loads((out / RESULTS).read_text())


def _open_shard(stack: ExitStack, prepared: PreparedRun, ranks: Ranks) -> RunDir:
    """A process other than the main one writes its share into its own shard of the run directory."""
    rundir = stack.enter_context(RunDir.open(shard_dir(prepared.out, ranks.index, ranks.count), prepared.config,
                                             resume=True, overwrite=False))
    stack.enter_context(_stop_on_sigterm())
    return rundir


def _evaluate_share(stack: ExitStack, prepared: PreparedRun, rundir: RunDir, done: set[str], ranks: Ranks,
                    log: Callable[[str], Any]) -> None:
    """Evaluate this process's share of the samples not yet done, in batches, writing each as it is done."""
    cfg, task = prepared.cfg, prepared.task
    if prepared.selected is not None:
        todo: list[Any] = ranks.share([r for r in prepared.selected if r.id not in done])
        stream: Iterator[Any] = iter(todo)
    else:
        todo, stream = [], (s for s in task.samples(limit=cfg.limit, seed=cfg.seed) if s.id not in done)
    progress = stack.enter_context(tqdm(total=len(todo) if prepared.selected is not None else None,
                                        desc=prepared.description, unit="sample", position=ranks.index))
    try:
        for batch in _batches(stream, cfg.batch_size):
            samples = _load_samples(batch, prepared, rundir, log, progress)
            if samples:
                _evaluate_or_skip(prepared.evaluator, samples, cfg, rundir, log, progress)
    except KeyboardInterrupt:
        raise RunInterrupted(signal.SIGINT) from None


def _load_samples(batch: list[Any], prepared: PreparedRun, rundir: RunDir, log: Callable[[str], Any],
                  progress: Any) -> list[Sample]:
    """The batch's samples; one whose data is bad is skipped and recorded (or stops the run under ``fail``)."""
    samples = []
    for item in batch:
        try:
            samples.append(prepared.task.sample(item) if prepared.selected is not None else item)
        except SampleDataError as err:
            if prepared.cfg.on_error == "fail":
                raise
            log(f"skipped: {err}")
            rundir.add_skipped(err.sample_id, str(err))
            progress.update(1)
    return samples


def _finish(prepared: PreparedRun, rundir: RunDir) -> dict[str, Any]:
    """The main process merges the shards (of this attempt and earlier ones) and writes results, in the task's order."""
    rundir.absorb_shards()
    results = summarise(prepared.task, rundir.ordered_records(prepared.order), prepared.cfg)
    results["n_skipped"] = len(rundir.skipped)
    results["config"] = _results_config(prepared.config, prepared.task.scoring)
    rundir.finish(results, prepared.order)
    return results


class SampleFailedError(ValueError):
    """Evaluating one sample raised (a method's bug on an unusual input) and the run's policy is ``--on-error fail``."""


def _fatal_errors() -> tuple[type[BaseException], ...]:
    """Errors that stop a run whatever ``--on-error``: an interruption, the run directory, memory."""
    return (RunInterrupted, RunDirError, MemoryError, torch.cuda.OutOfMemoryError)


def _evaluate_or_skip(evaluate: Evaluator, samples: list[Sample], cfg: RunConfig, rundir: RunDir,
                      log: Callable[[str], Any], progress: Any) -> None:
    """Evaluate a batch and write its samples; a sample whose evaluation raises costs that sample only.

    A failing batch is evaluated again one sample at a time, to find the sample that fails.
    """
    try:
        evaluated = evaluate.evaluate(samples)
    except _fatal_errors():
        raise
    except Exception as err:
        if len(samples) > 1:
            for sample in samples:
                _evaluate_or_skip(evaluate, [sample], cfg, rundir, log, progress)
            return
        _sample_failed(samples[0].id, err, cfg, rundir, log)
        progress.update(1)
        return
    for record, smap, token_maps in evaluated:
        rundir.add_sample(record, smap, token_maps)
        progress.update(1)


def _sample_failed(sample_id: str, err: Exception, cfg: RunConfig, rundir: RunDir, log: Callable[[str], Any]) -> None:
    """Skip and record the sample (with the traceback, for the bug report) under ``skip``; stop in one line under ``fail``."""
    detail = " ".join(str(err).split())
    what = f"{cfg.method} failed on sample {sample_id} ({type(err).__name__}: {detail[:300]})"
    if cfg.on_error == "fail":
        raise SampleFailedError(f"{what}; the run stopped there (--on-error fail). What was written is consistent: fix "
                                "the cause and continue with --resume, or pass --on-error skip to skip such samples") from None
    log(f"skipped: {what}")
    rundir.add_skipped(sample_id, what, traceback=traceback.format_exc())


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last one shorter)."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


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
    out = Path(run_dir)
    try:
        task, records, cfg, config = summary_inputs(out)
    except RunDirError as err:
        raise RunDirError(f"{err}; the run's results.json is left as it was") from None
    results = summarise(task, records, cfg)
    results["config"] = _results_config(config, config.get("scoring", task.scoring))  # runs made before it was recorded
    replace_file(out / "results.json", lambda fh: fh.write(json.dumps(results, indent=2).encode()))
    return {"output_dir": str(out), **results}


def summary_inputs(run_dir: str | Path) -> tuple[Any, list[dict[str, Any]], RunConfig, dict[str, Any]]:
    """What `summarise` needs of a finished run: its task (made from the recorded spec), records, run config and
    config.json, read without the model or the images."""
    from fastrm_bench.registry import TASKS
    from fastrm_bench.rundir import read_config, read_records

    out = Path(run_dir)
    config, records = read_config(out), read_records(out)
    spec = config["task_spec"]
    params = dict(spec["params"])
    # aggregation reads no data: a moved data root is no obstacle
    if config["data_root"] is not None and resolve_portable(config["data_root"]).is_dir():
        params["data_root"] = str(resolve_portable(config["data_root"]))
    task = TASKS.create(spec["implementation"], **params)
    task.name = spec["name"]
    return task, records, RunConfig.from_dict(config["run"]), config


def _deep_merge(into: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


def _entry(value: float | None, interval: tuple[float, float] | list[float] | None, higher_is_better: bool | None,
           **extra: Any) -> dict[str, Any]:
    """One metric of results.json; NaN (undefined, e.g. no wrong answer) is written as null."""
    clean = None if value is None or value != value else float(value)
    return {"value": clean, "ci95": list(interval) if interval else None, "higher_is_better": higher_is_better, **extra}


def summarise(task, records: list[dict[str, Any]], cfg: RunConfig, subsets: bool = True) -> dict[str, Any]:
    """Aggregate per-sample records into the run's metrics (pure: used by resume, `summarise` and leaderboards).

    The task's aggregates and every metric's `compute` carry a seeded percentile-bootstrap 95%
    interval over samples (``ci95``); a metric's `intervals` add entries with their own uncertainty
    (entropy confidence: mean, spread and central 95% over random splits). Where the records say which
    samples are image-dependent (the ``image-reliance`` metric), ``image_dependent`` repeats every metric
    on those samples alone, with their number and share (SPEC 4c).
    """
    from fastrm_bench.metrics.uncertainty import RESAMPLES, bootstrap_intervals

    metrics = create_metrics(cfg.metrics)
    settings = cfg.settings
    direction: dict[str, bool | None] = {}

    def statistic(rows: list[dict[str, Any]]) -> dict[str, float]:
        values = dict(task.aggregate(rows))
        for metric in metrics:
            values.update(metric.compute(rows, settings))
        return values

    values = dict(task.aggregate(records))
    direction.update({k: task.higher_is_better(k) for k in values})
    for metric in metrics:
        computed = metric.compute(records, settings)
        direction.update({k: metric.direction(k) for k in computed})
        values.update(computed)
    intervals = bootstrap_intervals(records, statistic, cfg.seed) if records else {}
    out = {k: _entry(v, intervals.get(k), direction[k]) for k, v in values.items()}
    sections: dict[str, Any] = {}
    notes = {"ci95": f"percentile bootstrap over samples, {RESAMPLES} resamples, seed {cfg.seed}"}
    for metric in metrics:
        for key, entry in metric.intervals(records, settings).items():
            out[key] = _entry(entry.pop("value"), entry.pop("ci95"), metric.direction(key), **entry)
        _deep_merge(sections, metric.sections(records, settings))
        note = metric.interval_note(settings)
        if note:
            notes[metric.name] = note
    if subsets:
        sections.update(_image_dependent_section(task, records, cfg))
    return {"n": len(records), "metrics": out, **sections, "uncertainty": notes}


def _image_dependent_section(task, records: list[dict[str, Any]], cfg: RunConfig) -> dict[str, Any]:
    """``{"image_dependent": {n, share, metrics}}``: every metric on the image-dependent samples; {} where unknown."""
    judged = [r for r in records if "image_dependent" in r]
    if not judged:
        return {}
    subset = [r for r in judged if r["image_dependent"]]
    metrics = summarise(task, subset, cfg, subsets=False)["metrics"] if subset else {}
    return {"image_dependent": {"n": len(subset), "of": len(judged), "share": len(subset) / len(judged),
                                "metrics": metrics}}

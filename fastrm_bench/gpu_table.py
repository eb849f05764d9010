"""`fastrm-bench gpu-table`: the paper's latency and memory table at 7B scale, in one call that fits a time budget.

For every model of `gpu_shapes.SHAPES` (random weights, the real configs' shapes, bfloat16, built on the GPU)
and every answer length, generation is forced to exactly N tokens (EOS suppressed) and each method explains
all N of them. One JSON row per (model, method, attention implementation, N) is appended to
``OUT/rows.jsonl`` as soon as it is measured: the median seconds of the map over the repeats with their min
and max, the seconds of the generation before it, and the peak memory of generation + map above the
weights. ``generate`` is plain greedy generation (no hidden states kept, no map): what a user pays without
explanations; the ``fastrm`` row adds FastRM's overhead over it. ``chefer`` is measured twice: on the
model's own SDPA attention with every layer's attention captured and recomputed (the default), and on
eager attention probabilities with the model switched to eager attention (the textbook graph).

The command plans its own time: before measuring it prints the plan and an estimate from a quick first
measurement (one generation and one forward + backward of the first model, scaled to the other models by
their parameter counts, with a cost model of how many forward + backward passes each method makes); before
every row it predicts that row's cost (from the same method's shorter answers once measured) and leaves
rows that would not end before the budget. Run again, it skips the rows already in ``rows.jsonl``.

Peak memory on CUDA is the allocator's peak (exact in-process); on a CPU (the dry run) it is the growth of
the resident high-water mark in the same process, a lower bound only (`peak_memory_kind` says which).
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastrm_bench.gpu_shapes import SHAPES, ModelShape, build_adapter, parameter_count
from fastrm_bench.profiling import PeakMemory

LENGTHS = (10, 25, 50, 100)
ROWS, TABLE, FIGURE = "rows.jsonl", "table.md", "latency_memory.png"
QUESTION = "Describe the image in detail."
#: fields of every row (the dry-run test checks them)
ROW_FIELDS = ("model", "family", "method", "attn_implementation", "attention", "output_tokens", "image_tokens",
              "prompt_tokens", "seconds", "seconds_min", "seconds_max", "generation_seconds", "generation_seconds_min",
              "generation_seconds_max", "peak_memory_bytes", "peak_memory_kind", "model_bytes", "repeats",
              "repeats_asked", "dtype", "dry_run", "device_name", "torch", "cuda", "transformers", "commit")


@dataclass(frozen=True)
class Measure:
    """One column of the paper's table: a method (None: plain generation) on attention loaded as said."""

    method: str
    spec: str | None
    attention: str = "capture"  # how the method reads attention: capture (recomputed), eager, or none
    attn_implementation: str = "sdpa"  # what the model answers with during this row
    passes: str = "per_token"  # cost model: forward + backward passes of the map: none, one, per_token
    #: the method reads a FastRM proxy: an untrained one of the model's hidden size is made for the row
    proxy: bool = False
    #: the method's parameters for this row, as (name, value) pairs
    params: tuple[tuple[str, Any], ...] = ()


MEASURES = (
    Measure("generate", None, "none", passes="none"),
    Measure("fastrm", "fastrm", "none", passes="none", proxy=True),
    Measure("attention", "attention", passes="one"),
    Measure("rollout", "rollout", passes="one"),
    Measure("tam", "tam", "none", passes="one"),
    Measure("dex-ar", "dex-ar"),
    Measure("chefer", "chefer", params=(("attention", "capture"),)),
    Measure("chefer", "chefer", "eager", "eager", params=(("attention", "eager"),)),
    Measure("chefer-reference", "chefer-reference", "eager"),
)
PASSES = {"none": lambda n: 0, "one": lambda n: 1, "per_token": lambda n: n}


@dataclass(frozen=True)
class Case:
    """One row to measure."""

    shape: ModelShape
    measure: Measure
    tokens: int

    def key(self, dry_run: bool) -> tuple:
        return (self.shape.name, self.measure.method, self.measure.attn_implementation, self.tokens, dry_run)


def row_key(row: dict[str, Any]) -> tuple:
    return (row["model"], row["method"], row["attn_implementation"], row["output_tokens"], row["dry_run"])


@dataclass
class Settings:
    """What one call measures and where it writes."""

    out: Path = Path("results/gpu")
    budget_seconds: float = 8 * 60
    lengths: tuple[int, ...] = LENGTHS
    repeats: int = 3
    dry_run: bool = False
    models: tuple[str, ...] = ()  # names of SHAPES; empty: all
    device: str | None = None

    @property
    def torch_device(self) -> torch.device:
        if self.device:
            return torch.device(self.device)
        return torch.device("cpu" if self.dry_run or not torch.cuda.is_available() else "cuda")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32 if self.dry_run else torch.bfloat16


@dataclass
class Calibration:
    """Seconds of one model's basic work, from a quick first measurement (`probe`), and its parameter count."""

    prefill: float
    step: float
    forward_backward: float
    build: float
    params: int

    def scaled(self, params: int) -> Calibration:
        """The same work on a model of ``params`` parameters (cost taken proportional to the parameters)."""
        r = params / self.params
        return Calibration(self.prefill * r, self.step * r, self.forward_backward * r, self.build * r, params)

    def phase(self, measure: Measure, tokens: int) -> float:
        """Seconds of one repeat: the generation of ``tokens`` tokens, then the map's passes."""
        return self.prefill + (tokens - 1) * self.step + PASSES[measure.passes](tokens) * self.forward_backward


@dataclass
class Outcome:
    """What one call did: the rows it measured and those it left for the next call."""

    measured: list[dict[str, Any]] = field(default_factory=list)
    left: list[Case] = field(default_factory=list)
    estimate_seconds: float | None = None


# ------------------------------------------------------------------ environment and rows file


def environment(device: torch.device) -> dict[str, Any]:
    """The device name, library versions and git commit each row records."""
    import platform
    import subprocess

    import transformers

    try:
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit += "+uncommitted" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    from fastrm_bench import __version__

    return {"device_name": name, "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "commit": commit, "fastrm_bench": __version__}


def read_rows(out: Path) -> list[dict[str, Any]]:
    """The rows measured so far (a torn last line, from a killed run, is ignored and measured again)."""
    path = out / ROWS
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_row(out: Path, row: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / ROWS).open("a") as f:
        f.write(json.dumps(row) + "\n")


# ------------------------------------------------------------------ measuring


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _phase(adapter, inputs, method, tokens: int, clock: Callable[[], float] = time.perf_counter) -> tuple[float, float]:
    """(generation seconds, map seconds) of answering with exactly ``tokens`` tokens and explaining them all."""
    _sync(adapter.device)
    t0 = clock()
    generation = adapter.generate(inputs, tokens, min_new_tokens=tokens, return_hidden=method is not None)[0]
    _sync(adapter.device)
    t1 = clock()
    if method is not None:
        maps = method.explain(adapter, inputs, generation).maps
        if maps.shape[0] != tokens:
            raise RuntimeError(f"{method.name}: {maps.shape[0]} maps for {tokens} answer tokens")
    _sync(adapter.device)
    return t1 - t0, clock() - t1


def _forward_backward(adapter, inputs, generation) -> None:
    """One teacher-forced forward and the backward of one answer logit: the unit of the cost model."""
    forward = adapter.teacher_forced(inputs, generation)
    score = forward.logits[inputs.prompt_length - 1, int(generation.generated_ids[0])]
    torch.autograd.grad(score, forward.leaf)
    _sync(adapter.device)


def probe(adapter, inputs, tokens: int, build_seconds: float, params: int,
          clock: Callable[[], float] = time.perf_counter) -> Calibration:
    """The quick first measurement: prefill and per-token seconds of generation, one forward + backward at
    ``tokens`` answer tokens (each once after a warm-up)."""
    warm = adapter.generate(inputs, tokens, min_new_tokens=tokens)[0]
    _forward_backward(adapter, inputs, warm)
    timed = []
    works = (lambda: adapter.generate(inputs, 1, min_new_tokens=1),
             lambda: adapter.generate(inputs, tokens, min_new_tokens=tokens),
             lambda: _forward_backward(adapter, inputs, warm))
    for work in works:
        _sync(adapter.device)
        start = clock()
        work()
        _sync(adapter.device)
        timed.append(clock() - start)
    prefill, answer, forward_backward = timed
    step = max(answer - prefill, 0.0) / (tokens - 1) if tokens > 1 else prefill
    return Calibration(prefill, step, forward_backward, build_seconds, params)


def spread(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max) of the repeats."""
    return statistics.median(values), min(values), max(values)


def peak_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return "cuda max_memory_allocated above the weights (exact in-process)"
    return "cpu resident high-water growth in-process (a lower bound)"


def make_row(case: Case, adapter, inputs, times: list[tuple[float, float]], peaks: list[int | None],
             settings: Settings, env: dict[str, Any]) -> dict[str, Any]:
    """The JSON row of one measured case (see `ROW_FIELDS`)."""
    generation = spread([t[0] for t in times])
    plain = case.measure.spec is None
    seconds = generation if plain else spread([t[1] for t in times])
    return {
        **case_fields(case, settings), "image_tokens": int(inputs.layout.num_tokens), "prompt_tokens": inputs.prompt_length,
        "seconds": seconds[0], "seconds_min": seconds[1], "seconds_max": seconds[2],
        "generation_seconds": generation[0], "generation_seconds_min": generation[1], "generation_seconds_max": generation[2],
        "peak_memory_bytes": None if None in peaks else max(peaks), "peak_memory_kind": peak_kind(adapter.device),
        "model_bytes": sum(p.numel() * p.element_size() for p in adapter.model.parameters()),
        "repeats": len(times), **env,
    }


def case_fields(case: Case, settings: Settings) -> dict[str, Any]:
    """What a row says about its case, measured or failed."""
    return {"model": case.shape.name, "family": case.shape.family, "method": case.measure.method,
            "attn_implementation": case.measure.attn_implementation, "attention": case.measure.attention,
            "output_tokens": case.tokens, "repeats_asked": settings.repeats,
            "dtype": str(settings.dtype).removeprefix("torch."), "dry_run": settings.dry_run}


def add_overhead(row: dict[str, Any], baseline: dict[str, Any] | None) -> None:
    """FastRM's overhead: its generation (keeping the final-norm states) plus the proxy, over plain generation."""
    if baseline is None or baseline["seconds"] is None:
        return
    extra = row["generation_seconds"] + row["seconds"] - baseline["seconds"]
    row["overhead_seconds"] = extra
    row["overhead_share"] = extra / baseline["seconds"]


def create_methods(adapter, fastrm_dir: Path) -> dict[Measure, Any]:
    """A fresh instance of every measured method for this model (FastRM with an untrained proxy of its width:
    its cost does not depend on what it learned)."""
    from fastrm_bench.builders import create_method
    from fastrm_bench.fastrm.model import FastRM

    proxy = FastRM(adapter.hidden_size).save_pretrained(fastrm_dir / f"fastrm-{adapter.hidden_size}")
    methods: dict[Measure, Any] = {}
    for measure in MEASURES:
        if measure.spec is None:
            continue
        overrides = {**dict(measure.params), **({"checkpoint": str(proxy)} if measure.proxy else {})}
        methods[measure] = create_method(measure.spec, **overrides)[0]
        methods[measure].prepare(adapter)
    return methods


# ------------------------------------------------------------------ planning within the budget


def select_shapes(names: Iterable[str]) -> list[ModelShape]:
    names = list(names)
    known = {s.name: s for s in SHAPES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose among {', '.join(known)}")
    return [known[n] for n in names] if names else list(SHAPES)


class Runner:
    """One call of the command: plan, estimate, measure what fits in the budget, write what was measured."""

    def __init__(self, settings: Settings, log: Callable[[str], None] = print, clock: Callable[[], float] = time.perf_counter):
        self.settings, self.log, self.clock = settings, log, clock
        self.start = clock()
        self.rows = read_rows(settings.out)
        self.done = {row_key(r) for r in self.rows}
        self.reserve = 0.0  # seconds kept to write the table and figure at the end
        self.slack = 0.0  # the most a row has taken beyond its prediction: kept free too
        self.spent = False
        self.written = -1  # rows in the table and figure on disk
        self.reference: Calibration | None = None
        self.params: dict[str, int] = {}
        self.outcome = Outcome()

    def remaining(self) -> float:
        """Seconds left for measuring; once none are, the clock is not read again (time only moves on)."""
        if self.spent:
            return 0.0
        left = self.settings.budget_seconds - (self.clock() - self.start) - self.reserve - self.slack
        self.spent = left <= 0
        return left

    def pending(self) -> dict[ModelShape, list[Case]]:
        """The cases of every model not yet in the rows file, shorter answers first."""
        plan = {}
        for shape in select_shapes(self.settings.models):
            cases = [Case(shape, m, n) for n in sorted(self.settings.lengths) for m in MEASURES]
            cases = [c for c in cases if c.key(self.settings.dry_run) not in self.done]
            if cases:
                plan[shape] = cases
        return plan

    def announce(self, plan: dict[ModelShape, list[Case]]) -> None:
        s = self.settings
        self.log(f"gpu-table: {'dry run, tiny widths' if s.dry_run else 'real shapes'} on {s.torch_device} in "
                 f"{str(s.dtype).removeprefix('torch.')}, answers of {', '.join(map(str, sorted(s.lengths)))} tokens, "
                 f"median of {s.repeats} repeats, budget {s.budget_seconds / 60:.1f} min, rows in {s.out / ROWS}")
        labels = ", ".join(f"{m.method} ({m.attn_implementation})" for m in MEASURES)
        self.log(f"measures per model and length: {labels}")
        for shape, cases in plan.items():
            self.params[shape.name] = parameter_count(shape, s.dry_run)
            self.log(f"  {shape.name} ({shape.family}, {self.params[shape.name] / 1e9:.3g}B parameters): "
                     f"{len(cases)} rows to measure")
        if not plan:
            self.log("every row is already measured; writing the table and figure")

    def predict(self, case: Case, calibration: Calibration) -> float:
        """Seconds of one repeat: from the same method's longest shorter answer once measured (linear in the
        answer's length), else from the calibration's cost model."""
        measure = case.measure
        shorter = [r for r in self.rows if (r["model"], r["method"], r["attn_implementation"], r["dry_run"])
                   == (case.shape.name, measure.method, measure.attn_implementation, self.settings.dry_run)
                   and r["output_tokens"] < case.tokens and r["seconds"] is not None]
        if not shorter:
            return calibration.phase(measure, case.tokens)
        row = max(shorter, key=lambda r: r["output_tokens"])
        phase = row["seconds"] if measure.spec is None else row["generation_seconds"] + row["seconds"]
        return phase * case.tokens / row["output_tokens"]

    def estimate(self, plan: dict[ModelShape, list[Case]], own: dict[str, Calibration]) -> float:
        """Seconds of the whole plan: builds, probes and every case's repeats."""
        total = 0.0
        shortest = min(self.settings.lengths)
        for shape, cases in plan.items():
            cal = own.get(shape.name) or self.reference.scaled(self.params[shape.name])
            if shape.name not in own:
                total += cal.build + 2 * cal.phase(MEASURES[0], shortest) + cal.forward_backward
            total += sum(self.settings.repeats * self.predict(c, cal) for c in cases)
        return total

    # -------------------------------------------------------------- the call
    def run(self) -> Outcome:
        """Measure every pending row that fits in the budget, then write the rows' table and figure."""
        plan = self.pending()
        self.announce(plan)
        self.env = environment(self.settings.torch_device)
        self.reserve = 2 * self.write_outputs()  # what writing costs (the figure's library loaded), doubled, is kept
        with tempfile.TemporaryDirectory() as tmp:
            for shape, cases in plan.items():
                cal = self.reference.scaled(self.params[shape.name]) if self.reference else None
                if self.remaining() <= 0 or (cal and cal.build + 2 * cal.phase(MEASURES[0], 1) > self.remaining()):
                    self.outcome.left += cases
                    continue
                self.model(shape, cases, plan, Path(tmp))
                self.reserve = 2 * self.write_outputs()  # written per model; what writing costs, doubled, is kept
        if self.written != len(self.rows):
            self.write_outputs()
        self.tell_left(sum(len(c) for c in plan.values()))
        return self.outcome

    def model(self, shape: ModelShape, cases: list[Case], plan: dict[ModelShape, list[Case]], tmp: Path) -> None:
        """Build one model on the device, probe it, measure its cases, free it."""
        s = self.settings
        start = self.clock()
        adapter = build_adapter(shape, s.dry_run, s.torch_device, s.dtype)
        inputs = adapter.build_inputs([question_image(shape, s.dry_run)], [QUESTION])
        methods = create_methods(adapter, tmp)
        cal = probe(adapter, inputs, min(s.lengths), self.clock() - start, self.params[shape.name], self.clock)
        self.log(f"{shape.name}: built in {cal.build:.1f} s, {inputs.layout.num_tokens} image tokens, "
                 f"{inputs.prompt_length} prompt tokens")
        if self.reference is None:
            self.reference = cal
            self.tell_estimate(plan, shape, cal)
        try:
            for case in cases:
                self.case(adapter, inputs, methods, case, cal)
        finally:  # the next model needs the memory
            del adapter, inputs, methods
            import gc

            gc.collect()
            if s.torch_device.type == "cuda":
                torch.cuda.empty_cache()

    def tell_estimate(self, plan: dict[ModelShape, list[Case]], first: ModelShape, cal: Calibration) -> None:
        estimate = self.estimate(plan, {first.name: cal}) + (self.clock() - self.start)
        self.outcome.estimate_seconds = estimate
        fits = "fits in" if estimate <= self.settings.budget_seconds else "exceeds"
        self.log(f"estimate: {estimate / 60:.1f} min ({fits} the {self.settings.budget_seconds / 60:.1f} min budget), from a "
                 f"quick first measurement on {first.name} (generation {cal.prefill:.3g} s prefill + {cal.step:.3g} s per "
                 f"token, one forward + backward {cal.forward_backward:.3g} s), scaled to the other models by their "
                 "parameter counts, with a cost model of the maps' forward + backward passes (none: generate, fastrm; one: "
                 "attention, rollout, tam; one per answer token: dex-ar, chefer, chefer-reference); rows that would not end "
                 "before the budget are left for the next call")

    def case(self, adapter, inputs, methods: dict[Measure, Any], case: Case, cal: Calibration) -> None:
        """Measure one row with as many of the repeats as the budget allows (none: the row is left). A method that
        fails (out of memory, an unsupported family) gets a row with its error, so the next call does not retry it."""
        one = self.predict(case, cal)
        repeats = min(self.settings.repeats, math.floor(self.remaining() / one) if one > 0 else self.settings.repeats)
        if repeats < 1:
            self.outcome.left.append(case)
            return
        start = self.clock()
        try:
            times, peaks = self.repeat(adapter, inputs, methods.get(case.measure), case, repeats)
            self.slack = max(self.slack, self.clock() - start - one * len(times))
        except Exception as err:  # noqa: BLE001 - one failing method must not cost the other rows
            if adapter.device.type == "cuda":
                torch.cuda.empty_cache()
            row = {**dict.fromkeys(ROW_FIELDS), **case_fields(case, self.settings), **self.env,
                   "error": f"{type(err).__name__}: {err}"}
            self.record(row, f"failed: {row['error']}")
            return
        row = make_row(case, adapter, inputs, times, peaks, self.settings, self.env)
        if case.measure.spec is not None and case.measure.passes == "none":  # computed beside generation: its overhead
            add_overhead(row, next((r for r in self.rows if row_key(r) == (case.shape.name, "generate", "sdpa", case.tokens,
                                                                              self.settings.dry_run)), None))
        self.record(row, f"{row['seconds']:.4g} s [{row['seconds_min']:.4g}-{row['seconds_max']:.4g}], generation "
                         f"{row['generation_seconds']:.4g} s, peak {_size(row['peak_memory_bytes'])}")

    def repeat(self, adapter, inputs, method, case: Case, repeats: int) -> tuple[list[tuple[float, float]], list[int | None]]:
        """Up to ``repeats`` timed phases under the row's attention implementation, each with its peak memory; a
        further repeat is not started when one more would not end before the budget."""
        loaded = adapter.model.config._attn_implementation
        adapter.model.set_attn_implementation(case.measure.attn_implementation)
        times, peaks = [], []
        try:
            for _ in range(repeats):
                with PeakMemory(adapter.device) as memory:
                    times.append(_phase(adapter, inputs, method, case.tokens, self.clock))
                peaks.append(memory.peak_bytes)
                if sum(times[-1]) > self.remaining():
                    break
        finally:
            adapter.model.set_attn_implementation(loaded)
        return times, peaks

    def record(self, row: dict[str, Any], said: str) -> None:
        append_row(self.settings.out, row)
        self.rows.append(row)
        self.outcome.measured.append(row)
        self.log(f"  {row['model']} {row['method']:<17} {row['attn_implementation']:<6} {row['output_tokens']:>4} tokens: {said}")

    def tell_left(self, planned: int) -> None:
        left = self.outcome.left
        if not left:
            self.log(f"done: every row measured ({len(self.outcome.measured)} in this call); {self.settings.out / TABLE}, "
                     f"{self.settings.out / FIGURE}")
            return
        by_model: dict[str, list[str]] = {}
        for c in left:
            by_model.setdefault(c.shape.name, []).append(f"{c.measure.method} ({c.measure.attn_implementation}) at {c.tokens}")
        parts = "; ".join(f"{name}: {', '.join(items)}" for name, items in by_model.items())
        self.log(f"stopped before the {self.settings.budget_seconds / 60:.1f} min budget: {len(left)} of {planned} rows left "
                 f"({parts}); the same command again resumes with them")

    def write_outputs(self) -> float:
        """Write the table and the figure of every row so far; the seconds it took."""
        start = self.clock()
        write_table(self.rows, self.settings.out / TABLE)
        write_figure(self.rows, self.settings.out / FIGURE)
        self.written = len(self.rows)
        return self.clock() - start


def question_image(shape: ModelShape, dry_run: bool):
    """A scene of the embedded world at the size of the photo the shape's questions are about."""
    from fastrm_bench.world.scenes import generate_scene, jpeg_roundtrip, scene_seed

    return jpeg_roundtrip(generate_scene(scene_seed("test", 0)).image).resize(shape.dims(dry_run).image)


# ------------------------------------------------------------------ table and figure


def _size(n: int | None) -> str:
    if n is None:
        return "n/a"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _label(row: dict[str, Any]) -> str:
    if row["method"] != "chefer":
        return row["method"]
    return f"chefer ({'eager probabilities' if row['attention'] == 'eager' else 'captured SDPA'})"


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    if row.get("error"):
        return f"failed ({row['error'][:80]})"
    text = f"{row['seconds']:.3g} s [{row['seconds_min']:.3g}-{row['seconds_max']:.3g}], {_size(row['peak_memory_bytes'])}"
    if "overhead_share" in row:
        text += f", {100 * row['overhead_share']:+.1f}% over generate"
    return text


def write_table(rows: list[dict[str, Any]], path: Path) -> None:
    """Markdown: per model, a line per method and a column per answer length (median seconds [min-max], peak)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Cost of explanations at 7B scale", ""]
    if not rows:
        path.write_text("\n".join(lines + ["No rows measured yet: run `fastrm-bench gpu-table`.", ""]))
        return
    envs = sorted({(r["device_name"], r["torch"], str(r["cuda"]), r["transformers"], r["commit"], r["dry_run"]) for r in rows})
    for device, torch_v, cuda, tf, commit, dry in envs:
        lines.append(f"- {'DRY RUN (tiny widths, not the real cost) ' if dry else ''}on {device}, torch {torch_v}, "
                     f"CUDA {cuda}, transformers {tf}, commit {commit}")
    lines += ["", "Cells: map seconds, median [min-max] of the repeats (`generate`: the answer itself); peak memory of "
              "generation + map above the weights. `fastrm`: its overhead over plain generation.", ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        lengths = sorted({r["output_tokens"] for r in mine})
        first = next((r for r in mine if r["seconds"] is not None), mine[0])
        lines += [f"## {model} ({first['family']}, {first['image_tokens']} image tokens, {first['dtype']}, weights "
                  f"{_size(first['model_bytes'])}{', dry run' if first['dry_run'] else ''})", "",
                  "| method | answers with | " + " | ".join(f"{n} tokens" for n in lengths) + " |",
                  "|---|---|" + "---|" * len(lengths)]
        for measure in MEASURES:
            cells = {r["output_tokens"]: r for r in mine
                     if (r["method"], r["attn_implementation"]) == (measure.method, measure.attn_implementation)}
            if cells:
                label = _label(next(iter(cells.values())))
                values = " | ".join(_cell(cells.get(n)) for n in lengths)
                lines.append(f"| {label} | {measure.attn_implementation} | {values} |")
        lines.append("")
    path.write_text("\n".join(lines))


def write_figure(rows: list[dict[str, Any]], path: Path) -> None:
    """The paper's figure: per model, map latency (log scale) and peak memory against the answer's length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["seconds"] is not None]
    models = list(dict.fromkeys(r["model"] for r in rows)) or ["(no rows yet)"]
    fig, axes = plt.subplots(2, len(models), figsize=(4.5 * len(models), 7), squeeze=False)
    for col, model in enumerate(models):
        mine = [r for r in rows if r["model"] == model]
        for label in dict.fromkeys(_label(r) for r in mine):
            points = sorted((r["output_tokens"], r["seconds"], r["peak_memory_bytes"]) for r in mine if _label(r) == label)
            style = "--" if label == "generate" else "-"
            axes[0][col].plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=label)
            axes[1][col].plot([p[0] for p in points], [(p[2] or 0) / 2**30 for p in points], style, marker="o", label=label)
        axes[0][col].set_title(model + (" (dry run)" if mine and mine[0]["dry_run"] else ""))
        axes[0][col].set_ylabel("seconds (map; generate: the answer)")
        axes[1][col].set_ylabel("peak memory above weights (GiB)")
        for ax in axes[:, col]:
            ax.set_xlabel("output tokens")
            ax.grid(alpha=0.3)
        if mine:
            axes[0][col].set_yscale("log")
    if rows:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(out: Path, budget_minutes: float, dry_run: bool, lengths: str, repeats: int, models: list[str] | None,
         device: str | None, log: Callable[[str], None] = print) -> Outcome:
    """The command's body: check the arguments (a ValueError says what is wrong), then run."""
    try:
        parsed = tuple(int(x) for x in lengths.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--max-new-tokens takes comma-separated integers, got {lengths!r}") from None
    if not parsed or min(parsed) < 1 or repeats < 1 or budget_minutes <= 0:
        raise ValueError("answer lengths and --repeats must be >= 1 and --budget-minutes > 0")
    settings = Settings(out=out, budget_seconds=budget_minutes * 60, lengths=parsed, repeats=repeats, dry_run=dry_run,
                        models=tuple(models or ()), device=device)
    select_shapes(settings.models)
    if not dry_run and settings.torch_device.type != "cuda":
        raise ValueError("the real-scale table needs a CUDA GPU (a 7B model in bfloat16 holds ~14 GB); on a CPU run "
                         "--dry-run (tiny widths, same code path), or pass --device cpu to insist")
    return Runner(settings, log).run()


__all__ = ["LENGTHS", "MEASURES", "ROW_FIELDS", "Runner", "Settings", "main"]

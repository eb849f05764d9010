"""The `fastrm-bench` command line."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from fastrm_bench import __version__
from fastrm_bench.registry import MODELS, UnknownNameError
from fastrm_bench.specs import SPEC_PATH_ENV, add_spec_dir, available

app = typer.Typer(
    help="Measure how good and how cheap explanation maps of vision-language models are.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Kind(str, Enum):
    methods = "methods"
    tasks = "tasks"
    models = "models"
    families = "families"
    metrics = "metrics"
    aggregations = "aggregations"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fastrm-bench {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
    spec_dir: Annotated[
        list[Path] | None,
        typer.Option("--spec-dir", help=f"Extra folder with methods/ and tasks/ YAML specs (also ${SPEC_PATH_ENV})."),
    ] = None,
) -> None:
    for folder in spec_dir or []:
        add_spec_dir(folder)


PROFILE_LENGTHS = "1,5,10,25,50,100"
#: the attention implementation a model is loaded with, one option for every command that loads one
AttnImplementation = Annotated[str, typer.Option(
    "--attn-implementation", help="Attention the model answers with: sdpa (default), flash_attention_2 or eager. "
                                  "Methods that read attention recompute what they need from what it received.")]
#: options several commands take, spelled once
ModelOption = Annotated[str, typer.Option(help="Registered model, local folder or hub id.")]
MaxNewTokens = Annotated[int, typer.Option(help="Greedy generation length limit.")]
Device = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available).")]
Dtype = Annotated[str, typer.Option(help="Weights' dtype: float32, bfloat16 or float16 (gradient methods accumulate "
                                         "relevancy in float32 whatever it is).")]


def _fail(message: str) -> NoReturn:
    typer.secho(message, err=True, fg=typer.colors.RED)
    raise typer.Exit(code=2)


def _launch_if_asked(ctx: typer.Context, num_processes: int) -> None:
    """Start the command again as ``num_processes`` ranks (and end with their exit code), unless it is one of them."""
    from fastrm_bench.parallel import as_argv, current_ranks, launch

    if num_processes < 1:
        _fail(f"--num-processes must be at least 1, got {num_processes}")
    if num_processes == 1 or current_ranks().parallel:
        return
    raise typer.Exit(launch(num_processes, as_argv(ctx.info_name or "run", ctx.params, leave_out=("num_processes",))))


@app.command("list")
def list_(kind: Annotated[Kind, typer.Argument(help="What to list.")]) -> None:
    """List the registered methods, tasks, models, model families (by config.model_type), metrics or aggregations."""
    if kind is Kind.models:
        rows = {name: MODELS.describe(name) for name in MODELS.names()}
    elif kind is Kind.families:
        from fastrm_bench.models.families import FAMILIES

        rows = {name: f"{FAMILIES.get(name).model_class}: {FAMILIES.describe(name)}" for name in FAMILIES.names()}
    else:
        rows = available(kind.value)
    width = max((len(n) for n in rows), default=0)
    for name, description in rows.items():
        typer.echo(f"{name:<{width}}  {description}")


class OnError(str, Enum):
    skip = "skip"
    fail = "fail"


@app.command()
def run(
    ctx: typer.Context,
    method: Annotated[str, typer.Option("--method", "-m", help="Method spec or registered name (see `list methods`).")],
    task: Annotated[str, typer.Option("--task", "-t", help="Task spec or registered name (see `list tasks`).")],
    model: ModelOption = "tiny-llava-shapes",
    limit: Annotated[str, typer.Option(help="Seeded subsample of this many questions, or 'all' for the whole split.")
                     ] = "200",
    seed: Annotated[int, typer.Option(help="Seed of subsampling and of seeded methods.")] = 0,
    output_dir: Annotated[str | None, typer.Option(help="Run directory (default runs/MODEL/TASK/METHOD).")] = None,
    data_root: Annotated[str | None, typer.Option(help="Folder with the official files (default: the embedded world).")] = None,
    max_new_tokens: MaxNewTokens = 10,
    device: Device = None,
    removal: Annotated[str, typer.Option(help="How perturbation removes image tokens: zero (every family) or drop.")] = "zero",
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", help="A metric to measure (repeat the option for several; see `list metrics`). "
                         "Default: all the built-in ones.")] = None,
    aggregation: Annotated[str, typer.Option(help="Per-token maps -> the sample map metrics score: mean, last or dex-ar "
                                                  "(see `list aggregations`).")] = "mean",
    dtype: Dtype = "float32",
    device_map: Annotated[str | None, typer.Option(help="'auto' spreads a model larger than one GPU (accelerate).")] = None,
    batch_size: Annotated[int, typer.Option(
        help="Samples answered together (left padding); where the model allows, their perturbed answers are packed "
             "into one batch too. Same results up to float rounding; more memory.")] = 1,
    resume: Annotated[bool, typer.Option(help="Continue the run of this configuration in the output dir (even if moved).")
                      ] = False,
    overwrite: Annotated[bool, typer.Option(help="Discard the run already in the output dir and start again.")] = False,
    on_error: Annotated[OnError, typer.Option(
        help="A sample with bad data (missing or corrupt image, unparsable entry) or on which the method fails: "
             "skip it (recorded in skipped.jsonl and counted) or fail. Model and configuration errors always fail.")
    ] = OnError.skip,
    num_processes: Annotated[int, typer.Option(
        help="Processes sharing the samples on this machine, one model each (one per GPU; torchrun). Several "
             "machines: `accelerate launch -m fastrm_bench run ...` (docs/models.md, Scaling).")] = 1,
    attn_implementation: AttnImplementation = "sdpa",
) -> None:
    """Answer, score and explain every sample of a task; write a run directory and print a summary."""
    from fastrm_bench.metrics import DEFAULT_METRICS

    if resume and overwrite:
        _fail("--resume continues the run in the output dir and --overwrite discards it: pass one of them")
    metrics = list(metric or DEFAULT_METRICS)
    whole_limit = _checked_before_loading(method, task, metrics, aggregation, model, output_dir, limit)
    from fastrm_bench.runner import RunConfig  # after the checks: a typo must not cost importing torch
    _launch_if_asked(ctx, num_processes)
    cfg = RunConfig(method=method, task=task, model=model, limit=whole_limit, seed=seed, output_dir=output_dir,
                    data_root=data_root, max_new_tokens=max_new_tokens, device=device, removal=removal, dtype=dtype,
                    device_map=device_map, on_error=on_error.value, metrics=metrics, aggregation=aggregation,
                    batch_size=batch_size, attn_implementation=attn_implementation)
    result = _run_or_fail(cfg, resume=resume, overwrite=overwrite)
    from fastrm_bench.parallel import current_ranks

    if current_ranks().is_main:  # launched as several processes: the main one says what the run found
        typer.echo(_run_summary(method, task, result))


def _run_or_fail(cfg: Any, *, resume: bool, overwrite: bool) -> dict[str, Any]:
    """The run's results; a bad input is one line and exit code 2, a stop one line and 128 + signal."""
    from fastrm_bench.data_errors import SampleDataError
    from fastrm_bench.models.adapter import ModelLoadError
    from fastrm_bench.runner import RunInterrupted
    from fastrm_bench.runner import run as run_evaluation

    try:
        return run_evaluation(cfg, resume=resume, overwrite=overwrite, log=typer.echo)
    except (RunInterrupted, KeyboardInterrupt) as err:  # Ctrl-C while loading or finishing too: one line, no traceback
        _stopped(err if isinstance(err, RunInterrupted) else RunInterrupted(2))
    except (UnknownNameError, ModelLoadError, SampleDataError, OSError, ValueError) as err:
        _fail(str(err))


#: the metrics a run's one-line summary shows, where measured
SUMMARY_METRICS = ("accuracy", "mean_f1", "pp_auc", "np_auc", "insertion_auc", "logprob_pp_auc", "threshold_f1",
                   "pointing_game", "relevance_mass", "token_pointing_own", "token_pointing_other", "token_mass_own",
                   "map_seconds")


def _run_summary(method: str, task: str, result: dict[str, Any]) -> str:
    metrics = result["metrics"]
    shown = [k for k in SUMMARY_METRICS if metrics.get(k, {}).get("value") is not None]
    summary = ", ".join(f"{k} {metrics[k]['value']:.3f}" for k in shown)
    skipped = f", {result['n_skipped']} skipped (see skipped.jsonl)" if result["n_skipped"] else ""
    return f"{method} on {task} ({result['n']} samples{skipped}): {summary} -> {result['output_dir']}"


def _checked_before_loading(method: str, task: str, metrics: list[str], aggregation: str, model: str,
                            output_dir: str | None, limit: str) -> int | None:
    """The parsed ``--limit``, once names, specs and paths are checked: before torch is imported, so that a typo
    costs what `list` costs; else one line and exit code 2."""
    from fastrm_bench.checks import check_run, parse_limit

    try:
        parsed = parse_limit(limit)
        check_run(method, task, metrics, aggregation, model, output_dir)
    except (UnknownNameError, ValueError) as err:
        _fail(str(err))
    return parsed


def _stopped(stop: Any) -> NoReturn:
    """A run stopped by a signal: one line and exit code 128 + signal (`entrypoint` then exits at once)."""
    typer.secho(f"{stop}; what was written is consistent: continue with --resume", err=True, fg=typer.colors.RED)
    _stopped_by_signal.append(128 + stop.signum)
    raise typer.Exit(code=128 + stop.signum) from None


class Format(str, Enum):
    table = "table"
    csv = "csv"
    markdown = "markdown"
    latex = "latex"
    parquet = "parquet"


@app.command("leaderboard")
def leaderboard_(
    runs_dir: Annotated[Path, typer.Argument(help="Folder searched for run directories.")] = Path("runs"),
    format: Annotated[Format, typer.Option("--format", help="Output format (parquet: a file, needs --out).")] = Format.table,
    out: Annotated[Path | None, typer.Option(help="Also save the table here (format from the suffix: .csv .md .tex "
                                                  ".parquet; with --format parquet, parquet).")] = None,
) -> None:
    """One row per finished run (its folder last): model, data, task, method, accuracy, PP/NP AUC, threshold F1,
    entropy, pointing, latency; one line (on stderr) per unfinished run."""
    from fastrm_bench.leaderboard import leaderboard, render, save
    from fastrm_bench.rundir import unfinished_runs

    if format is Format.parquet and out is None:
        _fail("--format parquet writes a file: pass --out FILE (the table is shown here too)")
    if not runs_dir.is_dir():
        _fail(f"{runs_dir} is not a folder of runs")
    problems: list[str] = []
    frame = leaderboard(runs_dir, problems)
    _tell_unfinished(unfinished_runs(runs_dir), problems)
    if frame.empty:
        _fail(f"no finished run directories (results.json + config.json) under {runs_dir}")
    typer.echo(render(frame, "table" if format is Format.parquet else format.value))
    if out:
        kind = {".csv": "csv", ".md": "markdown", ".tex": "latex", ".parquet": "parquet"}.get(out.suffix, "table")
        save(frame, out, "parquet" if format is Format.parquet else kind)


def _tell_unfinished(unfinished: list[tuple[Path, int]], problems: list[str]) -> None:
    """Say on stderr which runs a table leaves out, and why, so that none is missed silently."""
    for run_dir, done in unfinished:
        typer.echo(f"unfinished (left out): {run_dir}, {done} sample(s) so far; `run ... --resume` with its options "
                   "finishes it", err=True)
    for problem in problems:
        typer.echo(f"unreadable (left out): {problem}", err=True)


@app.command("summarise")
def summarise_(
    runs_dirs: Annotated[list[Path] | None, typer.Argument(
        help="Run directories, or folders searched for them (default: runs, as for leaderboard).")] = None,
) -> None:
    """Aggregate finished runs again from their samples.jsonl (intervals included) and rewrite their results.json."""
    from fastrm_bench.rundir import find_runs, unfinished_runs
    from fastrm_bench.runner import resummarise

    roots = list(runs_dirs or [Path("runs")])
    missing = [str(d) for d in roots if not d.exists()]
    if missing:
        _fail(f"no such folder: {', '.join(missing)}")
    found = [d for root in roots for d in find_runs(root)]
    _tell_unfinished([u for root in roots for u in unfinished_runs(root)], [])
    if not found:
        _fail(f"no finished run (config.json + results.json + samples.jsonl) under {', '.join(map(str, roots))}")
    failed = 0
    for run_dir in found:
        try:
            result = resummarise(run_dir)
        except (ValueError, KeyError, TypeError, OSError) as err:
            failed += 1
            typer.secho(f"{run_dir}: {err if isinstance(err, ValueError | OSError) else f'config.json lacks {err}'}",
                        err=True, fg=typer.colors.RED)
            continue
        typer.echo(f"{run_dir}: n={result['n']}, {len(result['metrics'])} metrics")
    if failed:
        _fail(f"{failed} of {len(found)} run(s) could not be summarised (named above); the others were")


@app.command("profile")
def profile_(
    method: Annotated[list[str], typer.Option("--method", "-m", help="Method(s) to profile; repeat the flag.")] = None,
    max_new_tokens: Annotated[str, typer.Option(help="Comma-separated output lengths.")] = PROFILE_LENGTHS,
    repeats: Annotated[int, typer.Option(help="Repeats per point (the median is reported).")] = 3,
    model: Annotated[str, typer.Option(help="Registered model, local folder or hub id.")] = "tiny-llava-shapes",
    device: Annotated[str | None, typer.Option(help="cpu, cuda ... (default: cuda if available).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for profile.csv and profile.json.")] = Path("runs/profile"),
    natural_task: Annotated[str | None, typer.Option(
        help="Time the model's own answers to this task's questions (e.g. describe) instead of forced lengths; "
             "--max-new-tokens is then the most one answer may take.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Questions answered with --natural-task.")] = 30,
    attn_implementation: AttnImplementation = "sdpa",
    image_tokens: Annotated[str | None, typer.Option(
        help="Comma-separated image-token counts (square numbers, e.g. 484,1024,2025,4096): profile peak memory and "
             "time against the image's size instead, on a random LLaVA of the shipped widths answering "
             "--max-new-tokens tokens (default 8), beside plain answering and Chefer on eager probabilities.")] = None,
) -> None:
    """Map latency and peak memory vs number of output tokens (default: fastrm and tam beside the gradient methods)."""
    from fastrm_bench.models.adapter import ModelLoadError
    from fastrm_bench.profile import DEFAULT_METHODS, profile, profile_natural, ratios, save

    if image_tokens is not None:
        _profile_image_tokens(image_tokens, method, max_new_tokens, repeats, device, out)
        return
    methods = list(method or DEFAULT_METHODS)
    try:
        lengths = [int(x) for x in max_new_tokens.split(",") if x.strip()]
    except ValueError:
        _fail(f"--max-new-tokens takes comma-separated integers, got {max_new_tokens!r}")
        return
    if natural_task is not None:
        try:
            frame = profile_natural(methods, natural_task, limit, repeats, model, device, max_new_tokens=max(lengths),
                                    attn_implementation=attn_implementation)
        except (UnknownNameError, ModelLoadError, FileNotFoundError, ValueError) as err:
            _fail(str(err))
            return
    else:
        frame = profile(methods, lengths, repeats, model, device, attn_implementation=attn_implementation)
    # the first two methods asked for are compared; the named pairs (fastrm, tam vs the reference) are always added
    summary = ratios(frame, methods[0], methods[1]) if method and len(methods) >= 2 else {}
    save(frame, out, summary)
    typer.echo(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for key, value in summary.items():
        typer.echo(f"{methods[0]} vs {methods[1]}: {key} = {value:.3g}")
    typer.echo(f"written to {out}/profile.csv and profile.json")


def _profile_image_tokens(image_tokens: str, method: list[str] | None, max_new_tokens: str, repeats: int,
                          device: str | None, out: Path) -> None:
    """`profile --image-tokens`: the memory-against-image-size table, written to OUT/image_tokens.csv and .md."""
    from fastrm_bench.scale_profile import DEFAULT_SCALE_METHODS, profile_image_tokens, save_image_tokens

    try:
        counts = [int(x) for x in image_tokens.split(",") if x.strip()]
        tokens = 8 if max_new_tokens == PROFILE_LENGTHS else int(max_new_tokens)
    except ValueError:
        _fail(f"--image-tokens takes comma-separated integers and --max-new-tokens one integer here, got "
              f"{image_tokens!r} and {max_new_tokens!r}")
        return
    try:
        frame = profile_image_tokens(counts, tuple(method or DEFAULT_SCALE_METHODS), tokens, repeats, device, log=typer.echo)
    except ValueError as err:
        _fail(str(err))
        return
    for path in save_image_tokens(frame, out):
        typer.echo(f"written to {path}")


@app.command("gpu-table")
def gpu_table(
    budget_minutes: Annotated[float, typer.Option(help="Stop cleanly before this many minutes; a second call resumes.")] = 8.0,
    out: Annotated[Path, typer.Option(help="Folder of rows.jsonl, table.md and latency_memory.png.")] = Path("results/gpu"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="CPU, tiny widths: the same code path in seconds.")] = False,
    max_new_tokens: Annotated[str, typer.Option(help="Comma-separated answer lengths.")] = "10,25,50,100",
    repeats: Annotated[int, typer.Option(help="Repeats per row (the median is reported, with min and max).")] = 3,
    model: Annotated[list[str], typer.Option("--model", help="Only these shapes (repeat the flag; default: all).")] = None,
    device: Annotated[str | None, typer.Option(help="Default: cuda (cpu for --dry-run).")] = None,
) -> None:
    """Latency and peak memory of every method on random models of 7B-class shapes, within a time budget."""
    from fastrm_bench.gpu_table import main as gpu_table_main

    try:
        gpu_table_main(out, budget_minutes, dry_run, max_new_tokens, repeats, model, device, log=typer.echo)
    except ValueError as err:
        _fail(str(err))


@app.command()
def report(
    runs_dirs: Annotated[list[Path], typer.Argument(help="Folders searched for run and profile directories.")],
    out: Annotated[Path, typer.Option(help="Output folder for figures, tables and index.md.")] = Path("results"),
) -> None:
    """Paper-style figures (PNG + PDF) and tables (Markdown + LaTeX) from run and profile directories."""
    import sys

    from fastrm_bench.report import make_report

    missing = [str(d) for d in runs_dirs if not d.is_dir()]
    if missing:
        _fail(f"not a folder: {', '.join(missing)}")
    made = make_report(runs_dirs, out, "fastrm-bench " + " ".join(sys.argv[1:]))
    for title, files in made.made:
        typer.echo(f"made: {title}: {', '.join(files)}")
    for note in made.skipped:
        typer.echo(f"skipped: {note}")
    typer.echo(f"index: {out / 'index.md'}")


@app.command()
def workbench(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    samples: Annotated[int, typer.Option(help="How many samples (every wrong answer first, up to half, then the "
                                              "run's order), as the explorer chooses them.")] = 4,
    sample: Annotated[list[str] | None, typer.Option(help="A sample id instead (repeat the flag for several).")] = None,
    max_tokens: Annotated[int, typer.Option(help="Answer tokens kept per sample.")] = 16,
    device: Annotated[str | None, typer.Option(help="cpu, cuda ... (default: cuda if available).")] = None,
) -> None:
    """Recompute every LM layer's and head's attention of a few samples of a run (answer tokens to the image and
    prompt tokens) into RUN_DIR/workbench.json; the next `fastrm-bench report` shows it in explorer.html."""
    from fastrm_bench.models.adapter import ModelLoadError
    from fastrm_bench.rundir import is_finished_run
    from fastrm_bench.workbench import write_workbench

    if not is_finished_run(run_dir):
        _fail(f"not a finished run directory (results.json beside config.json): {run_dir}")
    if samples < 1 or max_tokens < 1:
        _fail("--samples and --max-tokens must be at least 1")
    try:
        path = write_workbench(run_dir, samples, list(sample or []), max_tokens, device, log=typer.echo)
    except (UnknownNameError, ModelLoadError, OSError, ValueError) as err:
        _fail(str(err))
    typer.echo(f"written: {path} (run `fastrm-bench report` to see it in explorer.html)")


@app.command()
def explain(
    image: Annotated[list[Path] | None, typer.Option(
        help="The image (any format PIL reads; `fastrm-bench explain --example` lists the shipped ones); repeat the "
             "flag for a question about several images, shown to the model in order and drawn side by side.")] = None,
    frame: Annotated[list[Path] | None, typer.Option(
        help="A frame of a video clip, in time order: repeat the flag per frame (families that take video: Qwen2/2.5/3-VL, "
             "LLaVA-OneVision, InternVL). The frames are drawn side by side, a map per time step.")] = None,
    fps: Annotated[float | None, typer.Option(help="Frames per second of the --frame clip, for prompts that give each "
                                                   "time step its time (Qwen3-VL; default: 24, as transformers assumes).")
                   ] = None,
    question: Annotated[str | None, typer.Option(help="The question (default for a shipped example: its own).")] = None,
    method: Annotated[list[str] | None, typer.Option(
        "--method", "-m", help="Method(s) to explain with; repeat the flag (default: fastrm and chefer).")] = None,
    model: ModelOption = "tiny-llava-shapes",
    out: Annotated[Path, typer.Option(help="Folder for explanation.png, explanation.html and explanation.json.")
                   ] = Path("explanation"),
    example: Annotated[str | None, typer.Option(
        help="Explain a shipped example image by name (four-shapes.png, circle-and-triangles.png) instead of --image; "
             "'list' lists them.")] = None,
    calibration: Annotated[list[Path] | None, typer.Option(
        help="Run directory (or a folder of runs) of this model and method whose answers include wrong ones: its "
             "calibrated entropy threshold turns the map entropy into a verdict. Repeat the flag for several.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Greedy generation length limit.")] = 10,
    min_new_tokens: Annotated[int, typer.Option(help="Generate at least this many tokens (a longer answer).")] = 0,
    cmap: Annotated[str, typer.Option(help="Colour map of the overlays: viridis (default: perceptually uniform, "
                                           "colour-blind-safe) or any matplotlib name, e.g. cividis, inferno, jet.")
                    ] = "viridis",
    fit: Annotated[str, typer.Option(help="A non-square image and a processor that crops its centre: 'pad' (default) "
                                          "pads it to a square first so the model sees it all; 'crop' keeps the "
                                          "processor's crop (the sides left uncovered).")] = "pad",
    prompt_suffix: Annotated[str, typer.Option(help="Appended to the question (e.g. the tasks' ' Answer the question "
                                                    "using up to two words.').")] = "",
    warmup: Annotated[bool, typer.Option(help="Explain once untimed first, so that the times shown are those of a "
                                              "warm model (the work is done twice).")] = True,
    device: Annotated[str | None, typer.Option(help="cpu, cuda ... (default: cuda if available).")] = None,
    dtype: Annotated[str, typer.Option(help="Weights' dtype: float32, bfloat16 or float16.")] = "float32",
    attn_implementation: AttnImplementation = "sdpa",
) -> None:
    """Answer a question about an image and draw every answer token's map, per method, with the answer's confidence."""
    from fastrm_bench import examples
    from fastrm_bench.explain import explain_image, save_all, summary_lines
    from fastrm_bench.models.adapter import ModelLoadError
    from fastrm_bench.models.zoo import load_model

    if example == "list":
        for name in examples.names():
            typer.echo(f"{name}  ({examples.path(name)}): {examples.QUESTIONS[name]}")
        return
    picture, question = _explained_input(image, frame, fps, question, example)
    _check_explain_options(max_new_tokens, min_new_tokens, cmap, fit)
    try:
        adapter = load_model(model, device=device, dtype=dtype, attn_implementation=attn_implementation)
        result = explain_image(adapter, picture, question, list(method or ["fastrm", "chefer"]), max_new_tokens,
                               prompt_suffix, calibration, warmup, fit, min_new_tokens)
    except (UnknownNameError, ModelLoadError, OSError, ValueError) as err:
        _fail(str(err))
    files = save_all(result, out, cmap)
    for line in summary_lines(result):
        typer.echo(line)
    typer.echo(f"written: {files['png']}, {files['html']}, {files['json']}")


def _check_explain_options(max_new_tokens: int, min_new_tokens: int, cmap: str, fit: str) -> None:
    """`explain`'s numbers, colour map and fit, each refused in one line before the model loads."""
    from matplotlib import colormaps

    if max_new_tokens < 1:
        _fail(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if not 0 <= min_new_tokens <= max_new_tokens:
        _fail(f"--min-new-tokens must be between 0 and --max-new-tokens ({max_new_tokens}), got {min_new_tokens}")
    if cmap not in colormaps:
        _fail(f"--cmap: no matplotlib colour map {cmap!r} (e.g. viridis, cividis, inferno, jet)")
    if fit not in ("pad", "crop"):
        _fail(f"--fit must be 'pad' or 'crop', got {fit!r}")


def _explained_input(images: list[Path] | None, frames: list[Path] | None, fps: float | None, question: str | None,
                     example: str | None) -> tuple[Any, str]:
    """What `explain` shows the model (an image, several, or a clip) and the question."""
    return _clip_and_question(frames, fps, question, images, example) if frames else \
        _image_and_question(images, question, example)


def _clip_and_question(frames: list[Path], fps: float | None, question: str | None, images: list[Path] | None,
                       example: str | None) -> tuple[Any, str]:
    """The clip (`Video`) and question `explain` was given as ``--frame`` files; anything missing, unreadable or
    mixed with ``--image`` / ``--example`` is one line, exit 2."""
    from fastrm_bench.interfaces import Video

    if images or example is not None:
        _fail("pass either --frame (a clip) or --image / --example (images), not both")
    if not question:
        _fail("pass --question TEXT")
    try:
        return Video(tuple(_read_picture(path, "frame") for path in frames), fps), question
    except ValueError as err:  # frames of different sizes, fps not positive
        _fail(str(err))


def _read_picture(path: Path, what: str) -> Any:
    """The image file at ``path``, loaded; unreadable is one line, exit 2."""
    from PIL import Image, UnidentifiedImageError

    try:
        picture = Image.open(path)
        picture.load()
    except (OSError, UnidentifiedImageError) as err:
        _fail(f"cannot read the {what} {path}: {err}")
    return picture


def _image_and_question(images: list[Path] | None, question: str | None, example: str | None) -> tuple[Any, str]:
    """The picture (a tuple of them for several ``--image``) and question `explain` was given: files and a question,
    or a shipped example (its own question unless one is given); anything missing or unreadable is one line, exit 2."""
    from fastrm_bench import examples

    if (not images) == (example is None):
        _fail("pass --image PATH (repeat it for several images), --frame PATH per frame of a clip, or --example NAME "
              "for a shipped image (--example list lists them)")
    if example is not None:
        try:
            images = [examples.path(example)]
        except KeyError as err:
            _fail(str(err.args[0]))
        question = question or examples.QUESTIONS[example]
    if not question:
        _fail("pass --question TEXT")
    pictures = [_read_picture(path, "image") for path in images]
    return (pictures[0] if len(pictures) == 1 else tuple(pictures)), question


@app.command()
def serve(
    model: Annotated[str, typer.Option(help="Registered model, local folder or hub id (it needs a FastRM proxy).")
                     ] = "tiny-llava-shapes",
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 7860,
    calibration: Annotated[list[Path] | None, typer.Option(
        help="Run directory (or folder of runs) of this model and fastrm with wrong answers: its entropy threshold.")
                           ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Greedy generation length limit.")] = 10,
    device: Annotated[str | None, typer.Option(help="cpu, cuda ... (default: cuda if available).")] = None,
    dtype: Annotated[str, typer.Option(help="Weights' dtype: float32, bfloat16 or float16.")] = "float32",
    attn_implementation: AttnImplementation = "sdpa",
) -> None:
    """Live demo in the browser (Gradio): the answer streams in with FastRM's map of each token, then its confidence;
    a second tab explains the same answer with a gradient method and shows both times."""
    from fastrm_bench.models.adapter import ModelLoadError
    from fastrm_bench.serve import serve as serve_app

    try:
        serve_app(model, host, port, device, calibration, max_new_tokens, dtype, attn_implementation)
    except ImportError as err:
        _fail(str(err))
    except (UnknownNameError, ModelLoadError, OSError, ValueError) as err:
        _fail(str(err))


@app.command()
def reproduce(
    out: Annotated[Path, typer.Option(help="Output folder (runs, profile, ablations, report).")] = Path("results"),
    limit: Annotated[int, typer.Option(help="Questions per task and method.")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of everything.")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="Processes for the ablations' distillation dataset.")] = 2,
    second_model: Annotated[bool, typer.Option(
        help="Also run the second embedded model (tiny-qwen-shapes) on its own world.")] = True,
    second_limit: Annotated[int, typer.Option(min=1, help="Questions per task and method of the second model.")] = 300,
) -> None:
    """Every run, profile and ablation of the paper's evaluation on the embedded world, then the report (resumable)."""
    from fastrm_bench.reproduce import SECOND_MODEL, Plan
    from fastrm_bench.reproduce import reproduce as reproduce_all

    reproduce_all(Plan(out=out, limit=limit, seed=seed, workers=workers, log=typer.echo,
                       second_model=SECOND_MODEL if second_model else None, second_limit=second_limit))
    typer.echo(f"report: {out / 'report' / 'index.md'}")


@app.command()
def sanity(
    methods: Annotated[str, typer.Option(help="Comma-separated methods (see `list methods`).")
                       ] = "chefer,gradcam,fastrm,tam,dex-ar,rollout,random",
    task: Annotated[str, typer.Option("--task", "-t", help="Task spec or registered name.")] = "vqav2",
    model: Annotated[str, typer.Option(help="Registered model, local folder or hub id.")] = "tiny-llava-shapes",
    limit: Annotated[int, typer.Option(help="Seeded subsample of this many questions.")] = 30,
    seed: Annotated[int, typer.Option(help="Seed of subsampling, of the re-initialised layers and of seeded methods.")] = 0,
    data_root: Annotated[str | None, typer.Option(help="Folder with the official files (default: the embedded world).")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Greedy generation length limit.")] = 10,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for sanity.json, sanity.csv and the figure.")] = Path("results/sanity"),
    overwrite: Annotated[bool, typer.Option(help="Replace a check of another configuration already in --out.")] = False,
) -> None:
    """Model-randomisation sanity check: the LM's layers re-initialised from the top, Spearman of each method's maps
    with the original ones per depth, and a pass/fail verdict per method."""
    from fastrm_bench.data_errors import SampleDataError
    from fastrm_bench.models.adapter import ModelLoadError
    from fastrm_bench.sanity import SanityConfig, markdown_table, run_sanity

    cfg = SanityConfig(methods=[m.strip() for m in methods.split(",") if m.strip()], task=task, model=model, limit=limit,
                       seed=seed, data_root=data_root, max_new_tokens=max_new_tokens, device=device, out=str(out))
    try:
        result = run_sanity(cfg, log=typer.echo, overwrite=overwrite)
    except (UnknownNameError, ModelLoadError, SampleDataError, OSError, ValueError) as err:
        _fail(str(err))
        return
    typer.echo(markdown_table(result))
    typer.echo(f"written to {out}/sanity.json, sanity.csv, sanity.png/pdf")


@app.command("train-vlm")
def train_vlm(
    out: Annotated[Path, typer.Option(help="Output folder (checkpoints, log, final model in OUT/model).")],
    steps: Annotated[int | None, typer.Option(
        help="Optimiser steps of the full (second) stage [recipe's: 2600 for llava, 2500 for qwen2_vl].")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of initialisation and data [recipe's: 0].")] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint if present.")] = True,
    recipe: Annotated[Path | None, typer.Option(
        help="JSON of recipe fields to change (or a model's training.json); --steps/--seed override it.")] = None,
    family: Annotated[str, typer.Option(
        help="Model family: llava (the embedded tiny-llava-shapes) or qwen2_vl (a Qwen2-VL on variable-size scenes, "
             "with the describe task).")] = "llava",
) -> None:
    """Train a shapes-world VLM from scratch (default: the shipped LLaVA checkpoint's recipe); resumable."""
    import torch

    from fastrm_bench.embedded.train_tiny import TrainConfig

    if family == "llava":
        from fastrm_bench.embedded.train_tiny import train
        config_class: type[TrainConfig] = TrainConfig
    elif family == "qwen2_vl":
        from fastrm_bench.embedded.train_qwen import QwenTrainConfig, train
        config_class = QwenTrainConfig
    else:
        _fail(f"unknown --family {family!r}; choose llava or qwen2_vl")
        return
    try:
        cfg = config_class.from_dict(json.loads(recipe.read_text())) if recipe else config_class()
    except (OSError, ValueError, TypeError) as err:
        _fail(f"cannot read recipe {recipe}: {err}")
        return
    torch.set_num_threads(threads)
    cfg = replace(cfg, **{k: v for k, v in {"seed": seed, "steps": steps}.items() if v is not None})
    final = train(cfg, out, resume=resume, log=typer.echo)
    typer.echo(json.dumps(final, indent=2))
    typer.echo(f"model written to {out / 'model'}; use it with --model {out / 'model'}")


@app.command("train-multi")
def train_multi(
    out: Annotated[Path, typer.Option(help="Folder for the fine-tuned model.")],
    base: ModelOption = "tiny-qwen-shapes",
    steps: Annotated[int, typer.Option(help="Optimiser steps (8 items each).")] = 1500,
    seed: Annotated[int, typer.Option(help="Seed of the items drawn and of training.")] = 0,
    eval_questions: Annotated[int, typer.Option(help="Held-out questions per task scored at the end.")] = 200,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
) -> None:
    """Fine-tune a shipped model on two-image (`pairs`) and clip (`clips`) questions, replaying its single-image ones;
    prints and saves the held-out accuracy of each."""
    import time

    import torch

    from fastrm_bench.builders import create_task_for_model
    from fastrm_bench.embedded.train_multi import MultiTrainConfig, TrainItems, finetune, heldout_accuracy, save
    from fastrm_bench.models.zoo import load_model, model_folder
    from fastrm_bench.world.build import variant_of_recipe

    torch.set_num_threads(threads)
    cfg = MultiTrainConfig(steps=steps, seed=seed, eval_questions=eval_questions)
    folder = model_folder(base)
    recipe_file = folder / "training.json" if folder is not None else None
    if recipe_file is None or not recipe_file.is_file():
        _fail(f"{base}: no training.json (the world it learnt); train-multi fine-tunes a model made by train-vlm")
        return
    recipe = json.loads(recipe_file.read_text())
    adapter = load_model(base, device="cpu")
    start = time.perf_counter()
    finetune(adapter, TrainItems(variant_of_recipe(recipe["config"]).image_sizes, cfg.train_scenes, cfg.seed), cfg,
             log=typer.echo)
    seconds = time.perf_counter() - start
    heldout = {task: heldout_accuracy(adapter, create_task_for_model(task, base)[0], cfg.eval_questions)
               for task in ("pairs", "clips", "vqav2", "gqa")}
    typer.echo("held out: " + ", ".join(f"{k} {v:.3f}" for k, v in heldout.items()))
    save(adapter, out, cfg, base, recipe, heldout, seconds)
    typer.echo(f"model written to {out}; use it with --model {out}")


@app.command()
def distill(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Folder for the FastRM checkpoint.")],
    model: ModelOption = "tiny-llava-shapes",
    task: Annotated[list[str] | None, typer.Option(
        help="Task whose training questions are answered (default vqav2); repeat it for a proxy of several tasks "
             "(one dataset each, one proxy).")] = None,
    split: Annotated[str, typer.Option(help="Split of the task's files.")] = "train",
    questions: Annotated[int | None, typer.Option(help="Seeded subsample of questions per task (default: all).")] = None,
    data_root: Annotated[str | None, typer.Option(help="Data root (default: the embedded world).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where the (resumable) token dataset goes (with several tasks: "
                                                       "one subfolder each).")] = None,
    labeling_threshold: Annotated[float, typer.Option(help="y_j = R_j >= t * max(R).")] = 0.3,
    data_size: Annotated[int | None, typer.Option(help="Token samples used for training (ablation).")] = None,
    steps: Annotated[int, typer.Option(help="Adam steps.")] = 3500,
    batch_size: Annotated[int, typer.Option(help="Token samples per step.")] = 128,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 2e-5,
    seed: Annotated[int, typer.Option(help="Seed of subsampling, split and training.")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="Processes for the dataset stage (one thread each, one model "
                                                     "each, on this machine's CPU or its one device).")] = 1,
    teacher: Annotated[str, typer.Option(help="Method (registered name or spec) whose per-token maps become the labels.")
                       ] = "chefer",
    shard_size: Annotated[int, typer.Option(min=1, help="Questions per dataset shard (the unit of resume and of sharing "
                                                        "between processes).")] = 200,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens each answer may take (a describe caption needs "
                                                            "up to 20).")] = 10,
    num_processes: Annotated[int, typer.Option(
        help="Ranks sharing the dataset stage (one per GPU; torchrun), as `run --num-processes`; the main one trains.")] = 1,
    attn_implementation: AttnImplementation = "sdpa",
) -> None:
    """Distil a FastRM proxy: a token dataset labelled by a teacher method (resumable), then BCE training."""
    from fastrm_bench.builders import create_method
    from fastrm_bench.fastrm.distill import DatasetConfig, TrainConfig, build_dataset, train_proxy
    from fastrm_bench.parallel import current_ranks

    _launch_if_asked(ctx, num_processes)
    try:
        create_method(teacher)  # a bad name or spec fails before any model or data work
    except (UnknownNameError, ValueError) as err:
        _fail(str(err))
    folders = []
    tasks = list(dict.fromkeys(task or ["vqav2"]))
    for name in tasks:  # one resumable dataset per task; the proxy trains on all of them
        dataset = DatasetConfig(model=model, task=name, split=split, data_root=data_root, questions=questions,
                                seed=seed, teacher=teacher, shard_size=shard_size, max_new_tokens=max_new_tokens,
                                attn_implementation=attn_implementation)
        folder = _dataset_folder(dataset, data_dir, several=len(tasks) > 1)
        try:
            build_dataset(dataset, folder, log=typer.echo, workers=workers)
        except (UnknownNameError, FileNotFoundError, ValueError) as err:
            _fail(str(err))
        folders.append(folder)
    if not current_ranks().is_main:
        return  # training is one small model: the main process's
    recipe = TrainConfig(labeling_threshold=labeling_threshold, steps=steps, batch_size=batch_size, lr=lr,
                         data_size=data_size, seed=seed)
    train_proxy(folders, out, recipe, distilled_from=model, log=typer.echo)


def _dataset_folder(dataset: Any, data_dir: Path | None, several: bool) -> Path:
    """Where a task's token dataset goes: ``--data-dir`` (a subfolder per task when several), else a cache folder
    named by what makes the dataset (Chefer datasets with default shards and lengths keep the names they had)."""
    from fastrm_bench.world.build import cache_root

    if data_dir is not None:
        return data_dir / dataset.task if several else data_dir
    suffix = "" if dataset.teacher == "chefer" else f"-{dataset.teacher}"
    suffix += "" if dataset.shard_size == 200 else f"-shards{dataset.shard_size}"
    suffix += "" if dataset.max_new_tokens == 10 else f"-tokens{dataset.max_new_tokens}"
    return cache_root() / "distill" / (f"{Path(dataset.model).name}-{dataset.task}-{dataset.split}-"
                                       f"q{dataset.questions or 'all'}-s{dataset.seed}{suffix}")


@app.command("eval-vlm")
def eval_vlm(
    model: Annotated[str, typer.Option(help="Registered model, local folder or hub id.")] = "tiny-llava-shapes",
    split: Annotated[str, typer.Option(help="Embedded-world split.")] = "test",
    limit: Annotated[int | None, typer.Option(help="Questions per task (seeded subsample).")] = None,
    grounding: Annotated[bool, typer.Option(help="Also run the object-vs-random token removal check.")] = True,
    data_root: Annotated[str | None, typer.Option(
        help="Data root (default: the embedded world the model was trained on).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the numbers as JSON here.")] = None,
) -> None:
    """Held-out accuracy per question type (describe too, on a world with captions), and the grounding check, of a
    model on the embedded world."""
    from fastrm_bench.cache import portable_path
    from fastrm_bench.models.zoo import load_model, trained_world
    from fastrm_bench.world.checks import grounding_check, heldout_accuracy

    adapter = load_model(model)
    root = Path(data_root) if data_root else trained_world(model)
    result: dict = {"model": adapter.name, "split": split, "data_root": portable_path(root) if root else None,
                    "accuracy": heldout_accuracy(adapter, root, split, limit)}
    typer.echo("accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in result["accuracy"].items() if not k.startswith("n")))
    if grounding:
        result["grounding"] = grounding_check(adapter, root, split, limit)
        for qtype, row in result["grounding"].items():
            typer.echo(f"grounding {qtype:<14} unmasked {row['unmasked']:.3f}  "
                       f"object removed {row['object_removed']:.3f} (drop {row['drop_object']:+.3f})  "
                       f"random removed {row['random_removed']:.3f} (drop {row['drop_random']:+.3f})")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))


@app.command()
def score(
    task: Annotated[str, typer.Option("--task", "-t", help="Task spec or registered name.")],
    predictions: Annotated[Path | None, typer.Option(
        help="Answers file: LLaVA's JSON lines or the benchmark's official format.")] = None,
    data_root: Annotated[str | None, typer.Option(help="Data root (default: the embedded world).")] = None,
    scoring: Annotated[str | None, typer.Option(
        help="Named scoring convention of the task (a wrong name lists the task's; default: the spec's, "
             "else the task's first).")] = None,
    allow_missing: Annotated[bool, typer.Option(help="Score only the answered questions (counted and reported).")] = False,
    out: Annotated[Path | None, typer.Option(help="Write the metrics as JSON here (--from-lmms-eval: a folder).")] = None,
    from_lmms_eval: Annotated[Path | None, typer.Option(
        "--from-lmms-eval", help="lmms-eval output folder with FastRM maps (a fastrm_* lmms-eval model, maps_dir): "
                                 "score the maps with the harness' metrics instead of an answers file.")] = None,
    model: Annotated[str, typer.Option(help="--from-lmms-eval: the model lmms-eval evaluated (perturbation metrics "
                                            "answer with it).")] = "tiny-llava-shapes",
    metric: Annotated[list[str] | None, typer.Option("--metric", help="--from-lmms-eval: a metric (repeatable; "
                                                                      "default: the built-in ones).")] = None,
    device: Device = None,
    dtype: Dtype = "float32",
) -> None:
    """Score an answers file with the task's metric (its format, LLaVA's or the official one, read from the file),
    or with --from-lmms-eval the FastRM maps of an lmms-eval evaluation with the harness' metrics."""
    from fastrm_bench.builders import create_task
    from fastrm_bench.tasks.predictions import read_answers, score_predictions

    if from_lmms_eval is not None:
        _score_lmms_eval(from_lmms_eval, task, model, out, data_root, metric, device, dtype)
        return
    if predictions is None:
        _fail("pass --predictions FILE (an answers file) or --from-lmms-eval DIR")
    try:
        task_obj, spec = create_task(task, data_root=data_root, scoring=scoring)
        answers, fmt = read_answers(task_obj, predictions)
        result = score_predictions(task_obj, answers, allow_missing)
    except (UnknownNameError, FileNotFoundError, ValueError) as err:
        _fail(str(err))
        return
    typer.echo(f"answers: {fmt.describe()}; scoring: {task_obj.scoring}")
    if result.missing:
        typer.echo(f"{len(result.missing)} question(s) without a prediction were left out (--allow-missing)")
    for key, value in result.metrics.items():
        typer.echo(f"{key:<28} {value:.4f}")
    typer.echo(f"scored {result.scored} predictions for {spec.name} ({task_obj.data_source})")
    if out:
        out.write_text(json.dumps({"task": spec.name, "scoring": task_obj.scoring, "answers_format": fmt.name,
                                   "scored": result.scored, "missing": len(result.missing), "metrics": result.metrics},
                                  indent=2))


def _score_lmms_eval(root: Path, task: str, model: str, out: Path | None, data_root: str | None,
                     metrics: list[str] | None, device: str | None, dtype: str) -> None:
    """`score --from-lmms-eval`: every lmms-eval task's maps measured, one summary line per task."""
    from fastrm_bench.lmms_maps import score_lmms_eval

    try:
        results = score_lmms_eval(root, task, model, out, data_root, metrics, device, dtype)
    except (UnknownNameError, FileNotFoundError, ValueError) as err:
        _fail(str(err))
        return
    for lmms_task, summary in results.items():
        values = ", ".join(f"{k} {v['value']:.3f}" for k, v in summary["metrics"].items() if v["value"] is not None)
        typer.echo(f"{lmms_task}: {summary['n']} samples scored, {summary['n_skipped']} skipped; {values}")


@app.command("build-data")
def build_data(
    out: Annotated[Path | None, typer.Option(help="Data root to write (default: the user cache).")] = None,
    seed: Annotated[int, typer.Option(help="World seed.")] = 0,
    train_images: Annotated[int, typer.Option(min=1, help="Images of the train split (a larger one needs --out).")] = 2000,
    variable_sizes: Annotated[bool, typer.Option(help="Draw each scene's height and width (48-96 px, step 8).")] = False,
    captions: Annotated[bool, typer.Option(help="Add the describe task's COCO captions files.")] = False,
) -> None:
    """Write the embedded world (COCO, VQAv2, GQA and POPE files) for train / val / test."""
    from fastrm_bench.world.build import WorldSizes, WorldVariant, build_world, default_data_root
    from fastrm_bench.world.scenes import ImageSizes

    sizes = WorldSizes(train=train_images)
    if sizes != WorldSizes() and out is None:
        _fail("a world of non-default size needs --out (the cache holds the default world)")
        return
    variant = WorldVariant(ImageSizes() if variable_sizes else None, captions)
    root = build_world(out or default_data_root(seed, variant.name), seed, sizes, image_sizes=variant.image_sizes,
                       captions=captions)
    typer.echo(f"embedded world written to {root}")


@app.command("build-pope")
def build_pope(
    annotations: Annotated[Path, typer.Option(help="COCO-format instances JSON.")],
    out: Annotated[Path, typer.Option(help="Folder for coco_pope_{random,popular,adversarial}.json.")],
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    num_images: Annotated[int, typer.Option(help="Images to sample (POPE: 500).")] = 500,
) -> None:
    """Build the three POPE files from any COCO-format instances file."""
    from fastrm_bench.tasks.pope_builder import build_pope_files

    try:
        paths = build_pope_files(annotations, out, seed=seed, num_images=num_images)
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
        return
    for path in paths:
        typer.echo(f"{path}: {sum(1 for _ in path.open())} questions")


#: the exit code of a run stopped by SIGINT/SIGTERM in this process (its files are closed and consistent by then)
_stopped_by_signal: list[int] = []


def entrypoint() -> None:
    """Console-script entry; unknown names exit with code 2 and a "did you mean".

    A run stopped by a signal exits at once after its message: the interpreter's teardown (collecting
    a loaded model) would otherwise take seconds, and everything on disk is already closed.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except UnknownNameError as err:
        typer.secho(str(err), err=True, fg=typer.colors.RED)
        raise SystemExit(2) from None
    except SystemExit:
        if _stopped_by_signal:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(_stopped_by_signal[0])
        raise


if __name__ == "__main__":
    entrypoint()

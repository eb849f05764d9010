"""`fastrm-bench sanity`: the model-randomisation sanity check (Adebayo et al. 2018; Quantus' MPRT, cascading).

A map that explains the model must change when the model changes. The language model's decoder layers
are re-initialised from the top with the model's own init (transformers' ``_init_weights``, seeded per
layer), one more layer per depth: depth 0 is the model as loaded, depth d has its top d layers re-drawn.
The randomised models are copies: the caller's model is never touched.

Each sample's answer is generated once, greedily, by the original model. At every depth every method
explains that same answer (teacher-forced) with the randomised model, and the Spearman rank correlation
of its sample map with the depth-0 sample map is recorded (and the mean over tokens of the per-token
maps' correlations). Everything a map depends on comes from the randomised model: besides the forwards
the methods make themselves, the final-norm hidden states FastRM reads are recomputed by a teacher-forced
forward of that model at every depth (depth 0 too, so that the reference takes the same path).

A constant map has no rank correlation: it is recorded as NaN and counted (``n_undefined``), never
dropped silently. A method passes when the upper bound of the bootstrap 95% interval of its correlation
at full depth is below `PASS_BELOW`; a method whose maps do not follow the model fails ("barely change" from
`BARELY_CHANGE` up).

Stochastic methods (``random``) are run as they are, seeded by (seed, sample id, draw), so their maps
ignore the model and they fail. A control row (`REDRAWN`) also gives them a new draw at each depth: it
passes although it explains nothing, which is why passing is necessary but not sufficient.

Output folder: ``sanity.json`` (configuration, one row per method and depth, the per-sample values and
a verdict per method), ``sanity.csv`` (the rows), ``sanity.png`` / ``sanity.pdf``. ``sanity.json`` is
written last and atomically: when it is there, the folder is complete.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastrm_bench.interfaces import ModelAdapter
from fastrm_bench.seeding import sample_seed

#: a method passes when its full-depth correlation's 95% interval lies below this
PASS_BELOW = 0.5
#: a failing method whose full-depth correlation is at least this is said to barely change
BARELY_CHANGE = 0.8
#: suffix of the control row of a stochastic method redrawn at every depth
REDRAWN = " (new draw per depth)"


@dataclass
class SanityConfig:
    methods: list[str]
    task: str = "vqav2"
    model: str = "tiny-llava-shapes"
    limit: int | None = 30
    seed: int = 0
    data_root: str | None = None
    max_new_tokens: int = 10
    device: str | None = None
    out: str = "results/sanity"

    def check(self) -> None:
        from fastrm_bench.runner import answering_problems

        problems = answering_problems(self.limit, self.max_new_tokens, self.seed)
        if not self.methods:
            problems.append("--methods needs at least one method")
        if len(set(self.methods)) != len(self.methods):
            problems.append(f"--methods names a method twice: {', '.join(self.methods)}")
        if problems:
            raise ValueError("; ".join(problems))

    def request(self) -> dict[str, Any]:
        """What decides the numbers (the output folder does not)."""
        out = asdict(self)
        out.pop("out")
        return out


# ---------------------------------------------------------------------------- randomisation
def reinitialise_layer(adapter: ModelAdapter, index: int, seed: int) -> None:
    """Re-draw decoder layer ``index`` of ``adapter``'s model in place with the model's own init, seeded by (seed, index).

    transformers marks loaded tensors ``_is_hf_initialized`` and its init functions then do nothing; the
    marks are cleared first, and a layer left unchanged is an error rather than a silent pass.
    """
    from transformers import PreTrainedModel

    language_model = adapter.language_model()
    owner = language_model if isinstance(language_model, PreTrainedModel) else adapter.model  # the LM's init range
    layer = adapter.decoder_layers()[index]
    tensors = list(layer.parameters()) + list(layer.buffers())
    before = [float(t.detach().double().norm()) for t in tensors]
    device = next(iter(tensors)).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(sample_seed(seed, f"decoder layer {index}"))
        for module in layer.modules():
            module._is_hf_initialized = False
            for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
                if getattr(tensor, "_is_hf_initialized", False):
                    tensor._is_hf_initialized = False
            owner._init_weights(module)
    after = [float(t.detach().double().norm()) for t in tensors]
    if before == after:
        raise RuntimeError(f"re-initialising decoder layer {index} with {type(owner).__name__}._init_weights changed nothing")


def randomised_copy(adapter, depth: int, seed: int = 0):
    """A copy of ``adapter`` whose model has its top ``depth`` decoder layers re-initialised (the adapter is untouched)."""
    clone = _copy_adapter(adapter)
    layers = adapter.num_layers
    if not 0 <= depth <= layers:
        raise ValueError(f"depth must be in 0..{layers}, got {depth}")
    for index in range(layers - 1, layers - 1 - depth, -1):
        reinitialise_layer(clone, index, seed)
    return clone


def cascade(adapter, seed: int = 0) -> Iterator[tuple[int, list[int], Any]]:
    """(depth, re-initialised layer indices, adapter) for depth 0..L: the original, then one copy randomised further
    at each step (per-layer seeds: depth d equals `randomised_copy(adapter, d)`)."""
    layers = adapter.num_layers
    yield 0, [], adapter
    clone = _copy_adapter(adapter)
    for depth in range(1, layers + 1):
        reinitialise_layer(clone, layers - depth, seed)
        yield depth, list(range(layers - 1, layers - 1 - depth, -1)), clone


def _copy_adapter(adapter):
    clone = copy.copy(adapter)
    clone.model = copy.deepcopy(adapter.model)
    clone.__dict__.pop("weights_sha256", None)  # a cached hash is the original's: the copy computes its own if asked
    return clone


@torch.no_grad()
def final_hidden(adapter, inputs, generation) -> torch.Tensor:
    """Final-norm hidden states ``[L0 + T - 1, d]`` of ``adapter``'s model over prompt + answer (teacher-forced):
    what `generate(return_hidden=True)` gives FastRM, but from this model and for the given answer."""
    forward = adapter.teacher_forced(inputs, generation, hidden_states=True)
    return adapter.final_norm()(forward.hidden_states[-1]).detach()


# ---------------------------------------------------------------------------- correlations
def spearman(a, b) -> float:
    """Spearman rank correlation; NaN when either vector is constant (no ranking to compare)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if a.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()) or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(spearmanr(a, b).statistic)


def token_spearman(reference: torch.Tensor, maps: torch.Tensor) -> tuple[float, int]:
    """(mean correlation of the per-token maps over the tokens where it is defined, number of tokens where it is not)."""
    values = [spearman(r, m) for r, m in zip(reference.float().numpy(), maps.float().numpy())]
    defined = [v for v in values if v == v]
    return (float(np.mean(defined)) if defined else math.nan), len(values) - len(defined)


def _nanmean(values) -> float:
    arr = np.asarray(values, float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else math.nan


# ---------------------------------------------------------------------------- the check
@dataclass
class _Item:
    sample: Any
    inputs: Any
    generation: Any
    reference: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # label -> (sample map, token maps)


def run_sanity(cfg: SanityConfig, adapter=None, log: Callable[[str], Any] = print, overwrite: bool = False,
               progress: bool = True) -> dict[str, Any]:
    """Run the check and write the output folder; returns the content of ``sanity.json``.

    ``adapter`` (optional) is used instead of loading ``cfg.model``. A folder already holding the result of the
    same request is returned as it is; one holding the same check of some of the methods gets the others added
    (their correlations computed, the folder's kept); one holding another request is refused unless ``overwrite``.
    """
    from fastrm_bench.builders import create_method, create_task_for_model
    from fastrm_bench.models.zoo import load_model

    cfg.check()
    out = Path(cfg.out)
    previous = _previous_result(cfg, out, overwrite, log)
    if previous is not None and previous["config"]["request"] == cfg.request():
        return previous
    done = previous["config"]["methods"] if previous is not None else []  # a check of fewer methods: extended
    methods = [create_method(name) for name in cfg.methods if name not in done]  # unknown names fail before any work
    task, task_spec = create_task_for_model(cfg.task, cfg.model, cfg.data_root)
    if task.uses_embedded_world:
        log(task.embedded_world_note())
    if adapter is None:
        adapter = load_model(cfg.model, device=cfg.device)
    original_hash = adapter.weights_sha256
    for method, _ in methods:
        method.prepare(adapter)  # against the original weights: FastRM's proxy belongs to them
    items, skipped = _answers(cfg, task, adapter, progress)
    if not items:
        raise ValueError(f"no sample of {task_spec.name} could be explained ({len(skipped)} skipped)")
    labels = []
    for method, spec in methods:
        labels.append((spec.name, method, 0))
        if method.needs.stochastic:  # stochastic: also the control redrawn at each depth
            labels.append((spec.name + REDRAWN, method, None))
    per_sample = _cascade_correlations(cfg, adapter, items, labels, progress)
    if _hash(adapter) != original_hash:
        raise RuntimeError("the loaded model changed during the check")
    samples = {label: {str(d): v for d, v in by_depth.items()} for label, by_depth in per_sample.items()}
    config = _result_config(cfg, adapter, original_hash, task, task_spec, methods, items, skipped)
    if previous is not None:
        earlier = next(iter(previous["samples"].values()))["0"]
        if [item.sample.id for item in items] != [r["id"] for r in earlier]:
            raise RuntimeError(f"{out}: the check's samples changed; pass --overwrite to run every method again")
        samples = {**previous["samples"], **samples}
        config["methods"] = [*done, *config["methods"]]
    per_depth = {label: {int(d): v for d, v in by_depth.items()} for label, by_depth in samples.items()}
    rows = summarise(per_depth, adapter.num_layers, cfg.seed)
    result = {"config": config, "rows": rows, "verdicts": verdicts(rows), "samples": samples}
    write_outputs(result, out)
    return result


def _previous_result(cfg: SanityConfig, out: Path, overwrite: bool, log: Callable[[str], Any]) -> dict[str, Any] | None:
    """The folder's result of this same request (None: none there, or replaced by ``overwrite``); another request's
    result is an error, so that a check is never silently overwritten."""
    existing = out / "sanity.json"
    if not existing.exists() or overwrite:
        return None
    previous = json.loads(existing.read_text())
    request = previous.get("config", {}).get("request")
    if request == cfg.request():
        log(f"{existing} already holds this check; pass --overwrite to run it again")
        return previous
    fewer = request is not None and set(request["methods"]) < set(cfg.methods)
    if fewer and {**request, "methods": cfg.methods} == cfg.request():
        log(f"{existing} holds this check of {len(request['methods'])} of the methods: adding the others")
        return previous
    raise ValueError(f"{existing} holds a check of another configuration; pass --overwrite to replace it, "
                     "or choose another --out")


def _answers(cfg: SanityConfig, task, adapter, progress: bool) -> tuple[list[_Item], list[dict[str, str]]]:
    """The answers, once, by the original model; samples with bad data or an empty answer are listed as skipped."""
    from tqdm.auto import tqdm

    from fastrm_bench.data_errors import SampleDataError

    items: list[_Item] = []
    skipped: list[dict[str, str]] = []
    selected = task.select(cfg.limit, cfg.seed)
    stream = selected if selected is not None else task.samples(limit=cfg.limit, seed=cfg.seed)
    for entry in tqdm(stream, desc="answers", unit="sample", disable=not progress):
        try:
            sample = task.sample(entry) if selected is not None else entry
        except SampleDataError as err:
            skipped.append({"id": str(err.sample_id), "reason": str(err)})
            continue
        inputs = replace(adapter.build_inputs([sample.model_images], [task.prompt(sample)]), sample_id=sample.id)
        generation = adapter.generate(inputs, cfg.max_new_tokens)[0]
        if generation.num_generated == 0:
            skipped.append({"id": sample.id, "reason": "empty answer: nothing to explain"})
            continue
        items.append(_Item(sample, inputs, generation))
    return items, skipped


def _cascade_correlations(cfg: SanityConfig, adapter, items: list[_Item], labels: list[tuple[str, Any, int | None]],
                          progress: bool) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """Per method label, depth and sample: the Spearman correlations of the maps with the depth-0 ones."""
    from tqdm.auto import tqdm

    n_layers = adapter.num_layers
    per_sample: dict[str, dict[int, list[dict[str, Any]]]] = {label: {} for label, _, _ in labels}
    bar = tqdm(total=(n_layers + 1) * len(items), desc="sanity", unit="sample", disable=not progress)
    for depth, _, randomised in cascade(adapter, cfg.seed):
        bar.set_description(f"sanity, top {depth} of {n_layers} layers randomised")
        for item in items:
            generation = replace(item.generation, last_hidden=final_hidden(randomised, item.inputs, item.generation))
            for label, method, draw in labels:
                inputs = replace(item.inputs, draw=depth if draw is None else draw)
                maps = method.explain_sample(randomised, inputs, generation, item.sample).maps.detach().float().cpu()
                smap = sample_map_of(maps, generation, adapter.tokenizer)
                if depth == 0:
                    item.reference[label] = (smap, maps)
                ref_map, ref_tokens = item.reference[label]
                tokens_rho, tokens_undefined = token_spearman(ref_tokens, maps)
                per_sample[label].setdefault(depth, []).append({
                    "id": item.sample.id, "spearman": _clean(spearman(ref_map, smap)), "token_spearman": _clean(tokens_rho),
                    "token_undefined": tokens_undefined})
            bar.update()
    bar.close()
    return per_sample


def _result_config(cfg: SanityConfig, adapter, original_hash: str, task, task_spec, methods: list, items: list[_Item],
                   skipped: list[dict[str, str]]) -> dict[str, Any]:
    """sanity.json's ``config``: what was checked, and the rules the verdicts follow."""
    n_layers = adapter.num_layers
    return {
        "request": cfg.request(), "model": adapter.name, "model_weights_sha256": original_hash, "family": adapter.family,
        "task": task_spec.name, "data_source": task.data_source, "methods": [spec.name for _, spec in methods],
        "limit": cfg.limit, "seed": cfg.seed, "depths": list(range(n_layers + 1)), "decoder_layers": n_layers,
        "randomisation": "cascading from the top; each layer re-drawn by the language model's own transformers "
                         "_init_weights, seeded by (seed, layer index), on a copy of the model",
        "reference": "the depth-0 maps of the same method for the same answer",
        "sample_map": "mean of the per-token maps over the answer's tokens (format-only tokens left out)",
        "pass_rule": f"passes when the 95% interval's upper bound of the Spearman correlation at full depth < {PASS_BELOW}",
        "uncertainty": f"percentile bootstrap over samples (fastrm_bench.metrics.uncertainty), seed {cfg.seed}",
        "n_samples": len(items), "skipped": skipped, "device": str(adapter.device),
    }


def sample_map_of(maps: torch.Tensor, generation, tokenizer) -> torch.Tensor:
    """The default sample map of ``maps`` (`aggregation.MeanOverContent`: mean over the answer's content tokens)."""
    from fastrm_bench.aggregation import content_tokens, weighted_map

    content = content_tokens(generation, tokenizer)
    return weighted_map(maps.float(), (content if content.any() else torch.ones_like(content)).float())


def _hash(adapter) -> str:
    from fastrm_bench.weights import weights_hash

    return weights_hash(adapter.model)


def _clean(value: float) -> float | None:
    return None if value != value else float(value)


def summarise(per_sample: dict[str, dict[int, list[dict[str, Any]]]], n_layers: int, seed: int) -> list[dict[str, Any]]:
    """One row per (method, depth): mean Spearman over samples with its bootstrap 95% interval, and the counts."""
    from fastrm_bench.metrics.uncertainty import bootstrap_intervals

    rows = []
    for label, by_depth in per_sample.items():
        for depth in sorted(by_depth):
            records = by_depth[depth]
            values = [math.nan if r["spearman"] is None else r["spearman"] for r in records]
            tokens = [math.nan if r["token_spearman"] is None else r["token_spearman"] for r in records]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                interval = bootstrap_intervals(values, lambda vs: {"spearman": _nanmean(vs)}, seed)["spearman"]
            rows.append({
                "method": label, "depth": depth, "randomised_layers": list(range(n_layers - 1, n_layers - 1 - depth, -1)),
                "spearman": _clean(_nanmean(values)), "ci95": list(interval) if interval else None,
                "n": len(values), "n_undefined": int(sum(v != v for v in values)),
                "token_spearman": _clean(_nanmean(tokens)), "token_undefined": int(sum(r["token_undefined"] for r in records)),
            })
    return rows


def verdicts(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Per method, from its full-depth row: passes, fails, or undefined (every map constant)."""
    out = {}
    for label in dict.fromkeys(r["method"] for r in rows):
        last = max((r for r in rows if r["method"] == label), key=lambda r: r["depth"])
        if last["spearman"] is None:
            out[label] = "undefined (every map constant at full depth)"
            continue
        upper = last["ci95"][1] if last["ci95"] else last["spearman"]
        if upper < PASS_BELOW:
            out[label] = "passes"
        elif last["spearman"] >= BARELY_CHANGE:
            out[label] = "fails (maps barely change)"
        else:
            out[label] = "fails (maps stay correlated with the original)"
    return out


def resummarise(out: str | Path) -> dict[str, Any]:
    """Rows, verdicts, CSV and figure again from the per-sample values of a finished ``sanity.json`` (no model needed)."""
    out = Path(out)
    result = json.loads((out / "sanity.json").read_text())
    per_sample = {label: {int(d): v for d, v in by_depth.items()} for label, by_depth in result["samples"].items()}
    result["rows"] = summarise(per_sample, result["config"]["decoder_layers"], result["config"]["seed"])
    result["verdicts"] = verdicts(result["rows"])
    write_outputs(result, out)
    return result


# ---------------------------------------------------------------------------- outputs
CSV_COLUMNS = ["method", "depth", "randomised_layers", "spearman", "ci_low", "ci_high", "n", "n_undefined", "token_spearman",
               "token_undefined"]


def write_outputs(result: dict[str, Any], out: Path) -> None:
    """sanity.csv and the figure first, sanity.json last, each replaced atomically."""
    from fastrm_bench.rundir import replace_file

    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in result["rows"]:
        ci = row["ci95"] or [None, None]
        writer.writerow({**{k: row[k] for k in CSV_COLUMNS if k in row}, "ci_low": ci[0], "ci_high": ci[1],
                         "randomised_layers": " ".join(map(str, row["randomised_layers"]))})
    replace_file(out / "sanity.csv", lambda fh: fh.write(buffer.getvalue().encode()))
    plot_sanity(result["rows"], out / "sanity", title=figure_title(result["config"]))
    text = json.dumps(result, indent=2)
    replace_file(out / "sanity.json", lambda fh: fh.write(text.encode()))


def figure_title(config: dict[str, Any]) -> str:
    return (f"Model-randomisation sanity check\n{Path(config['model']).name} on {config['task']} "
            f"({config['data_source']} data), n={config['n_samples']}")


def plot_sanity(frame_or_rows, out_stem: str | Path, title: str | None = None) -> list[Path]:
    """One line per method: Spearman correlation with the original maps vs the number of randomised top layers
    (95% intervals as bands); saves ``out_stem``.png and .pdf and returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    frame = frame_or_rows if isinstance(frame_or_rows, pd.DataFrame) else pd.DataFrame(list(frame_or_rows))
    if "ci95" in frame and "ci_low" not in frame:
        frame = frame.assign(ci_low=[c[0] if c else None for c in frame["ci95"]],
                             ci_high=[c[1] if c else None for c in frame["ci95"]])
    rows = [{"method": r.method, "depth": int(r.depth), "spearman": None if pd.isna(r.spearman) else float(r.spearman),
             "ci95": None if pd.isna(r.ci_high) else [float(r.ci_low), float(r.ci_high)]} for r in frame.itertuples()]
    verdict = verdicts(rows)
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    fig, ax = plt.subplots(figsize=(8, 4.8), constrained_layout=True)
    n = max(frame["method"].nunique(), 1)
    palette = sns.color_palette("tab10" if n <= 10 else "tab20", n_colors=n)
    markers = "os^Dv<>PXph*"
    for i, (colour, (label, group)) in enumerate(zip(palette, frame.groupby("method", sort=False))):
        group = group.sort_values("depth")
        # lines that coincide (methods blind to the model, at 1) stay visible by their markers
        ax.plot(group["depth"], group["spearman"].astype(float), marker=markers[i % len(markers)], ms=5, color=colour,
                label=f"{label}: {verdict[label].split(' (')[0]}", linestyle="--" if label.endswith(REDRAWN) else "-")
        ax.fill_between(group["depth"], group["ci_low"].astype(float), group["ci_high"].astype(float), color=colour, alpha=0.12)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axhline(PASS_BELOW, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xticks(sorted(frame["depth"].unique()))
    ax.set_xlabel("top language-model layers re-initialised")
    ax.set_ylabel("Spearman correlation with the original maps")
    ax.set_ylim(min(-0.25, float(frame["ci_low"].astype(float).min()) - 0.05), 1.05)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title or "Model-randomisation sanity check", fontsize=10)
    paths = []
    for ext in ("png", "pdf"):
        path = Path(f"{out_stem}.{ext}")
        fig.savefig(path, dpi=150, bbox_inches="tight", metadata={"CreationDate": None} if ext == "pdf" else None)
        paths.append(path)
    plt.close(fig)
    return paths


def markdown_table(result: dict[str, Any]) -> str:
    """The rows as a Markdown table: one line per method, one column per depth (mean [95% CI]), the samples whose
    correlation is undefined at each depth, then the verdict."""
    rows = result["rows"]
    depths = result["config"]["depths"]
    head = "| method | " + " | ".join(f"depth {d}" for d in depths) + " | undefined, per depth | verdict |"
    lines = [head, "|" + "---|" * (len(depths) + 3)]
    for label, verdict in result["verdicts"].items():
        cells = []
        undefined = []
        for d in depths:
            row = next(r for r in rows if r["method"] == label and r["depth"] == d)
            undefined.append(str(row["n_undefined"]))
            if row["spearman"] is None:
                cells.append("--")
            elif row["ci95"] and d:
                cells.append(f"{row['spearman']:.2f} [{row['ci95'][0]:.2f}, {row['ci95'][1]:.2f}]")
            else:
                cells.append(f"{row['spearman']:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'/'.join(undefined)} | {verdict} |")
    return "\n".join(lines)

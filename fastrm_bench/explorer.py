"""The run explorer: one self-contained HTML page per report, to browse the samples of every run.

`fastrm-bench report` writes ``explorer.html`` beside its figures (`write_explorer`). The page opens
from disk with no server and no network: the data (questions, answers, per-sample metrics, maps,
curves) is inlined as JSON and the images as base64 JPEG; a small script draws the maps on canvases.

- runs are grouped by task (its label in the report) and model: one table per group, methods side by side;
- the table lists the samples (question, answer, reference, right or wrong, tokens, the chosen method's
  entropy and per-sample metrics); it sorts (click a column header) and filters (text, right/wrong);
- a chosen sample shows its image with each method's map of the chosen answer token (click a token; the
  "whole answer" button shows the run's sample map) and the method's perturbation curves of that sample.
- a sample of several images or a clip is drawn side by side; the page also shows its images (the clip's
  time steps) one at a time, chosen or played (`_parts`: each one's span of the canvas).

Runs written before per-token maps were kept (no ``token_maps.npz``) show their sample map for every
token, and the page says so. Size: at most ``max_samples`` samples per group (every wrong answer first,
up to half of them, then the run's order), the first ``max_tokens`` tokens of an answer, and maps
quantised to 8 bits on a colour scale per sample and method (probability maps: 0-1).
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastrm_bench.layout import ImageLayout, side_by_side
from fastrm_bench.maps_io import record_layout
from fastrm_bench.rundir import Run, label_tasks

NAME = "explorer.html"
#: a run's per-layer, per-head attention of a few samples (`fastrm-bench workbench`), inlined where present
WORKBENCH = "workbench.json"
#: the page: style, layout and script; the data goes in place of its /*DATA*/ marker
TEMPLATE = Path(__file__).resolve().parent / "explorer_page.html"
#: record fields that are not per-sample metrics (or are shown in their own columns)
NOT_METRICS = {"score", "num_tokens", "peak_memory_bytes"}
FIRST_COLUMNS = ("entropy", "pp_auc", "np_auc", "insertion_auc", "logprob_pp_auc", "threshold_f1", "pointing_game",
                 "relevance_mass", "map_seconds")
#: what the table's header says for a record field (any other field: its name with spaces)
COLUMN_LABELS = {"entropy": "map entropy", "pp_auc": "PP AUC (lower: better)", "np_auc": "NP AUC (higher: better)",
                 "insertion_auc": "insertion AUC (higher: better)", "logprob_pp_auc": "log p PP AUC",
                 "threshold_f1": "F1 at 0.5", "pointing_game": "pointing game", "relevance_mass": "relevance mass",
                 "map_seconds": "map time (s)", "generation_seconds": "answer time (s)", "image_reliance": "image reliance"}


def column_label(key: str) -> str:
    """A readable header for a record field."""
    return COLUMN_LABELS.get(key, key.replace("_", " "))


def write_explorer(runs: list[Run], report, max_samples: int = 100, max_tokens: int = 16, image_side: int = 192) -> Path | None:
    """Write ``explorer.html`` into the report's folder from its (non-ablation) runs; note it in the report."""
    path = report.out / NAME
    if not runs:
        path.unlink(missing_ok=True)  # a page of an earlier report would outlive its runs
        report.skipped.append("Run explorer: no runs")
        return None
    try:
        data = explorer_data(runs, max_samples, max_tokens, image_side)
    except Exception as err:  # noqa: BLE001 - a report is never lost to its explorer page
        path.unlink(missing_ok=True)
        report.skipped.append(f"Run explorer: {type(err).__name__}: {err}")
        return None
    data["command"] = report.command
    path.write_text(page(data))
    report.made.append(("Run explorer (interactive page: samples, per-token maps, curves; opens from disk)", [NAME]))
    return path


# ------------------------------------------------------------------------------------------------ data
def _quantise(maps: np.ndarray, low: float, high: float) -> str:
    scaled = np.clip((np.nan_to_num(maps, nan=low) - low) / (high - low), 0, 1)
    return base64.b64encode(np.round(scaled * 255).astype(np.uint8).tobytes()).decode()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(f"{value:.4g}")
    return None


def sample_metrics(record: dict[str, Any], fractions: list[float] | None) -> dict[str, float]:
    """Every per-sample number of a record: its numeric fields, curve AUCs, and F1 at 0.5 against the labels."""
    from fastrm_bench.metrics.perturbation import curve_auc

    out = {}
    for key, value in record.items():
        number = _number(value)
        if key not in NOT_METRICS and number is not None:
            out[key] = number
    curves = {**{f"{'pp' if k == 'positive' else 'np' if k == 'negative' else k}_auc": v
                 for k, v in record.get("curves", {}).items()}}
    if record.get("insertion_curve"):
        curves["insertion_auc"] = record["insertion_curve"]
    if record.get("logprob_curves", {}).get("positive"):
        curves["logprob_pp_auc"] = record["logprob_curves"]["positive"]
    for key, curve in curves.items():
        if fractions and len(curve) == len(fractions) and len(fractions) > 1:
            out[key] = _number(curve_auc(fractions, curve))
    counts = record.get("threshold_counts", {}).get("0.5")
    if counts:
        from fastrm_bench.metrics.threshold import scores_from_counts

        out["threshold_f1"] = _number(scores_from_counts(*counts)["f1"])
    return {k: v for k, v in out.items() if v is not None}


def _curves(record: dict[str, Any]) -> dict[str, list[float]]:
    found = {k: v for k, v in record.get("curves", {}).items() if k in ("positive", "negative")}
    if record.get("insertion_curve"):
        found["insertion"] = record["insertion_curve"]
    for key, value in record.get("logprob_curves", {}).items():
        found[f"logprob_{key}"] = value
    return {k: [round(float(x), 4) for x in v] for k, v in found.items()}


def open_task(run: Run) -> tuple[Any, str | None]:
    """The run's task with its images, or None and why not: the run's data root, else a world of the same
    name in this machine's cache, else that embedded world built here (it is deterministic): a seed's default or
    shifted world (`rebuild_named_world`), or the variant the run's embedded model learnt (`trained_world`)."""
    from fastrm_bench.builders import create_task
    from fastrm_bench.models.zoo import trained_world
    from fastrm_bench.world.build import cache_root, rebuild_named_world

    root = run.data_root
    if not root:
        try:
            return create_task(run.task)[0], None
        except Exception as err:  # noqa: BLE001 - a page without images is still a page
            return None, f"images unavailable ({err})"
    candidates = [Path(root), cache_root() / "data" / Path(root).name]
    for candidate in candidates:
        if candidate.is_dir():
            try:
                return create_task(run.task, data_root=str(candidate))[0], None
            except Exception as err:  # noqa: BLE001
                return None, f"images unavailable ({err})"
    world = rebuild_named_world(Path(root).name)
    if world is None:  # a variant an embedded model's recipe defines (variable-size scenes): that model's world
        trained = trained_world(run.model)
        world = trained if trained is not None and trained.name == Path(root).name else None
    if world is not None:
        return create_task(run.task, data_root=str(world))[0], None
    return None, f"images unavailable: the run's data root {root} is not on this machine"


def _image_url(image, side: int) -> str:
    from PIL import Image

    image = image.convert("RGB")
    if max(image.size) > side:
        factor = side / max(image.size)
        image = image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _is_probability(run: Run) -> bool:
    """Whether the run's maps are probabilities (drawn on a 0-1 scale), as its method's class declares."""
    from fastrm_bench.builders import recorded_method_needs

    needs = recorded_method_needs(run.method_spec)
    return bool(run.results.get("threshold_sweep")) or (needs is not None and needs.probabilities)


def choose_samples(records: list[dict[str, Any]], max_samples: int) -> list[str]:
    """Every wrong answer first (up to half), then the run's order; returned in the run's order."""
    wrong = [r["id"] for r in records if r.get("score", 1) < 0.5][: max_samples // 2]
    chosen = set(wrong)
    for r in records:
        if len(chosen) >= max_samples:
            break
        chosen.add(r["id"])
    return [r["id"] for r in records if r["id"] in chosen]


@dataclass
class _Column:
    """One run of a group as the page shows it: its name and the maps and records the samples read."""

    name: str
    run: Run
    records: dict[str, dict[str, Any]]
    token_maps: dict[str, np.ndarray]
    sample_maps: dict[str, np.ndarray]
    per_token: bool


def explorer_data(runs: list[Run], max_samples: int = 100, max_tokens: int = 16, image_side: int = 192) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data (see the module docstring)."""
    if any(not r.task_label for r in runs):
        label_tasks(runs)
    groups: dict[tuple[str, str], list[Run]] = {}
    for r in sorted(runs, key=lambda r: (r.task_label, r.model, r.method, str(r.path))):
        groups.setdefault((r.task_label, r.model), []).append(r)
    return {"groups": [_group_data(label, model, group, max_samples, max_tokens, image_side)
                       for (label, model), group in groups.items()]}


def _group_data(label: str, model: str, group: list[Run], max_samples: int, max_tokens: int,
                image_side: int) -> dict[str, Any]:
    """One table of the page: the runs of one task and model, methods side by side, on the first run's samples."""
    task, note = open_task(group[0])
    notes = [note] if note else []
    columns = _columns(group, notes)
    first = columns[0].records
    task_records = task.handles() if task is not None else {}
    inside = _workbench(group, notes)
    wanted = set(choose_samples(list(first.values()), max_samples)) | (set(inside) & set(first))
    metric_names: dict[str, None] = {}
    samples = []
    for sample_id in [i for i in first if i in wanted]:
        picture = _image(task, task_records.get(sample_id), image_side)
        entry = _sample_entry(first[sample_id], group[0], picture, max_tokens)
        entry["mask"], entry["inside"] = picture.mask, inside.get(sample_id)
        for column in columns:
            if sample_id in column.records:
                entry["runs"][column.name] = _run_entry(column, sample_id, max_tokens)
                metric_names.update(dict.fromkeys(entry["runs"][column.name]["metrics"]))
        samples.append(entry)
    ordered = [c for c in FIRST_COLUMNS if c in metric_names] + sorted(c for c in metric_names if c not in FIRST_COLUMNS)
    methods = [{"name": c.name, "run": str(c.run.path), "per_token": c.per_token, "probability": _is_probability(c.run),
                "fractions": c.run.fractions, "n": c.run.results.get("n")} for c in columns]
    return {"label": label, "model": model, "task": group[0].task, "methods": methods, "columns": ordered,
            "labels": {c: column_label(c) for c in ordered},
            "n_total": len(first), "samples": samples, "notes": notes}


def _columns(group: list[Run], notes: list[str]) -> list[_Column]:
    """The group's runs with their maps, named by method (and folder, where a method has several runs); a run
    without per-token maps gets a note."""
    counts: dict[str, int] = {}
    for r in group:
        counts[r.method] = counts.get(r.method, 0) + 1
    columns = []
    for r in group:
        name = r.method if counts[r.method] == 1 else f"{r.method} ({r.path.name})"
        if not r.has_token_maps:
            notes.append(f"{name}: this run kept one map per answer (no token_maps.npz, an older run): "
                         "every token shows the answer's map")
        columns.append(_Column(name, r, {s["id"]: s for s in r.records()}, r.token_maps() if r.has_token_maps else {},
                               r.sample_maps() if r.has_sample_maps else {}, r.has_token_maps))
    return columns


@dataclass(frozen=True)
class _Picture:
    """What the page shows of a sample's input: its size, picture and object mask (data URLs), and for several
    images or a clip each image's (frame's) size in the order the picture shows them side by side."""

    size: tuple[int, int] | None = None
    image: str | None = None
    mask: str | None = None
    part_sizes: tuple[tuple[int, int], ...] = ()
    part_noun: str = "image"


def _image(task: Any, record: Any, side: int) -> _Picture:
    """The sample's picture; what cannot be read or is not known is left out: it costs the picture only."""
    if task is None or record is None:
        return _Picture()
    size = None
    try:
        sample = task.sample(record)
        picture = sample.image
        size = (picture.height, picture.width)
        return _Picture(size, _image_url(picture, side), _mask_url(sample.mask, side), tuple(sample.part_sizes()),
                        "frame" if sample.video is not None else "image")
    except Exception:  # noqa: BLE001 - one unreadable image costs its picture only
        return _Picture(size)


def _parts(layout: ImageLayout, picture: _Picture) -> list[dict[str, Any]] | None:
    """Each image that holds tokens, or each time step of a clip (its tokens lie over its first frame), with its span
    of the side-by-side canvas: what the page shows one at a time. None for one image."""
    if len(picture.part_sizes) < 2 or picture.size != tuple(layout.image_size):
        return None
    _, lefts = side_by_side(picture.part_sizes)
    centres = [(g.region[1] + g.region[3]) / 2 for g in layout.groups]
    kept = [i for i, ((_, width), left) in enumerate(zip(picture.part_sizes, lefts))
            if any(left <= c < left + width for c in centres)]
    if len(kept) < 2:
        return None
    parts = []
    for k, i in enumerate(kept):
        height, width = picture.part_sizes[i]
        label = f"image {i + 1}"
        if picture.part_noun == "frame":  # a time step: its frames up to the next one's first
            last = (kept[k + 1] if k + 1 < len(kept) else len(picture.part_sizes)) - 1
            label = f"time step {k + 1} (frame{'s' if last > i else ''} {i + 1}{f'-{last + 1}' if last > i else ''})"
        parts.append({"label": label, "left": lefts[i], "width": width, "height": height})
    return parts


def _mask_url(mask: np.ndarray | None, side: int) -> str | None:
    """The union mask of the question's objects as a black-and-white PNG (the page draws its outline)."""
    if mask is None or not np.asarray(mask).any():
        return None
    from PIL import Image

    picture = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255)
    if max(picture.size) > side:
        factor = side / max(picture.size)
        picture = picture.resize((max(1, round(picture.width * factor)), max(1, round(picture.height * factor))),
                                 Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _workbench(group: list[Run], notes: list[str]) -> dict[str, dict[str, Any]]:
    """{sample id: its per-layer attention} from the group's runs' ``workbench.json`` (the first run's that has one
    for a sample); a file of other weights than the run's is left out, with a note."""
    found: dict[str, dict[str, Any]] = {}
    for r in group:
        path = r.path / WORKBENCH
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        if r.weights_sha256 and data.get("weights_sha256") not in (None, r.weights_sha256):
            notes.append(f"{path}: computed with other model weights than the run's; not shown")
            continue
        for sample_id, entry in data.get("samples", {}).items():
            found.setdefault(sample_id, {**entry, "layers": data["layers"], "rows": data.get("rows", "")})
    return found


def _sample_entry(base: dict[str, Any], run: Run, picture: _Picture, max_tokens: int) -> dict[str, Any]:
    """A sample's row as the first run of its group recorded it: question, answer, tokens, image and layout (and
    its images' or frames' spans, where it has several)."""
    size = picture.size
    if size is None and "layout" in base:
        size = tuple(base["layout"]["image_size"])
    layout = record_layout(base, run.config, size or (64, 64))
    return {"id": base["id"], "question": base.get("question", ""), "answer": base.get("prediction", ""),
            "reference": base.get("reference", ""), "score": base.get("score"),
            "correct": base.get("score", 0) >= 0.5, "tokens": base.get("tokens", [])[:max_tokens],
            "n_tokens": base.get("num_tokens", len(base.get("tokens", []))),
            "image": picture.image, "layout": layout.to_dict(), "parts": _parts(layout, picture), "runs": {}}


def _run_entry(column: _Column, sample_id: str, max_tokens: int) -> dict[str, Any]:
    """One run's view of a sample: its answer, metrics, curves, and its maps quantised on the run's colour scale."""
    record = column.records[sample_id]
    maps = column.token_maps.get(sample_id) if column.per_token else None
    maps = maps[:max_tokens] if maps is not None and len(maps) else np.zeros((0, 0), np.float32)
    answer_map = column.sample_maps.get(sample_id)
    low, high = _scale(column.run, maps, answer_map)
    return {
        "prediction": record.get("prediction", ""), "score": record.get("score"),
        "metrics": sample_metrics(record, column.run.fractions),
        "scale": [float(f"{low:.4g}"), float(f"{high:.4g}")],
        "token_maps": _quantise(maps, low, high) if len(maps) else None, "n_token_maps": int(len(maps)),
        "answer_map": _quantise(np.asarray(answer_map), low, high) if answer_map is not None else None,
        "curves": _curves(record),
    }


def _scale(run: Run, maps: np.ndarray, answer_map: np.ndarray | None) -> tuple[float, float]:
    """The colour scale of a sample's maps: 0-1 for probabilities, else from 0 (or below) to their maximum."""
    values = np.concatenate([maps.reshape(-1)] + ([np.asarray(answer_map).reshape(-1)] if answer_map is not None else []))
    if _is_probability(run) or not values.size:
        return 0.0, 1.0
    low, high = min(0.0, float(np.nanmin(values))), float(np.nanmax(values))
    return low, high if high > low else low + 1.0


# ------------------------------------------------------------------------------------------------ page
def page(data: dict[str, Any]) -> str:
    """The HTML page with ``data`` inlined (every ``<`` escaped, so that no string can end the script element)."""
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    return TEMPLATE.read_text().replace("/*DATA*/", payload)

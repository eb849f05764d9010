"""`fastrm-bench explain`: answer one question about one image and show every answer token's map.

`explain_image` answers greedily once and explains every generated token with each method (the
same answer for all of them). Its confidence is the entropy of the answer's map (the mean over the
answer's content tokens, as runs aggregate it, `fastrm_bench.metrics.entropy.map_entropy`), read
against a calibrated threshold where one is known: a finished run of the same model and method
whose `results.json` holds ``entropy_threshold`` (`find_calibration`). `save_png`, `save_html` and
`save_json` write the result: the image, the answer's tokens, one overlay per token and method in
image space with a colour bar, and a legend that says what the colours mean. The colours are viridis
by default (perceptually uniform, readable with the common colour-vision deficiencies); any
matplotlib colour map, jet included, by option. An image the model's processor would crop (CLIP-style
processors keep the centre square) is padded to a square first (`fit_inputs`), so no part of it is
left out of the model's view or the map.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fastrm_bench.interfaces import Video
from fastrm_bench.layout import ImageLayout, side_by_side_image
from fastrm_bench.report import DEFAULT_CMAP
from fastrm_bench.rundir import Run, find_runs, is_finished_run, read_run


@dataclass
class Calibration:
    """An entropy threshold calibrated on a finished run (answers right and wrong), and what it was worth there."""

    threshold: float
    run_dir: str
    task: str
    data_source: str
    n: int
    tp_rate_below: float | None = None  # share of right answers among those below the threshold (evaluation halves)
    base_rate: float | None = None  # share of right answers overall (same halves)

    def describe(self, base: Path | None = None) -> str:
        """In words; the run's folder relative to ``base`` where given (a page names no absolute local path)."""
        run_dir = os.path.relpath(self.run_dir, base) if base is not None else self.run_dir
        text = (f"threshold {self.threshold:.2f} nats, calibrated on {self.n} answers of {self.task} "
                f"({self.data_source}) in {run_dir}")
        if self.tp_rate_below is not None and self.base_rate is not None:
            text += (f"; there, {self.tp_rate_below:.0%} of the answers below it were right, against "
                     f"{self.base_rate:.0%} of all answers")
        return text


@dataclass
class MethodMaps:
    """One method's maps of the answer's tokens and the confidence read from them."""

    name: str
    maps: np.ndarray  # [T, n_image_tokens]
    seconds: float
    is_probability: bool
    entropy: float  # of the answer's map (mean over content tokens), nats
    token_entropy: list[float]
    calibration: Calibration | None = None

    @property
    def scale(self) -> tuple[float, float]:
        """Colour scale of this method's overlays: 0-1 for probabilities, else 0 (or the minimum) to the maximum
        over the answer's tokens, so that the tokens of one answer compare."""
        if self.is_probability:
            return 0.0, 1.0
        low = min(0.0, float(np.nanmin(self.maps))) if self.maps.size else 0.0
        high = float(np.nanmax(self.maps)) if self.maps.size else 1.0
        return low, high if high > low else low + 1.0

    def verdict(self) -> str:
        """The confidence in a few words (for the figure)."""
        if self.calibration is None:
            return "no calibrated threshold known: the entropy alone says nothing about right or wrong"
        c = self.calibration
        below = self.entropy < c.threshold
        text = (f"{'below' if below else 'above'} the calibrated threshold {c.threshold:.2f}: "
                f"{'confident' if below else 'not confident'} (threshold from {c.n} answers of {c.task}, {c.data_source}")
        if c.tp_rate_below is not None and c.base_rate is not None:
            text += f"; there {c.tp_rate_below:.0%} right below it vs {c.base_rate:.0%} overall"
        return text + ")"

    @property
    def units(self) -> str:
        return "P(relevant), FastRM's probability" if self.is_probability else f"{self.name} relevance"

    def confidence(self, n_image_tokens: int, base: Path | None = None) -> str:
        """The confidence in words: entropy, and the verdict of the calibrated threshold or that none is known
        (``base`` as in `Calibration.describe`)."""
        text = (f"map entropy {self.entropy:.2f} nats (lower = more focused; a uniform map over the "
                f"{n_image_tokens} image tokens has {math.log(max(n_image_tokens, 1)):.2f})")
        if self.calibration is None:
            return text + (f". No calibrated threshold is known for {self.name} on this model, so the entropy "
                           "cannot be read as right or wrong: pass --calibration with a run of this model and method "
                           "whose answers include wrong ones")
        verdict = "below" if self.entropy < self.calibration.threshold else "above"
        trust = "confident" if verdict == "below" else "not confident"
        return text + f"; {verdict} the calibrated {self.calibration.describe(base)}: {trust}"


@dataclass
class Explained:
    """An answer and its maps, for every method asked for."""

    image: Image.Image
    question: str
    prompt: str
    model: str
    answer: str
    tokens: list[str]
    layout: ImageLayout
    generation_seconds: float
    methods: list[MethodMaps] = field(default_factory=list)
    fit_note: str = ""  # how the image was fitted to the model's input (`fit_inputs`)


def find_calibration(roots: list[str | Path], adapter, method: str) -> Calibration | None:
    """The entropy threshold of a finished run under ``roots`` of the same model weights, method and aggregation.

    Runs whose answers were all right (or all wrong) have none. With several, the run with the most answers.
    """
    found = []
    for root in map(Path, roots):
        for run_dir in [root] if is_finished_run(root) else find_runs(root):
            calibration = _calibration(read_run(run_dir), adapter, method)
            if calibration is not None:
                found.append(calibration)
    return max(found, key=lambda c: (c.n, c.run_dir)) if found else None


def _calibration(run: Run, adapter, method: str) -> Calibration | None:
    """The run's threshold, if it explained ``adapter``'s weights with ``method`` and the mean over answer tokens
    (the aggregation `explain_image` measures the entropy of)."""
    same_model = run.weights_sha256 == adapter.weights_sha256 if run.weights_sha256 else run.model_ref == adapter.name
    threshold = run.metric("entropy_threshold")
    if not same_model or run.method != method or run.aggregation != "mean" or threshold is None:
        return None
    return Calibration(float(threshold), str(run.path), run.task, run.data_source, int(run.n),
                       run.metric("entropy_tp_rate_below"), run.metric("entropy_base_rate"))


def explain_image(adapter, image: Image.Image | tuple[Image.Image, ...] | Video, question: str, methods: list[str],
                  max_new_tokens: int = 10,
                  prompt_suffix: str = "", calibration_roots: list[str | Path] | None = None, warmup: bool = True,
                  fit: str = "pad", min_new_tokens: int = 0) -> Explained:
    """Answer ``question`` about ``image`` greedily once, then explain every answer token with each method.

    With ``warmup`` each method explains the answer once untimed first, so that the times shown are those of a
    warm model (the first call of a method pays one-time costs, tens of times its own on a small model).
    ``fit``: how a non-square image meets a cropping processor (`fit_inputs`); the maps are drawn over the image
    the model saw (padded, by default). ``min_new_tokens`` forces a longer answer (greedy, no stop before it).
    """
    import torch

    from fastrm_bench.builders import create_aggregation, create_method
    from fastrm_bench.metrics.entropy import map_entropy

    created = []
    for name in methods:  # every name and checkpoint is checked before the model answers
        method, _ = create_method(name)
        method.prepare(adapter)
        created.append((name, method))
    prompt = question + prompt_suffix
    image, inputs, fit_note = fit_inputs(adapter, image, prompt, fit)
    start = time.perf_counter()
    hidden = any(method.needs.hidden_states for _, method in created)  # kept only for a method that reads them
    generation = adapter.generate(inputs, max_new_tokens, return_hidden=hidden, min_new_tokens=min_new_tokens)[0]
    generation_seconds = time.perf_counter() - start
    tokens = [adapter.tokenizer.decode([int(t)]) for t in generation.generated_ids]
    aggregate = create_aggregation("mean")[0]
    out = Explained(image, question, prompt, adapter.name, generation.text, tokens, inputs.layout, generation_seconds,
                    fit_note=fit_note)
    for name, method in created:
        if warmup:
            method.explain(adapter, inputs, generation)
        explanation = method.explain(adapter, inputs, generation)
        maps = explanation.maps.float().cpu()
        answer_map = aggregate(adapter, inputs, generation, explanation)
        out.methods.append(MethodMaps(
            name, maps.numpy(), explanation.seconds, method.needs.probabilities, map_entropy(answer_map),
            [map_entropy(torch.as_tensor(m)) for m in maps],
            find_calibration(calibration_roots or [], adapter, name)))
    return out


# ----------------------------------------------------------------------------------------------- outputs
#: answer tokens per row of the PNG: a longer answer wraps into more rows, so the figure stays under 2,000 px wide
TOKENS_PER_ROW = 5
#: what non-square images are padded with (LLaVA-1.5's expand2square: the CLIP processor's mean colour)
PAD_COLOUR = (122, 116, 104)
#: the ends of the colour maps `legend` names in words (most relevant, least relevant)
_ENDS = {"viridis": ("yellow", "dark purple"), "cividis": ("yellow", "dark blue"), "inferno": ("pale yellow", "black"),
         "magma": ("pale yellow", "black"), "plasma": ("yellow", "dark blue"), "jet": ("dark red", "dark blue")}


def legend(cmap: str = DEFAULT_CMAP) -> str:
    """What the colours mean, in every output."""
    high, low = _ENDS.get(cmap, ("the top of the colour bar", "its bottom"))
    return (f"Colours: each overlay shows how relevant every part of the image is to that answer token: {high} = most "
            f"relevant, {low} = least (the {cmap} colour map drawn at 60% over the image in grey, so that the colours are "
            "the map's alone; the colour bar gives the values). Each image token colours the part of the image it sees; "
            "pixels no token sees keep their own colours.")


def square_padded(image: Image.Image, colour: tuple[int, int, int] = PAD_COLOUR) -> Image.Image:
    """The image in the middle of a square of ``colour`` (LLaVA-1.5's expand2square); a square image as it is."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    out = Image.new("RGB", (side, side), colour)
    out.paste(image.convert("RGB"), ((side - width) // 2, (side - height) // 2))
    return out


def covers_image(layout: ImageLayout) -> bool:
    """Whether the image tokens see every pixel of the image (a centre-cropping processor leaves the sides unseen)."""
    height, width = layout.image_size
    factor = min(1.0, 128 / max(height, width))
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    return not np.isnan(layout.to_image(np.zeros(layout.num_tokens), size=size)).any()


def fit_inputs(adapter, image: Image.Image | tuple[Image.Image, ...] | Video, prompt: str, fit: str = "pad"
               ) -> tuple[Image.Image, Any, str]:
    """The model's inputs for ``image``, the image the maps are drawn over, and a sentence saying what was done.

    ``fit="pad"`` (default): where the model's processor would crop part of the image away (CLIP-style processors
    keep the centre square), the image is padded to a square first, as LLaVA-1.5 does, so that the model sees all
    of it and the map covers all of it. ``fit="crop"``: the processor's own choice, the unseen parts left uncovered.
    Models that see the whole image (Qwen2-VL, tiles) get it unchanged either way.
    """
    if fit not in ("pad", "crop"):
        raise ValueError(f"fit must be 'pad' or 'crop', got {fit!r}")
    if isinstance(image, Video):  # the video encoders see whole frames: nothing to pad
        frames = tuple(frame.convert("RGB") for frame in image.frames)
        return side_by_side_image(frames), adapter.build_inputs([Video(frames, image.fps)], [prompt]), (
            f"the clip's {len(frames)} frames side by side, in time order; each time step's map is drawn over its first "
            "frame (Qwen-VL steps pair two frames: the second is left uncovered)")
    if isinstance(image, tuple):
        return _fit_several(adapter, image, prompt, fit)
    image = image.convert("RGB")
    inputs = adapter.build_inputs([image], [prompt])
    width, height = image.size
    if covers_image(inputs.layout):
        return image, inputs, f"the {width}x{height} image as it is (the model sees all of it)"
    if fit == "crop":
        return image, inputs, (f"the {width}x{height} image as the model's processor takes it: it keeps the centre square, "
                               "the parts outside are not seen and are left uncovered")
    padded = square_padded(image)
    side = padded.width
    return padded, adapter.build_inputs([padded], [prompt]), (
        f"the {width}x{height} image padded to a {side}x{side} square (LLaVA-1.5's expand2square), because the model's "
        "processor would otherwise crop its sides away; the map covers the whole padded image")


def _fit_several(adapter, images: tuple[Image.Image, ...], prompt: str, fit: str) -> tuple[Image.Image, Any, str]:
    """`fit_inputs` for several images: each padded as one alone would be, all drawn side by side on one canvas."""
    images = tuple(im.convert("RGB") for im in images)
    padded = tuple(im if fit == "crop" or covers_image(adapter.build_inputs([im], [prompt]).layout) else square_padded(im)
                   for im in images)
    changed = sum(a is not b for a, b in zip(images, padded))
    note = f"{len(images)} images side by side, in the order the model sees them"
    if changed:
        note += f"; {changed} padded to a square (LLaVA-1.5's expand2square) so that the model sees all of it"
    return side_by_side_image(padded), adapter.build_inputs([padded], [prompt]), note


def overlay(image: Image.Image, layout: ImageLayout, values: np.ndarray, scale: tuple[float, float],
            size: int = 256, alpha: float = 0.6, cmap: str = DEFAULT_CMAP) -> Image.Image:
    """The map over the image as an RGB picture, longest side ``size``, never cropped (the image's own aspect).

    The colour map is drawn at ``alpha`` over the image in grey, so that its colours are the map's alone (a
    saturated red object under a low value does not turn a high-value hue); pixels no token sees keep their own
    colours. Drawn at the image's resolution when it is smaller than ``size`` (then enlarged without smoothing,
    so each image token stays a sharp block), else at ``size``.
    """
    from matplotlib import colormaps

    width, height = image.size
    factor = min(1.0, size / max(width, height))
    shape = (max(1, round(height * factor)), max(1, round(width * factor)))
    rgb = image.convert("RGB").resize((shape[1], shape[0]), Image.BILINEAR) if factor < 1 else image.convert("RGB")
    base = np.asarray(rgb, dtype=np.float32) / 255
    grey = np.asarray(rgb.convert("L"), dtype=np.float32)[..., None] / 255
    heat = layout.to_image(values, size=shape)
    low, high = scale
    colours = colormaps[cmap](np.clip((np.nan_to_num(heat, nan=low) - low) / (high - low), 0, 1))[..., :3]
    seen = ~np.isnan(heat)[..., None]
    mixed = np.where(seen, (1 - alpha) * grey + alpha * colours, base)
    picture = Image.fromarray((mixed * 255).round().astype(np.uint8))
    if max(shape) < size:
        grow = size / max(shape)
        picture = picture.resize((round(shape[1] * grow), round(shape[0] * grow)), Image.NEAREST)
    return picture


def colour_bar_html(low: float, high: float, units: str, cmap: str = DEFAULT_CMAP) -> str:
    """A vertical colour bar with its ends' values and units, as one self-styled HTML element (no stylesheet needed)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    e = html.escape
    stops = ", ".join(to_hex(c) for c in colormaps[cmap](np.linspace(0, 1, 11)))
    return (f'<div class="colour-bar" role="img" aria-label="colour bar, {e(cmap)}: {e(units)} from {low:.3g} (bottom) '
            f'to {high:.3g} (top)" style="display:flex;flex-direction:column;align-items:center;font-size:.8em;'
            f'width:6em;min-height:180px"><span>{high:.3g}</span><div style="flex:1;width:1.2em;min-height:150px;'
            f'background:linear-gradient(to top, {stops})"></div><span>{low:.3g}</span>'
            f'<small style="text-align:center">{e(units)}</small></div>')


def _png_data_url(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _shown_path(path: str, base: Path | None) -> str:
    """A path as a page shows it: relative to the page's folder (a page names no absolute local path)."""
    return os.path.relpath(path, base) if base is not None else path


def save_json(result: Explained, path: Path) -> None:
    base = path.parent.resolve()
    data = {
        "model": result.model, "question": result.question, "prompt": result.prompt, "answer": result.answer,
        "tokens": result.tokens, "generation_seconds": result.generation_seconds, "layout": result.layout.to_dict(),
        "image_fit": result.fit_note,
        "methods": {m.name: {"maps": m.maps.round(6).tolist(), "seconds": m.seconds, "is_probability": m.is_probability,
                             "entropy": m.entropy, "token_entropy": m.token_entropy,
                             "calibrated_threshold": m.calibration.threshold if m.calibration else None,
                             "calibration_run": _shown_path(m.calibration.run_dir, base) if m.calibration else None,
                             "confidence": m.confidence(result.layout.num_tokens, base)} for m in result.methods},
    }
    path.write_text(json.dumps(data, indent=1))


def save_png(result: Explained, path: Path, cmap: str = DEFAULT_CMAP, per_row: int = TOKENS_PER_ROW) -> None:
    """The image and legend on top; per method its confidence, one overlay per answer token (``per_row`` to a row,
    a longer answer wrapping into more rows) and one colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_tokens = max(len(result.tokens), 1)
    columns = min(n_tokens, per_row)
    lines = math.ceil(n_tokens / columns)  # rows of overlays per method
    rows = lines * len(result.methods)
    fig = plt.figure(figsize=(2.9 + 2.5 * columns + 0.9, 3.2 + 2.7 * rows))
    grid = fig.add_gridspec(1 + rows, columns + 2, width_ratios=[1.25] + [1] * columns + [0.07],
                            height_ratios=[1.15] + [1] * rows, hspace=0.45, wspace=0.12, top=0.95, bottom=0.02)
    _png_header(fig, grid, result, columns, cmap)
    for k, m in enumerate(result.methods):
        _png_method(fig, grid, result, m, 1 + k * lines, columns, cmap)
    fig.suptitle("fastrm-bench explain: one map per answer token and method", fontsize=11, y=0.995)
    overlays = ",".join(f"{m.name}:{t}" for m in result.methods for t in range(len(m.maps)))
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Overlays": overlays, "Colormap": cmap})
    plt.close(fig)


def _png_header(fig, grid, result: Explained, columns: int, cmap: str) -> None:
    """The plain image, the question, the answer and its tokens, how the image was fitted, and the legend."""
    import textwrap

    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(np.asarray(result.image))
    ax.set_title("the image", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    head = fig.add_subplot(grid[0, 1:])
    head.axis("off")
    wrap = 30 * columns + 20
    words = " | ".join(f"{t}: '{w}'" for t, w in enumerate(result.tokens, start=1)) or "(no token)"
    lines = [f"Question: {result.question}", f"Answer: {result.answer}   (model {result.model})"]
    lines += textwrap.wrap(f"Answer tokens: {words}", wrap) + textwrap.wrap(f"Image: {result.fit_note}.", wrap) + [""]
    lines += textwrap.wrap(legend(cmap), wrap)
    head.text(0, 0.98, "\n".join(lines), va="top", fontsize=9, family="sans-serif", transform=head.transAxes)


def _png_method(fig, grid, result: Explained, m: MethodMaps, first_row: int, columns: int, cmap: str) -> None:
    """One method: its name, time and confidence, its overlays row after row, one colour bar beside them all."""
    import textwrap

    from fastrm_bench.report import draw_map

    image = np.asarray(result.image)
    lines = math.ceil(max(len(result.tokens), 1) / columns)
    text = fig.add_subplot(grid[first_row, 0])
    text.axis("off")
    text.text(0, 0.98, m.name, va="top", fontsize=10, fontweight="bold", transform=text.transAxes)
    uniform = math.log(max(result.layout.num_tokens, 1))
    info = [f"{m.seconds * 1000:.1f} ms for all its maps", "", "Confidence:",
            f"map entropy {m.entropy:.2f} nats", f"(uniform map: {uniform:.2f}; lower = focused)"]
    info += textwrap.wrap(m.verdict(), 34)
    text.text(0, 0.84, "\n".join(info), va="top", fontsize=7.2, transform=text.transAxes)
    low, high = m.scale
    shown = None
    for t in range(len(m.maps)):
        ax = fig.add_subplot(grid[first_row + t // columns, 1 + t % columns])
        ax.set_xticks([])
        ax.set_yticks([])
        shown = draw_map(ax, image, result.layout, m.maps[t], vmin=low, vmax=high, cmap=cmap)
        ax.set_title(f"{m.name}, {t + 1}: '{result.tokens[t]}'\nentropy {m.token_entropy[t]:.2f}", fontsize=8)
    if shown is not None:
        bar = fig.colorbar(shown, cax=fig.add_subplot(grid[first_row:first_row + lines, columns + 1]))
        bar.solids.set_alpha(1.0)
        bar.set_label(m.units, fontsize=7)
        bar.ax.tick_params(labelsize=7)


def save_html(result: Explained, path: Path, cmap: str = DEFAULT_CMAP) -> None:
    """The same as a self-contained page (images inlined; no script, no network, no absolute local path)."""
    e = html.escape
    n = result.layout.num_tokens
    base = path.parent.resolve()
    rows = []
    for m in result.methods:
        low, high = m.scale
        cells = "".join(
            f'<figure><img class="overlay" data-method="{e(m.name)}" data-token="{t}" alt="{e(m.name)} map of token {t + 1}" '
            f'src="{_png_data_url(overlay(result.image, result.layout, m.maps[t], m.scale, cmap=cmap))}">'
            f"<figcaption>token {t + 1}: <b>{e(result.tokens[t])}</b><br>entropy {m.token_entropy[t]:.2f}</figcaption></figure>"
            for t in range(len(m.maps)))
        rows.append(f'<section class="method"><h2>{e(m.name)} <small>{m.seconds * 1000:.1f} ms for all maps</small></h2>'
                    f'<p class="confidence">Confidence: {e(m.confidence(n, base))}</p><div class="row">'
                    f'<div class="maps">{cells}</div>{colour_bar_html(low, high, m.units, cmap)}</div></section>')
    tokens = " ".join(f'<span class="token">{e(t)}</span>' for t in result.tokens) or "(no token)"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fastrm-bench explain: {e(result.question)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }}
.top {{ display: flex; gap: 1.5em; align-items: flex-start; flex-wrap: wrap; }}
.top img {{ width: 256px; image-rendering: pixelated; border: 1px solid #ccc; }}
.token {{ font-family: ui-monospace, monospace; color: #444; cursor: text; }}
.token + .token::before {{ content: "| "; color: #aaa; }}
.row {{ display: flex; gap: .8em; align-items: stretch; }}
.maps {{ display: flex; gap: .8em; flex-wrap: wrap; flex: 1; }}
figure {{ margin: 0; text-align: center; font-size: .85em; }}
figure img {{ width: 256px; image-rendering: pixelated; display: block; }}
.legend, .confidence {{ max-width: 60em; }}
h2 small {{ font-weight: normal; color: #666; font-size: .6em; }}
</style></head><body>
<h1>{e(result.question)}</h1>
<div class="top"><img alt="the image" src="{_png_data_url(result.image)}">
<div><p>Answer: <b>{e(result.answer)}</b> (model {e(result.model)}, {result.generation_seconds * 1000:.0f} ms)</p>
<p>Answer tokens: {tokens}</p><p class="fit">Image: {e(result.fit_note)}.</p><p class="legend">{e(legend(cmap))}</p></div></div>
{''.join(rows)}
</body></html>
"""
    path.write_text(page)


def save_all(result: Explained, out: Path, cmap: str = DEFAULT_CMAP) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"png": out / "explanation.png", "html": out / "explanation.html", "json": out / "explanation.json"}
    save_png(result, files["png"], cmap)
    save_html(result, files["html"], cmap)
    save_json(result, files["json"])
    return files


def summary_lines(result: Explained) -> list[str]:
    lines = [f"answer: {result.answer}  (tokens: {', '.join(repr(t) for t in result.tokens) or 'none'})"]
    for m in result.methods:
        lines.append(f"{m.name}: {len(m.maps)} maps in {m.seconds * 1000:.1f} ms; {m.confidence(result.layout.num_tokens)}")
    return lines

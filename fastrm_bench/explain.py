"""`fastrm-bench explain`: answer one question about one image and show every answer token's map.

`explain_image` answers greedily once and explains every generated token with each method (the
same answer for all of them). Its confidence is the entropy of the answer's map (the mean over the
answer's content tokens, as runs aggregate it, `fastrm_bench.metrics.entropy.map_entropy`), read
against a calibrated threshold where one is known: a finished run of the same model and method
whose `results.json` holds ``entropy_threshold`` (`find_calibration`). `save_png`, `save_html` and
`save_json` write the result: the image, the answer's tokens, one overlay per token and method in
image space with a colour bar, and a legend that says what the colours mean.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from fastrm_bench.layout import ImageLayout
from fastrm_bench.rundir import Run, find_runs, is_finished_run, read_run

#: what the colours mean, in every output
LEGEND = ("Colours: each overlay shows how relevant every part of the image is to that answer token: red and yellow "
          "= most relevant, blue = least (jet colour map drawn at 50% over the image; the colour bar gives the values). "
          "Each image token colours the part of the image it sees; pixels no token sees are left uncovered.")


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

    def describe(self) -> str:
        text = (f"threshold {self.threshold:.2f} nats, calibrated on {self.n} answers of {self.task} "
                f"({self.data_source}) in {self.run_dir}")
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

    def confidence(self, n_image_tokens: int) -> str:
        """The confidence in words: entropy, and the verdict of the calibrated threshold or that none is known."""
        text = (f"map entropy {self.entropy:.2f} nats (lower = more focused; a uniform map over the "
                f"{n_image_tokens} image tokens has {math.log(max(n_image_tokens, 1)):.2f})")
        if self.calibration is None:
            return text + (f". No calibrated threshold is known for {self.name} on this model, so the entropy "
                           "cannot be read as right or wrong: pass --calibration with a run of this model and method "
                           "whose answers include wrong ones")
        verdict = "below" if self.entropy < self.calibration.threshold else "above"
        trust = "confident" if verdict == "below" else "not confident"
        return text + f"; {verdict} the calibrated {self.calibration.describe()}: {trust}"


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


def explain_image(adapter, image: Image.Image, question: str, methods: list[str], max_new_tokens: int = 10,
                  prompt_suffix: str = "", calibration_roots: list[str | Path] | None = None, warmup: bool = True
                  ) -> Explained:
    """Answer ``question`` about ``image`` greedily once, then explain every answer token with each method.

    With ``warmup`` each method explains the answer once untimed first, so that the times shown are those of a
    warm model (the first call of a method pays one-time costs, tens of times its own on a small model).
    """
    import torch

    from fastrm_bench.builders import create_aggregation, create_method
    from fastrm_bench.metrics.entropy import map_entropy

    created = []
    for name in methods:  # every name and checkpoint is checked before the model answers
        method, _ = create_method(name)
        method.prepare(adapter)
        created.append((name, method))
    image = image.convert("RGB")
    prompt = question + prompt_suffix
    inputs = adapter.build_inputs([image], [prompt])
    start = time.perf_counter()
    hidden = any(method.needs.hidden_states for _, method in created)  # kept only for a method that reads them
    generation = adapter.generate(inputs, max_new_tokens, return_hidden=hidden)[0]
    generation_seconds = time.perf_counter() - start
    tokens = [adapter.tokenizer.decode([int(t)]) for t in generation.generated_ids]
    aggregate = create_aggregation("mean")[0]
    out = Explained(image, question, prompt, adapter.name, generation.text, tokens, inputs.layout, generation_seconds)
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
def overlay(image: Image.Image, layout: ImageLayout, values: np.ndarray, scale: tuple[float, float],
            size: int = 256, alpha: float = 0.5) -> Image.Image:
    """The map over the image as an RGB picture (longest side ``size``; jet colours, pixels no token sees uncovered).

    Drawn at the image's own resolution when it is smaller than ``size`` (then enlarged without smoothing,
    so each image token stays a sharp block), else at ``size``.
    """
    from matplotlib import colormaps

    width, height = image.size
    factor = min(1.0, size / max(width, height))
    shape = (max(1, round(height * factor)), max(1, round(width * factor)))
    base = np.asarray(image.convert("RGB").resize((shape[1], shape[0]), Image.BILINEAR) if factor < 1 else
                      image.convert("RGB"), dtype=np.float32) / 255
    heat = layout.to_image(values, size=shape)
    low, high = scale
    colours = colormaps["jet"](np.clip((np.nan_to_num(heat, nan=low) - low) / (high - low), 0, 1))[..., :3]
    seen = ~np.isnan(heat)[..., None]
    mixed = np.where(seen, (1 - alpha) * base + alpha * colours, base)
    picture = Image.fromarray((mixed * 255).round().astype(np.uint8))
    if max(shape) < size:
        grow = size / max(shape)
        picture = picture.resize((round(shape[1] * grow), round(shape[0] * grow)), Image.NEAREST)
    return picture


def _png_data_url(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def save_json(result: Explained, path: Path) -> None:
    data = {
        "model": result.model, "question": result.question, "prompt": result.prompt, "answer": result.answer,
        "tokens": result.tokens, "generation_seconds": result.generation_seconds, "layout": result.layout.to_dict(),
        "methods": {m.name: {"maps": m.maps.round(6).tolist(), "seconds": m.seconds, "is_probability": m.is_probability,
                             "entropy": m.entropy, "token_entropy": m.token_entropy,
                             "calibrated_threshold": m.calibration.threshold if m.calibration else None,
                             "calibration_run": m.calibration.run_dir if m.calibration else None,
                             "confidence": m.confidence(result.layout.num_tokens)} for m in result.methods},
    }
    path.write_text(json.dumps(data, indent=1))


def save_png(result: Explained, path: Path) -> None:
    """One row per method: its confidence, one overlay per answer token, a colour bar; the image and legend on top."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastrm_bench.report import draw_map

    n_tokens = max(len(result.tokens), 1)
    image = np.asarray(result.image)
    columns = 1 + n_tokens
    fig = plt.figure(figsize=(2.9 + 2.5 * n_tokens + 0.9, 2.9 + 2.7 * len(result.methods)))
    grid = fig.add_gridspec(1 + len(result.methods), columns + 1, width_ratios=[1.25] + [1] * n_tokens + [0.07],
                            height_ratios=[1.0] + [1] * len(result.methods), hspace=0.4, wspace=0.12, top=0.94, bottom=0.02)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(image)
    ax.set_title("the image", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    head = fig.add_subplot(grid[0, 1:])
    head.axis("off")
    words = " | ".join(f"{t}: '{w}'" for t, w in enumerate(result.tokens, start=1)) or "(no token)"
    wrap = max(40, 34 * n_tokens)
    lines = [f"Question: {result.question}", f"Answer: {result.answer}   (model {result.model})",
             f"Answer tokens: {words}", ""] + textwrap.wrap(LEGEND, wrap)
    head.text(0, 0.95, "\n".join(lines), va="top", fontsize=9, family="sans-serif", transform=head.transAxes)
    for row, m in enumerate(result.methods, start=1):
        text = fig.add_subplot(grid[row, 0])
        text.axis("off")
        text.text(0, 0.98, m.name, va="top", fontsize=10, fontweight="bold", transform=text.transAxes)
        uniform = math.log(max(result.layout.num_tokens, 1))
        info = [f"{m.seconds * 1000:.1f} ms for all its maps", "", "Confidence:",
                f"map entropy {m.entropy:.2f} nats", f"(uniform map: {uniform:.2f}; lower = focused)"]
        info += textwrap.wrap(m.verdict(), 34)
        text.text(0, 0.84, "\n".join(info), va="top", fontsize=7.2, transform=text.transAxes)
        low, high = m.scale
        shown = None
        for t in range(n_tokens):
            ax = fig.add_subplot(grid[row, 1 + t])
            ax.set_xticks([])
            ax.set_yticks([])
            if t >= len(m.maps):
                ax.axis("off")
                continue
            shown = draw_map(ax, image, result.layout, m.maps[t], vmin=low, vmax=high)
            ax.set_title(f"{m.name}, token {t + 1}: '{result.tokens[t]}'\nentropy {m.token_entropy[t]:.2f}", fontsize=8)
        if shown is not None:
            bar = fig.colorbar(shown, cax=fig.add_subplot(grid[row, columns]))
            bar.solids.set_alpha(1.0)
            bar.set_label(m.units, fontsize=7)
            bar.ax.tick_params(labelsize=7)
    fig.suptitle("fastrm-bench explain: one map per answer token and method", fontsize=11, y=0.99)
    overlays = ",".join(f"{m.name}:{t}" for m in result.methods for t in range(len(m.maps)))
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Overlays": overlays})
    plt.close(fig)


def save_html(result: Explained, path: Path) -> None:
    """The same as a self-contained page (images inlined; no script, no network)."""
    e = html.escape
    n = result.layout.num_tokens
    rows = []
    for m in result.methods:
        low, high = m.scale
        cells = "".join(
            f'<figure><img class="overlay" data-method="{e(m.name)}" data-token="{t}" alt="{e(m.name)} map of token {t + 1}" '
            f'src="{_png_data_url(overlay(result.image, result.layout, m.maps[t], m.scale))}">'
            f"<figcaption>token {t + 1}: <b>{e(result.tokens[t])}</b><br>entropy {m.token_entropy[t]:.2f}</figcaption></figure>"
            for t in range(len(m.maps)))
        bar = (f'<div class="bar"><span>{high:.3g}</span><div class="ramp"></div><span>{low:.3g}</span>'
               f"<small>{e(m.units)}</small></div>")
        rows.append(f'<section class="method"><h2>{e(m.name)} <small>{m.seconds * 1000:.1f} ms for all maps</small></h2>'
                    f'<p class="confidence">Confidence: {e(m.confidence(n))}</p><div class="row">{cells}{bar}</div></section>')
    tokens = " ".join(f'<span class="token">{e(t)}</span>' for t in result.tokens) or "(no token)"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fastrm-bench explain: {e(result.question)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }}
.top {{ display: flex; gap: 1.5em; align-items: flex-start; }}
.top img {{ width: 256px; image-rendering: pixelated; border: 1px solid #ccc; }}
.token {{ background: #eef; border: 1px solid #99c; border-radius: 4px; padding: 0 .4em; margin-right: .3em; }}
.row {{ display: flex; gap: .8em; align-items: stretch; flex-wrap: wrap; }}
figure {{ margin: 0; text-align: center; font-size: .85em; }}
figure img {{ width: 256px; image-rendering: pixelated; display: block; }}
.bar {{ display: flex; flex-direction: column; align-items: center; font-size: .8em; width: 5em; }}
.ramp {{ flex: 1; width: 1.2em; min-height: 180px;
  background: linear-gradient(to top, #00007f, #0000ff, #007fff, #00ffff, #7fff7f, #ffff00, #ff7f00, #ff0000, #7f0000); }}
.legend, .confidence {{ max-width: 60em; }}
h2 small {{ font-weight: normal; color: #666; font-size: .6em; }}
</style></head><body>
<h1>{e(result.question)}</h1>
<div class="top"><img alt="the image" src="{_png_data_url(result.image)}">
<div><p>Answer: <b>{e(result.answer)}</b> (model {e(result.model)}, {result.generation_seconds * 1000:.0f} ms)</p>
<p>Answer tokens: {tokens}</p><p class="legend">{e(LEGEND)}</p></div></div>
{''.join(rows)}
</body></html>
"""
    path.write_text(page)


def save_all(result: Explained, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"png": out / "explanation.png", "html": out / "explanation.html", "json": out / "explanation.json"}
    save_png(result, files["png"])
    save_html(result, files["html"])
    save_json(result, files["json"])
    return files


def summary_lines(result: Explained) -> list[str]:
    lines = [f"answer: {result.answer}  (tokens: {', '.join(repr(t) for t in result.tokens) or 'none'})"]
    for m in result.methods:
        lines.append(f"{m.name}: {len(m.maps)} maps in {m.seconds * 1000:.1f} ms; {m.confidence(result.layout.num_tokens)}")
    return lines

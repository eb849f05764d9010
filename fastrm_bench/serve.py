"""`fastrm-bench serve`: a live demo (Gradio, the optional ``serve`` extra).

Tab "FastRM live": upload an image, ask a question; the answer streams in token by token, each token
with FastRM's map (`fastrm_bench.live.stream_fastrm`: the map is computed when the token is chosen,
before the next one), and the answer's confidence (map entropy, against a calibrated threshold where
one is known) comes at the end. Tab "Compare": the same greedy answer explained by a gradient method
beside FastRM, with the wall time the user waited and what it went to. Both are HTTP API endpoints
too (``/explain``, ``/compare``; see the page's "Use via API" link or `gradio_client`).

Maps are viridis (colour-blind-safe) over the image in grey, each gallery shows whole pictures (no
crop) beside a colour bar, and a non-square upload is padded to a square where the model's processor
would crop it (`fastrm_bench.explain.fit_inputs`), the page saying so.

Streaming: each token's overlay is written to a PNG file once, when it is drawn, and the gallery is
given the files. Given pictures instead, Gradio re-encodes every picture of the gallery at every
update, so the cost of an update grew with the answer's length and a long answer's updates fell
behind generation and reached the page in bursts. The time a tab reports as "you waited" is measured
in the browser (`WAITED_JS`), from the click to the last picture drawn: the server cannot see the
transfer and the drawing, which on a small model are most of the wait.
"""

from __future__ import annotations

import collections
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

#: methods the comparison tab offers (gradient methods first; `fastrm-bench list methods` has them all)
COMPARE_METHODS = ("chefer", "chefer-reference", "gradcam-lm", "gradcam", "dex-ar", "tam", "rollout")
#: answers whose overlay files are kept (Gradio copies each update's files to its cache before the next update)
KEPT_ANSWERS = 8

#: four maps to a row whatever the answer's length: Gradio gives a two-token answer two columns, whose square maps are
#: then taller than the gallery and cut off at its bottom (in the page itself, since Gradio 6 takes `css` at launch)
GALLERY_CSS = ("#live-maps .grid-container, #compare-maps .grid-container "
               "{ grid-template-columns: repeat(4, minmax(0, 1fr)) !important; }")
#: the page's clock at a click, per tab (runs in the browser before the request is sent)
CLICK_JS = "() => { window.fastrmClicks = {...(window.fastrmClicks || {}), %(tab)s: performance.now()}; return ''; }"
#: after the last update: wait until the tab's pictures are loaded and drawn, then report the time since the click
WAITED_JS = """async () => {
  const frame = () => new Promise(done => requestAnimationFrame(done));
  await frame();
  const pictures = [...document.querySelectorAll('#%(tab)s-maps img')];
  await Promise.all(pictures.map(p => p.complete ? null : new Promise(done => { p.onload = p.onerror = done; })));
  await frame();
  const waited = performance.now() - window.fastrmClicks.%(tab)s;
  return `You waited **${Math.round(waited)} ms** from the click to the last picture on this page (measured in `
    + `this browser: the answer, the maps, the transfer and the drawing).`;
}"""


def require_gradio():
    try:
        import gradio
    except ImportError as err:
        raise ImportError("the live demo needs Gradio: pip install 'fastrm-bench[serve]'") from err
    return gradio


def build_app(model: str = "tiny-llava-shapes", device: str | None = None, calibration: list[str | Path] | None = None,
              max_new_tokens: int = 10, dtype: str = "float32", attn_implementation: str = "sdpa"):
    """The Gradio app (`gradio.Blocks`) around one loaded model and its FastRM proxy."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    require_gradio()
    from fastrm_bench.models.zoo import load_model

    adapter = load_model(model, device=device, dtype=dtype, attn_implementation=attn_implementation)
    return LiveDemo(adapter, calibration or [], max_new_tokens).blocks()


class LiveDemo:
    """The demo's two endpoints (`live`, `compare`) around one loaded model, and the page that shows them."""

    def __init__(self, adapter, calibration: list[str | Path], max_new_tokens: int):
        from fastrm_bench.builders import create_aggregation, create_method
        from fastrm_bench.explain import find_calibration

        self.adapter, self.max_new_tokens = adapter, max_new_tokens
        self.fastrm, _ = create_method("fastrm")
        self.fastrm.prepare(adapter)  # no proxy for this model: fails here, before the page is served
        self.proxy = self.fastrm.proxy_for(adapter)
        self.calibrated = find_calibration(calibration, adapter, "fastrm")
        self.aggregate = create_aggregation("mean")[0]
        self.methods: dict[str, Any] = {}  # the comparison tab's methods, prepared on first use
        self.pictures = Path(tempfile.mkdtemp(prefix="fastrm-live-"))
        self.answers: collections.deque[Path] = collections.deque()

    def picture_folder(self) -> Path:
        """A new folder for one answer's overlays; the oldest is removed once `KEPT_ANSWERS` are kept."""
        folder = Path(tempfile.mkdtemp(dir=self.pictures))
        self.answers.append(folder)
        if len(self.answers) > KEPT_ANSWERS:
            shutil.rmtree(self.answers.popleft(), ignore_errors=True)
        return folder

    @staticmethod
    def check(image, question: str | None) -> tuple[Any, str]:
        """The image (RGB) and the question, or the error the page shows for a missing one."""
        gr = require_gradio()
        if image is None:
            raise gr.Error("upload an image first")
        if not question or not question.strip():
            raise gr.Error("ask a question")
        return image.convert("RGB"), question.strip()

    def confidence_of(self, inputs, generation, maps, seconds: float):
        """FastRM's maps of a whole answer with their entropy and the calibrated verdict (`explain.MethodMaps`)."""
        from fastrm_bench.explain import MethodMaps
        from fastrm_bench.interfaces import Explanation
        from fastrm_bench.metrics.entropy import map_entropy

        entropy = map_entropy(self.aggregate(self.adapter, inputs, generation, Explanation(maps=maps, seconds=seconds)))
        return MethodMaps("fastrm", maps.numpy(), seconds, True, entropy, [map_entropy(m) for m in maps], self.calibrated)

    def live(self, image, question):
        """Stream the answer, each token with its FastRM overlay as soon as it is chosen; the confidence at the end.

        The first update clears the last answer's outputs, so that an error (no image, no question) leaves no
        stale answer or confidence on the page. The gallery holds PNG files, each written once (see the module's
        docstring), so an update costs the same at the tenth token as at the first."""
        import torch

        from fastrm_bench.explain import fit_inputs, overlay
        from fastrm_bench.live import StreamEnd, stream_fastrm

        yield "", [], "", {}
        image, question = self.check(image, question)
        image, inputs, fit_note = fit_inputs(self.adapter, image, question)
        folder = self.picture_folder()
        tokens: list[str] = []
        gallery: list[tuple[str, str]] = []
        maps: list[list[float]] = []
        timings: list[dict[str, float]] = []
        for item in stream_fastrm(self.adapter, self.proxy, inputs, self.max_new_tokens):
            if isinstance(item, StreamEnd):
                stacked = torch.stack([torch.as_tensor(m) for m in maps]) if maps else torch.zeros(0, inputs.layout.num_tokens)
                yield self._live_end(inputs, item, stacked, tokens, maps, timings, gallery, fit_note)
                return
            picture = folder / f"{len(tokens) + 1}.png"
            overlay(image, inputs.layout, item.map.numpy(), (0.0, 1.0)).save(picture, compress_level=1)
            ready = time.perf_counter()
            tokens.append(item.text)
            maps.append([round(float(v), 6) for v in item.map])
            gallery.append((str(picture), f"{len(tokens)}: {item.text}"))
            timings.append({"token": item.text, "token_to_map_ms": item.token_to_map_seconds * 1000,
                            "token_to_overlay_ms": (ready - item.token_at) * 1000})
            data = {"answer": None, "tokens": list(tokens), "maps": list(maps), "entropy": None,
                    "calibrated_threshold": None, "confidence": None, "timings": list(timings), "image_fit": fit_note}
            yield " ".join(t.strip() for t in tokens), list(gallery), "*answering...*", data  # copies: an update is final

    def _live_end(self, inputs, end, stacked, tokens: list[str], maps: list[list[float]], timings: list[dict[str, float]],
                  gallery: list[tuple[str, str]], fit_note: str) -> tuple[str, list[tuple[str, str]], str, dict[str, Any]]:
        """The live tab's last update: the whole answer and its confidence."""
        generation = end.generation
        result = self.confidence_of(inputs, generation, stacked, 0.0)
        text = result.confidence(inputs.layout.num_tokens)
        data = {"answer": generation.text, "tokens": tokens, "maps": maps, "entropy": result.entropy,
                "calibrated_threshold": self.calibrated.threshold if self.calibrated else None, "confidence": text,
                "timings": timings, "generation_seconds": end.seconds, "image_fit": fit_note}
        return generation.text, gallery, f"**Confidence:** {text}. *Image: {fit_note}.*", data

    def compare(self, image, question, name: str):
        """One greedy answer explained by FastRM and by ``name``, token by token; the time is the demo's wall time on
        the request (from its arrival to the pictures), with what it went to: preparing the method on first use,
        generation, each method's maps, drawing. What the user waited (transfer and the browser's drawing added) is
        measured in the browser (`WAITED_JS`). The first update clears the last comparison (see `live`)."""
        from fastrm_bench.explain import colour_bar_html, fit_inputs
        from fastrm_bench.live import adapter_lock

        start = time.perf_counter()
        yield "", [], {}, ""
        image, question = self.check(image, question)
        adapter = self.adapter
        image, inputs, fit_note = fit_inputs(adapter, image, question)
        with adapter_lock(adapter):
            method = self._method(name)
            prepared = time.perf_counter()
            generation = adapter.generate(inputs, self.max_new_tokens, return_hidden=True)[0]
            generated = time.perf_counter()
            fast = self.fastrm.explain(adapter, inputs, generation)
            other = method.explain(adapter, inputs, generation)
            explained = time.perf_counter()
        t = generation.num_generated
        tokens = [adapter.tokenizer.decode([int(i)]) for i in generation.generated_ids]
        other_maps = other.maps.float().cpu()[:t].numpy()
        scale = _colour_scale(other_maps)
        gallery = _paired_overlays(image, inputs.layout, fast.maps.float().numpy(), other_maps, scale, tokens, name)
        wall = time.perf_counter() - start
        parts = {"prepare_seconds": prepared - start, "generation_seconds": generated - prepared,
                 "maps_seconds": explained - generated, "drawing_seconds": wall - (explained - start)}
        text = (f"Answer **{generation.text}** ({t} token{'s' if t != 1 else ''}, the same greedy answer as the live tab). "
                f"The demo worked **{wall * 1000:.0f} ms** on it (its own clock, from the request's arrival to the "
                f"pictures): {parts['prepare_seconds'] * 1000:.0f} ms receiving the request and preparing {name} (its "
                f"first use loads it), {parts['generation_seconds'] * 1000:.0f} ms answering, "
                f"{parts['maps_seconds'] * 1000:.0f} ms for the maps (FastRM's own clock: {fast.seconds * 1000:.1f} ms, "
                f"{name}'s: {other.seconds * 1000:.1f} ms), {parts['drawing_seconds'] * 1000:.0f} ms drawing. "
                f"*Image: {fit_note}.*")
        data = {"answer": generation.text, "tokens": tokens, "fastrm_seconds": fast.seconds, "method": name,
                "method_seconds": other.seconds, "wall_seconds": wall, **parts, "image_fit": fit_note,
                "fastrm_maps": fast.maps[:t].tolist(), "method_maps": other_maps.tolist(),
                "colour_scales": {"fastrm": [0.0, 1.0], name: list(scale)}}
        bars = (colour_bar_html(0.0, 1.0, "FastRM: P(relevant)") + colour_bar_html(*scale, f"{name} relevance"))
        yield text, gallery, data, f'<div style="display:flex;gap:1em">{bars}</div>'

    def _live_bar(self) -> str:
        from fastrm_bench.explain import colour_bar_html

        return colour_bar_html(0.0, 1.0, "FastRM: P(relevant)")

    def _method(self, name: str):
        from fastrm_bench.builders import create_method

        if name not in self.methods:
            method, _ = create_method(name)
            method.prepare(self.adapter)
            self.methods[name] = method
        return self.methods[name]

    def blocks(self):
        """The page: an image and a question, then the live tab and the comparison tab."""
        gr = require_gradio()
        from fastrm_bench import examples

        threshold_note = (f"Confidence threshold: {self.calibrated.describe()}." if self.calibrated else
                          "No calibrated confidence threshold is loaded (start with `--calibration RUN_DIR`): the entropy "
                          "is shown without a verdict.")
        with gr.Blocks(title="fastrm-bench: FastRM live") as app:
            gr.Markdown(f"# FastRM live: every answer token with its relevancy map\nModel **{self.adapter.name}**. "
                        "Colours: FastRM's probability that each part of the image is relevant to that answer token, on a "
                        "fixed viridis scale (colour-blind-safe) from 0 (dark purple) through teal (0.5) to 1 (yellow), "
                        "drawn at 60% over the image in grey; pixels no image token sees keep their colours. Every map is "
                        "shown whole (click one to enlarge). A non-square image is padded to a square (grey bars) where "
                        f"the model would otherwise crop its sides away. {threshold_note}")
            with gr.Row():
                image = gr.Image(value=str(examples.path("four-shapes.png")), type="pil", label="image", height=280)
                with gr.Column():
                    question = gr.Textbox(label="question", value=examples.QUESTIONS["four-shapes.png"])
                    gr.Examples([[str(examples.path(n)), q] for n, q in examples.QUESTIONS.items()],
                                inputs=[image, question])
            self._live_tab(gr, image, question)
            self._compare_tab(gr, image, question)
        return app

    def _live_tab(self, gr, image, question) -> None:
        with gr.Tab("FastRM live"):
            ask = gr.Button("Answer and explain", variant="primary")
            answer = gr.Textbox(label="answer (streams in)", interactive=False, elem_id="live-answer")
            with gr.Row():
                maps_view = gr.Gallery(label="FastRM map of each token, as it is generated", columns=4, height=330,
                                       format="png", object_fit="contain", scale=8, elem_id="live-maps")
                gr.HTML(f"<style>{GALLERY_CSS}</style>{self._live_bar()}", label="colour bar")  # the style: whoever launches
            confidence = gr.Markdown(elem_id="live-confidence")
            waited = gr.Markdown(elem_id="live-waited")
            live_data = gr.JSON(label="data (answer, tokens, maps, confidence, token-to-map times)")
            timed(ask.click(None, None, waited, js=CLICK_JS % {"tab": "live"})
                  .then(self.live, [image, question], [answer, maps_view, confidence, live_data], api_name="explain"),
                  waited, "live")

    def _compare_tab(self, gr, image, question) -> None:
        with gr.Tab("Compare with a gradient method"):
            with gr.Row():
                method = gr.Dropdown(list(COMPARE_METHODS), value="chefer", label="method")
                run = gr.Button("Explain the same answer with both", variant="primary")
            times = gr.Markdown(elem_id="compare-times")
            waited = gr.Markdown(elem_id="compare-waited")
            with gr.Row():
                pairs = gr.Gallery(label="FastRM and the chosen method, token by token", columns=4, height=330,
                                   format="png", object_fit="contain", scale=8, elem_id="compare-maps")
                bars = gr.HTML(label="colour bars")
            compare_data = gr.JSON(label="data (times and maps)")
            timed(run.click(None, None, waited, js=CLICK_JS % {"tab": "compare"})
                  .then(self.compare, [image, question, method], [times, pairs, compare_data, bars], api_name="compare"),
                  waited, "compare")


def timed(event, waited, tab: str) -> None:
    """After ``event`` succeeds, the browser's wait from the click to the last picture drawn, into ``waited``."""
    event.success(None, None, waited, js=WAITED_JS % {"tab": tab})

def _colour_scale(maps) -> tuple[float, float]:
    """0 (or the lowest value, if negative) to the largest value of a method's maps over one answer."""
    high = float(maps.max()) if maps.size else 1.0
    scale = (min(0.0, float(maps.min())) if maps.size else 0.0, high)
    return scale if scale[1] > scale[0] else (scale[0], scale[0] + 1.0)


def _paired_overlays(image, layout, fast_maps, other_maps, scale: tuple[float, float], tokens: list[str],
                     name: str) -> list[tuple[Any, str]]:
    """FastRM's overlay and the other method's, token after token."""
    from fastrm_bench.explain import overlay

    gallery = []
    for i, token in enumerate(tokens):
        gallery.append((overlay(image, layout, fast_maps[i], (0.0, 1.0)), f"fastrm, {i + 1}: {token}"))
        gallery.append((overlay(image, layout, other_maps[i], scale), f"{name}, {i + 1}: {token}"))
    return gallery


def serve(model: str = "tiny-llava-shapes", host: str = "127.0.0.1", port: int = 7860, device: str | None = None,
          calibration: list[str | Path] | None = None, max_new_tokens: int = 10, dtype: str = "float32",
          attn_implementation: str = "sdpa") -> None:
    app = build_app(model, device, calibration, max_new_tokens, dtype, attn_implementation)
    app.queue().launch(server_name=host, server_port=port, show_error=True)


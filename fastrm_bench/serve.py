"""`fastrm-bench serve`: a live demo (Gradio, the optional ``serve`` extra).

Tab "FastRM live": upload an image, ask a question; the answer streams in token by token, each token
with FastRM's map (`fastrm_bench.live.stream_fastrm`: the map is computed when the token is chosen,
before the next one), and the answer's confidence (map entropy, against a calibrated threshold where
one is known) comes at the end. Tab "Compare": the same greedy answer explained by a gradient method
beside FastRM, with both times. Both are HTTP API endpoints too (``/explain``, ``/compare``; see
the page's "Use via API" link or `gradio_client`).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

#: methods the comparison tab offers (gradient methods first; `fastrm-bench list methods` has them all)
COMPARE_METHODS = ("chefer", "chefer-reference", "gradcam-lm", "gradcam", "dex-ar", "tam", "rollout")


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
    gr = require_gradio()
    import torch

    from fastrm_bench import examples
    from fastrm_bench.builders import create_aggregation, create_method
    from fastrm_bench.explain import MethodMaps, find_calibration, overlay
    from fastrm_bench.live import StreamEnd, adapter_lock, stream_fastrm
    from fastrm_bench.metrics.entropy import map_entropy
    from fastrm_bench.models.zoo import load_model

    adapter = load_model(model, device=device, dtype=dtype, attn_implementation=attn_implementation)
    fastrm, _ = create_method("fastrm")
    fastrm.prepare(adapter)  # no proxy for this model: fails here, before the page is served
    proxy = fastrm.proxy_for(adapter)
    calibrated = find_calibration(calibration or [], adapter, "fastrm")
    aggregate = create_aggregation("mean")[0]
    methods: dict[str, Any] = {}

    def check(image, question):
        if image is None:
            raise gr.Error("upload an image first")
        if not question or not question.strip():
            raise gr.Error("ask a question")
        return image.convert("RGB"), question.strip()

    def confidence_of(inputs, generation, maps: torch.Tensor, seconds: float) -> MethodMaps:
        from fastrm_bench.interfaces import Explanation

        explanation = Explanation(maps=maps, seconds=seconds)
        entropy = map_entropy(aggregate(adapter, inputs, generation, explanation))
        return MethodMaps("fastrm", maps.numpy(), seconds, True, entropy, [map_entropy(m) for m in maps], calibrated)

    def live(image, question):
        image, question = check(image, question)
        inputs = adapter.build_inputs([image], [question])
        tokens: list[str] = []
        gallery: list[tuple[Any, str]] = []
        maps: list[list[float]] = []
        timings: list[dict[str, float]] = []
        for item in stream_fastrm(adapter, proxy, inputs, max_new_tokens):
            if isinstance(item, StreamEnd):
                generation = item.generation
                stacked = torch.stack([torch.as_tensor(m) for m in maps]) if maps else torch.zeros(0, inputs.layout.num_tokens)
                result = confidence_of(inputs, generation, stacked, 0.0)
                text = result.confidence(inputs.layout.num_tokens)
                data = {"answer": generation.text, "tokens": tokens, "maps": maps, "entropy": result.entropy,
                        "calibrated_threshold": calibrated.threshold if calibrated else None, "confidence": text,
                        "timings": timings, "generation_seconds": item.seconds}
                yield generation.text, gallery, f"**Confidence:** {text}.", data
                return
            picture = overlay(image, inputs.layout, item.map.numpy(), (0.0, 1.0))
            ready = time.perf_counter()
            tokens.append(item.text)
            maps.append([round(float(v), 6) for v in item.map])
            gallery.append((picture, f"{len(tokens)}: {item.text}"))
            timings.append({"token": item.text, "token_to_map_ms": item.token_to_map_seconds * 1000,
                            "token_to_overlay_ms": (ready - item.token_at) * 1000})
            data = {"answer": None, "tokens": tokens, "maps": maps, "entropy": None, "calibrated_threshold": None,
                    "confidence": None, "timings": timings}
            yield " ".join(t.strip() for t in tokens), gallery, "*answering...*", data

    def compare(image, question, name):
        image, question = check(image, question)
        if name not in methods:
            method, _ = create_method(name)
            method.prepare(adapter)
            methods[name] = method
        inputs = adapter.build_inputs([image], [question])
        with adapter_lock(adapter):
            generation = adapter.generate(inputs, max_new_tokens, return_hidden=True)[0]
            fast = fastrm.explain(adapter, inputs, generation)
            other = methods[name].explain(adapter, inputs, generation)
        t = generation.num_generated
        tokens = [adapter.tokenizer.decode([int(i)]) for i in generation.generated_ids]
        other_maps = other.maps.float().cpu()[:t].numpy()
        high = float(other_maps.max()) if other_maps.size else 1.0
        scale = (min(0.0, float(other_maps.min())) if other_maps.size else 0.0, high)
        scale = scale if scale[1] > scale[0] else (scale[0], scale[0] + 1.0)
        gallery = []
        for i in range(t):
            gallery.append((overlay(image, inputs.layout, fast.maps[i].float().numpy(), (0.0, 1.0)),
                            f"fastrm, {i + 1}: {tokens[i]}"))
            gallery.append((overlay(image, inputs.layout, other_maps[i], scale), f"{name}, {i + 1}: {tokens[i]}"))
        ratio = other.seconds / fast.seconds if fast.seconds > 0 else math.inf
        text = (f"Answer **{generation.text}** ({t} token{'s' if t != 1 else ''}, the same greedy answer as the live tab). "
                f"FastRM: **{fast.seconds * 1000:.1f} ms** for all its maps; {name}: **{other.seconds * 1000:.1f} ms** "
                f"({ratio:.0f}x FastRM's time). FastRM's colours: probability 0-1; {name}'s: 0 to its largest value "
                f"({scale[1]:.3g}) over this answer.")
        data = {"answer": generation.text, "tokens": tokens, "fastrm_seconds": fast.seconds, "method": name,
                "method_seconds": other.seconds, "fastrm_maps": fast.maps[:t].tolist(), "method_maps": other_maps.tolist()}
        return text, gallery, data

    threshold_note = (f"Confidence threshold: {calibrated.describe()}." if calibrated else
                      "No calibrated confidence threshold is loaded (start with `--calibration RUN_DIR`): the entropy is "
                      "shown without a verdict.")
    with gr.Blocks(title="fastrm-bench: FastRM live") as app:
        gr.Markdown(f"# FastRM live: every answer token with its relevancy map\nModel **{adapter.name}**. "
                    "Colours: FastRM's probability that each part of the image is relevant to that answer token, on a "
                    "fixed jet scale from 0 (dark blue) through green (0.5) to 1 (dark red), drawn at 50% over the image; "
                    f"pixels no image token sees are left uncovered. {threshold_note}")
        with gr.Row():
            image = gr.Image(value=str(examples.path("four-shapes.png")), type="pil", label="image", height=280)
            with gr.Column():
                question = gr.Textbox(label="question", value=examples.QUESTIONS["four-shapes.png"])
                gr.Examples([[str(examples.path(n)), q] for n, q in examples.QUESTIONS.items()], inputs=[image, question])
        with gr.Tab("FastRM live"):
            ask = gr.Button("Answer and explain", variant="primary")
            answer = gr.Textbox(label="answer (streams in)", interactive=False)
            maps_view = gr.Gallery(label="FastRM map of each token, as it is generated", columns=4, height=330,
                                   format="png")
            confidence = gr.Markdown()
            live_data = gr.JSON(label="data (answer, tokens, maps, confidence, token-to-map times)")
            ask.click(live, [image, question], [answer, maps_view, confidence, live_data], api_name="explain")
        with gr.Tab("Compare with a gradient method"):
            with gr.Row():
                method = gr.Dropdown(list(COMPARE_METHODS), value="chefer", label="method")
                run = gr.Button("Explain the same answer with both", variant="primary")
            times = gr.Markdown()
            pairs = gr.Gallery(label="FastRM and the chosen method, token by token", columns=4, height=330, format="png")
            compare_data = gr.JSON(label="data (times and maps)")
            run.click(compare, [image, question, method], [times, pairs, compare_data], api_name="compare")
    return app


def serve(model: str = "tiny-llava-shapes", host: str = "127.0.0.1", port: int = 7860, device: str | None = None,
          calibration: list[str | Path] | None = None, max_new_tokens: int = 10, dtype: str = "float32",
          attn_implementation: str = "sdpa") -> None:
    app = build_app(model, device, calibration, max_new_tokens, dtype, attn_implementation)
    app.queue().launch(server_name=host, server_port=port, show_error=True)


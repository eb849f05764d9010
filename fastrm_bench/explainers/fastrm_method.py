"""`fastrm`: maps from the FastRM proxy and the hidden states captured during generation.

Paper Fig. 8: ``out = model.generate(...); rm = proxy(last_hidden)``. No gradients and no
attention tensors: the proxy reads the final-norm hidden states that `generate` already
computed with its KV cache (the adapter collects them with a hook on the final norm when called
with ``return_hidden=True``; nothing else is kept).

``checkpoint`` is a proxy's folder or its Hub id (``owner/name``, read through the Hugging Face cache:
`FastRM.from_pretrained`). A proxy learned its labels from a teacher method (``chefer`` unless distilled with another); the
``teacher`` parameter picks the proxy shipped for that teacher, or checks that ``checkpoint`` was
distilled from it. `FastRMMethod.answer` (and `explain_answer`) answers a question and explains it
in one call: the answer, one map per token and the map's entropy (the paper's confidence).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image

from fastrm_bench.fastrm.model import CheckpointError, FastRM
from fastrm_bench.interfaces import ExplanationMethod, Generation, MethodNeeds, ModelAdapter, ModelInputs
from fastrm_bench.layout import ImageLayout

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
#: the proxy shipped for each shipped model (distilled from Chefer's maps)
SHIPPED = {"tiny-llava-shapes": CHECKPOINTS / "fastrm-tiny-llava-shapes",
           "tiny-qwen-shapes": CHECKPOINTS / "fastrm-tiny-qwen-shapes",
           "tiny-qwen-shapes-multi": CHECKPOINTS / "fastrm-tiny-qwen-shapes-multi"}
#: the proxies shipped for each (shipped model, teacher method)
SHIPPED_BY_TEACHER = {
    ("tiny-llava-shapes", "chefer"): SHIPPED["tiny-llava-shapes"],
    ("tiny-llava-shapes", "tam"): CHECKPOINTS / "fastrm-tam-tiny-llava-shapes",
    ("tiny-qwen-shapes", "chefer"): SHIPPED["tiny-qwen-shapes"],
    ("tiny-qwen-shapes-multi", "chefer"): SHIPPED["tiny-qwen-shapes-multi"],
}


@dataclass
class ExplainedAnswer:
    """One question answered and explained by FastRM."""

    text: str  # the greedy answer
    tokens: list[str]  # its tokens' texts
    maps: torch.Tensor  # [T, n_image_tokens]: each token's per-patch relevance probabilities
    sample_map: torch.Tensor  # [n_image_tokens]: the mean over the answer's content tokens (the paper's)
    entropy: float  # entropy of the sample map: the paper's confidence (lower: a more focused map)
    layout: ImageLayout  # where the maps lie on the image: ``layout.to_image(maps[t])``
    generation: Generation


class FastRMMethod(ExplanationMethod):
    """FastRM proxy: per-patch relevance probabilities from the last hidden states (no gradients)."""

    name = "fastrm"
    needs = MethodNeeds(hidden_states=True, probabilities=True)

    def __init__(self, checkpoint: str | None = None, teacher: str | None = None):
        self.checkpoint = checkpoint
        self.teacher = teacher
        self._proxy: FastRM | None = None

    def prepare(self, adapter: ModelAdapter) -> None:
        self.proxy_for(adapter)

    def _path(self, adapter: ModelAdapter) -> Path:
        if self.checkpoint:
            return Path(self.checkpoint)
        path = SHIPPED_BY_TEACHER.get((adapter.name, self.teacher or "chefer"))
        if path is None:
            shipped = sorted(t for m, t in SHIPPED_BY_TEACHER if m == adapter.name)
            hint = f" (shipped teachers for it: {', '.join(shipped)})" if shipped else ""
            raise CheckpointError(
                f"no FastRM checkpoint distilled from {self.teacher or 'chefer'!r} ships for {adapter.name!r}{hint}: distil "
                "one with `fastrm-bench distill --teacher NAME` and pass it with a method spec (params: {checkpoint: DIR})"
            )
        return path

    def proxy_for(self, adapter: ModelAdapter) -> FastRM:
        if self._proxy is None:
            path = self._path(adapter)
            proxy = FastRM.from_pretrained(path, expected_hidden_size=adapter.hidden_size)
            recorded = proxy.config.model_weights_sha256
            if recorded and recorded != adapter.weights_sha256:
                raise CheckpointError(
                    f"{path}: this FastRM proxy was distilled from other weights of "
                    f"{proxy.config.distilled_from or 'its model'!r} (sha256 {recorded[:12]}...) than {adapter.name!r} has "
                    "now; re-distil it with `fastrm-bench distill` for these weights"
                )
            if self.teacher is not None and proxy.config.teacher_name != self.teacher:
                raise CheckpointError(f"{path}: this FastRM proxy was distilled from {proxy.config.teacher_name!r} maps, "
                                      f"not from {self.teacher!r}; pass a proxy distilled with --teacher {self.teacher}")
            self._proxy = proxy.to(adapter.device)
        return self._proxy

    @torch.no_grad()
    def compute_maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        proxy = self.proxy_for(adapter)
        if generation.last_hidden is None:
            raise ValueError("fastrm needs the hidden states of generation: call adapter.generate(..., return_hidden=True)")
        image_positions = inputs.layout.positions.to(generation.last_hidden.device)
        rows = inputs.prompt_length - 1 + torch.arange(generation.num_generated, device=generation.last_hidden.device)
        hidden = generation.last_hidden.to(next(proxy.parameters()).dtype)
        probs = proxy(hidden[rows], hidden[image_positions].unsqueeze(0))
        return probs.reshape(generation.num_generated, len(image_positions)).cpu()

    def answer(self, adapter: ModelAdapter, image: Image.Image, question: str, max_new_tokens: int = 10) -> ExplainedAnswer:
        """Answer ``question`` about ``image`` greedily and explain every token: one generation that keeps only the
        final-norm hidden states, then the proxy (no gradients, no attentions)."""
        from fastrm_bench.aggregation import MeanOverContent
        from fastrm_bench.metrics.entropy import map_entropy

        inputs = adapter.build_inputs([image], [question])
        generation = adapter.generate(inputs, max_new_tokens, return_hidden=True)[0]
        explanation = self.explain(adapter, inputs, generation)
        sample_map = MeanOverContent()(adapter, inputs, generation, explanation)
        tokens = [adapter.tokenizer.decode([int(t)]) for t in generation.generated_ids]
        return ExplainedAnswer(text=generation.text, tokens=tokens, maps=explanation.maps, sample_map=sample_map,
                               entropy=map_entropy(sample_map), layout=inputs.layout,
                               generation=replace(generation, last_hidden=None))


def explain_answer(model: str | ModelAdapter, image: Image.Image, question: str, *, max_new_tokens: int = 10,
                   checkpoint: str | None = None, teacher: str | None = None, device: str | None = None) -> ExplainedAnswer:
    """Answer and explain in one call: ``model`` is a loaded adapter or a name (registered, folder or hub id);
    the proxy is ``checkpoint`` (a folder or Hub id), else the one shipped for the model (and ``teacher``, default ``chefer``)."""
    if isinstance(model, str):
        from fastrm_bench.models.zoo import load_model

        model = load_model(model, device=device)
    return FastRMMethod(checkpoint=checkpoint, teacher=teacher).answer(model, image, question, max_new_tokens)

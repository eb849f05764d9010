"""Relative and gradient-weighted attention (Zhang et al., "MLLMs know where to look", ICLR 2025).

The authors' code (github.com/saccharomycetes/mllms_know, ``llava_methods.py``) reads one LM layer's attention
of the last prompt position to the image tokens, mean over heads, at layer ``ATT_LAYER = 14`` of LLaVA-1.5-7B's
32 (``outputs.attentions[14]``):

- ``rel_att``: that attention divided by the same attention under a generic question, "Write a general
  description of the image.", asked about the same image; what the question adds to where the model looks;
- ``grad_att``: ``mean_heads(A * relu(dL/dA))`` of that row, with ``L = log p(predicted token)`` (their loss is
  minus the cross-entropy of the logits with their own argmax).

Here every answer token gets its map: token t's row is the position that predicts it (``p_t``; the authors' one
map is token 0's, whose row is the last prompt position), and ``grad-att``'s ``L`` is token t's log-probability
(greedy answers: the argmax, as theirs). ``rel-att``'s denominator is the generic question's last prompt
position for every token: the generic question has no answer of its own to align later tokens with. The
authors append their answer-format suffix to both questions; the harness' generic prompt is the question alone
in the model's template (a spec parameter). ``layer`` defaults to the authors' choice scaled to the model's depth,
``round(14 / 32 * n_layers)``; for the Qwen2.5-VL family their ``qwen2_5_methods.py`` reads layer 22 of
Qwen2.5-VL-3B's 36 (``rel_att`` only: they have no Qwen ``grad_att``), so there ``round(22 / 36 * n_layers)``.
Any layer index (negative from the end) by spec.
"""

from __future__ import annotations

import torch

from fastrm_bench.explainers._attention import explaining, predicting_positions, token_gradients
from fastrm_bench.interfaces import ExplanationMethod, Generation, MethodNeeds, ModelAdapter, ModelInputs

#: the authors' generic question (``general_question`` in their run.py)
GENERIC_QUESTION = "Write a general description of the image."
#: the authors' layer and the depth of the model they chose it on: LLaVA-1.5-7B's (``ATT_LAYER = 14`` of 32 in
#: llava_methods.py) for every family but Qwen2.5-VL's, whose own (qwen2_5_methods.py: 22 of Qwen2.5-VL-3B's 36)
#: the authors set; other depths get the same fraction
AUTHORS_LAYER = (14, 32)
AUTHORS_FAMILY_LAYERS: dict[str, tuple[int, int]] = {"qwen2_5_vl": (22, 36)}


def default_layer(num_layers: int, family: str = "llava") -> int:
    """The authors' layer for ``family`` at the same relative depth of a model of ``num_layers`` layers."""
    layer, depth = AUTHORS_FAMILY_LAYERS.get(family, AUTHORS_LAYER)
    return min(num_layers - 1, round(layer / depth * num_layers))


def _layer_index(layer: int | None, adapter: ModelAdapter) -> int:
    num_layers = adapter.num_layers
    index = default_layer(num_layers, adapter.family) if layer is None else int(layer)
    index = index + num_layers if index < 0 else index
    if not 0 <= index < num_layers:
        raise ValueError(f"layer {layer} is outside the model's {num_layers} LM layers")
    return index


def _prompt_only(inputs: ModelInputs) -> Generation:
    """A generation of no tokens: a teacher-forced forward over the prompt alone."""
    ids = inputs.input_ids
    return Generation(ids, inputs.prompt_length, ids.new_zeros(0), "")


class RelativeAttention(ExplanationMethod):
    """Attention to the image at one layer divided by the attention a generic question gets (`rel-att`)."""

    name = "rel-att"
    needs = MethodNeeds(attention="rows")

    def __init__(self, layer: int | None = None, generic_question: str = GENERIC_QUESTION):
        self.layer, self.generic_question = layer, generic_question

    def compute_maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        n = inputs.layout.num_tokens
        if generation.num_generated == 0:
            return torch.zeros(0, n)
        if len(inputs.images) != 1:
            raise ValueError("rel-att asks the generic question about the inputs' image: build the inputs with "
                             "ModelAdapter.build_inputs (they record it)")
        index = _layer_index(self.layer, adapter)
        with explaining(adapter.model), torch.no_grad():
            asked = self._image_rows(adapter, inputs, generation, index, predicting_positions(inputs, generation))
            generic = adapter.build_inputs([inputs.images[0]], [self.generic_question])
            last = torch.tensor([generic.prompt_length - 1])
            baseline = self._image_rows(adapter, generic, _prompt_only(generic), index, last)
        if baseline.shape[-1] != n:
            raise ValueError(f"the generic question's input has {baseline.shape[-1]} image tokens, the question's {n}")
        return asked / baseline

    @staticmethod
    def _image_rows(adapter: ModelAdapter, inputs: ModelInputs, generation: Generation, layer: int,
                    rows: torch.Tensor) -> torch.Tensor:
        """Head-mean attention of ``rows`` to the image tokens at ``layer`` ``[len(rows), n]``."""
        captured = adapter.teacher_forced(inputs, generation, attention="capture").attention[layer]
        means = captured.probabilities(rows).mean(dim=0)
        return means[:, inputs.layout.positions.to(means.device)].float().cpu()


class GradientWeightedAttention(ExplanationMethod):
    """Attention to the image at one layer weighted by the positive part of its gradient (`grad-att`)."""

    name = "grad-att"
    needs = MethodNeeds(gradients=True, attention="rows")

    def __init__(self, layer: int | None = None, chunk_size: int = 8):
        self.layer, self.chunk_size = layer, int(chunk_size)

    def compute_maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        n, tokens = inputs.layout.num_tokens, generation.num_generated
        if tokens == 0:
            return torch.zeros(0, n)
        index = _layer_index(self.layer, adapter)
        with explaining(adapter.model):
            forward = adapter.teacher_forced(inputs, generation, attention="capture")
            layer = forward.attention[index]
            rows = predicting_positions(inputs, generation).to(forward.logits.device)
            targets = generation.generated_ids.to(forward.logits.device)
            scores = torch.log_softmax(forward.logits[rows].float(), dim=-1)[torch.arange(tokens), targets]
            image = inputs.layout.positions.to(forward.logits.device)
            maps = torch.zeros(tokens, n)
            for chunk, (output_grads,) in token_gradients(scores, [layer.output], self.chunk_size):
                own = rows[chunk.to(rows.device)]
                grads = layer.own_row_gradients(output_grads, own)  # [c, H, N]: dL_c/dA of its own row
                probs = layer.probabilities(own).transpose(0, 1)  # [c, H, N]
                weighted = (probs * grads.clamp_min(0)).mean(dim=1)
                maps[chunk] = weighted[:, image].detach().float().cpu()
        return maps

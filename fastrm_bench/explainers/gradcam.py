"""Grad-CAM for LVLMs, per generated token.

- `gradcam` (vision side, SPEC section 2): the target is the vision layer LLaVA feeds to the
  projector (``vision_feature_layer``; the last ViT layer would get zero gradient). Weights are
  the spatial mean of dY_t/dA over the image patches; the map is ``relu(sum_c w_c A_c)``.
- `gradcam-lm`: on one LM layer, attention from p_t to the image tokens times relu of its
  gradient, mean over heads (default: the middle layer).
"""

from __future__ import annotations

import time

import torch

from fastrm_bench.explainers._attention import (
    GradientMethod,
    answer_embeds,
    answer_scores,
    explaining,
    teacher_forced,
    token_gradients,
)
from fastrm_bench.interfaces import Explanation, ExplanationMethod, Generation, ModelAdapter, ModelInputs
from fastrm_bench.profiling import PeakMemory


class GradCAM(GradientMethod):
    """Grad-CAM on the vision layer feeding the projector (vision_feature_layer), per generated token."""

    name = "gradcam"

    def __init__(self, chunk_size: int = 16):
        self.chunk_size = chunk_size

    def _maps(self, adapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        gh, gw = adapter.grid_shape
        if generation.num_generated == 0:
            return torch.zeros(0, gh, gw)
        cfg = adapter.model.config
        if not isinstance(cfg.vision_feature_layer, int):
            raise NotImplementedError("gradcam supports a single vision_feature_layer")
        pixel_values = inputs.tensors["pixel_values"].to(adapter.model.dtype)
        with torch.no_grad():
            hidden = adapter.model.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states
        activations = hidden[cfg.vision_feature_layer].detach().requires_grad_(True)  # [1, tokens, C]
        patches = activations[:, 1:] if cfg.vision_feature_select_strategy == "default" else activations
        features = adapter.model.model.multi_modal_projector(patches)
        forward = teacher_forced(adapter, answer_embeds(adapter, inputs, generation, features), keep_graph_from_inputs=True)
        _, scores = answer_scores(forward, inputs, generation)
        maps = []
        for _, (grad,) in token_gradients(scores, [activations], self.chunk_size):
            grad = grad[:, 0, -gh * gw :].float()  # [chunk, patches, C]
            acts = activations[0, -gh * gw :].detach().float()
            weights = grad.mean(dim=1, keepdim=True)  # spatial mean of the gradient per channel
            maps.append((weights * acts).sum(-1).clamp_min(0))
        return torch.cat(maps).reshape(-1, gh, gw).cpu()


class GradCAMLM(ExplanationMethod):
    """LM-side Grad-CAM: attention from p_t to image tokens x relu(its gradient), one LM layer."""

    name = "gradcam-lm"

    def __init__(self, layer: int | None = None, chunk_size: int = 16):
        self.layer = layer
        self.chunk_size = chunk_size

    def explain(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> Explanation:
        start = time.perf_counter()
        gh, gw = adapter.grid_shape
        with PeakMemory(adapter.device) as memory, explaining(adapter.model):
            image_positions = adapter.image_token_positions(inputs.input_ids[0])
            forward = teacher_forced(adapter, answer_embeds(adapter, inputs, generation))
            positions, scores = answer_scores(forward, inputs, generation)
            layer = len(forward.attentions) // 2 if self.layer is None else self.layer
            attention = forward.attentions[layer]
            maps = []
            for chunk, (grad,) in token_gradients(scores, [attention], self.chunk_size):
                rows = positions[chunk]
                a = attention[0][:, rows][..., image_positions].detach().float()  # [H, chunk, img]
                g = grad[torch.arange(len(chunk)), 0][:, :, rows][..., image_positions]  # [chunk, H, chunk, img]
                g = g[torch.arange(len(chunk)), :, torch.arange(len(chunk))].float()  # [chunk, H, img]
                maps.append((a.transpose(0, 1) * g.clamp_min(0)).mean(dim=1))
        stacked = torch.cat(maps).reshape(-1, gh, gw).cpu() if generation.num_generated else torch.zeros(0, gh, gw)
        return Explanation(maps=stacked, seconds=time.perf_counter() - start, peak_memory_bytes=memory.peak_bytes)

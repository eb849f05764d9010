"""Grad-CAM for LVLMs, per generated token.

- `gradcam` (vision side): the target is the vision layer that feeds the projector (the family's
  `vision_target`: LLaVA's ``vision_feature_layer``, where the last ViT layer would get zero gradient;
  Qwen's last block before the patch merger; ...). Weights are the spatial mean of dY_t/dA over the
  patches that reach the LM; the map is ``relu(sum_c w_c A_c)`` per patch, pooled to the LM's image
  tokens as the family pools patches (CLS dropped, 2x2 merge, pixel shuffle, average pooling, tiles).
- `gradcam-lm`: on one LM layer, attention from p_t to the image tokens times relu of its
  gradient, mean over heads (default: the middle layer).
"""

from __future__ import annotations

import torch

from fastrm_bench.explainers._attention import (
    GradientMethod,
    answer_scores,
    explaining,
    token_gradients,
)
from fastrm_bench.interfaces import ExplanationMethod, Generation, MethodNeeds, ModelAdapter, ModelInputs


class GradCAM(GradientMethod):
    """Grad-CAM on the vision layer feeding the projector, per generated token, in the family's token geometry."""

    name = "gradcam"
    needs = MethodNeeds(gradients=True)

    def __init__(self, chunk_size: int = 16):
        self.chunk_size = chunk_size

    def _maps(self, adapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        if generation.num_generated == 0:
            return torch.zeros(0, inputs.layout.num_tokens)
        forward = adapter.teacher_forced(inputs, generation, vision_leaf=True)
        activations = forward.leaf.detach().flatten(0, -2).float()  # [patches (crops x tokens), C]
        _, scores = answer_scores(forward, inputs, generation)
        maps = []
        for _, (grad,) in token_gradients(scores, [forward.leaf], self.chunk_size):
            grad = grad.flatten(1, -2).float()  # [chunk, patches, C]
            # spatial mean of the gradient per channel, over the patches that reach the LM (pooled as the family pools)
            weights = adapter.vision_to_tokens(inputs, grad.transpose(1, 2)).mean(-1)  # [chunk, C]
            cam = (weights[:, None, :] * activations[None]).sum(-1).clamp_min(0)  # [chunk, patches]
            maps.append(adapter.vision_to_tokens(inputs, cam))
        return torch.cat(maps).cpu()


class GradCAMLM(ExplanationMethod):
    """LM-side Grad-CAM: attention from p_t to image tokens x relu(its gradient), one LM layer."""

    name = "gradcam-lm"
    needs = MethodNeeds(gradients=True, attention="rows")

    def __init__(self, layer: int | None = None, chunk_size: int = 16):
        self.layer = layer
        self.chunk_size = chunk_size

    def compute_maps(self, adapter: ModelAdapter, inputs: ModelInputs, generation: Generation) -> torch.Tensor:
        image_positions = inputs.layout.positions
        if generation.num_generated == 0:  # nothing to explain (and no score to differentiate)
            return torch.zeros(0, len(image_positions))
        with explaining(adapter.model):
            forward = adapter.teacher_forced(inputs, generation, attention="capture")
            positions, scores = answer_scores(forward, inputs, generation)
            layer = len(forward.attention) // 2 if self.layer is None else self.layer
            attention = forward.attention[layer]
            image_positions = image_positions.to(scores.device)
            maps = []
            for chunk, (grad,) in token_gradients(scores, [attention.output], self.chunk_size):
                rows = positions[chunk]
                a = attention.probabilities(rows)[..., image_positions]  # [H, chunk, img]
                g = attention.own_row_gradients(grad, rows)[..., image_positions]  # [chunk, H, img]: dY_t/dA at row p_t
                maps.append((a.transpose(0, 1) * g.clamp_min(0)).mean(dim=1))
        return torch.cat(maps).cpu()

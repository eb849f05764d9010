"""The check that a family's Grad-CAM pooling (`vision_to_tokens`) is the model's own: shared by the single-image,
several-image and clip tests."""

from __future__ import annotations

import torch

from fastrm_bench.interfaces import ModelInputs


def assert_pooling_is_the_models_dependencies(adapter, inputs: ModelInputs) -> None:
    """LM image token k depends on exactly the vision-layer patches that `vision_to_tokens` pools into k (the gradient
    of its input embedding w.r.t. the Grad-CAM leaf is non-zero exactly where the pooling matrix is)."""
    generation = adapter.generate(inputs, max_new_tokens=2, min_new_tokens=2)[0]
    captured: list[torch.Tensor] = []
    with adapter._on_lm_input(lambda x: captured.append(x) or x):  # noqa: SLF001 - read the LM input with its graph
        forward = adapter.teacher_forced(inputs, generation, vision_leaf=True)
    leaf, embeds = forward.leaf, captured[0][0]
    n_patches = leaf.shape[:-1].numel()
    pooling = adapter.vision_to_tokens(inputs, torch.eye(n_patches))  # [patch, token]: how each patch is pooled
    positions = inputs.layout.positions
    assert pooling.shape == (n_patches, inputs.layout.num_tokens)
    for k in range(inputs.layout.num_tokens):
        (grad,) = torch.autograd.grad(embeds[positions[k]].sum(), leaf, retain_graph=True)
        feeds = grad.reshape(n_patches, -1).abs().sum(-1) > 0
        assert torch.equal(feeds, pooling[:, k] != 0), (adapter.family, k)

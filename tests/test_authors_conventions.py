"""`convention: authors`: the maps the authors' public code computes, against ports of that code written out here.

DEX-AR: github.com/WalBouss/DEX-AR, ``dexar/wrapper.py`` (``DexarWrapper.compute_dexar``) and ``dexar/utils.py``
(``min_max``, ``topk_norm``), read 2026-12. The port keeps the authors' loop (one forward per answer token over the
prompt and the answer so far, transformers' ``hidden_states`` and ``attentions``, the lens on ``hidden_states[1:]``,
the image span from the image token's first position, the text keys before the image and from the second token
after it); only the model call differs: the shipped LLaVA's transformers model, run with eager attention, and the
first layer: with fewer LM layers than ``layer_index`` asks (the shipped model has 4, DEX-AR reads the last 10) their
``num_layers + layer_index`` is negative, and the port starts at layer 0, as the harness does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastrm_bench.builders import create_method


def _min_max(x: torch.Tensor) -> torch.Tensor:
    return (x - x.min()) / (x.max() - x.min())


def _topk_norm(x: torch.Tensor, k: int, dim: int = -1) -> torch.Tensor:
    return torch.topk(torch.abs(x), k=k, dim=dim)[0].sum(dim=dim) / k


def authors_dexar(model, input_ids, pixel_values, target_ids, idx_img_tok_start: int, num_img_tokens: int,
                  layer_index: int = -10) -> torch.Tensor:
    """compute_dexar's per-token filtered heatmaps, flat ``[T, n]`` (their loop, their aggregation)."""
    lm_head, norm = model.lm_head, model.model.language_model.norm
    num_layers = len(model.model.language_model.layers)
    idx_img_tok_end = idx_img_tok_start + num_img_tokens
    starting_depth = layer_index if layer_index >= 0 else max(num_layers + layer_index, 0)
    attention_mask = torch.ones_like(input_ids)
    grads_all, img_scores, text_scores = [], [], []
    n_tokens = target_ids.shape[-1]
    for n in range(n_tokens):
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                        output_attentions=True, output_hidden_states=True)
        next_token_id = target_ids[:, n]
        attentions, hidden_states = outputs.attentions, outputs.hidden_states[1:]
        token_grads, heads_img, heads_text = [], [], []
        for layer in range(starting_depth, num_layers):
            interm_logits = lm_head(norm(hidden_states[layer][:, -1]))
            one_hot = interm_logits[:, next_token_id].sum()
            grad = torch.autograd.grad(one_hot, [attentions[layer]], retain_graph=True)[0]
            grad_new_text = grad[:, :, -1, -n - 1:].clamp(min=0)
            grad_prompt = torch.cat([grad[:, :, -1, :idx_img_tok_start], grad[:, :, -1, idx_img_tok_end + 1: -n - 1]],
                                    dim=-1).clamp(min=0)
            grad_all_text = torch.cat([grad_prompt, grad_new_text], dim=-1)
            grad_img = grad[:, :, -1, idx_img_tok_start:idx_img_tok_end].clamp(min=0.0)
            token_grads.append(grad_img.detach())
            heads_img.append(_topk_norm(grad_img, k=1))
            heads_text.append(_topk_norm(grad_all_text, k=1))
        img_scores.append(torch.cat(heads_img))
        text_scores.append(torch.cat(heads_text))
        grads_all.append(torch.cat(token_grads))
        input_ids = torch.cat([input_ids, next_token_id.unsqueeze(0)], dim=-1)
        attention_mask = torch.cat([attention_mask, torch.ones((1, 1), dtype=attention_mask.dtype)], dim=1)
    grads_all = _min_max(torch.stack(grads_all))  # [T, layers, heads, n]
    weights = (torch.stack(img_scores) - torch.stack(text_scores)).clamp(min=0)
    weights = weights.view(n_tokens, num_layers - starting_depth, grads_all.shape[2])
    per_token = (grads_all * weights.unsqueeze(-1)).sum(dim=[1, 2])
    for t in range(n_tokens):
        if per_token[t].max() > per_token[t].min():
            per_token[t] = _min_max(per_token[t])
    return per_token.detach()


@pytest.fixture(scope="module")
def shipped():
    """The shipped LLaVA (its heads look at the image, so the filters have work to do) and a 3-token answer."""
    from fastrm_bench.models.zoo import load_model
    from fastrm_bench.world.scenes import generate_scene, jpeg_roundtrip, scene_seed

    adapter = load_model("tiny-llava-shapes", device="cpu")
    scene = generate_scene(scene_seed("test", 3))
    inputs = adapter.build_inputs([jpeg_roundtrip(scene.image)], [f"Where is the {scene.objects[0].category}?"])
    return adapter, inputs, adapter.generate(inputs, max_new_tokens=3, min_new_tokens=3)[0]


def test_dex_ar_authors_convention_equals_the_port_of_their_code(shipped):
    from transformers import LlavaForConditionalGeneration

    adapter, inputs, generation = shipped
    from fastrm_bench.models.zoo import CHECKPOINTS

    eager = LlavaForConditionalGeneration.from_pretrained(CHECKPOINTS / "tiny-llava-shapes", attn_implementation="eager").eval()
    image = inputs.layout.positions
    assert torch.equal(image, torch.arange(int(image[0]), int(image[0]) + len(image)))  # one contiguous span
    expected = authors_dexar(eager, inputs.input_ids, inputs.tensors["pixel_values"].float(),
                             generation.generated_ids[None], int(image[0]), len(image))
    maps = create_method("dex-ar", convention="authors")[0].explain(adapter, inputs, generation).maps
    np.testing.assert_allclose(maps.numpy(), expected.numpy(), rtol=1e-3, atol=1e-4)
    harness = create_method("dex-ar")[0].explain(adapter, inputs, generation).maps
    assert not torch.allclose(harness, maps, atol=1e-4)  # the conventions differ on this answer


def test_an_unknown_convention_is_refused():
    with pytest.raises(ValueError, match="convention"):
        create_method("dex-ar", convention="paper")

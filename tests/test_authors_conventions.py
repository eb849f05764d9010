"""`convention: authors`: the maps the authors' public code computes, against ports of that code written out here.

DEX-AR: github.com/WalBouss/DEX-AR, ``dexar/wrapper.py`` (``DexarWrapper.compute_dexar``) and ``dexar/utils.py``
(``min_max``, ``topk_norm``), commit 07830a1e435e, read 2026-12. The port keeps the authors' loop (one forward per
answer token over the prompt and the answer so far, transformers' ``hidden_states`` and ``attentions``, the lens on
``hidden_states[1:]``, the image span from the image token's first position, the text keys before the image and from
the second token after it); only the model call differs: the shipped LLaVA's transformers model, run with eager
attention, and the first layer: with fewer LM layers than ``layer_index`` asks (the shipped model has 4, DEX-AR reads
the last 10) their ``num_layers + layer_index`` is negative, and the port starts at layer 0, as the harness does.

TAM: github.com/xmed-lab/TAM, ``tam.py`` (``TAM``, ``multimodal_process``, ``rank_guassian_filter``, ``least_squares``)
and ``demo.py`` (``tam_demo_for_qwen2_vl``: the logits of every generation round, here from one forward per round,
one ``TAM`` call per round with one shared list), commit 7c7df1d3df41, read 2026-12. The port keeps their
recursion over the prompt tokens at round 0, their classes, their same-word test on re-tokenised strings, their
scalar minimisation and their filter; it stops before the visualisation and the 8-bit cast of the map. The spans
``TAM`` finds from ``special_ids`` (written per model) are given as positions: the image tokens the layout's, the
prompt's text every non-image position before the last prompt token (what the harness takes as text), the answer
every token after the last prompt token (where the marker of their ``answer_id`` ends).
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


def _rank_guassian_filter(img: np.ndarray, kernel_size: int = 3) -> np.ndarray:
    """tam.py ``rank_guassian_filter``, as written."""
    filtered_img = np.zeros_like(img)
    pad_width = kernel_size // 2
    padded_img = np.pad(img, pad_width, mode="reflect")
    ax = np.array(range(kernel_size**2)) - kernel_size**2 // 2
    for i in range(pad_width, img.shape[0] + pad_width):
        for j in range(pad_width, img.shape[1] + pad_width):
            window = padded_img[i - pad_width:i + pad_width + 1, j - pad_width:j + pad_width + 1]
            sorted_window = np.sort(window.flatten())
            mean = sorted_window.mean()
            if mean > 0:
                sigma = sorted_window.std() / mean
                kernel = np.exp(-(ax**2) / (2 * sigma**2))
                kernel = kernel / np.sum(kernel)
                value = (sorted_window * kernel).sum()
            else:
                value = 0
            filtered_img[i - pad_width, j - pad_width] = value
    return filtered_img


def _least_squares(map1: np.ndarray, map2: np.ndarray) -> float:
    """tam.py ``least_squares``: scipy's scalar minimisation of the squared residual."""
    from scipy.optimize import minimize_scalar

    return minimize_scalar(lambda x, m1, m2: np.sum((m1 - m2 * x) ** 2), args=(map1, map2)).x


def authors_tam(tokens: list[int], vision_shape: tuple[int, int], logit_list: list[torch.Tensor], img_idx: list[int],
                prompt_positions: list[int], tokenizer, target_token, img_scores_list: list) -> np.ndarray:
    """tam.py ``TAM`` for one target (round r, or ``[0, t]``: prompt token t in round 0's recursion): the map it
    returns for evaluation (``multimodal_process`` with one image), before the 8-bit cast."""
    last_prompt_idx = logit_list[0].shape[1] - 1  # answer_idx[0]
    decode = dict(skip_special_tokens=False, clean_up_tokenization_spaces=False)
    prompt = tokenizer.tokenize(tokenizer.decode([tokens[j] for j in prompt_positions], **decode))
    answer = tokenizer.tokenize(tokenizer.decode(tokens[last_prompt_idx + 1:], **decode))
    txt_all = prompt + answer
    if isinstance(target_token, int):
        round_idx, vis_token_idx = target_token, len(prompt) + target_token
    else:
        round_idx, prompt_token_idx = target_token
        vis_token_idx = prompt_token_idx
    if round_idx == 0 and isinstance(target_token, int):
        for t in range(len(prompt) + 1):
            img_map = authors_tam(tokens, vision_shape, logit_list, img_idx, prompt_positions, tokenizer, [0, t],
                                  img_scores_list)
            if t == 0:
                first_ori = img_map  # "the first prompt token is used to reflect the differenec of activation degrees"
        return first_ori
    if round_idx == 0:
        if prompt_token_idx == len(prompt):
            cls_id = tokens[last_prompt_idx]
        elif prompt_token_idx == 0:
            cls_id = logit_list[0][0, prompt_positions[0]].argmax(0)
        else:
            cls_id = tokens[prompt_positions[prompt_token_idx]]
    else:
        cls_id = tokens[last_prompt_idx + round_idx + 1]
    scores = torch.cat([logit_list[r][0, :, cls_id] for r in range(round_idx + 1)], -1).clip(min=0)
    scores = scores.detach().cpu().float().numpy()
    txt_scores = np.concatenate([scores[prompt_positions], scores[last_prompt_idx:last_prompt_idx + 1],
                                 scores[last_prompt_idx + 1:]], -1)
    img_scores = scores[img_idx]
    img_scores_list.append(img_scores)
    if len(img_scores_list) > 1 and vis_token_idx < len(txt_all):
        non_repeat_idx = [i for i in range(vis_token_idx) if i < len(txt_all) and txt_all[i] != txt_all[vis_token_idx]]
        w = txt_scores[non_repeat_idx]
        w = w / (w.sum() + 1e-8)
        interf_img_scores = (np.stack([img_scores_list[i] for i in non_repeat_idx], 0) * w.reshape(-1, 1)).sum(0)
        img_scores = (img_scores - interf_img_scores * _least_squares(img_scores, interf_img_scores)).clip(min=0)
    txt_scores = txt_scores[:-1]  # multimodal_process: "ignore self score"
    all_scores = np.concatenate([img_scores, txt_scores], 0)
    with np.errstate(invalid="ignore"):  # a prompt token's class active nowhere: NaN (its map is never returned)
        all_scores = (all_scores - all_scores.min()) / (all_scores.max() - all_scores.min())
    return _rank_guassian_filter(all_scores[:len(img_scores)].reshape(vision_shape), 3)


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


@pytest.mark.parametrize("name", ["dex-ar", "dex-ar-sentence", "tam"])
def test_an_unknown_convention_is_refused(name):
    with pytest.raises(ValueError, match="convention"):
        create_method(name, convention="paper")


def _round_logits(adapter, inputs, generation) -> list[torch.Tensor]:
    """demo.py's ``logits``: round 0's over the prompt, then round r's at the last position of prompt + y_<r (their
    ``generate`` with hidden states computes these; here one forward per round over the tokens so far)."""
    sequence = generation.sequences.to(inputs.input_ids.device)
    rounds = []
    with torch.no_grad():
        for r in range(generation.num_generated):
            length = inputs.prompt_length + r
            tensors = {**inputs.tensors, "input_ids": sequence[:, :length],
                       "attention_mask": torch.ones_like(sequence[:, :length])}
            logits = adapter.model(**tensors).logits.float().cpu()
            rounds.append(logits if r == 0 else logits[:, -1:])
    return rounds


@pytest.mark.parametrize("answer", ["greedy", "first token repeated"])
def test_tam_authors_convention_equals_the_port_of_their_code(shipped, answer):
    from fastrm_bench.interfaces import Generation

    adapter, inputs, generation = shipped
    if answer != "greedy":  # the same-word test then leaves out the list's entry where y_0 belongs (its word is y_0)
        ids = generation.generated_ids[[0, 0, 1]]
        generation = Generation(torch.cat([inputs.input_ids.cpu(), ids[None]], 1), inputs.prompt_length, ids, "")
    tokens, last = generation.sequences[0].tolist(), inputs.prompt_length - 1
    image = inputs.layout.positions.tolist()
    prompt_positions = [j for j in range(last) if tokens[j] != adapter.image_token_id]
    logits, records = _round_logits(adapter, inputs, generation), []
    expected = np.stack([authors_tam(tokens, inputs.layout.groups[0].grid, logits, image, prompt_positions,
                                     adapter.tokenizer, r, records).flatten() for r in range(generation.num_generated)])
    maps = create_method("tam", convention="authors")[0].explain(adapter, inputs, generation).maps
    np.testing.assert_allclose(maps.numpy(), expected, rtol=1e-4, atol=1e-5)
    harness = create_method("tam")[0].explain(adapter, inputs, generation).maps
    assert not torch.allclose(harness[0], maps[0], atol=1e-4)  # their first map explains another class
    assert not torch.allclose(harness[1], maps[1], atol=1e-4)  # and the list where y_0 belongs holds another map

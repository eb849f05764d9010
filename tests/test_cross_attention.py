"""Llama 3.2 Vision (`mllama`): the image read through cross-attention layers, explained over the joint sequence
``[image keys; text]``. The family-wide checks (layout by hand, corner mask, chefer = reference, capture = eager, removal,
every method in `run`) are in test_families.py; here what is particular to cross-attention: the joint attention by hand,
Chefer against the bi-modal rules of Chefer et al. (2021) on the model's own eager attentions, the tiles against the
processor's pixels, and removal acting on the keys.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastrm_bench.embedded.tiny_random import build_tiny_random
from fastrm_bench.explainers.chefer import Chefer, CheferReference
from fastrm_bench.layer_attention import LayerAttention, PrefixedAttention
from fastrm_bench.models.adapter import HFVisionLanguageAdapter, ModelLoadError
from fastrm_bench.models.cross_attention import CrossAttentionAdapter
from fastrm_bench.models.zoo import load_model

QUESTION = "Where is the yellow circle?"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_random("mllama", tmp_path_factory.mktemp("mllama"), seed=0)


@pytest.fixture(scope="module")
def adapter(folder):
    return load_model(str(folder), device="cpu")


def test_load_model_picks_the_cross_attention_adapter_and_the_plain_one_refuses(adapter, folder):
    assert isinstance(adapter, CrossAttentionAdapter) and adapter.family == "mllama" and adapter.removals == ("zero",)
    with pytest.raises(ModelLoadError, match="reads its image through cross-attention layers .*load_model") as raised:
        HFVisionLanguageAdapter.from_pretrained(folder, device="cpu")
    assert "\n" not in str(raised.value)


def _image(seed: int = 0, size: tuple[int, int] = (80, 48)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def test_joint_attention_by_hand():
    """Two image keys, three text tokens, one head: a self-attention layer's text rows are its causal probabilities on
    the text columns, a cross-attention layer's its probabilities on the key columns; key rows attend to themselves."""
    query = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # [H=1, N=3, d=2]
    text_keys = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    image_keys = torch.tensor([[[2.0, 0.0], [0.0, 2.0]]])
    output = torch.zeros(1, 3, 1, 2)
    common = dict(query=query, mask=None, scaling=1.0, softcap=None, output=output)
    own = LayerAttention(key=text_keys, value=text_keys, causal=True, **common)
    self_layer = PrefixedAttention(key=text_keys, value=text_keys, causal=True, prefix=2, reads_prefix=False, **common)
    cross_layer = PrefixedAttention(key=image_keys, value=image_keys, causal=False, prefix=2, reads_prefix=True, **common)
    rows = torch.arange(5)
    p = self_layer.probabilities(rows)[0]
    assert self_layer.length == cross_layer.length == 5
    torch.testing.assert_close(p[:2], torch.eye(5)[:2])
    torch.testing.assert_close(p[2:, 2:], own.probabilities(torch.arange(3))[0])
    assert p[2:, :2].abs().sum() == 0 and torch.allclose(p[2, 2:], torch.tensor([1.0, 0.0, 0.0]))
    c = cross_layer.probabilities(rows)[0]
    by_hand = torch.softmax(query[0] @ image_keys[0].T, dim=-1)  # row 0: e^2 : e^0
    torch.testing.assert_close(c[2:, :2], by_hand)
    assert c[2:, 2:].abs().sum() == 0
    grads = torch.ones(1, 3, 1, 2)  # dY/dO = 1 everywhere: dY/dA[i, j] = sum of value j
    g = cross_layer.probability_gradients(grads, rows)[0]
    torch.testing.assert_close(g[2:, :2], torch.tensor([[2.0, 2.0]] * 3))
    assert g[:2].abs().sum() == 0 and g[2:, 2:].abs().sum() == 0


def _teacher_forced_tensors(adapter, inputs, generation) -> dict[str, torch.Tensor]:
    """Prompt + answer for the model itself, its cross-attention mask continued as generate continues it."""
    answer = generation.generated_ids[:-1][None]
    tensors = dict(inputs.tensors)
    tensors["input_ids"] = torch.cat([tensors["input_ids"], answer], dim=1)
    tensors["attention_mask"] = torch.ones_like(tensors["input_ids"])
    mask = tensors["cross_attention_mask"]
    tensors["cross_attention_mask"] = torch.cat([mask, mask[:, -1:].expand(-1, answer.shape[1], -1, -1)], dim=1)
    return tensors


def test_chefer_follows_the_bimodal_rules_on_the_models_own_eager_attentions(adapter, folder):
    """Chefer et al. (2021), rules 6-7 on a self-attention layer (R_tt += Abar R_tt, R_ti += Abar R_ti) and 10-11 on a
    cross-attention layer with the image's self-relevance the identity (R_ti += Abar_ti, the authors' code with
    apply_self_in_rule_10=False; R_tt += Abar_ti R_it with R_it = 0), computed here on the eager attentions the model
    returns, equal `chefer` over the joint sequence."""
    from transformers import MllamaForConditionalGeneration

    model = MllamaForConditionalGeneration.from_pretrained(folder, attn_implementation="eager").eval()
    inputs = adapter.build_inputs([_image()], [QUESTION])
    generation = adapter.generate(inputs, max_new_tokens=3, min_new_tokens=3)[0]
    out = model(**_teacher_forced_tensors(adapter, inputs, generation), output_attentions=True, use_cache=False)
    cross = set(model.config.text_config.cross_attention_layers)
    n, keys = out.logits.shape[1], out.attentions[min(cross)].shape[-1]
    text_length = inputs.tensors["input_ids"].shape[1]
    real_keys = inputs.layout.num_tokens  # the real tiles' states come first among the keys
    maps = []
    for t in range(generation.num_generated):
        p = text_length - 1 + t
        grads = torch.autograd.grad(out.logits[0, p, generation.generated_ids[t]], out.attentions, retain_graph=True)
        r_tt, r_ti = torch.eye(n), torch.zeros(n, keys)
        for layer, (attention, grad) in enumerate(zip(out.attentions, grads)):
            abar = (grad[0] * attention[0]).clamp_min(0).mean(0).detach()
            if layer in cross:
                r_ti = r_ti + abar  # rule 10 with R_ii = I and no self factor; rule 11 adds Abar_ti R_it = 0
            else:
                r_tt, r_ti = r_tt + abar @ r_tt, r_ti + abar @ r_ti  # rules 6-7
        maps.append(r_ti[p, :real_keys])
    expected = torch.stack(maps)
    got = Chefer(chunk_size=2).explain(adapter, inputs, generation).maps
    assert expected.abs().amax() > 0
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().amax()))


def test_tiles_cover_the_resized_image_and_its_padding_as_the_processor_cuts_them(adapter):
    """80x48 -> 2x2 tiles of 32 px holding the image resized to 38x64 at the top left: the bottom tiles show 6 rows of
    the image, then padding, which is where the layout's bottom tile regions pass the image's border (48 px)."""
    white = Image.new("RGB", (80, 48), (255, 255, 255))
    pixels = adapter.build_inputs([white], [QUESTION]).tensors["pixel_values"][0, 0]  # [tiles, 3, 32, 32]
    padding = pixels[2, :, 6:].flatten(1)
    assert torch.allclose(padding, padding[:, :1]) and not torch.allclose(pixels[2, :, :6].flatten(1)[:, :1], padding[:, :1])
    assert torch.allclose(pixels[0], pixels[0, :, :1, :1].expand_as(pixels[0]))  # the top tiles are all image
    layout = adapter.build_inputs([white], [QUESTION]).layout
    bottom = layout.groups[5].region  # tile (1, 0)'s patch grid
    assert bottom[0] == pytest.approx(32 * 48 / 38) and bottom[0] + 6 * 48 / 38 == pytest.approx(48)


def test_removal_zeroes_the_keys_and_leaves_the_text(adapter):
    """Removing the first tile's states zeroes exactly those rows of the states the LM's layers read."""
    inputs = adapter.build_inputs([_image()], [QUESTION])
    n = inputs.layout.num_tokens
    keep = torch.ones(1, n)
    keep[0, :17] = 0
    seen: list[torch.Tensor] = []
    with adapter._on_cross_states(lambda kwargs: seen.append(kwargs["cross_attention_states"].clone()), first=False):  # noqa: SLF001
        adapter.generate(inputs, 1, image_keep=torch.ones(1, n))
        adapter.generate(inputs, 1, image_keep=keep)
    whole, removed = seen
    assert whole.shape == (1, adapter.prefix_length(inputs), adapter.hidden_size) and whole[0, :17].abs().sum() > 0
    assert removed[0, :17].abs().sum() == 0
    torch.testing.assert_close(removed[0, 17:], whole[0, 17:], rtol=0, atol=0)


def test_fastrm_reads_the_keys_final_norm_states(adapter):
    """`generate(return_hidden=True)` over the joint sequence: the keys' rows are the final norm of the image states."""
    inputs = adapter.build_inputs([_image()], [QUESTION])
    generation = adapter.generate(inputs, 2, min_new_tokens=2, return_hidden=True)[0]
    assert generation.last_hidden.shape[0] == inputs.prompt_length + 1 == generation.sequences.shape[1] - 1
    keys = adapter.prefix_length(inputs)
    states = adapter.lm_input_embeds(inputs)[0, :keys]
    torch.testing.assert_close(generation.last_hidden[:keys], adapter.final_norm()(states))
    assert torch.equal(generation.sequences[0, :keys], torch.full((keys,), adapter.image_token_id))


@pytest.mark.slow
def test_chefer_equals_the_reference_at_llama_3_2_visions_tile_geometry(tmp_path):
    """560 px tiles of 14 px patches (1,601 states a tile, 6,404 keys) at tiny widths: a 640x480 image takes 1x2 tiles
    unscaled (the right one mostly padding), and the fast Chefer equals the reference (about a minute: the reference's
    joint matrices are 6.4k x 6.4k a layer)."""
    adapter = load_model(str(build_tiny_random("mllama", tmp_path / "m", seed=0, image_size=560, patch_size=14)), device="cpu")
    inputs = adapter.build_inputs([_image(size=(640, 480))], [QUESTION])
    assert adapter.prefix_length(inputs) == 4 * 1601 and inputs.layout.num_tokens == 2 * 1601
    assert [g.region for g in inputs.layout.groups if g.grid == (40, 40)] == [(0, 0, 560, 560), (0, 560, 560, 1120)]
    generation = adapter.generate(inputs, max_new_tokens=1, min_new_tokens=1)[0]
    fast = Chefer().explain(adapter, inputs, generation).maps
    reference = CheferReference().explain(adapter, inputs, generation).maps
    assert torch.all((fast - reference).abs().amax(dim=1) <= 1e-5 * reference.abs().amax(dim=1))


def test_a_batch_of_one_and_two_images_is_answered_as_each_alone(adapter):
    """Rows with different numbers of images (the processor pads the image slots) are answered as each prompt alone:
    the same tokens, sequence (its keys, then its text) and prompt length; the second image's keys follow the first's."""
    rows = [(_image(1), _image(2, (48, 64))), _image(3)]
    batch = adapter.build_inputs(rows, [QUESTION, "What color is the circle?"])
    together = adapter.generate(batch, 3, min_new_tokens=3, return_hidden=True)
    per_image = adapter.family_spec.image_keys(adapter.model)
    for row, prompt, generation in zip(rows, [QUESTION, "What color is the circle?"], together):
        alone_inputs = adapter.build_inputs([row], [prompt])
        alone = adapter.generate(alone_inputs, 3, min_new_tokens=3, return_hidden=True)[0]
        assert generation.generated_ids.tolist() == alone.generated_ids.tolist()
        assert generation.prompt_length == alone.prompt_length == alone_inputs.prompt_length
        assert torch.equal(generation.sequences, alone.sequences)
        torch.testing.assert_close(generation.last_hidden, alone.last_hidden, rtol=1e-4, atol=1e-5)
    two = adapter.build_inputs([rows[0]], [QUESTION]).layout
    first_tiles = adapter.build_inputs([rows[0][0]], [QUESTION]).layout.num_tokens
    assert two.positions[first_tiles] == per_image  # the second image's first key (its first tile's CLS)

"""The `llava-hf` adapter on a tiny random-weight LLaVA-1.5-shaped checkpoint saved to disk."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from fastrm_bench.models.adapter import HFVisionLanguageAdapter, ModelLoadError
from fastrm_bench.models.families import LayoutError
from fastrm_bench.models.zoo import load_model
from fastrm_bench.registry import UnknownNameError


def test_loads_generates_and_reports_image_tokens(tiny_adapter):
    assert tiny_adapter.family == "llava" and tiny_adapter.removals == ("zero", "drop")
    assert tiny_adapter.model.config._attn_implementation == "sdpa" and tiny_adapter.attn_implementation == "sdpa"
    images = [Image.new("RGB", (48, 48), c) for c in ("red", "blue")]
    inputs = tiny_adapter.build_inputs(images, ["What color is the circle?", "Is there a red square in the image?"])
    for row, layout in zip(inputs.input_ids, inputs.layouts):
        positions = layout.positions
        assert [g.grid for g in layout.groups] == [(6, 6)]
        assert positions.numel() == 36 and torch.all(positions.diff() == 1)  # one contiguous block
        assert torch.all(row[positions] == tiny_adapter.image_token_id)
    out = tiny_adapter.generate(inputs, max_new_tokens=4, min_new_tokens=4, return_hidden=True)
    assert len(out) == 2 and all(g.num_generated == 4 for g in out)
    # last hidden states are the final-norm states feeding lm_head: they reproduce the greedy tokens (each row's
    # generation is its sample's own: its prompt length, without the batch's left padding)
    eos = tiny_adapter.model.generation_config.eos_token_id
    for g in out:
        logits = tiny_adapter.model.lm_head(g.last_hidden[g.prompt_length - 1 :])
        logits[:, eos] = -torch.inf  # what min_new_tokens does
        assert torch.equal(logits.argmax(-1)[:4], g.generated_ids)
    assert out[0].prompt_length < inputs.prompt_length == out[1].prompt_length  # the shorter question was padded


def test_removal_strategies_agree_with_each_other_when_nothing_is_removed(tiny_adapter):
    inputs = tiny_adapter.build_inputs([Image.new("RGB", (48, 48), "green")], ["What shape is the green object?"])
    plain = tiny_adapter.generate(inputs, max_new_tokens=3, min_new_tokens=3)[0]
    keep = torch.ones(1, 36)
    for removal in ("zero", "drop"):
        assert torch.equal(tiny_adapter.generate(inputs, 3, min_new_tokens=3, image_keep=keep, removal=removal)[0].generated_ids,
                           plain.generated_ids)
    keep[0, :18] = 0
    embeds, mask = tiny_adapter.perturbed_embeds(inputs, keep, "drop")
    assert embeds.shape[1] == inputs.input_ids.shape[1] - 18 and mask.sum() == embeds.shape[1]
    with pytest.raises(ValueError, match="unknown removal strategy"):
        tiny_adapter.perturbed_embeds(inputs, keep, "blur")


def test_many_removals_of_one_sample_equal_the_repeated_batch(tiny_adapter):
    """The vision tower runs once per sample; the result must equal encoding every copy."""
    inputs = tiny_adapter.build_inputs([Image.new("RGB", (48, 48), "green")], ["What shape is the green object?"])
    keep = (torch.rand(4, 36, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    for removal in ("zero", "drop"):
        broadcast = tiny_adapter.perturbed_embeds(inputs, keep, removal)
        repeated = tiny_adapter.perturbed_embeds(inputs.repeat(4), keep, removal)
        for a, b in zip(broadcast, repeated):
            torch.testing.assert_close(a, b)


def test_clear_errors_for_bad_models(tiny_llava_dir, tmp_path):
    with pytest.raises(UnknownNameError, match="Did you mean 'tiny-llava-shapes'"):
        load_model("tiny-llava-shape")
    no_processor = tmp_path / "no-processor"
    no_processor.mkdir()
    shutil.copy(tiny_llava_dir / "config.json", no_processor / "config.json")
    with pytest.raises(ModelLoadError, match="no processor/tokenizer files"):
        HFVisionLanguageAdapter.from_pretrained(no_processor)
    with pytest.raises(ModelLoadError, match="no config.json"):
        HFVisionLanguageAdapter.from_pretrained(tmp_path)
    no_image_token = tmp_path / "no-image-token"
    shutil.copytree(tiny_llava_dir, no_image_token)
    config = json.loads((no_image_token / "config.json").read_text())
    config.pop("image_token_id", None)
    config.pop("image_token_index", None)
    (no_image_token / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="no image token"):  # config default id 32000 is not in its vocabulary
        HFVisionLanguageAdapter.from_pretrained(no_image_token)


def test_wrong_image_token_count_is_reported(tiny_adapter):
    ids = torch.tensor([[1, 2] + [tiny_adapter.image_token_id] * 5])
    family = tiny_adapter.family_spec
    with pytest.raises(LayoutError, match="found 5 image tokens, expected 36"):
        family.layouts(tiny_adapter.model, tiny_adapter.processor, {"input_ids": ids}, [Image.new("RGB", (48, 48))])


def test_prompt_template_comes_from_the_model_folder(tiny_llava_dir, tmp_path):
    shutil.copytree(tiny_llava_dir, tmp_path / "m")
    assert HFVisionLanguageAdapter.from_pretrained(tmp_path / "m").format_prompt("Q").startswith("USER: <image>")  # LLaVA-1.5
    (tmp_path / "m" / "fastrm_bench.json").write_text(json.dumps({"prompt_template": "USER: {prompt} <image> ASSISTANT:"}))
    adapter = HFVisionLanguageAdapter.from_pretrained(tmp_path / "m")
    inputs = adapter.build_inputs([Image.new("RGB", (48, 48))], ["Is there a red circle?"])
    text = adapter.processor.tokenizer.decode(inputs.input_ids[0][:10])
    assert text.startswith("<s> USER : Is there a red circle? <image>"), text


def test_bfloat16_weights_give_float32_relevancy(tiny_llava_dir):
    from fastrm_bench.builders import create_method

    adapter = load_model(str(tiny_llava_dir), device="cpu", dtype="bfloat16")
    assert adapter.model.dtype == torch.bfloat16
    inputs = adapter.build_inputs([Image.new("RGB", (48, 48), "green")], ["What shape is the green object?"])
    generation = adapter.generate(inputs, max_new_tokens=3, min_new_tokens=3)[0]
    for name in ("chefer", "gradcam"):
        maps = create_method(name)[0].explain(adapter, inputs, generation).maps
        assert maps.dtype == torch.float32 and maps.shape == (3, 36) and torch.isfinite(maps).all(), name


def test_families_are_listed_by_model_type():
    from typer.testing import CliRunner

    from fastrm_bench.cli import app

    out = CliRunner().invoke(app, ["list", "families"]).output
    expected = {"llava_next": "LlavaNextForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
                "gemma3": "Gemma3ForConditionalGeneration", "smolvlm": "SmolVLMForConditionalGeneration",
                "paligemma": "PaliGemmaForConditionalGeneration"}
    for model_type, cls in expected.items():
        assert model_type in out and cls in out, out


def test_the_adapter_contract_declares_everything_callers_use(tiny_adapter):
    """What live, sanity and the methods read of an adapter is on `ModelAdapter`, typed, not the HF family's internals."""
    from fastrm_bench.interfaces import ModelAdapter, Task

    for member in ("stop_ids", "final_norm", "decoder_layers", "language_model", "num_layers", "attn_implementation"):
        assert member in ModelAdapter.__abstractmethods__, member
    assert tiny_adapter.num_layers == len(tiny_adapter.decoder_layers()) == 2
    assert tiny_adapter.final_norm() is tiny_adapter.family_spec.final_norm(tiny_adapter.model)
    assert tiny_adapter.tokenizer.eos_token_id in tiny_adapter.stop_ids()
    assert Task.data_root is None  # a task without files says so; FileTask sets its folder

"""Tiny random checkpoints of every VLM family: build, load offline without torchvision, process a
non-square image, generate, and return one attention map per LM layer."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from fastrm_bench.embedded.tiny_random import FAMILIES, GEMMA3_MM_TOKENS, PALIGEMMA_IMAGE_TOKENS, build_tiny_random

#: 80 wide x 48 high: every family handles it and none sees it as square.
IMAGE_SIZE = (80, 48)
QUESTION = "What color is the circle?"

#: Image-token count for the 80x48 image, from the sizes tiny_random builds with:
EXPECTED_IMAGE_TOKENS = {
    "llava": 16,  # 32px / 8px patches = 4x4, CLS dropped
    "llava_next": 52,  # base 4x4 = 16, then 2x2 tiles = 8x8 features unpadded to 4 rows x (8 + 1 newline) = 36
    "qwen2_vl": 6,  # 84x56 -> 6x4 patches of 14px, 2x2-merged -> 3x2
    "qwen2_5_vl": 6,
    "qwen3_vl": 12,  # below min_pixels: scaled up to 96x128 -> 6x8 patches of 16px, 2x2-merged -> 3x4
    "qwen3_vl_moe": 12,
    "idefics3": 28,  # 2x3 tiles + the global image, 4 tokens each ((32/8)^2 / 2^2)
    "smolvlm": 28,
    "gemma3": GEMMA3_MM_TOKENS,
    "paligemma": PALIGEMMA_IMAGE_TOKENS,  # 32px / 8px patches = 4x4, whole image, no CLS
    # base 4x4 = 16, then 2x2 tiles = 8x8 unpadded to 4x8, over anyres_max_1 by sqrt(2): downsampled to 2x5 + newlines
    "llava_onevision": 28,
    "internvl": 28,  # 2x3 tiles (closest aspect to 80/48 within 6 tiles) + the thumbnail, 4 tokens each
    "mistral3": 12,  # resized to 48x64 (longest edge 64, sides to 16 px), 8 px patches merged 2x2 -> 3x4
    "llava-pixtral": 40,  # resized to 40x64 (sides to 8 px), one token per 8 px patch -> 5x8
    "mllama": 1,  # one <|image|> token: the image reaches the LM as cross-attention keys, not tokens
}
#: families whose checkpoints have no chat template (the harness writes their prompt): PaliGemma's task prefix
NO_CHAT_TEMPLATE = {"PaliGemmaProcessor": "<image>answer en {prompt}"}


@pytest.fixture(scope="session", params=FAMILIES)
def loaded(request, tmp_path_factory):
    """(family, folder, processor, model): each family is built and loaded once per session."""
    from transformers import AutoModelForImageTextToText

    from fastrm_bench.models.processors import load_processor

    family = request.param
    folder = build_tiny_random(family, tmp_path_factory.mktemp(f"tiny-{family}"), seed=0)
    processor = load_processor(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, attn_implementation="eager").eval()
    return family, folder, processor, model


def _prompt(processor) -> str:
    if processor.chat_template is None:
        return NO_CHAT_TEMPLATE[type(processor).__name__].format(prompt=QUESTION)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def _inputs(processor):
    prompt = _prompt(processor)
    image = Image.new("RGB", IMAGE_SIZE, (200, 30, 30))
    return processor(images=[image], text=[prompt], return_tensors="pt")


def _image_token_id(config) -> int:
    value = getattr(config, "image_token_id", None)
    return int(value if value is not None else config.image_token_index)


def test_saved_folder_is_complete_and_eager(loaded):
    family, folder, processor, model = loaded
    names = {p.name for p in folder.iterdir()}
    template = set() if type(processor).__name__ in NO_CHAT_TEMPLATE else {"chat_template.jinja"}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json", *template} <= names
    assert model.config._attn_implementation == "eager"
    # an image-only processor (no torchvision) saves the stock class name, so it loads as the stock class elsewhere
    assert json.loads((folder / "processor_config.json").read_text())["processor_class"] == type(processor).__name__
    gen = model.generation_config
    assert None not in (gen.pad_token_id, gen.eos_token_id, gen.bos_token_id)


def test_chat_template_special_tokens_are_single_tokens(loaded):
    family, folder, processor, model = loaded
    tok = processor.tokenizer
    prompt = _prompt(processor)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids, tok.convert_ids_to_tokens(ids)
    image_token = tok.convert_ids_to_tokens(_image_token_id(model.config))
    if family != "gemma3":  # Gemma 3's template writes <start_of_image>; the processor expands it to soft tokens
        assert image_token in tok.convert_ids_to_tokens(ids)


def test_non_square_image_layout(loaded):
    family, folder, processor, model = loaded
    inputs = _inputs(processor)
    n_image = int((inputs["input_ids"] == _image_token_id(model.config)).sum())
    assert n_image == EXPECTED_IMAGE_TOKENS[family]
    if family in ("llava_next", "llava_onevision"):
        assert inputs["pixel_values"].shape[1] > 2  # base image + several anyres tiles
        assert inputs["image_sizes"].tolist() == [[IMAGE_SIZE[1], IMAGE_SIZE[0]]]
    elif family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"):
        t, h, w = inputs["image_grid_thw"][0].tolist()
        assert t == 1 and h != w
        assert n_image == h * w // processor.image_processor.merge_size**2
    elif family in ("idefics3", "smolvlm"):
        assert inputs["pixel_values"].shape[1] > 2  # several tiles plus the global image
        tokens = processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
        assert "<row_2_col_3>" in tokens and "<global-img>" in tokens
    elif family == "gemma3":
        assert n_image == model.config.mm_tokens_per_image
    elif family == "internvl":  # tiles then the thumbnail, all between <img> and </img>
        assert inputs["pixel_values"].shape[0] == 7
        tokens = processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
        assert tokens.count("<img>") == 1 and tokens.count("</img>") == 1
    elif family in ("mistral3", "llava-pixtral"):  # each row of [IMG] tokens ends in [IMG_BREAK], the last in [IMG_END]
        tokens = processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
        rows = {"mistral3": 3, "llava-pixtral": 5}[family]
        assert tokens.count("[IMG_BREAK]") == rows - 1 and tokens.count("[IMG_END]") == 1
    elif family == "mllama":  # 80x48 fits no 32 px canvas of <= 4 tiles unscaled: the largest scale, 0.8 on 2x2 tiles
        assert tuple(inputs["pixel_values"].shape) == (1, 1, 4, 3, 32, 32) and inputs["aspect_ratio_mask"].tolist() == [[[1] * 4]]
        assert tuple(inputs["cross_attention_mask"].shape) == (1, inputs["input_ids"].shape[1], 1, 4)
    elif family == "paligemma":  # image tokens, <bos> and prompt form the bidirectional prefix; labels for training
        assert inputs["token_type_ids"].eq(0).all() and "labels" in inputs


def test_generate_and_attentions(loaded):
    family, folder, processor, model = loaded
    inputs = _inputs(processor)
    out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] - inputs["input_ids"].shape[1] == 4
    with torch.no_grad():
        result = model(**inputs, output_attentions=True)
    seq = inputs["input_ids"].shape[1]
    assert len(result.attentions) == model.config.text_config.num_hidden_layers
    cross = set(getattr(model.config.text_config, "cross_attention_layers", None) or ())
    keys = {k: seq for k in range(len(result.attentions))}
    if cross:  # a cross-attention layer's keys are the image's tile states (4 tiles of a CLS and 4x4 patches)
        keys.update({k: 4 * (1 + 16) for k in cross})
    assert all(a.shape[-2:] == (seq, keys[k]) for k, a in enumerate(result.attentions))


def test_build_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    a = load_file(build_tiny_random("llava_next", tmp_path / "a", seed=3) / "model.safetensors")
    b = load_file(build_tiny_random("llava_next", tmp_path / "b", seed=3) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_family(tmp_path):
    with pytest.raises(ValueError, match="unknown family"):
        build_tiny_random("blip", tmp_path)


def test_load_processor_error_names_folder_and_fix(tmp_path):
    from fastrm_bench.models.adapter import ModelLoadError
    from fastrm_bench.models.processors import load_processor

    with pytest.raises(ModelLoadError, match=str(tmp_path)) as err:
        load_processor(tmp_path)
    assert "save_pretrained" in str(err.value)


def test_image_only_class_keeps_stock_names():
    from transformers import LlavaProcessor, Qwen2VLProcessor

    from fastrm_bench.models.processors import image_only_processor_class

    assert image_only_processor_class(LlavaProcessor) is LlavaProcessor  # no video processor: unchanged
    sub = image_only_processor_class(Qwen2VLProcessor)
    assert issubclass(sub, Qwen2VLProcessor) and sub.__name__ == "Qwen2VLProcessor"
    assert "video_processor" not in sub.get_attributes() and "video_processor" in Qwen2VLProcessor.get_attributes()


def test_image_only_processor_round_trips(loaded, tmp_path):
    """A processor loaded without its video processor saves a folder that loads again, stock class name kept."""
    from fastrm_bench.models.processors import load_processor

    family, folder, processor, model = loaded
    processor.save_pretrained(tmp_path)
    again = load_processor(tmp_path)
    assert type(again).__name__ == type(processor).__name__
    assert again.chat_template == processor.chat_template
    assert _inputs(again)["input_ids"].tolist() == _inputs(processor)["input_ids"].tolist()
    if getattr(processor, "image_only", False):
        config = json.loads((folder / "processor_config.json").read_text())
        assert config["video_processor"]["video_processor_type"].endswith("VideoProcessor")
        assert not hasattr(processor, "video_processor")


def test_the_readme_family_table_lists_every_built_in_family():
    """The README's family table names each built-in family once, and only those (a new family needs its row)."""
    import re
    from pathlib import Path

    from fastrm_bench.models.families import FAMILIES as REGISTERED

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = readme.split("## Model families", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    named = [name for cell in rows for name in re.findall(r"`([a-z0-9_-]+)`", cell)]
    built_in = [name for name in REGISTERED.names() if REGISTERED.entry(name).source == "builtin"]
    assert sorted(named) == sorted(built_in) == sorted(FAMILIES)

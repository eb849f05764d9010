"""A small `Qwen2VLForConditionalGeneration` built from scratch for the shapes world (`train-vlm --family qwen2_vl`).

Real transformers classes throughout (Qwen2-VL vision tower with 2x2 patch merger, Qwen2 LM with M-RoPE,
`Qwen2VLProcessor` + `Qwen2VLImageProcessorPil`), so the harness runs the code paths of a Qwen2-VL checkpoint:
dynamic resolution (each image keeps its aspect ratio; its token grid follows its size), merged tokens,
3D positions. The processor is the image-only variant of `Qwen2VLProcessor` (no torchvision, see
`fastrm_bench.models.processors`); the saved folder also names the video processor's settings, so it loads
as the stock processor wherever torchvision is installed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerFast

from fastrm_bench.embedded.tiny_random import (
    force_eager,
    image_only,
    qwen_token_ids,
    qwen_tokenizer,
    save_video_processor_config,
    set_generation_ids,
)
from fastrm_bench.world.captions import DESCRIBE_QUESTION, NEW_WORDS, split_words

#: The chat template puts the question *before* the image (each message's text parts, then its images): in a
#: causal LM the image tokens can then attend to the question, which a 2M-parameter LLaVA needed to get off
#: chance on existence questions (see `fastrm_bench.embedded.tiny_llava.EMBEDDED_TEMPLATE`). Qwen's own turn
#: markers and vision delimiters are kept.
QWEN_SHAPES_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyQwenSize:
    """Sizes of the Qwen-family shapes model.

    4 px patches merged 2x2 make one LM token per 8x8 pixels, the embedded LLaVA's token size, so an object of
    the shapes world (16-24 px at 64 px) spans 2-3 tokens a side. ``min_pixels``/``max_pixels`` bound the image
    area the processor resizes to (keeping the aspect ratio, sides rounded to 8 px): the world's 48-96 px scenes
    become grids from 6x6 tokens (48x48) to 8x8 (a 96x96 scene shrinks to 64x64) and 5x11 (48x96), so no image
    has more tokens than the embedded LLaVA's 64, which keeps a training step within the 90-minute budget.
    """

    patch_size: int = 4
    merge_size: int = 2
    min_pixels: int = 48 * 48
    max_pixels: int = 64 * 64
    vision_hidden: int = 64
    vision_layers: int = 4
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    mlp_ratio: int = 4


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Qwen's special tokens and the world's words, plus those of the describe task (question and captions)."""
    return qwen_tokenizer(words=[*split_words(DESCRIBE_QUESTION), *NEW_WORDS])


def build_processor(size: TinyQwenSize = TinyQwenSize()):
    """The image-only `Qwen2VLProcessor` with the PIL image processor and the question-first chat template."""
    from transformers import Qwen2VLImageProcessorPil, Qwen2VLProcessor

    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": size.min_pixels, "longest_edge": size.max_pixels},
        patch_size=size.patch_size, merge_size=size.merge_size, temporal_patch_size=2,
    )
    return image_only(Qwen2VLProcessor, image_processor=image_processor, tokenizer=build_tokenizer(),
                      chat_template=QWEN_SHAPES_TEMPLATE)


def build_model(tokenizer: PreTrainedTokenizerFast, size: TinyQwenSize = TinyQwenSize()):
    """A randomly initialised Qwen2-VL of the given size (trains with SDPA; saved with eager attention)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    half = size.text_hidden // size.heads // 2  # M-RoPE: temporal, height, width share head_dim / 2 frequencies
    temporal = half // 4  # as Qwen2-VL's [16, 24, 24] of 64
    height = (half - temporal) // 2
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": size.text_hidden,
        "intermediate_size": size.text_hidden * size.mlp_ratio,
        "num_hidden_layers": size.text_layers,
        "num_attention_heads": size.heads,
        "num_key_value_heads": size.kv_heads,
        "max_position_embeddings": 1024,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                            "mrope_section": [temporal, height, half - temporal - height]},
        "tie_word_embeddings": False,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.pad_token_id,  # no BOS: Qwen's tokenizer prepends nothing
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision = {
        "depth": size.vision_layers, "embed_dim": size.vision_hidden, "hidden_size": size.text_hidden,
        "mlp_ratio": size.mlp_ratio, "num_heads": size.vision_heads, "patch_size": size.patch_size,
        "spatial_merge_size": size.merge_size, "temporal_patch_size": 2,
    }
    config = Qwen2VLConfig(text_config=text, vision_config=vision, **qwen_token_ids(tokenizer),
                           attn_implementation="sdpa")
    config.tiny_qwen_size = asdict(size)
    model = Qwen2VLForConditionalGeneration(config)
    set_generation_ids(model, tokenizer)
    return model


def save_model(model, processor, folder: Path) -> None:
    """A folder `HFVisionLanguageAdapter.from_pretrained` loads offline: eager attention (explanations read
    attention probabilities), the processor with its chat template, and the video processor's settings."""
    force_eager(model.config)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    save_video_processor_config(processor, Path(folder))

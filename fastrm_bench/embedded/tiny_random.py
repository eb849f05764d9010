"""Tiny random-weight checkpoints of several Hugging Face VLM families, built offline.

Each family is built from its OWN transformers classes (model, config, processor, image
processor) so that the harness runs, on a model that forwards in milliseconds, exactly the code
paths a real checkpoint of that family takes: LLaVA-NeXT anyres tiles, Qwen2-VL's merged
dynamic grid, Qwen3-VL's DeepStack features, Idefics3/SmolVLM image splitting, Gemma 3's pooled soft tokens. Only sizes differ;
the tokenizer is word-level over the embedded world's vocabulary plus the family's special
tokens, and each processor gets a small chat template in the family's style.

Image processors are the PIL backends (``*ImageProcessorPil``) so nothing needs torchvision.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from fastrm_bench.world.questions import vocabulary

FAMILIES = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "idefics3", "smolvlm", "gemma3",
            "paligemma", "internvl", "llava_onevision", "mistral3", "llava-pixtral", "mllama")

#: Words the chat templates write outside the special tokens (role names).
ROLE_WORDS = ("USER", "ASSISTANT", "User", "Assistant", "user", "assistant", "model", "system")

# ------------------------------------------------------------------ chat templates (Jinja)
# All share one shape: each message's text parts in order, an image placeholder where the
# message has an image part, and the family's generation prompt.

_LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}"
    "{% if message['role'] == 'user' %} {% else %}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

_QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_IDEFICS3_TEMPLATE = (
    "<|im_start|>"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}:"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %} {{ part['text'] }}{% endif %}"
    "{% endfor %}"
    "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

_GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<start_of_turn>{% if message['role'] == 'assistant' %}model{% else %}{{ message['role'] }}{% endif %}{{ '\\n' }}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<start_of_image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}"
    "<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


# ------------------------------------------------------------------ tokenizer


def build_word_tokenizer(
    specials: Sequence[str],
    *,
    bos: str | None,
    eos: str,
    pad: str,
    unk: str,
    prepend_bos: bool,
    extra_special_tokens: dict[str, str] | None = None,
    chat_template: str | None = None,
    words: Sequence[str] = (),
) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the world's vocabulary (plus ``words``); every family token is an added special token.

    Added tokens are matched before the Whitespace pre-tokenizer runs, so ``<|im_start|>`` or
    ``<row_1_col_2>`` stay one token instead of being split at their punctuation.
    """
    names = [unk, pad, eos] + ([bos] if bos else []) + list(specials)
    vocab: dict[str, int] = {}
    for tok in names:
        vocab.setdefault(tok, len(vocab))
    for word in list(vocabulary()) + list(ROLE_WORDS) + list(words):  # ``words`` last: other ids stay as they were
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in dict.fromkeys(names)])
    if prepend_bos and bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
        )
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    kwargs: dict = {"eos_token": eos, "pad_token": pad, "unk_token": unk}
    if bos:
        kwargs["bos_token"] = bos
    if extra_special_tokens:
        kwargs["extra_special_tokens"] = extra_special_tokens
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    if chat_template is not None:
        fast.chat_template = chat_template
    fast.padding_side = "left"
    return fast


def set_generation_ids(model, tokenizer: PreTrainedTokenizerFast) -> None:
    """generate() must never guess pad/eos/bos (random weights would otherwise warn or stop early)."""
    gen = model.generation_config
    gen.pad_token_id = tokenizer.pad_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.bos_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.pad_token_id
    for cfg in (model.config, getattr(model.config, "text_config", None)):
        if cfg is not None:
            cfg.pad_token_id = tokenizer.pad_token_id
            cfg.eos_token_id = tokenizer.eos_token_id
            cfg.bos_token_id = gen.bos_token_id


def _llama_text(tokenizer: PreTrainedTokenizerFast, hidden: int = 32, layers: int = 2, heads: int = 2) -> dict:
    return {
        "model_type": "llama",
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "max_position_embeddings": 1024,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "tie_word_embeddings": False,
    }


def _clip_vision(image_size: int, patch_size: int, hidden: int = 32, layers: int = 2) -> dict:
    return {
        "model_type": "clip_vision_model",
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": patch_size,
        "projection_dim": hidden,
    }


# ------------------------------------------------------------------ families


#: what the LLaVA-1.5 and LLaVA-NeXT processors share: 8 px patches, CLS dropped, LLaVA's chat template
_LLAVA_PROCESSOR = {"patch_size": 8, "vision_feature_select_strategy": "default", "num_additional_image_tokens": 1,
                    "chat_template": _LLAVA_TEMPLATE}


def _llava_tokenizer() -> PreTrainedTokenizerFast:
    return build_word_tokenizer(["<image>"], bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", prepend_bos=True,
                                extra_special_tokens={"image_token": "<image>"})


def _llava_config(tok: PreTrainedTokenizerFast, vision_feature_layer: int | list[int] = -2,
                  vision_feature_select_strategy: str = "default", vision_layers: int = 2) -> dict:
    """What the LLaVA-1.5 and LLaVA-NeXT configs share: a 32 px CLIP tower, a Llama LM, layer -2 without CLS."""
    return {"vision_config": _clip_vision(32, 8, layers=vision_layers), "text_config": _llama_text(tok),
            "image_token_id": tok.convert_tokens_to_ids("<image>"), "vision_feature_layer": vision_feature_layer,
            "vision_feature_select_strategy": vision_feature_select_strategy}


def _llava(vision_feature_layer: int | list[int] = -2, vision_feature_select_strategy: str = "default",
           vision_layers: int = 2):
    """LLaVA-1.5; the options make the variants real checkpoints use: ``"full"`` keeps the CLS token (the
    processor then writes one more image token), a list of layers concatenates their features (e.g. ``[-2, -5]``
    with 5 vision layers)."""
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = _llava_tokenizer()
    ip = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_center_crop=True)
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok,
                          **{**_LLAVA_PROCESSOR, "vision_feature_select_strategy": vision_feature_select_strategy})
    config = LlavaConfig(**_llava_config(tok, vision_feature_layer, vision_feature_select_strategy, vision_layers))
    return LlavaForConditionalGeneration(config), proc


def _llava_next():
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil, LlavaNextProcessor

    tok = _llava_tokenizer()
    pinpoints = [[32, 64], [64, 32], [64, 64]]  # [height, width]: a wide image gets a 1x2 tile grid
    ip = LlavaNextImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints, do_center_crop=True
    )
    proc = LlavaNextProcessor(
        image_processor=ip,
        tokenizer=tok,
        **_LLAVA_PROCESSOR,
    )
    config = LlavaNextConfig(
        **_llava_config(tok),
        image_grid_pinpoints=pinpoints,
    )
    return LlavaNextForConditionalGeneration(config), proc


_QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
#: min/max pixels: an 80x48 image becomes 84x56 -> a 6x4 patch grid -> 3x2 merged tokens.
_QWEN_PIXELS = {"shortest_edge": 28 * 28 * 2, "longest_edge": 28 * 28 * 12}


def qwen_tokenizer(words: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """The Qwen families' word-level tokenizer: Qwen's special tokens, EOS ``<|im_end|>``, no BOS (+ ``words``)."""
    return build_word_tokenizer(
        _QWEN_SPECIALS,
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        unk="<unk>",
        prepend_bos=False,
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        words=words,
    )


def qwen_token_ids(tok: PreTrainedTokenizerFast) -> dict[str, int]:
    """The special-token ids a Qwen2-VL / Qwen2.5-VL config names."""
    return {
        "image_token_id": tok.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tok.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tok.convert_tokens_to_ids("<|vision_end|>"),
    }


def _qwen_common():
    from transformers import Qwen2VLImageProcessorPil

    tok = qwen_tokenizer()
    ip = Qwen2VLImageProcessorPil(size=dict(_QWEN_PIXELS), patch_size=14, merge_size=2, temporal_patch_size=2)
    ids = qwen_token_ids(tok)
    text = {
        "vocab_size": len(tok),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},  # sums to head_dim/2
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    return tok, ip, ids, text


def image_only(processor_cls: type, **kwargs):
    """Instantiate a processor whose class wants a video processor, without one (see processors.py)."""
    from fastrm_bench.models.processors import image_only_processor_class

    return image_only_processor_class(processor_cls)(video_processor=None, **kwargs)


def _qwen2_vl():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    tok, ip, ids, text = _qwen_common()
    proc = image_only(Qwen2VLProcessor, image_processor=ip, tokenizer=tok, chat_template=_QWEN_TEMPLATE)
    vision = {"depth": 2, "embed_dim": 32, "hidden_size": text["hidden_size"], "mlp_ratio": 2, "num_heads": 2, "patch_size": 14}
    config = Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
    return Qwen2VLForConditionalGeneration(config), proc


def _qwen2_5_vl():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    tok, ip, ids, text = _qwen_common()
    proc = image_only(Qwen2_5_VLProcessor, image_processor=ip, tokenizer=tok, chat_template=_QWEN_TEMPLATE)
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": 14,
        "out_hidden_size": text["hidden_size"],
        "window_size": 56,
        "fullatt_block_indexes": [1],
    }
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
    return Qwen2_5_VLForConditionalGeneration(config), proc


#: Qwen3-VL: 16 px patches, 2x2 merge (factor 32). An 80x48 image is below min_pixels (8 merged tokens' worth), so
#: it is scaled up by sqrt(8192 / 3840) and each side rounded up to a multiple of 32: 96 high x 128 wide ->
#: a 6x8 patch grid -> 3x4 merged tokens.
_QWEN3_PIXELS = {"shortest_edge": 32 * 32 * 8, "longest_edge": 32 * 32 * 16}


def _qwen3_parts() -> tuple[Any, dict[str, int], dict, dict]:
    """Processor, special-token ids, text and vision configs shared by Qwen3-VL and Qwen3-VL-MoE."""
    from transformers import Qwen2VLImageProcessorPil, Qwen3VLProcessor

    tok, _, ids, text = _qwen_common()
    ip = Qwen2VLImageProcessorPil(size=dict(_QWEN3_PIXELS), patch_size=16, merge_size=2, temporal_patch_size=2,
                                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    proc = image_only(Qwen3VLProcessor, image_processor=ip, tokenizer=tok, chat_template=_QWEN_TEMPLATE)
    # head_dim 16 -> 8 rotary frequencies, interleaved T/H/W: H takes 1, 4; W takes 2, 5; T the rest
    text = {**text, "head_dim": 16, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                        "mrope_section": [4, 2, 2], "mrope_interleaved": True}}
    vision = {"depth": 3, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 16,
              "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": text["hidden_size"],
              "num_position_embeddings": 16, "deepstack_visual_indexes": [0, 1]}
    return proc, ids, text, vision


def _qwen3_vl():
    """Qwen3-VL: Qwen2.5-VL's merged dynamic grid (16 px patches, no window attention), interleaved M-RoPE, and
    DeepStack: the outputs of vision blocks 0 and 1, merged like the last one's, are added to the hidden states
    of the image tokens after LM layers 0 and 1 (a second route of the image into the LM)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    proc, ids, text, vision = _qwen3_parts()
    config = Qwen3VLConfig(text_config=text, vision_config=vision, **ids)
    return Qwen3VLForConditionalGeneration(config), proc


def _qwen3_vl_moe():
    """Qwen3-VL-MoE: Qwen3-VL (same vision tower, DeepStack, processor) with sparse MoE MLPs in every LM layer."""
    from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

    proc, ids, text, vision = _qwen3_parts()
    text = {**text, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "decoder_sparse_step": 1}
    config = Qwen3VLMoeConfig(text_config=text, vision_config=vision, **ids)
    return Qwen3VLMoeForConditionalGeneration(config), proc


def _idefics_tokens() -> list[str]:
    rows = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    return ["<|im_start|>", "<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>", *rows]


#: Tiles are 32x32 (= the vision tower's image_size). An image is resized to longest edge 96, then
#: each side up to a multiple of 32: an 80x48 image becomes 96x64, i.e. 2 rows x 3 columns of tiles,
#: followed by the global image (the whole image resized to 32x32).
_IDEFICS_SIZE = {"longest_edge": 96}
_IDEFICS_TILE = {"longest_edge": 32}


def _idefics_vision(cls):
    return cls(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)


def _idefics_tokenizer() -> PreTrainedTokenizerFast:
    """Idefics3 and SmolVLM share their special tokens (tile markers, <end_of_utterance>)."""
    return build_word_tokenizer(_idefics_tokens(), bos="<s>", eos="<end_of_utterance>", pad="<pad>", unk="<unk>",
                                prepend_bos=True, extra_special_tokens={"image_token": "<image>"})


def _idefics3():
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil, Idefics3Processor
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig

    tok = _idefics_tokenizer()
    ip = Idefics3ImageProcessorPil(size=dict(_IDEFICS_SIZE), max_image_size=dict(_IDEFICS_TILE), do_image_splitting=True)
    # (32/8)^2 = 16 patches per tile, pixel-shuffled by scale_factor 2 -> 4 tokens per tile
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=_IDEFICS3_TEMPLATE)
    config = Idefics3Config(
        vision_config=_idefics_vision(Idefics3VisionConfig),
        text_config=_llama_text(tok),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        pad_token_id=tok.pad_token_id,
    )
    return Idefics3ForConditionalGeneration(config), proc


def _smolvlm():
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessorPil, SmolVLMProcessor
    from transformers.models.smolvlm.configuration_smolvlm import SmolVLMVisionConfig

    tok = _idefics_tokenizer()
    ip = SmolVLMImageProcessorPil(size=dict(_IDEFICS_SIZE), max_image_size=dict(_IDEFICS_TILE), do_image_splitting=True)
    proc = image_only(SmolVLMProcessor, image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=_IDEFICS3_TEMPLATE)
    config = SmolVLMConfig(
        vision_config=_idefics_vision(SmolVLMVisionConfig),
        text_config=_llama_text(tok),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        pad_token_id=tok.pad_token_id,
    )
    return SmolVLMForConditionalGeneration(config), proc


#: Gemma 3: 32px images, 8px patches -> 4x4 patches avg-pooled to 2x2 = 4 soft tokens per image.
GEMMA3_MM_TOKENS = 4


def gemma3_tokenizer() -> PreTrainedTokenizerFast:
    """Gemma 3's word-level tokenizer: its turn and image special tokens, BOS written by the template."""
    specials = ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<image_soft_token>", "<end_of_image>"]
    return build_word_tokenizer(
        specials,
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        unk="<unk>",
        prepend_bos=False,  # the template writes <bos>
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )


def _gemma3():
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor

    tok = gemma3_tokenizer()
    ip = Gemma3ImageProcessorPil(size={"height": 32, "width": 32}, do_pan_and_scan=False)
    proc = Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=GEMMA3_MM_TOKENS, chat_template=_GEMMA3_TEMPLATE)
    text = {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "query_pre_attn_scalar": 16,
        "sliding_window": 16,
        "layer_types": ["sliding_attention", "full_attention"],
        "max_position_embeddings": 1024,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    vision = {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
        "vision_use_head": False,
    }
    config = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=GEMMA3_MM_TOKENS,
        boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
    )
    return Gemma3ForConditionalGeneration(config), proc


#: PaliGemma: 32 px images, 8 px SigLIP patches -> 16 image tokens, a 4x4 grid over the whole (resized) image.
PALIGEMMA_IMAGE_TOKENS = 16
#: PaliGemma has no chat template: its task prefixes ("answer en ...") are words of its vocabulary
PALIGEMMA_WORDS = ("answer", "en")


def _paligemma():
    """PaliGemma (SigLIP + Gemma): no chat template (the harness's family fallback writes the task prefix); the
    processor puts the image tokens and <bos> before the prompt and returns token types (0: the bidirectional
    prefix, 1: the causal suffix) and training labels."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor, SiglipImageProcessorPil

    tok = build_word_tokenizer(["<image>"], bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", prepend_bos=False,
                               extra_special_tokens={"image_token": "<image>"}, words=PALIGEMMA_WORDS)
    ip = SiglipImageProcessorPil(size={"height": 32, "width": 32}, image_seq_length=PALIGEMMA_IMAGE_TOKENS)
    proc = PaliGemmaProcessor(image_processor=ip, tokenizer=tok)  # adds its <loc>/<seg> tokens to the tokenizer
    text = {"model_type": "gemma", "vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
            "max_position_embeddings": 1024, "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id}
    vision = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2, "image_size": 32, "patch_size": 8, "vision_use_head": False}
    config = PaliGemmaConfig(text_config=text, vision_config=vision, image_token_index=tok.convert_tokens_to_ids("<image>"),
                             projection_dim=32, hidden_size=32, vocab_size=len(tok))
    return PaliGemmaForConditionalGeneration(config), proc


#: InternVL: 32 px tiles of 8 px patches (4x4), pixel-shuffled to 2x2 = 4 tokens per tile; up to 6 tiles, so an
#: 80x48 image (aspect 1.67) is cut 2 rows x 3 columns (aspect 1.5, the closest), plus the thumbnail.
INTERNVL_TILE_TOKENS = 4
_INTERNVL_SPECIALS = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                      "video_token": "<video>"}
#: InternVL's chat template writes ``<IMG_CONTEXT>`` where a message has an image; the processor expands it to the tiles
_INTERNVL_TEMPLATE = _QWEN_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<IMG_CONTEXT>\n").replace(
    "<|vision_start|><|video_pad|><|vision_end|>", "<video>\n")


def _internvl():
    """InternVL 3 (InternViT + Qwen2): tiles + thumbnail, CLS dropped, pixel shuffle, an MLP projector."""
    from transformers import GotOcr2ImageProcessorPil, InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor

    tok = build_word_tokenizer(["<|im_start|>", *_INTERNVL_SPECIALS.values()], bos=None, eos="<|im_end|>",
                               pad="<|endoftext|>", unk="<unk>", prepend_bos=False, extra_special_tokens=_INTERNVL_SPECIALS)
    ip = GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=True, min_patches=1, max_patches=6)
    proc = image_only(InternVLProcessor, image_processor=ip, tokenizer=tok, image_seq_length=INTERNVL_TILE_TOKENS,
                      chat_template=_INTERNVL_TEMPLATE)
    text = {"model_type": "qwen2", "vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 1024,
            "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32,
              "patch_size": 8}
    config = InternVLConfig(vision_config=vision, text_config=text, image_token_id=tok.context_image_token_id,
                            downsample_ratio=0.5)
    return InternVLForConditionalGeneration(config), proc


#: LLaVA-OneVision: SigLIP 32 px crops of 8 px patches (4x4 base grid); ``anyres_max_1`` makes the tile grid of any
#: image larger than one base grid get downsampled, as ``anyres_max_9`` does for large images in real checkpoints
ONEVISION_PINPOINTS = [[32, 64], [64, 32], [64, 64]]


def _llava_onevision():
    """LLaVA-OneVision (SigLIP + Qwen2): base grid + anyres tiles, unpadded, downsampled, newline-terminated rows."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
    )

    specials = {"image_token": "<image>", "video_token": "<video>"}
    tok = build_word_tokenizer(["<|im_start|>", *specials.values()], bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                               unk="<unk>", prepend_bos=False, extra_special_tokens=specials)
    ip = LlavaOnevisionImageProcessorPil(size={"height": 32, "width": 32}, image_grid_pinpoints=ONEVISION_PINPOINTS)
    template = _QWEN_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<image>\n").replace(
        "<|vision_start|><|video_pad|><|vision_end|>", "<video>\n")
    proc = image_only(LlavaOnevisionProcessor, image_processor=ip, tokenizer=tok, num_image_tokens=16,
                      vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_1", chat_template=template)
    text = {"model_type": "qwen2", "vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 1024,
            "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
    vision = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2, "image_size": 32, "patch_size": 8, "vision_use_head": False}
    config = LlavaOnevisionConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                                  video_token_id=tok.convert_tokens_to_ids("<video>"), image_grid_pinpoints=ONEVISION_PINPOINTS,
                                  vision_aspect_ratio="anyres_max_1", vision_feature_select_strategy="full",
                                  vision_feature_layer=-1)
    return LlavaOnevisionForConditionalGeneration(config), proc


_MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}[INST]"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}[IMG]{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}[/INST]"
    "{% else %}{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{{ eos_token }}{% endif %}{% endfor %}"
)


def _mistral3():
    """Mistral 3 (Pixtral tower + Mistral LM): longest edge 64 px, 8 px patches merged 2x2, ``[IMG_BREAK]`` rows.

    Its processor class (Pixtral's) is imported without torchvision (`torchvision_free_processor_class`)."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    tok, ip, processor_class = _pixtral_processor()
    proc = processor_class(image_processor=ip, tokenizer=tok, patch_size=8, spatial_merge_size=2,
                           chat_template=_MISTRAL_TEMPLATE)
    config = Mistral3Config(vision_config=dict(_PIXTRAL_VISION), text_config=_mistral_text(tok),
                            image_token_index=tok.convert_tokens_to_ids("[IMG]"), spatial_merge_size=2, vision_feature_layer=-1)
    model = Mistral3ForConditionalGeneration(config)
    with torch.no_grad():  # at std 0.02 the merger and two linears shrink image features to 1/20 of a word embedding's
        for layer in model.model.multi_modal_projector.modules():  # norm: the image would barely reach the random LM
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(std=0.05)
    return model, proc


def _pixtral_processor():
    """Pixtral's processor (imported without torchvision) over Mistral's tokens: longest edge 64 px, 8 px patches."""
    from transformers import PixtralImageProcessorPil

    from fastrm_bench.models.processors import torchvision_free_processor_class

    tok = build_word_tokenizer(["[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]", "[IMG_END]"], bos="<s>", eos="</s>", pad="<pad>",
                               unk="<unk>", prepend_bos=False)
    ip = PixtralImageProcessorPil(size={"longest_edge": 64}, patch_size=8)
    return tok, ip, torchvision_free_processor_class("PixtralProcessor")


def _mistral_text(tok: PreTrainedTokenizerFast) -> dict:
    return {"model_type": "mistral", "vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
            "max_position_embeddings": 1024, "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id}


_PIXTRAL_VISION = {"model_type": "pixtral", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                   "num_attention_heads": 2, "image_size": 64, "patch_size": 8, "head_dim": 16}


def _llava_pixtral():
    """Pixtral-12B's layout (LLaVA + Pixtral tower, "full" features): one [IMG] token per 8 px patch, [IMG_BREAK] rows."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    tok, ip, processor_class = _pixtral_processor()
    proc = processor_class(image_processor=ip, tokenizer=tok, patch_size=8, spatial_merge_size=1,
                           chat_template=_MISTRAL_TEMPLATE)
    config = LlavaConfig(vision_config=dict(_PIXTRAL_VISION), text_config=_mistral_text(tok),
                         image_token_index=tok.convert_tokens_to_ids("[IMG]"), vision_feature_layer=-1,
                         vision_feature_select_strategy="full")
    return LlavaForConditionalGeneration(config), proc


_MLLAMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|image|>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}"
    "<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def _mllama(image_size: int = 32, patch_size: int = 8):
    """Llama 3.2 Vision: the image cut into up to 4 tiles of an aspect-matched canvas (resized, padded), each tile's
    patches + CLS the keys of cross-attention layers (1 and 3 of 4); the text holds one <|image|> token. The tanh gates,
    zero at init (the model would ignore the image), are set to 1. ``image_size=560, patch_size=14`` is Llama 3.2
    Vision's own tile geometry (1,601 states a tile)."""
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessorPil, MllamaProcessor

    tok = build_word_tokenizer(["<|image|>", "<|python_tag|>", "<|start_header_id|>", "<|end_header_id|>"],
                               bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|finetune_right_pad_id|>", unk="<unk>",
                               prepend_bos=False)
    ip = MllamaImageProcessorPil(size={"height": image_size, "width": image_size}, max_image_tiles=4)
    proc = MllamaProcessor(image_processor=ip, tokenizer=tok, chat_template=_MLLAMA_TEMPLATE)
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_global_layers": 1,
              "attention_heads": 2, "image_size": image_size, "patch_size": patch_size, "max_num_tiles": 4,
              "vision_output_dim": 64, "intermediate_layers_indices": [0]}
    text = {"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
            "num_attention_heads": 2, "num_key_value_heads": 1, "cross_attention_layers": [1, 3],
            "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id}
    config = MllamaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<|image|>"))
    model = MllamaForConditionalGeneration(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "gate" in name.rsplit(".", 1)[-1]:
                parameter.fill_(1.0)
    return model, proc


_BUILDERS: dict[str, Callable] = {
    "llava": _llava,
    "llava_next": _llava_next,
    "qwen2_vl": _qwen2_vl,
    "qwen2_5_vl": _qwen2_5_vl,
    "qwen3_vl": _qwen3_vl,
    "qwen3_vl_moe": _qwen3_vl_moe,
    "idefics3": _idefics3,
    "smolvlm": _smolvlm,
    "gemma3": _gemma3,
    "paligemma": _paligemma,
    "internvl": _internvl,
    "llava_onevision": _llava_onevision,
    "mistral3": _mistral3,
    "llava-pixtral": _llava_pixtral,
    "mllama": _mllama,
}


#: Video processor settings written next to an image-only processor, so that where torchvision is
#: installed the folder loads as the stock processor (video processor included) with the same sizes.
_VIDEO_PROCESSOR_KEYS = {
    "Qwen2VLProcessor": ("Qwen2VLVideoProcessor", ("size", "patch_size", "temporal_patch_size", "merge_size")),
    "Qwen2_5_VLProcessor": ("Qwen2VLVideoProcessor", ("size", "patch_size", "temporal_patch_size", "merge_size")),
    "Qwen3VLProcessor": ("Qwen3VLVideoProcessor", ("size", "patch_size", "temporal_patch_size", "merge_size")),
    "SmolVLMProcessor": ("SmolVLMVideoProcessor", ("size", "max_image_size", "resample")),
    "InternVLProcessor": ("InternVLVideoProcessor", ("size", "resample")),
    "LlavaOnevisionProcessor": ("LlavaOnevisionVideoProcessor", ("size", "resample")),
}


def save_video_processor_config(processor, out: Path) -> None:
    """Add a "video_processor" entry to processor_config.json (read by AutoVideoProcessor, ignored by the image-only class)."""
    if not getattr(processor, "image_only", False):
        return
    video_type, keys = _VIDEO_PROCESSOR_KEYS[type(processor).__name__]
    image = processor.image_processor.to_dict()  # JSON-ready (sizes as plain dicts)
    entry = {"video_processor_type": video_type, **{k: image[k] for k in ("image_mean", "image_std", *keys) if k in image}}
    path = out / "processor_config.json"
    data = json.loads(path.read_text())
    data["video_processor"] = entry
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def force_eager(config) -> None:
    """Explanation methods read attention probabilities: every (sub)config saves eager attention."""
    for cfg in (config, *(getattr(config, k, None) for k in ("text_config", "vision_config"))):
        if cfg is not None:
            cfg._attn_implementation = "eager"


def _randomise_zero_matrices(model: torch.nn.Module) -> None:
    """Random weights where a family's init leaves a matrix at zero (Gemma 3's image projection): with it,
    the image would not reach the LM at all, and every map of the tiny model would be meaningless."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2 and not parameter.any():
                parameter.normal_(std=0.02)


def build_tiny_random(family: str, out: Path, seed: int = 0, **options: Any) -> Path:
    """Build a random-weight `family` checkpoint and save model, processor and chat template in `out`.

    ``options`` go to the family's builder (e.g. LLaVA's ``vision_feature_select_strategy="full"``): variants of
    a family's config that real checkpoints use, each built with the same classes.
    """
    if family not in _BUILDERS:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model, processor = _BUILDERS[family](**options)
    _randomise_zero_matrices(model)
    force_eager(model.config)
    set_generation_ids(model, processor.tokenizer)
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    save_video_processor_config(processor, out)
    return out

"""The embedded model: a small `LlavaForConditionalGeneration` built from scratch.

It uses the real transformers classes (CLIP vision tower, projector, Llama LM, LlavaProcessor)
so that every code path the harness runs on it is the one a LLaVA-1.5 checkpoint takes.
Only sizes differ; the word-level tokenizer is built from the embedded world's vocabulary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from fastrm_bench.models.adapter import HARNESS_CONFIG
from fastrm_bench.world.questions import vocabulary

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<image>")
#: The embedded model's template puts the question *before* the image: in a causal LM the image
#: tokens can then attend to the question, so each patch can tell whether it matches what is
#: asked. With LLaVA-1.5's image-first order a 2M-parameter model stayed at chance on yes/no
#: existence questions after 40 minutes. The template is saved with the model (fastrm_bench.json).
EMBEDDED_TEMPLATE = "USER: {prompt} <image> ASSISTANT:"


def save_template(directory, template: str = EMBEDDED_TEMPLATE) -> None:
    import json
    from pathlib import Path

    (Path(directory) / HARNESS_CONFIG).write_text(json.dumps({"prompt_template": template}, indent=2))


@dataclass(frozen=True)
class TinyLlavaSize:
    """Sizes of the embedded model (the defaults are the shipped checkpoint's)."""

    image_size: int = 64
    patch_size: int = 8
    vision_hidden: int = 128
    vision_layers: int = 4
    text_hidden: int = 128
    text_layers: int = 4
    heads: int = 4
    mlp_ratio: int = 4


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the embedded world's vocabulary, BOS prepended."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in vocabulary():
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    fast.padding_side = "left"
    return fast


def build_processor(size: TinyLlavaSize = TinyLlavaSize()) -> LlavaProcessor:
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": size.image_size},
        crop_size={"height": size.image_size, "width": size.image_size},
        do_center_crop=True,
        do_convert_rgb=True,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(),
        patch_size=size.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
    )


def build_model(tokenizer: PreTrainedTokenizerFast, size: TinyLlavaSize = TinyLlavaSize()) -> LlavaForConditionalGeneration:
    """A randomly initialised LLaVA of the given size (eager attention, for explanations)."""
    vision = CLIPVisionConfig(
        hidden_size=size.vision_hidden,
        intermediate_size=size.vision_hidden * size.mlp_ratio,
        num_hidden_layers=size.vision_layers,
        num_attention_heads=size.heads,
        image_size=size.image_size,
        patch_size=size.patch_size,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.text_hidden,
        intermediate_size=size.text_hidden * size.mlp_ratio,
        num_hidden_layers=size.text_layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        attn_implementation="eager",
    )
    config.tiny_llava_size = asdict(size)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model

"""Random-weight vision-language models with the published 7B-class configs' shapes, built in memory.

`fastrm-bench gpu-table` measures the cost of explanations at the scale the paper reports, without
downloading any checkpoint: the config objects are built here from the published numbers (layers,
widths, heads, KV heads, MLP width, vocabulary, vision tower, image size and patch), the weights are
random, and the processors are the families' own classes (PIL backends) with the real image sizes,
so an image becomes as many tokens as it would for the real model (576 for LLaVA-1.5 at 336 px).
The tokenizers are the offline word-level ones of `tiny_random` (only the vocabulary the prompt uses
matters for cost; the LM's vocabulary, hence its embedding and logits, has the real size).

A dry run (`tiny`) keeps everything (families, classes, processors, patch sizes, the code path) and
shrinks only the widths, depths and image sizes, so that it runs on a CPU in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from fastrm_bench.models.adapter import HFVisionLanguageAdapter


@dataclass(frozen=True)
class Dims:
    """The numbers of a model's config that set its cost."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    mlp: int
    vocab: int  # 0: the tokenizer's length
    vision_layers: int
    vision_hidden: int
    vision_heads: int
    vision_mlp: int
    vision_image: int  # pixels per side the vision tower sees (per tile for Gemma 3)
    patch: int = 14
    head_dim: int = 0  # 0: hidden // heads
    pool: int = 1  # Gemma 3: patches per side averaged into one soft token
    image: tuple[int, int] = (640, 480)  # the photo each question is about (width, height), a COCO-sized one

    @property
    def per_head(self) -> int:
        return self.head_dim or self.hidden // self.heads


@dataclass(frozen=True)
class ModelShape:
    """One measured model: the name its rows carry, its family (``config.model_type``) and its real numbers."""

    name: str
    family: str
    real: Dims

    def dims(self, dry_run: bool) -> Dims:
        return tiny(self.real) if dry_run else self.real


#: LLaVA-1.5-7B (llava-hf/llava-1.5-7b-hf): CLIP ViT-L/14-336 (24 layers, 1024 wide, 16 heads), Llama-7B
LLAVA_15_7B = ModelShape("llava-1.5-7b-shaped", "llava", Dims(
    layers=32, hidden=4096, heads=32, kv_heads=32, mlp=11008, vocab=32064,
    vision_layers=24, vision_hidden=1024, vision_heads=16, vision_mlp=4096, vision_image=336))
#: Qwen2-VL-7B (Qwen/Qwen2-VL-7B-Instruct): a 32-deep 1280-wide ViT, 2x2 merge; a 28-layer LM, GQA 28 / 4 heads
QWEN2_VL_7B = ModelShape("qwen2-vl-7b-shaped", "qwen2_vl", Dims(
    layers=28, hidden=3584, heads=28, kv_heads=4, mlp=18944, vocab=152064,
    vision_layers=32, vision_hidden=1280, vision_heads=16, vision_mlp=5120, vision_image=0))
#: Gemma-3-4B (google/gemma-3-4b-it): SigLIP-so400m at 896 px pooled to 256 tokens, a 34-layer LM of 2560
GEMMA3_4B = ModelShape("gemma-3-4b-shaped", "gemma3", Dims(
    layers=34, hidden=2560, heads=8, kv_heads=4, mlp=10240, vocab=262208, head_dim=256,
    vision_layers=27, vision_hidden=1152, vision_heads=16, vision_mlp=4304, vision_image=896, pool=4))
SHAPES = (LLAVA_15_7B, QWEN2_VL_7B, GEMMA3_4B)

#: Qwen2-VL's processor bounds on an image's pixels (its preprocessor_config.json: min_pixels, max_pixels)
QWEN_PIXELS = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384}
#: Gemma 3's sliding-window span and its pattern (every 6th layer attends globally)
GEMMA3_WINDOW, GEMMA3_PATTERN = 1024, 6


def tiny(real: Dims) -> Dims:
    """The dry run's widths: two layers each side, 8 x 8 patches; the patch, pooling and head ratios kept."""
    heads, side = 4, 8
    return replace(real, layers=2, hidden=64, heads=heads, kv_heads=max(1, heads * real.kv_heads // real.heads), mlp=128,
                   vocab=0, head_dim=16 if real.head_dim else 0, vision_layers=2, vision_hidden=32, vision_heads=2,
                   vision_mlp=64, vision_image=side * real.patch if real.vision_image else 0,
                   image=(side * real.patch, (side - 2) * real.patch))


def _llava(dims: Dims) -> tuple[Any, Any]:
    """LLaVA-1.5: CLIP tower at ``vision_image`` px, its 2-layer GELU projector, a Llama LM."""
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaProcessor

    from fastrm_bench.embedded.tiny_random import _LLAVA_PROCESSOR, _llava_tokenizer

    tok = _llava_tokenizer()
    side = dims.vision_image
    ip = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side}, do_center_crop=True)
    processor = LlavaProcessor(image_processor=ip, tokenizer=tok, **{**_LLAVA_PROCESSOR, "patch_size": dims.patch})
    text = {"model_type": "llama", "vocab_size": dims.vocab or len(tok), "hidden_size": dims.hidden,
            "intermediate_size": dims.mlp, "num_hidden_layers": dims.layers, "num_attention_heads": dims.heads,
            "num_key_value_heads": dims.kv_heads, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False}
    vision = {"model_type": "clip_vision_model", "hidden_size": dims.vision_hidden, "intermediate_size": dims.vision_mlp,
              "num_hidden_layers": dims.vision_layers, "num_attention_heads": dims.vision_heads, "image_size": side,
              "patch_size": dims.patch, "projection_dim": 768}
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu")
    return config, processor


def _qwen2_vl(dims: Dims) -> tuple[Any, Any]:
    """Qwen2-VL: dynamic resolution (14 px patches, 2x2 merged), M-RoPE sections in the real 2:3:3 ratio."""
    from transformers import Qwen2VLConfig, Qwen2VLImageProcessorPil, Qwen2VLProcessor

    from fastrm_bench.embedded.tiny_random import _QWEN_TEMPLATE, image_only, qwen_token_ids, qwen_tokenizer

    tok = qwen_tokenizer()
    ip = Qwen2VLImageProcessorPil(size=dict(QWEN_PIXELS), patch_size=dims.patch, merge_size=2, temporal_patch_size=2)
    processor = image_only(Qwen2VLProcessor, image_processor=ip, tokenizer=tok, chat_template=_QWEN_TEMPLATE)
    half = dims.per_head // 2
    text = {"vocab_size": dims.vocab or len(tok), "hidden_size": dims.hidden, "intermediate_size": dims.mlp,
            "num_hidden_layers": dims.layers, "num_attention_heads": dims.heads, "num_key_value_heads": dims.kv_heads,
            "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
            "pad_token_id": tok.pad_token_id, "bos_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6,
                                "mrope_section": [half * 2 // 8, half * 3 // 8, half * 3 // 8]}}
    vision = {"depth": dims.vision_layers, "embed_dim": dims.vision_hidden, "hidden_size": dims.hidden,
              "mlp_ratio": dims.vision_mlp // dims.vision_hidden, "num_heads": dims.vision_heads, "patch_size": dims.patch}
    return Qwen2VLConfig(text_config=text, vision_config=vision, **qwen_token_ids(tok)), processor


def _gemma3(dims: Dims) -> tuple[Any, Any]:
    """Gemma 3: SigLIP at ``vision_image`` px, patches average-pooled ``pool`` x ``pool`` into soft tokens."""
    from transformers import Gemma3Config, Gemma3ImageProcessorPil, Gemma3Processor

    from fastrm_bench.embedded.tiny_random import _GEMMA3_TEMPLATE, gemma3_tokenizer

    tok = gemma3_tokenizer()
    side = dims.vision_image
    soft_tokens = (side // dims.patch // dims.pool) ** 2
    ip = Gemma3ImageProcessorPil(size={"height": side, "width": side}, do_pan_and_scan=False)
    processor = Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=soft_tokens, chat_template=_GEMMA3_TEMPLATE)
    text = {"vocab_size": dims.vocab or len(tok), "hidden_size": dims.hidden, "intermediate_size": dims.mlp,
            "num_hidden_layers": dims.layers, "num_attention_heads": dims.heads, "num_key_value_heads": dims.kv_heads,
            "head_dim": dims.per_head, "query_pre_attn_scalar": dims.per_head, "sliding_window": GEMMA3_WINDOW,
            "layer_types": ["full_attention" if (i + 1) % GEMMA3_PATTERN == 0 else "sliding_attention"
                            for i in range(dims.layers)],
            "max_position_embeddings": 131072}
    vision = {"model_type": "siglip_vision_model", "hidden_size": dims.vision_hidden, "intermediate_size": dims.vision_mlp,
              "num_hidden_layers": dims.vision_layers, "num_attention_heads": dims.vision_heads, "image_size": side,
              "patch_size": dims.patch, "vision_use_head": False}
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=soft_tokens,
                          boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
                          eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
                          image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"))
    return config, processor


_BUILDERS = {"llava": _llava, "qwen2_vl": _qwen2_vl, "gemma3": _gemma3}


def config_and_processor(shape: ModelShape, dry_run: bool) -> tuple[Any, Any]:
    """The model config (no weights) and the processor of ``shape`` at its real or dry-run widths."""
    return _BUILDERS[shape.family](shape.dims(dry_run))


def parameter_count(shape: ModelShape, dry_run: bool) -> int:
    """Parameters of the model, counted on the meta device (nothing allocated): the cost model's scale."""
    import transformers

    from fastrm_bench.models.families import family_for

    config, _ = config_and_processor(shape, dry_run)
    with torch.device("meta"):
        model = getattr(transformers, family_for(config.model_type).model_class)._from_config(config)
    return sum(p.numel() for p in model.parameters())


def build_adapter(shape: ModelShape, dry_run: bool, device: torch.device, dtype: torch.dtype,
                  attn_implementation: str = "sdpa", seed: int = 0) -> HFVisionLanguageAdapter:
    """The random-weight model built directly on ``device`` in ``dtype`` (a 7B model never passes through the
    CPU or a file), wrapped in the adapter every method runs on, as `load_model` would return it."""
    import transformers

    from fastrm_bench.embedded.tiny_random import _randomise_zero_matrices, set_generation_ids
    from fastrm_bench.models.families import family_for

    config, processor = config_and_processor(shape, dry_run)
    family = family_for(config.model_type)
    torch.manual_seed(seed)
    with torch.device(device):
        model = getattr(transformers, family.model_class)._from_config(
            config, dtype=dtype, attn_implementation=attn_implementation)
    _randomise_zero_matrices(model)  # Gemma 3's image projection starts at zero: the image would not reach the LM
    set_generation_ids(model, processor.tokenizer)
    model.eval()
    model.requires_grad_(False)
    return HFVisionLanguageAdapter(model, processor, shape.name, family)

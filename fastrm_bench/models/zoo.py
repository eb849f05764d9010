"""Named models of the model registry, and `load_model` for names, local folders and hub ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fastrm_bench.models.adapter import HFVisionLanguageAdapter, ModelLoadError
from fastrm_bench.models.attention_capture import DEFAULT_ATTN_IMPLEMENTATION
from fastrm_bench.models.cross_attention import CrossAttentionAdapter
from fastrm_bench.models.families import family_for, family_key
from fastrm_bench.registry import FAMILIES, MODELS, UnknownNameError

DEFAULT_MODEL = "tiny-llava-shapes"
CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"


#: the models trained on the embedded world that ship in CHECKPOINTS, and the `train-vlm --family` of each
EMBEDDED_MODELS = {"tiny-llava-shapes": "llava", "tiny-qwen-shapes": "qwen2_vl", "tiny-qwen-shapes-multi": "qwen2_vl"}
#: how each shipped model is remade (the missing-checkpoint error says it)
REMAKE = {"tiny-qwen-shapes-multi": "`fastrm-bench train-multi --out DIR` and pass --model DIR"}


def _shipped(name: str, device: str | None, load: dict[str, Any]) -> HFVisionLanguageAdapter:
    path = CHECKPOINTS / name
    if not (path / "config.json").exists():
        trained = f"`fastrm-bench train-vlm --family {EMBEDDED_MODELS[name]} --out DIR` and pass --model DIR/model"
        remake = REMAKE.get(name, trained)
        raise ModelLoadError(f"the shipped checkpoint is missing at {path}; reinstall the package or run {remake}")
    return HFVisionLanguageAdapter.from_pretrained(path, device=device, name=name, **load)


def tiny_llava_shapes(device: str | None = None, **load: Any) -> HFVisionLanguageAdapter:
    """Embedded LLaVA (CLIP + Llama, 8x8 patches) trained on the synthetic shapes world; ships with the package."""
    return _shipped("tiny-llava-shapes", device, load)


def tiny_qwen_shapes(device: str | None = None, **load: Any) -> HFVisionLanguageAdapter:
    """Embedded Qwen2-VL (dynamic resolution, 4 px patches merged 2x2) trained on variable-size scenes with the
    describe task; ships with the package."""
    return _shipped("tiny-qwen-shapes", device, load)


def tiny_qwen_shapes_multi(device: str | None = None, **load: Any) -> HFVisionLanguageAdapter:
    """`tiny-qwen-shapes` fine-tuned on two-image and clip questions (`train-multi`); ships with the package."""
    return _shipped("tiny-qwen-shapes-multi", device, load)


def model_folder(name_or_path: str) -> Path | None:
    """The local folder of a shipped model name or a saved-model path; None for hub ids and other names."""
    if name_or_path in EMBEDDED_MODELS:
        return CHECKPOINTS / name_or_path
    path = Path(name_or_path).expanduser()
    return path if path.is_dir() else None


def trained_world(name_or_path: str) -> Path | None:
    """The data root of the embedded world variant a `train-vlm` model learnt, when it is not the default world.

    Read from the model folder's ``training.json``; None for the default world (the tasks' own default then
    applies) and for models `train-vlm` did not make. Runs of such a model without ``--data-root`` use it, so
    `tiny-qwen-shapes` answers the variable-size scenes it was trained on.
    """
    from fastrm_bench.world.build import variant_of_recipe

    folder = model_folder(name_or_path)
    recipe = folder / "training.json" if folder is not None else None
    if recipe is None or not recipe.is_file():
        return None
    variant = variant_of_recipe(json.loads(recipe.read_text()).get("config", {}))
    return variant.ensure() if variant.name else None


def _hub_model(hub_id: str, doc: str):
    def load(device: str | None = None, **options: Any) -> HFVisionLanguageAdapter:
        return adapter_class(hub_id).from_pretrained(hub_id, device=device, name=hub_id, **options)

    load.__doc__ = doc
    return load


llava_15_7b = _hub_model("llava-hf/llava-1.5-7b-hf", "LLaVA-1.5-7B (llava-hf/llava-1.5-7b-hf) from the HF cache.")
llava_15_13b = _hub_model("llava-hf/llava-1.5-13b-hf", "LLaVA-1.5-13B (llava-hf/llava-1.5-13b-hf) from the HF cache.")


def load_model(name_or_path: str = DEFAULT_MODEL, device: str | None = None, dtype: str | torch.dtype = torch.float32,
               device_map: str | None = None, attn_implementation: str = DEFAULT_ATTN_IMPLEMENTATION) -> HFVisionLanguageAdapter:
    """A registered model name, a local saved-model folder, or a hub id ("org/name") of a supported family.

    ``dtype`` ("float32", "bfloat16", "float16") is the weights' dtype (gradient methods accumulate their
    relevancy in float32 whatever it is); ``device_map="auto"`` spreads a model over the available GPUs;
    ``attn_implementation`` is the attention the model answers with (SDPA by default; methods that read attention
    recompute what they need from it).
    """
    options: dict[str, Any] = {"dtype": dtype, "device_map": device_map, "attn_implementation": attn_implementation}
    if name_or_path in MODELS:
        return MODELS.get(name_or_path)(device=device, **options)
    path = Path(name_or_path).expanduser()
    if path.exists():
        return adapter_class(path).from_pretrained(path, device=device, **options)
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
        return adapter_class(name_or_path).from_pretrained(name_or_path, device=device, **options)
    raise UnknownNameError("model", name_or_path, MODELS.names(include_aliases=True))


def adapter_class(source: str | Path) -> type[HFVisionLanguageAdapter]:
    """The adapter serving a checkpoint: `CrossAttentionAdapter` where its family reads the image through cross-attention
    layers (Llama 3.2 Vision), else `HFVisionLanguageAdapter`; an unreadable or unsupported config gets the latter,
    whose loading says what is wrong."""
    from transformers import AutoConfig

    try:
        key = family_key(AutoConfig.from_pretrained(str(source)))
    except (OSError, ValueError):
        return HFVisionLanguageAdapter
    return CrossAttentionAdapter if key in FAMILIES and family_for(key).cross_attention else HFVisionLanguageAdapter

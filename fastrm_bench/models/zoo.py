"""Named models of the model registry, and `load_model` for names, local folders and hub ids."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from fastrm_bench.models.adapter import HFVisionLanguageAdapter, ModelLoadError
from fastrm_bench.registry import MODELS, UnknownNameError

DEFAULT_MODEL = "tiny-llava-shapes"
CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 over parameter names and bytes (identifies the exact weights a run or a dataset used)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def tiny_llava_shapes(device: str | None = None, **load: Any) -> HFVisionLanguageAdapter:
    """Embedded LLaVA (CLIP + Llama, 8x8 patches) trained on the synthetic shapes world; ships with the package."""
    path = CHECKPOINTS / "tiny-llava-shapes"
    if not (path / "config.json").exists():
        raise ModelLoadError(
            f"the shipped checkpoint is missing at {path}; reinstall the package or run "
            "`fastrm-bench train-vlm --out DIR` and pass --model DIR"
        )
    return HFVisionLanguageAdapter.from_pretrained(path, device=device, name=DEFAULT_MODEL, **load)


def _hub_model(hub_id: str, doc: str):
    def load(device: str | None = None, **options: Any) -> HFVisionLanguageAdapter:
        return HFVisionLanguageAdapter.from_pretrained(hub_id, device=device, name=hub_id, **options)

    load.__doc__ = doc
    return load


llava_15_7b = _hub_model("llava-hf/llava-1.5-7b-hf", "LLaVA-1.5-7B (llava-hf/llava-1.5-7b-hf) from the HF cache.")
llava_15_13b = _hub_model("llava-hf/llava-1.5-13b-hf", "LLaVA-1.5-13B (llava-hf/llava-1.5-13b-hf) from the HF cache.")


def load_model(name_or_path: str = DEFAULT_MODEL, device: str | None = None, dtype: str | torch.dtype = torch.float32,
               device_map: str | None = None) -> HFVisionLanguageAdapter:
    """A registered model name, a local saved-model folder, or a hub id ("org/name") of a supported family.

    ``dtype`` ("float32", "bfloat16", "float16") is the weights' dtype (gradient methods accumulate their
    relevancy in float32 whatever it is); ``device_map="auto"`` spreads a model over the available GPUs.
    """
    options: dict[str, Any] = {"dtype": dtype, "device_map": device_map}
    if name_or_path in MODELS:
        return MODELS.get(name_or_path)(device=device, **options)
    path = Path(name_or_path).expanduser()
    if path.exists():
        return HFVisionLanguageAdapter.from_pretrained(path, device=device, **options)
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
        return HFVisionLanguageAdapter.from_pretrained(name_or_path, device=device, **options)
    raise UnknownNameError("model", name_or_path, MODELS.names(include_aliases=True))

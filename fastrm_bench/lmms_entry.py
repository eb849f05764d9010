"""The `lmms_eval.models` entry point: the lmms-eval models that write FastRM maps (`fastrm_bench.lmms_models`).

lmms-eval reads this group when ``lmms_eval.models`` is imported; the classes themselves (and lmms-eval's model
modules they wrap) are imported only when an evaluation asks for one of them.
"""

from __future__ import annotations

from typing import Any

MODELS = "fastrm_bench.lmms_models"


def manifests() -> list[Any]:
    """``fastrm_llava_hf`` (alias ``fastrm``): lmms-eval's ``llava_hf`` (chat, and simple under ``--force_simple``),
    answering as it does and writing FastRM maps of every answer."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [
        ModelManifest("fastrm_llava_hf", simple_class_path=f"{MODELS}.FastRMLlavaHfSimple",
                      chat_class_path=f"{MODELS}.FastRMLlavaHf", aliases=("fastrm",)),
    ]

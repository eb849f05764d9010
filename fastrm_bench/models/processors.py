"""Load a VLM's processor, also on machines without torchvision (image-only fallback).

In transformers 5 several VLM processors (Qwen2-VL, Qwen2.5-VL, SmolVLM, ...) declare a video
processor among their sub-processors, and every video processor is a torchvision backend: with
no torchvision, ``AutoProcessor.from_pretrained`` fails although the harness never feeds videos.
The fallback builds, per processor class, a subclass whose declared sub-processors lack the video
processor (transformers derives them from ``__init__``'s parameters in ``get_attributes``) and
loads it with the same tokenizer, image processor and chat template from the same folder. The
subclass keeps the base class's ``__name__``, so a folder it saves names the stock class and
loads as the stock processor wherever torchvision is installed. Users with torchvision get the
stock processor: the fallback only runs when torchvision is missing, or when the stock loader's
error is about the video side (e.g. a folder saved without a video processor config).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import sys
from pathlib import Path

from transformers import AutoProcessor, ProcessorMixin
from transformers.utils import is_torchvision_available

from fastrm_bench.models.errors import ModelLoadError

VIDEO_ATTRIBUTES = ("video_processor",)
#: Processors whose own ``apply_chat_template`` only adds video defaults read from the video
#: processor (``num_frames``, ``fps``); their image-only variant uses ProcessorMixin's instead.
VIDEO_ONLY_CHAT_TEMPLATE_OVERRIDES = ("SmolVLMProcessor",)


def _stub_video_only_dependencies(base: type) -> None:
    """Let a processor whose ``__init__`` insists on a video-only dependency be built without it.

    SmolVLM's processor refuses to start without ``num2words``, which it only calls to write video
    prompts. An image-only processor never writes one, so a stub that raises a clear ImportError
    when called takes the module's ``None`` placeholder (a no-op where num2words is installed).
    """
    module = sys.modules[base.__module__]
    if "num2words" in vars(module) and module.num2words is None:

        def num2words(*_args, **_kwargs):
            raise ImportError("num2words is needed for SmolVLM video prompts: pip install num2words")

        module.num2words = num2words


def _chat_template_override(base: type[ProcessorMixin]) -> dict:
    """The image-only class's ``apply_chat_template`` where the base's own only sets video defaults read from the
    video processor (`VIDEO_ONLY_CHAT_TEMPLATE_OVERRIDES`): ProcessorMixin's, refusing video parts in one line."""
    if base.__name__ not in VIDEO_ONLY_CHAT_TEMPLATE_OVERRIDES:
        return {}

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        """ProcessorMixin's template rendering: the base override only sets video defaults."""
        turns = conversation if isinstance(conversation[0], (list, tuple)) else [conversation]
        for message in (m for turn in turns for m in turn):
            content = message.get("content") or []
            if any(isinstance(part, dict) and part.get("type") == "video" for part in content):
                raise ValueError(
                    f"{base.__name__} was loaded without a video processor (no torchvision): install torchvision for videos"
                )
        return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)

    return {"apply_chat_template": apply_chat_template}


@functools.cache
def image_only_processor_class(base: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """The subclass of `base` without a video processor (same tokenizer, image processor and template).

    transformers 5 derives a processor's sub-processors from its ``__init__`` parameters
    (``get_attributes``); the subclass lists them without ``video_processor``, so ``from_pretrained``
    loads only the tokenizer and image processor and passes ``None`` in the video slot. The base
    ``__init__`` hands that ``None`` to ``ProcessorMixin.__init__``, which zips positional
    sub-processors with ``get_attributes()`` and so drops it unchecked; ``__call__`` processes
    videos only when the instance has a ``video_processor`` attribute. ``__init__`` is not
    overridden: transformers reads its parameter names from ``__init__.__code__``.
    Build one directly with ``cls(image_processor=..., tokenizer=..., video_processor=None, ...)``.
    """
    base_attributes = base.get_attributes()
    if not any(a in VIDEO_ATTRIBUTES for a in base_attributes):
        return base
    _stub_video_only_dependencies(base)
    attributes = [a for a in base_attributes if a not in VIDEO_ATTRIBUTES]

    def get_attributes(cls) -> list[str]:
        return list(attributes)

    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs) -> list:
        loaded = iter(super(sub, cls)._get_arguments_from_pretrained(pretrained_model_name_or_path, processor_dict, **kwargs))
        return [None if a in VIDEO_ATTRIBUTES else next(loaded) for a in base_attributes]

    def from_args_and_dict(cls, args, processor_dict: dict, **kwargs):
        # a saved "video_processor" entry (kept for stock loading) must not reach __init__ as a dict
        processor_dict = {k: v for k, v in processor_dict.items() if k not in VIDEO_ATTRIBUTES}
        return super(sub, cls).from_args_and_dict(args, processor_dict, **kwargs)

    def from_dict(cls, processor_dict: dict, **kwargs):
        # transformers >= 5.25 loads sub-processors by name and calls from_dict: the video slot gets None (a base
        # whose __init__ requires it, SmolVLM's, then still builds), never the saved video config
        processor_dict = {**processor_dict, **dict.fromkeys(a for a in base_attributes if a in VIDEO_ATTRIBUTES)}
        return super(sub, cls).from_dict(processor_dict, **kwargs)

    sub = type(
        base.__name__,  # saved as processor_class: the folder loads as the stock class elsewhere
        (base,),
        {
            "get_attributes": classmethod(get_attributes),
            "_get_arguments_from_pretrained": classmethod(_get_arguments_from_pretrained),
            "from_args_and_dict": classmethod(from_args_and_dict),
            "from_dict": classmethod(from_dict),
            "__module__": __name__,
            "__qualname__": f"image_only({base.__qualname__})",
            "__doc__": f"{base.__name__} without a video processor (torchvision-free); see fastrm_bench.models.processors.",
            "image_only": True,
            **_chat_template_override(base),
        },
    )
    return sub


def _processor_class_name(path_or_id: str | os.PathLike) -> str | None:
    """The processor class a checkpoint declares (processor_config.json, else its model type)."""
    local = Path(path_or_id)
    if local.is_dir():
        for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
            file = local / name
            if file.is_file():
                with contextlib.suppress(ValueError, OSError):
                    cls = json.loads(file.read_text()).get("processor_class")
                    if cls:
                        return cls
    try:
        from transformers import AutoConfig
        from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

        return PROCESSOR_MAPPING_NAMES.get(AutoConfig.from_pretrained(path_or_id).model_type)
    except Exception:  # no config: nothing to fall back on
        return None


def _processor_class(name: str) -> type[ProcessorMixin] | None:
    transformers = importlib.import_module("transformers")
    cls = getattr(transformers, name, None)
    if isinstance(cls, type) and issubclass(cls, ProcessorMixin):
        return cls
    return torchvision_free_processor_class(name) if not is_torchvision_available() else None


@functools.cache
def torchvision_free_processor_class(name: str) -> type[ProcessorMixin] | None:
    """A processor class that transformers marks as needing torchvision only because its module imports a helper
    from the family's torchvision image processor module (Pixtral's ``get_resize_output_image_size``).

    Without torchvision, ``transformers.PixtralProcessor`` is a placeholder that raises on use. Every such helper
    has a twin in the family's PIL image processor module (``image_processing_pil_<family>``); the processor's module
    is imported with that PIL module standing in for the torchvision one, the stand-in removed afterwards. Returns
    None where the class is unknown or its module still fails to import.
    """
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    for family in (model_type for model_type, cls in PROCESSOR_MAPPING_NAMES.items() if cls == name):
        cls = _import_with_pil_stand_in(f"transformers.models.{family}", family, name)
        if cls is not None:
            return cls
    return None


def _import_with_pil_stand_in(package: str, family: str, name: str) -> type[ProcessorMixin] | None:
    """``package.processing_<family>.<name>``, imported with the PIL image processor module standing in for the
    torchvision one (see `torchvision_free_processor_class`); None where either module is missing."""
    torchvision_module = f"{package}.image_processing_{family}"
    try:
        stand_in = importlib.import_module(f"{package}.image_processing_pil_{family}")
    except ImportError:
        return None
    saved = sys.modules.get(torchvision_module)
    sys.modules[torchvision_module] = stand_in
    try:
        cls = getattr(importlib.import_module(f"{package}.processing_{family}"), name, None)
    except ImportError:
        return None
    finally:
        if saved is None:
            sys.modules.pop(torchvision_module, None)
        else:
            sys.modules[torchvision_module] = saved
    return cls if isinstance(cls, type) and issubclass(cls, ProcessorMixin) else None


def _video_side_failure(err: BaseException) -> bool:
    """Whether a loading error (or its cause) comes from the video side: torchvision, video config, num2words."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        text = str(err).lower()
        if any(word in text for word in ("torchvision", "video processor", "video_preprocessor", "num2words")):
            return True
        err = err.__cause__ or err.__context__
    return False


def load_processor(path_or_id: str | os.PathLike, **kwargs) -> ProcessorMixin:
    """`AutoProcessor.from_pretrained`, or its torchvision-free variant where only the torchvision side fails.

    The fallback (`image_only_processor_class` of the class, itself imported with
    `torchvision_free_processor_class` where transformers marks it as needing torchvision) runs only
    when torchvision is missing or the stock error is about the video side (torchvision, a missing
    video processor config, SmolVLM's num2words). Raises `ModelLoadError` naming the folder and
    the fix when neither loads.
    """
    try:
        return AutoProcessor.from_pretrained(str(path_or_id), **kwargs)
    except Exception as err:  # re-raised below with the reason and the fix
        first = err
    name = _processor_class_name(path_or_id)
    cls = _processor_class(name) if name else None
    needs_video = cls is not None and any(a in VIDEO_ATTRIBUTES for a in cls.get_attributes())
    if cls is not None and (not is_torchvision_available() or _video_side_failure(first)):
        try:  # without its video processor, and (Pixtral's) imported without torchvision
            return image_only_processor_class(cls).from_pretrained(str(path_or_id), **kwargs)
        except Exception as err:
            raise ModelLoadError(
                f"cannot load the processor of {str(path_or_id)!r} ({name}), not even without torchvision: {err}. "
                f"The stock loader said: {first}. Check that the folder holds the tokenizer and preprocessor_config.json "
                "of a saved model (save_pretrained of both model and processor), or install torchvision."
            ) from err
    hint = "install torchvision (its video processor needs it), " if needs_video else ""
    raise ModelLoadError(
        f"cannot load the processor of {str(path_or_id)!r}: {first}. Fix: {hint}check that the folder holds the tokenizer, "
        "preprocessor_config.json and processor_config.json written by processor.save_pretrained, or that the hub id is cached "
        "(HF_HUB_OFFLINE=1 never downloads)."
    ) from first

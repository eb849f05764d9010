"""lmms-eval models that answer exactly as the lmms-eval model they wrap and write FastRM maps of every answer.

Each class is an lmms-eval model class (``llava_hf``, chat and simple: LLaVA-1.5 and LLaVA-NeXT checkpoints) with
`FastRMMaps` in front: its ``generate_until`` hands lmms-eval's requests one at a time to the wrapped class's
own ``generate_until`` (these classes answer one request per ``generate`` call anyway: batch size 1), and around
each answer `MapsRecorder` keeps what the model's ``generate`` computed (its inputs and the final-norm hidden states)
and runs the `fastrm` proxy on it. The maps are written under ``maps_dir`` (a model argument; pass lmms-eval's
``--output_path``) after every ``generate_until`` call, for ``fastrm-bench score --from-lmms-eval``.

Two things differ from the wrapped class, and neither changes an answer:

- ``pretrained`` may also be a model name fastrm-bench ships (``tiny-llava-shapes``): it is read from that folder;
- processors are loaded with `fastrm_bench.models.processors.load_processor`: the stock ``AutoProcessor`` where
  torchvision is installed, else the same processor without its video half (transformers 5 cannot build some
  families' processors at all without torchvision, although an image task never uses them).

Qwen2-VL has no wrapper: lmms-eval 0.7.3's ``qwen2_vl`` imports qwen_vl_utils, which imports torchvision, and its
generic ``huggingface`` class loads checkpoints as ``AutoModel`` under transformers 5 (no generation head).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.models.chat.llava_hf import LlavaHf
from lmms_eval.models.simple.llava_hf import LlavaHf as LlavaHfSimple
from lmms_eval.protocol import ChatMessages

from fastrm_bench.lmms_maps import MapsRecorder
from fastrm_bench.models.adapter import HFVisionLanguageAdapter
from fastrm_bench.models.families import family_for
from fastrm_bench.models.processors import load_processor
from fastrm_bench.models.zoo import model_folder


class _ProcessorLoader:
    """Stands for ``AutoProcessor`` in the wrapped class's module while it loads (see the module docstring)."""

    @staticmethod
    def from_pretrained(source: Any, **kwargs: Any) -> Any:
        return load_processor(source, **kwargs)


@contextlib.contextmanager
def _loading_processors(cls: type) -> Iterator[None]:
    """Inside: the modules of ``cls``'s lmms-eval bases load processors with `_ProcessorLoader`."""
    modules = {sys.modules[base.__module__] for base in cls.__mro__ if base.__module__.startswith("lmms_eval.")}
    saved = {m: m.AutoProcessor for m in modules if hasattr(m, "AutoProcessor")}
    for module in saved:
        module.AutoProcessor = _ProcessorLoader
    try:
        yield
    finally:
        for module, original in saved.items():
            module.AutoProcessor = original


class FastRMMaps:
    """In front of an lmms-eval model class: its answers, plus FastRM maps of each written under ``maps_dir``."""

    def __init__(self, pretrained: str, maps_dir: str = ".", fastrm_checkpoint: str | None = None, **kwargs: Any):
        folder = model_folder(pretrained)
        source = str(folder) if folder is not None else pretrained
        with _loading_processors(type(self)):
            super().__init__(pretrained=source, **kwargs)
        model = self.model
        processor = load_processor(source)
        adapter = HFVisionLanguageAdapter(model, processor, pretrained, family_for(model.config.model_type))
        self._maps = MapsRecorder(adapter, maps_dir, fastrm_checkpoint)

    def generate_until(self, requests: list[Instance]) -> list[Any]:
        """The wrapped class's answers, one request at a time, each explained by FastRM."""
        if self.batch_size != 1 or self.world_size != 1:
            raise ValueError("fastrm models explain one answer per generate call in one process: pass batch_size=1 "
                             "and run without data parallelism")
        answers = []
        for request in requests:
            with self._maps.capturing() as capture:
                answer = super().generate_until([request])[0]
            text = answer if isinstance(answer, str) else answer.text
            doc = self._doc(request)
            self._maps.record(capture, self._images(request, doc), request.task_name, request.doc_id, doc, text)
            answers.append(answer)
        self._maps.write()
        return answers

    def _doc(self, request: Instance) -> dict[str, Any]:
        """The request's document (its arguments end with doc_id, task, split in both of lmms-eval's layouts)."""
        doc_id, task, split = request.args[-3:]
        return self.task_dict[task][split][doc_id]

    def _images(self, request: Instance, doc: dict[str, Any]) -> list[Any]:
        """The request's images, as the wrapped class reads them (lmms-eval's two request layouts)."""
        args = request.args
        if self.is_simple:  # (context, generation kwargs, doc_to_visual, doc_id, task, split)
            return list(args[2](doc))
        messages = ChatMessages(messages=args[1](doc))  # (context, doc_to_messages, generation kwargs, doc_id, ...)
        images, _, _ = messages.extract_media()
        return list(images)


class FastRMLlavaHf(FastRMMaps, LlavaHf):
    """lmms-eval's ``llava_hf`` (chat) with FastRM maps of every answer."""


class FastRMLlavaHfSimple(FastRMMaps, LlavaHfSimple):
    """lmms-eval's ``llava_hf`` (simple) with FastRM maps of every answer."""

"""Processor loading (placeholder until the image-only fallback lands)."""

from __future__ import annotations

import contextlib
import io
from typing import Any


def load_processor(source: str) -> Any:
    from transformers import AutoProcessor

    from fastrm_bench.models.adapter import ModelLoadError

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return AutoProcessor.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot load the processor of {source!r}: {err}") from err

"""Checks of weight files before a loader opens them, so a damaged checkpoint is one clear line.

The safetensors library reports a pickle saved as ``model.safetensors`` as "header too large"
and a cut file as a deserialisation error; the loaders (the LLaVA adapter, the FastRM proxy)
call `read_safetensors_shapes` first and turn `InvalidWeightsFile` into their own error type.
Only the header is read: checking a 7B checkpoint costs nothing.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

#: safetensors headers are JSON of a few MB at most; anything larger is not a safetensors file
MAX_HEADER_BYTES = 100 * 1024 * 1024
_PICKLE_PREFIXES = (b"\x80", b"PK\x03\x04")  # a pickle protocol opcode; a torch.save zip archive
_SAVE_HINT = ("re-save the weights with safetensors (`safetensors.torch.save_file`, or `save_pretrained` of "
              "transformers / FastRM)")


class InvalidWeightsFile(ValueError):
    """A weights file that is missing, not safetensors, or cut short; the message names the file and the fix."""


def read_safetensors_shapes(path: str | Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors header, after checking the file holds every tensor it declares."""
    path = Path(path)
    if not path.is_file():
        raise InvalidWeightsFile(f"{path} does not exist")
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if head.startswith(_PICKLE_PREFIXES):
            raise InvalidWeightsFile(f"{path} is a pickle (torch.save), not safetensors; pickles are refused: {_SAVE_HINT}")
        if len(head) < 8:
            raise InvalidWeightsFile(f"{path} is empty or cut short ({size} bytes); {_SAVE_HINT}")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(MAX_HEADER_BYTES, size - 8):
            raise InvalidWeightsFile(f"{path} is not a safetensors file (its header length is impossible); {_SAVE_HINT}")
        try:
            header = json.loads(fh.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InvalidWeightsFile(f"{path} is not a safetensors file (unreadable header); {_SAVE_HINT}") from None
    if not isinstance(header, dict):
        raise InvalidWeightsFile(f"{path} is not a safetensors file (its header is not a table); {_SAVE_HINT}")
    shapes: dict[str, list[int]] = {}
    data_bytes = size - 8 - header_len
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = entry["data_offsets"]
            shape = [int(d) for d in entry["shape"]]
        except (KeyError, TypeError, ValueError):
            raise InvalidWeightsFile(f"{path} is not a safetensors file (bad entry {name!r}); {_SAVE_HINT}") from None
        if not 0 <= start <= end <= data_bytes:
            raise InvalidWeightsFile(f"{path} is cut short: tensor {name!r} lies past the end of the file; {_SAVE_HINT}")
        shapes[name] = shape
    return shapes


def loading_problem(info: dict[str, Any]) -> str | None:
    """Why weights do not fill the model their config describes, from transformers' ``output_loading_info``
    (loaded with ``ignore_mismatched_sizes=True``, transformers would re-initialise such tensors at random)."""
    mismatched = sorted(info.get("mismatched_keys") or [], key=str)
    if mismatched:
        key, saved, wanted = mismatched[0]
        return (f"the weights do not match config.json ({len(mismatched)} tensors, e.g. {key} is {list(saved)} in the "
                f"weights, {list(wanted)} by the config); keep the config.json saved with these weights "
                "(save_pretrained writes both)")
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        return (f"the weights lack {len(missing)} tensors of this model (e.g. {missing[0]}): they are the weights of "
                "another model; point --model at a saved LLaVA folder")
    return None

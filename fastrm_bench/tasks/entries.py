"""Entries of official files before their images are opened, and the checks of their fields' types.

Apart from `fastrm_bench.tasks.base` so that the answer-file readers (`tasks.predictions`) and the
tasks share them without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

#: what a field of an official file may hold, by name: `entry_problem` checks types, it never coerces
INT, STR, LIST, DICT, NULL = int, str, list, dict, type(None)
TYPE_NAMES = {int: "an integer", str: "a string", list: "a list", dict: "an object", type(None): "null",
               float: "a number", bool: "a boolean"}


def type_name(value: Any) -> str:
    """How a JSON value's type is called in messages (``true`` is a boolean, not an integer)."""
    return TYPE_NAMES.get(type(value), type(value).__name__)


def _matches(value: Any, kinds: type | tuple[type, ...]) -> bool:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return any(type(value) is k for k in kinds)  # exact types: a boolean is no integer, a float no integer


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def entry_problem(entry: Any, fields: dict[str, type | tuple[type, ...]], optional: dict[str, Any] | None = None) -> str | None:
    """What is wrong with one entry of an official file (not an object, a missing key, a wrong type), or None.

    A wrong type is reported, never converted: ``"question": 12345`` is a mistake in the file, not a question.
    """
    if not isinstance(entry, dict):
        return f"is {type_name(entry)}, not an object"
    missing = [k for k in fields if k not in entry]
    if missing:
        return f"lacks {', '.join(repr(k) for k in missing)}"
    for key, kinds in {**fields, **{k: v for k, v in (optional or {}).items() if k in entry}}.items():
        if not _matches(entry[key], kinds):
            expected = " or ".join(TYPE_NAMES[k] for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
            return f"has {key!r} {shown(entry[key])} ({type_name(entry[key])}), expected {expected}"
    return None


def list_problem(value: Any, key: str, kinds: type | tuple[type, ...]) -> str | None:
    """What is wrong with a list field whose items must be of ``kinds`` (e.g. annotation ids), or None."""
    if not isinstance(value, list):
        return f"has {key!r} {shown(value)} ({type_name(value)}), expected a list"
    bad = [v for v in value if not _matches(v, kinds)]
    if bad:
        expected = " or ".join(TYPE_NAMES[k] for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
        return f"has {key!r} with item {shown(bad[0])} ({type_name(bad[0])}), expected {expected}"
    return None



@dataclass
class Record:
    """One question before its image is opened (cheap to hold for a whole split)."""

    id: str
    image: Path | Callable[[], Image.Image]  # a file, or a loader (Hugging Face datasets decode lazily)
    question: str
    references: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    ann_ids: list[int] = field(default_factory=list)
    #: why this entry of the task's files could not be parsed (the sample is then reported, or skipped by a run)
    error: str | None = None

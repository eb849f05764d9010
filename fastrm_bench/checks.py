"""Checks of a command's names and arguments that import nothing heavy (no torch, no model, no data).

They run first, so that a typo in a method, task or metric name, a broken spec it names, a wrong
``--limit`` or an ``--output-dir`` that cannot be written is reported in the time ``fastrm-bench list``
takes, not after a model has loaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from fastrm_bench.registry import MODELS
from fastrm_bench.specs import check_name

#: what ``--limit`` accepts for "every question of the split"
WHOLE_SPLIT = "all"


def parse_limit(text: str | int | None) -> int | None:
    """``--limit``: a positive number of questions, or ``all`` (None: the whole split)."""
    if text is None or isinstance(text, int):
        value = text
    elif text.strip().lower() == WHOLE_SPLIT:
        return None
    else:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"--limit takes a positive number of questions or '{WHOLE_SPLIT}', got {text!r}") from None
    if value is not None and value < 1:
        raise ValueError(f"--limit must be a positive number of questions (or '{WHOLE_SPLIT}' for the whole split), "
                         f"got {value}")
    return value


def check_names(method: str | None = None, task: str | None = None, metrics: Sequence[str] = (),
                aggregation: str | None = None) -> None:
    """Raise `UnknownNameError` (with "did you mean") or `SpecFileError` for the first name that cannot be resolved."""
    for kind, names in (("methods", [method]), ("tasks", [task]), ("metrics", list(metrics)),
                        ("aggregations", [aggregation])):
        for name in names:
            if name is not None:
                check_name(kind, name)


def model_problem(model: str) -> str | None:
    """Why ``--model`` cannot name a model (a missing folder, a file), or None; hub ids are left to the loader."""
    if model in MODELS:
        return None
    path = Path(model).expanduser()
    if path.exists():
        return None if path.is_dir() else f"--model {model} is a file; expected a saved-model folder or a registered name"
    hub_shaped = model.count("/") == 1 and not model.startswith((".", "/", "~"))
    if hub_shaped and not Path(model.split("/")[0]).is_dir():
        return None
    return (f"--model {model}: no such folder (and no registered model of that name: "
            f"{', '.join(MODELS.names())}; a hub id looks like org/name)")


def output_dir_problem(output_dir: str | Path | None) -> str | None:
    """Why a run directory cannot be made or written at ``output_dir`` (a file in the way, no permission), or None."""
    path = Path(output_dir if output_dir is not None else "runs").expanduser()
    if path.exists() and not path.is_dir():
        return f"--output-dir {path} is a file, not a folder: choose another --output-dir"
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"--output-dir {path}: {existing} is a file, so no folder can be made inside it: choose another --output-dir"
    if not os.access(existing, os.W_OK | os.X_OK):
        return (f"--output-dir {path}: {existing} is not writable by this user: make it writable (chmod u+w {existing}) "
                "or choose another --output-dir")
    return None


def check_run(method: str, task: str, metrics: Sequence[str], aggregation: str, model: str,
              output_dir: str | Path | None) -> None:
    """The light checks of `fastrm-bench run`: names first (one error each), then model and output folder together."""
    check_names(method, task, metrics, aggregation)
    problems = [p for p in (model_problem(model), output_dir_problem(output_dir)) if p]
    if problems:
        raise ValueError("; ".join(problems))

"""The folder fastrm-bench builds into (the embedded world, distillation datasets): ``FASTRM_BENCH_CACHE``, by
default ``~/.cache/fastrm-bench``; and paths inside it written so that they hold on another machine.

A run records where its data came from. A path inside the cache is recorded as ``$FASTRM_BENCH_CACHE/...``
(`portable_path`) rather than as this machine's absolute path, and read back against the reader's own cache
(`resolve_portable`): committed runs then name no one's home folder, and a run made with one cache resumes or
rescores with another.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_VARIABLE = "FASTRM_BENCH_CACHE"
_PREFIX = f"${CACHE_VARIABLE}"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_VARIABLE, Path.home() / ".cache" / "fastrm-bench"))


def portable_path(path: str | Path) -> str:
    """``path`` resolved; inside the cache, as ``$FASTRM_BENCH_CACHE/<path inside it>``."""
    resolved = Path(path).expanduser().resolve()
    try:
        inside = resolved.relative_to(cache_root().expanduser().resolve())
    except ValueError:
        return str(resolved)
    return f"{_PREFIX}/{inside.as_posix()}" if inside.parts else _PREFIX


def resolve_portable(recorded: str) -> Path:
    """The folder a `portable_path` stands for on this machine (other paths as they are)."""
    if recorded == _PREFIX or recorded.startswith(_PREFIX + "/"):
        return cache_root() / recorded[len(_PREFIX) :].lstrip("/")
    return Path(recorded)

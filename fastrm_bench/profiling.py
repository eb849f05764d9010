"""Peak memory of one piece of work, not counting what ran before it.

- CUDA: `torch.cuda.reset_peak_memory_stats` then `max_memory_allocated`, minus what was
  allocated at the start.
- CPU (Linux): the kernel's resident-set high-water mark (VmHWM) is reset by writing "5" to
  ``/proc/self/clear_refs``; the peak is VmHWM at the end minus the resident size at the start.
  Where that is not possible the peak is reported as None rather than guessed. The CPU number
  is a lower bound in a process that already did similar work (freed memory is reused without
  growing the resident set): `fastrm-bench profile` therefore measures each point in a fresh
  process; the per-sample peaks of a run on CPU are only indicative.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

T = TypeVar("T")

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Context manager: ``peak_bytes`` is the extra memory the block needed at its peak."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.peak_bytes: int | None = None
        self._start = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            try:
                _CLEAR_REFS.write_text("5")
                self._start = (_status_kib("VmRSS") or 0) * 1024
            except OSError:
                self._start = -1
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._start
        elif self._start >= 0:
            hwm = _status_kib("VmHWM")
            self.peak_bytes = None if hwm is None else max(0, hwm * 1024 - self._start)


def in_fresh_process(work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` in a new (spawned) process: on CPU a peak is only measurable where nothing ran before."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(work, *args).result()

"""Which share of a job this process does: the only process, or one rank of `accelerate launch` / torchrun.

Data parallelism here is one model replica per process, each answering its own samples, as
lmms-eval does: nothing is synchronised during the work, only at its start (the main process
checks the output folder and says what is left) and at its end (the main process merges). The
ranks come from the launcher's environment through accelerate's `PartialState` (gloo on CPU,
NCCL on GPUs; one node or several, as accelerate is configured).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: environment variable a launcher sets to the number of processes of the job
WORLD_SIZE_ENV = "WORLD_SIZE"


@dataclass(frozen=True)
class Ranks:
    """This process's place among the job's processes: rank ``index`` of ``count`` (0 of 1 when alone)."""

    index: int = 0
    count: int = 1
    #: the device this rank should use (``cuda:LOCAL_RANK`` on GPUs; None: the caller's default)
    device: str | None = None

    @property
    def is_main(self) -> bool:
        return self.index == 0

    @property
    def parallel(self) -> bool:
        return self.count > 1

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's items: every ``count``-th from ``index``, so shares differ by at most one item."""
        return list(items[self.index :: self.count])

    def wait_for_everyone(self) -> None:
        """A barrier; nothing to wait for when alone."""
        if self.parallel:
            import torch.distributed as dist

            dist.barrier()

    def from_main(self, value: Any) -> Any:
        """The main process's ``value`` on every rank (picklable; others pass anything, e.g. None)."""
        if not self.parallel:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """The main process does the block first (e.g. builds a cache), the others after it."""
        if not self.is_main:
            self.wait_for_everyone()
        yield
        if self.is_main:
            self.wait_for_everyone()


def current_ranks() -> Ranks:
    """The ranks of the launched job this process belongs to; ``Ranks()`` when it was not launched as one."""
    if int(os.environ.get(WORLD_SIZE_ENV, "1")) <= 1:
        return Ranks()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # gloo on CPU, NCCL on GPUs
    device = str(state.device) if state.device is not None and state.device.type != "cpu" else None
    return Ranks(state.process_index, state.num_processes, device)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_argv(command: str, params: dict[str, Any], leave_out: tuple[str, ...] = ()) -> list[str]:
    """A command's parsed options written back as arguments (``--name value``, repeated lists, ``--flag/--no-flag``)."""
    from enum import Enum

    argv = [command]
    for name, value in params.items():
        if name in leave_out or value is None:
            continue
        option = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(option if value else f"--no-{name.replace('_', '-')}")
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            argv += [option, str(item.value if isinstance(item, Enum) else item)]
    return argv


def launch(num_processes: int, argv: list[str]) -> int:
    """Run ``python -m fastrm_bench ARGV`` as ``num_processes`` ranks on this machine; their exit code.

    The same as ``accelerate launch --multi_gpu --num_processes N -m fastrm_bench ARGV`` on GPUs
    (accelerate's multi-GPU launcher is torchrun); torchrun also works on CPU, where accelerate's own
    multi-CPU launch needs MPI. If a rank dies, torchrun stops the others; the run resumes with the
    same command.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(num_processes),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "fastrm_bench", *argv]
    from fastrm_bench.specs import SPEC_PATH_ENV, user_spec_dirs

    threads = os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes)))
    spec_path = os.pathsep.join([*(str(p.resolve()) for p in user_spec_dirs()), os.environ.get(SPEC_PATH_ENV, "")])
    env = {**os.environ, "OMP_NUM_THREADS": threads, SPEC_PATH_ENV: spec_path.strip(os.pathsep)}
    return subprocess.call(command, env=env)

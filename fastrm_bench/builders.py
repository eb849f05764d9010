"""From names to objects: spec resolution plus registry instantiation, in one place."""

from __future__ import annotations

from typing import Any

from fastrm_bench.interfaces import ExplanationMethod, Task
from fastrm_bench.registry import METHODS, TASKS
from fastrm_bench.specs import Spec, resolve


def create_task(name: str, **overrides: Any) -> tuple[Task, Spec]:
    """The task a spec or registered name stands for; ``overrides`` (e.g. data_root) win over the spec."""
    spec = resolve("tasks", name)
    params = {**spec.params, **{k: v for k, v in overrides.items() if v is not None}}
    task = TASKS.create(spec.implementation, **params)
    task.name = spec.name
    return task, spec


def create_method(name: str, **overrides: Any) -> tuple[ExplanationMethod, Spec]:
    spec = resolve("methods", name)
    params = {**spec.params, **{k: v for k, v in overrides.items() if v is not None}}
    method = METHODS.create(spec.implementation, **params)
    method.name = spec.name
    return method, spec

"""From names to objects: spec resolution plus registry instantiation, in one place."""

from __future__ import annotations

from typing import Any

from fastrm_bench.interfaces import ExplanationMethod, Task
from fastrm_bench.registry import METHODS, TASKS, Registry
from fastrm_bench.specs import Spec, resolve


def _create(kind: str, registry: Registry, name: str, overrides: dict[str, Any]) -> tuple[Any, Spec]:
    spec = resolve(kind, name)
    params = {**spec.params, **{k: v for k, v in overrides.items() if v is not None}}
    obj = registry.create(spec.implementation, **params)
    obj.name = spec.name
    return obj, spec


def create_task(name: str, **overrides: Any) -> tuple[Task, Spec]:
    """The task a spec or registered name stands for; ``overrides`` (e.g. data_root) win over the spec."""
    return _create("tasks", TASKS, name, overrides)


def create_method(name: str, **overrides: Any) -> tuple[ExplanationMethod, Spec]:
    """The method a spec or registered name stands for; ``overrides`` win over the spec's params."""
    return _create("methods", METHODS, name, overrides)

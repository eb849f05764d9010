"""From names to objects: spec resolution plus registry instantiation, in one place."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from fastrm_bench.interfaces import ExplanationMethod, MethodNeeds, Task
from fastrm_bench.registry import AGGREGATIONS, METHODS, METRICS, TASKS, Registry
from fastrm_bench.specs import Spec, resolve


class SpecError(ValueError):
    """A spec whose parameters its implementation does not take; the message names them and the accepted ones."""


def accepted_params(factory: Callable[..., Any]) -> list[str] | None:
    """Keyword parameters ``factory`` takes, following ``**kwargs`` up a class's bases; None: it takes any."""
    is_class = inspect.isclass(factory)
    chain = [c.__init__ for c in factory.__mro__ if c is not object and "__init__" in vars(c)] if is_class else [factory]
    accepted: list[str] = []
    for function in chain:
        try:
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):  # no signature to read: the factory checks its own arguments
            return None
        accepted += [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return accepted
    return accepted if is_class else None  # object.__init__ takes nothing more


def check_params(kind: str, spec: Spec, factory: Callable[..., Any], params: dict[str, Any]) -> None:
    """Refuse unknown parameters (a typo in a spec's ``params``) before anything is built or written."""
    accepted = accepted_params(factory)
    unknown = sorted(set(params) - set(accepted)) if accepted is not None else []
    if unknown:
        close = [c for u in unknown for c in difflib.get_close_matches(u, accepted, n=1)]
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        where = spec.path or f"the {kind[:-1]} {spec.name!r}"
        raise SpecError(f"{where}: unknown parameter(s) {', '.join(repr(u) for u in unknown)} for {kind[:-1]} "
                        f"{spec.implementation!r}.{hint} It accepts: {', '.join(accepted) or '(none)'}.")


def _create(kind: str, registry: Registry, name: str, overrides: dict[str, Any]) -> tuple[Any, Spec]:
    spec = resolve(kind, name)
    params = {**spec.params, **{k: v for k, v in overrides.items() if v is not None}}
    factory = registry.get(spec.implementation)
    check_params(kind, spec, factory, params)
    obj = factory(**params)
    obj.name = spec.name
    return obj, spec


def create_task(name: str, **overrides: Any) -> tuple[Task, Spec]:
    """The task a spec or registered name stands for; ``overrides`` (e.g. data_root) win over the spec."""
    return _create("tasks", TASKS, name, overrides)


def create_task_for_model(name: str, model: str, data_root: str | None = None, **overrides: Any) -> tuple[Task, Spec]:
    """`create_task` on the data ``model`` is run on: ``data_root`` when given, else the embedded world variant
    the model was trained on (`trained_world`: variable-size scenes for `tiny-qwen-shapes`), else the task's own."""
    from fastrm_bench.models.zoo import trained_world

    world = trained_world(model) if data_root is None else None
    task, spec = create_task(name, data_root=str(world) if world is not None else data_root, **overrides)
    if world is not None:
        task.uses_embedded_world = True
    return task, spec


def create_method(name: str, **overrides: Any) -> tuple[ExplanationMethod, Spec]:
    """The method a spec or registered name stands for; ``overrides`` win over the spec's params."""
    return _create("methods", METHODS, name, overrides)


def method_needs(name: str) -> MethodNeeds:
    """What the method a spec or registered name stands for needs (`MethodNeeds`): callers decide by it, not by names."""
    return create_method(name)[0].needs


def recorded_method_needs(method_spec: dict[str, Any]) -> MethodNeeds | None:
    """The needs of the method a run's ``config.json`` records (its ``method_spec``), read from its class;
    None when that implementation is no longer registered (a plug-in uninstalled since)."""
    try:
        return METHODS.get(method_spec["implementation"]).needs
    except KeyError:  # UnknownNameError, or a spec without an implementation
        return None


def create_metric(name: str, **overrides: Any) -> tuple[Any, Spec]:
    """The metric (`fastrm_bench.metrics.base.Metric`) a spec or registered name stands for."""
    return _create("metrics", METRICS, name, overrides)


def create_aggregation(name: str, **overrides: Any) -> tuple[Any, Spec]:
    """The per-token -> sample map aggregation (`fastrm_bench.aggregation.Aggregation`) a name stands for."""
    return _create("aggregations", AGGREGATIONS, name, overrides)

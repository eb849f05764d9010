"""One generic, typed registry for methods, tasks, models, metrics and aggregations.

Modelled on timm (`register_model` / `create_model` / `list_models`) and on
lm-evaluation-harness' lazy registry:
- decorator registration (`@METHODS.register("chefer", aliases=("baseline",))`);
- lazy targets: `"package.module:attr"` strings are imported only when first used, so
  listing names never imports torch-heavy modules;
- third-party plugins through entry-point groups (`fastrm_bench.methods`, ...), whose value
  is such a `"module:attr"` target;
- an unknown name raises `UnknownNameError` with "did you mean ...".
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is neither registered nor an alias; the message suggests the closest."""

    def __init__(self, kind: str, name: str, known: list[str]):
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        self.message = f"Unknown {kind} {name!r}.{hint} Known: {', '.join(sorted(known)) or '(none)'}."
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


def import_target(target: str) -> object:
    """Resolve ``"package.module:attr"`` (attr may be dotted)."""
    module_name, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"lazy target {target!r} must look like 'package.module:attr'")
    obj: object = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class Entry(Generic[T]):
    name: str
    target: T | str
    description: str = ""
    source: str = "builtin"

    def load(self) -> T:
        if isinstance(self.target, str):
            self.target = import_target(self.target)  # type: ignore[assignment]
        return self.target  # type: ignore[return-value]


class Registry(Generic[T]):
    """Named factories of one kind (``T``), with aliases, lazy targets and entry-point plugins."""

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}
        self._plugins_loaded = False

    def register(
        self, name: str, target: T | str | None = None, *, description: str = "", aliases: tuple[str, ...] = (),
        source: str = "builtin",
    ) -> Callable[[T], T] | T | str:
        """Register ``target`` under ``name``; without a target, works as a decorator."""

        def add(obj: T | str) -> T | str:
            if name in self._entries or name in self._aliases:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            doc = description
            if not doc and not isinstance(obj, str):
                doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()[0] if getattr(obj, "__doc__", None) else ""
            self._entries[name] = Entry(name, obj, doc, source)
            for alias in aliases:
                self._aliases[alias] = name
            return obj

        return add if target is None else add(target)  # type: ignore[return-value]

    def _load_plugins(self) -> None:
        if self._plugins_loaded or not self.entry_point_group:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            if ep.name not in self._entries:
                dist = getattr(ep, "dist", None)
                source = f"plugin:{dist.name}" if dist is not None else "plugin"
                self._entries[ep.name] = Entry(ep.name, ep.value, "", source)

    def resolve_name(self, name: str) -> str:
        self._load_plugins()
        name = self._aliases.get(name, name)
        if name not in self._entries:
            raise UnknownNameError(self.kind, name, self.names(include_aliases=True))
        return name

    def entry(self, name: str) -> Entry[T]:
        return self._entries[self.resolve_name(name)]

    def get(self, name: str) -> T:
        return self.entry(name).load()

    def create(self, name: str, /, **params: object) -> object:
        """Instantiate (call) the registered factory with ``params``."""
        factory = self.get(name)
        return factory(**params)  # type: ignore[operator]

    def names(self, include_aliases: bool = False) -> list[str]:
        self._load_plugins()
        names = list(self._entries)
        return sorted(names + list(self._aliases)) if include_aliases else sorted(names)

    def describe(self, name: str) -> str:
        """One-line description; loads a lazy target only when it has no description yet."""
        entry = self.entry(name)
        if not entry.description:
            obj = entry.load()
            doc = (getattr(obj, "__doc__", None) or "").strip()
            entry.description = doc.splitlines()[0] if doc else ""
        return entry.description

    def __contains__(self, name: object) -> bool:
        try:
            self.resolve_name(str(name))
        except UnknownNameError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def unregister(self, name: str) -> None:
        """Remove ``name`` and its aliases (for tests and interactive use)."""
        self._entries.pop(name, None)
        for alias in [a for a, n in self._aliases.items() if n == name]:
            del self._aliases[alias]


METHODS: Registry = Registry("method", "fastrm_bench.methods")
TASKS: Registry = Registry("task", "fastrm_bench.tasks")
MODELS: Registry = Registry("model", "fastrm_bench.models")
#: model families keyed by ``config.model_type`` (values: `fastrm_bench.models.families.Family` objects)
FAMILIES: Registry = Registry("model family", "fastrm_bench.families")
#: run-level measurements (`fastrm_bench.metrics.base.Metric` classes)
METRICS: Registry = Registry("metric", "fastrm_bench.metrics")
#: per-token maps -> sample map (`fastrm_bench.aggregation.Aggregation` classes)
AGGREGATIONS: Registry = Registry("aggregation", "fastrm_bench.aggregations")

"""Declarative specs: one YAML per registered variant (``methods/*.yaml``, ``tasks/*.yaml``).

A spec names a registered implementation and its parameters::

    name: pope-adversarial
    implementation: pope
    description: POPE, adversarial negatives only.
    params: {category: adversarial}

``--method X`` / ``--task X`` accept a spec name or a registered name. Specs are searched in
the package (shipped in the wheel), then in folders from ``--spec-dir`` or the environment
variable ``FASTRM_BENCH_SPEC_PATH`` (``os.pathsep``-separated; later folders win).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fastrm_bench.registry import AGGREGATIONS, METHODS, METRICS, TASKS, Registry, UnknownNameError

SPEC_PATH_ENV = "FASTRM_BENCH_SPEC_PATH"
#: the kinds a spec folder may hold (``methods/``, ``tasks/``, ``metrics/``, ``aggregations/``) and their registries
REGISTRIES: dict[str, Registry] = {"methods": METHODS, "tasks": TASKS, "metrics": METRICS, "aggregations": AGGREGATIONS}
_extra_dirs: list[Path] = []


@dataclass(frozen=True)
class Spec:
    name: str
    implementation: str
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    path: str | None = None


def add_spec_dir(path: str | Path) -> None:
    """Add a user folder holding ``methods/`` and/or ``tasks/`` subfolders of YAML specs."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"spec folder {p} does not exist")
    if p not in _extra_dirs:
        _extra_dirs.append(p)


def user_spec_dirs() -> list[Path]:
    """The folders added with `add_spec_dir` (``--spec-dir``), in order: what a launched process must be given."""
    return list(_extra_dirs)


def _builtin_root() -> Path:
    """Specs ship as package data (``fastrm_bench/_specs``); in a source checkout, the repo root."""
    packaged = Path(str(resources.files("fastrm_bench"))) / "_specs"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent


def spec_roots() -> list[Path]:
    env = [Path(p) for p in os.environ.get(SPEC_PATH_ENV, "").split(os.pathsep) if p]
    return [_builtin_root(), *env, *_extra_dirs]


def _read(path: Path) -> Spec:
    data = yaml.safe_load(path.read_text()) or {}
    missing = {"name", "implementation"} - set(data)
    if missing:
        raise ValueError(f"spec {path} lacks {sorted(missing)}")
    unknown = set(data) - {"name", "implementation", "description", "params"}
    if unknown:
        raise ValueError(f"spec {path} has unknown keys {sorted(unknown)}")
    return Spec(data["name"], data["implementation"], data.get("description", ""), dict(data.get("params") or {}), str(path))


def load_specs(kind: str) -> dict[str, Spec]:
    """All specs of ``kind`` (a key of `REGISTRIES`) by name; later roots override earlier ones."""
    specs: dict[str, Spec] = {}
    for root in spec_roots():
        folder = root / kind
        if folder.is_dir():
            for path in sorted(folder.glob("*.y*ml")):
                spec = _read(path)
                specs[spec.name] = spec
    return specs


def resolve(kind: str, name: str) -> Spec:
    """The spec called ``name``, or an implicit spec for a registered name; else "did you mean"."""
    registry: Registry = REGISTRIES[kind]
    specs = load_specs(kind)
    if name in specs:
        return specs[name]
    try:
        implementation = registry.resolve_name(name)
    except UnknownNameError:
        raise UnknownNameError(registry.kind, name, sorted(set(specs) | set(registry.names(include_aliases=True)))) from None
    return Spec(name, implementation, registry.describe(implementation))


def available(kind: str) -> dict[str, str]:
    """Every runnable name of ``kind`` (specs and registered names) with a one-line description."""
    registry: Registry = REGISTRIES[kind]
    out = {name: registry.describe(name) for name in registry.names()}
    out.update({name: spec.description for name, spec in load_specs(kind).items()})
    return dict(sorted(out.items()))

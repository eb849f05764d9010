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
from dataclasses import asdict, dataclass, field
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


def recorded(spec: Spec) -> dict[str, Any]:
    """A spec as a run records it: its file named inside the spec folder it lies in (``tasks/vqav2.yaml``), not by
    this machine's absolute path (a file outside every spec folder keeps its resolved path)."""
    out = asdict(spec)
    if spec.path is not None:
        path = Path(spec.path).resolve()
        inside = [path.relative_to(root.resolve()) for root in spec_roots() if path.is_relative_to(root.resolve())]
        out["path"] = inside[0].as_posix() if inside else str(path)
    return out


class SpecFileError(ValueError):
    """A spec file that cannot be read; the message names the file (and the line, for a YAML syntax error)."""

    def __init__(self, path: Path, message: str):
        self.path = path
        super().__init__(message)


def _read(path: Path) -> Spec:
    """The spec in ``path``; anything wrong with the file is a `SpecFileError` naming it."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise SpecFileError(path, f"spec {path}{line}: YAML syntax error: {err.problem or err.context}") from None
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as err:
        raise SpecFileError(path, f"spec {path}: cannot be read ({err})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise SpecFileError(path, f"spec {path}: expected keys name, implementation, description, params; "
                                  f"found {type(data).__name__}")
    missing = {"name", "implementation"} - set(data)
    if missing:
        raise SpecFileError(path, f"spec {path} lacks {sorted(missing)}")
    unknown = set(data) - {"name", "implementation", "description", "params"}
    if unknown:
        raise SpecFileError(path, f"spec {path} has unknown keys {sorted(map(str, unknown))}")
    expected = {"name": (str,), "implementation": (str,), "description": (str, type(None)), "params": (dict, type(None))}
    for key, kinds in expected.items():
        if key in data and not isinstance(data[key], kinds):
            raise SpecFileError(path, f"spec {path}: {key} is {type(data[key]).__name__} {data[key]!r}, expected "
                                f"{' or '.join('null' if k is type(None) else k.__name__ for k in kinds)}")
    return Spec(data["name"], data["implementation"], data.get("description") or "", dict(data.get("params") or {}), str(path))


def scan_specs(kind: str) -> tuple[dict[str, Spec], list[SpecFileError]]:
    """The readable specs of ``kind`` by name (later roots override earlier ones), and the errors of unreadable ones."""
    specs: dict[str, Spec] = {}
    broken: list[SpecFileError] = []
    for root in spec_roots():
        folder = root / kind
        if folder.is_dir():
            for path in sorted(folder.glob("*.y*ml")):
                try:
                    spec = _read(path)
                except SpecFileError as err:
                    broken.append(err)
                    continue
                specs[spec.name] = spec
    return specs, broken


def load_specs(kind: str) -> dict[str, Spec]:
    """All readable specs of ``kind`` by name: a broken file stops only a run that names it (`resolve`)."""
    return scan_specs(kind)[0]


def _registered(kind: str, name: str, specs: dict[str, Spec], broken: list[SpecFileError]) -> str:
    """The implementation a registered name stands for; else the broken spec file that may be the one meant, else
    "did you mean" (with the unreadable spec files named)."""
    registry: Registry = REGISTRIES[kind]
    try:
        return registry.resolve_name(name)
    except UnknownNameError:
        same = [err for err in broken if err.path.stem == name]
        if same:
            raise same[0] from None
        error = UnknownNameError(registry.kind, name, sorted(set(specs) | set(registry.names(include_aliases=True))))
        if broken:
            error.message += f" Unreadable spec files: {'; '.join(map(str, broken))}"
        raise error from None


def check_name(kind: str, name: str) -> None:
    """Raise as `resolve` would for a name no spec or registry entry has, importing no implementation (fast)."""
    specs, broken = scan_specs(kind)
    if name not in specs:
        _registered(kind, name, specs, broken)


def resolve(kind: str, name: str) -> Spec:
    """The spec called ``name``, or an implicit spec for a registered name; else the error of `check_name`."""
    specs, broken = scan_specs(kind)
    if name in specs:
        return specs[name]
    implementation = _registered(kind, name, specs, broken)
    return Spec(name, implementation, REGISTRIES[kind].describe(implementation))


def available(kind: str) -> dict[str, str]:
    """Every runnable name of ``kind`` (specs and registered names) with a one-line description."""
    registry: Registry = REGISTRIES[kind]
    out = {name: registry.describe(name) for name in registry.names()}
    specs, broken = scan_specs(kind)
    out.update({name: spec.description for name, spec in specs.items()})
    out.update({f"({err.path.name})": f"unreadable: {err}" for err in broken})
    return dict(sorted(out.items()))

"""An external package exposes a method through the `fastrm_bench.methods` entry point.

The package's code and entry point are taken verbatim from the guide's (docs/extending.md) "Add your own
method" section, installed as a real distribution (a .dist-info on sys.path), found by a
fresh registry, run on a tiny LLaVA, listed by the CLI and run by `fastrm-bench run`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastrm_bench.maps_io import load_sample_maps
from fastrm_bench.registry import Registry

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "extending.md"  # the guide the blocks come from


def _readme_block(marker: str, language: str) -> str:
    text = GUIDE.read_text()
    section = text.split(f"<!-- {marker} -->", 1)[1]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def install_guide_package(root: Path, package: str, marker: str, group: str) -> Path:
    """The guide's ``<marker>-code`` block as package ``package`` with a .dist-info declaring the ``<marker>-entry-point``
    block in entry-point ``group``, under ``root`` (put ``root`` on sys.path or PYTHONPATH to install it)."""
    toml = _readme_block(f"{marker}-entry-point", "toml")
    entry = re.search(r'^(\S+)\s*=\s*"(.+)"', toml.split("]", 1)[1].strip(), re.M)
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text(_readme_block(f"{marker}-code", "python"))
    dist = root / f"{package}-0.1.dist-info"
    dist.mkdir()
    name = package.replace("_", "-")
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n{entry.group(1)} = {entry.group(2)}\n")
    return root


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch) -> Path:
    code = _readme_block("plugin-code", "python")
    toml = _readme_block("plugin-entry-point", "toml")
    entry = re.search(r'^(\S+)\s*=\s*"(.+)"', toml.split("]", 1)[1].strip(), re.M)
    (tmp_path / "my_methods").mkdir()
    (tmp_path / "my_methods" / "__init__.py").write_text(code)
    dist = tmp_path / "my_methods-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-methods\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[fastrm_bench.methods]\n{entry.group(1)} = {entry.group(2)}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_entry_point_plugin_runs_through_the_registry(installed_plugin, tiny_adapter):
    registry: Registry = Registry("method", "fastrm_bench.methods")
    assert "center-bias" in registry.names()
    assert registry.entry("center-bias").source == "plugin:my-methods"
    method = registry.create("center-bias", sharpness=2.0)
    image = __import__("PIL.Image", fromlist=["Image"]).new("RGB", (48, 48))
    inputs = tiny_adapter.build_inputs([image], ["What color is the circle?"])
    generation = tiny_adapter.generate(inputs, max_new_tokens=3, min_new_tokens=3)[0]
    explanation = method.explain(tiny_adapter, inputs, generation)
    assert explanation.maps.shape == (3, inputs.layout.num_tokens)
    centre = explanation.maps[0].reshape(6, 6)
    assert centre[2:4, 2:4].min() > centre[0, 0]  # the prior peaks in the middle


def test_cli_lists_the_plugin(installed_plugin):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed_plugin), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "fastrm_bench.cli", "list", "methods"], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert re.search(r"^center-bias\s+Centre prior", out, re.M), out


def test_cli_runs_the_plugin(installed_plugin, world_root, tiny_llava_dir, tmp_path):
    """`fastrm-bench run --method center-bias` in a fresh process: found by its entry point alone, run, measured."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed_plugin), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "run"
    ran = subprocess.run([sys.executable, "-m", "fastrm_bench.cli", "run", "--method", "center-bias", "--task", "pope",
                          "--model", str(tiny_llava_dir), "--limit", "2", "--output-dir", str(out), "--data-root",
                          str(world_root), "--device", "cpu", "--max-new-tokens", "3"], capture_output=True, text=True, env=env)
    assert ran.returncode == 0, ran.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["n"] == 2 and results["config"]["method"] == "center-bias"
    assert results["metrics"]["accuracy"]["value"] is not None and results["metrics"]["pp_auc"]["value"] is not None
    maps = load_sample_maps(out / "maps.npz")
    assert len(maps) == 2
    for sample_map in maps.values():  # the centre prior of the 6x6 grid: highest in the middle, lowest in the corners
        grid = sample_map.reshape(6, 6)
        assert grid[2:4, 2:4].min() > grid[0, 0] and grid[0, 0] == grid.min()
        assert np.allclose(grid, grid.T) and np.allclose(grid, grid[::-1, ::-1])

"""YAML specs: shipped specs resolve to registered implementations; user folders add more."""

from __future__ import annotations

import pytest

from fastrm_bench.registry import METHODS, TASKS, UnknownNameError
from fastrm_bench.specs import load_specs, resolve


@pytest.mark.parametrize("kind,registry", [("methods", METHODS), ("tasks", TASKS)])
def test_every_shipped_spec_names_a_registered_implementation(kind, registry):
    specs = load_specs(kind)
    assert specs, f"no {kind} specs found"
    for spec in specs.values():
        assert spec.implementation in registry, spec


def test_spec_and_registered_names_both_resolve():
    assert resolve("tasks", "pope-adversarial").params == {"categories": ["adversarial"]}
    assert resolve("tasks", "vqa").implementation == "vqav2"  # an alias of a registered name
    with pytest.raises(UnknownNameError, match="Did you mean 'pope-adversarial'"):
        resolve("tasks", "pope-adversarail")


def test_user_spec_folder_from_environment(tmp_path, monkeypatch):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "pope-tiny.yaml").write_text(
        "name: pope-tiny\nimplementation: pope\ndescription: two categories\nparams: {categories: [random, popular]}\n"
    )
    monkeypatch.setenv("FASTRM_BENCH_SPEC_PATH", str(tmp_path))
    assert resolve("tasks", "pope-tiny").params["categories"] == ["random", "popular"]


def test_malformed_spec_is_reported_with_its_path(tmp_path, monkeypatch):
    (tmp_path / "methods").mkdir()
    bad = tmp_path / "methods" / "bad.yaml"
    bad.write_text("name: bad\nimplementaton: random\n")
    monkeypatch.setenv("FASTRM_BENCH_SPEC_PATH", str(tmp_path))
    assert "bad" not in load_specs("methods")  # a broken spec stops only what names it
    with pytest.raises(ValueError, match="bad.yaml lacks"):
        resolve("methods", "bad")

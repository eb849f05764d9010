"""The generic registry: decorator and lazy registration, aliases, "did you mean", listing."""

from __future__ import annotations

import pytest

from fastrm_bench import METHODS, MODELS, TASKS
from fastrm_bench.registry import Registry, UnknownNameError


def test_decorator_and_create():
    reg: Registry = Registry("widget")

    @reg.register("square", aliases=("sq",))
    class Square:
        """A square widget."""

        def __init__(self, side: int = 1):
            self.side = side

    assert reg.create("sq", side=3).side == 3
    assert reg.names() == ["square"]
    assert reg.describe("square") == "A square widget."
    with pytest.raises(ValueError, match="already registered"):
        reg.register("square", Square)


def test_lazy_target_is_imported_only_when_used():
    reg: Registry = Registry("widget")
    reg.register("ordered", "collections:OrderedDict", description="an ordered dict")
    entry = reg.entry("ordered")
    assert isinstance(entry.target, str)  # listing and describing did not import it
    assert reg.describe("ordered") == "an ordered dict"
    assert reg.create("ordered") == {}
    assert not isinstance(reg.entry("ordered").target, str)


def test_unknown_name_suggests_the_closest():
    reg: Registry = Registry("method")
    reg.register("chefer", "collections:OrderedDict")
    reg.register("gradcam", "collections:OrderedDict")
    with pytest.raises(UnknownNameError) as err:
        reg.get("chefr")
    assert "Did you mean 'chefer'" in str(err.value)
    with pytest.raises(UnknownNameError) as err:
        reg.get("zzz")
    assert "Did you mean" not in str(err.value) and "Known: chefer, gradcam" in str(err.value)


@pytest.mark.parametrize("registry", [METHODS, TASKS, MODELS], ids=lambda r: r.kind)
def test_every_builtin_resolves_and_has_a_description(registry):
    """timm-style: every registered name loads its target and describes itself in one line."""
    for name in registry.names():
        assert callable(registry.get(name)), name
        description = registry.describe(name)
        assert description and "\n" not in description, name

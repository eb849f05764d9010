"""No module of fastrm_bench imports itself back through others, counting function-local and TYPE_CHECKING imports.

The layers contract of pyproject.toml (``lint-imports``) orders the packages; this test also catches a cycle
between two modules of one layer.
"""

from __future__ import annotations

import grimp
import networkx as nx


def test_no_module_imports_itself_back():
    graph = grimp.build_graph("fastrm_bench", cache_dir=None)
    edges = nx.DiGraph((m, imported) for m in graph.modules for imported in graph.find_modules_directly_imported_by(m))
    cycles = [sorted(c) for c in nx.strongly_connected_components(edges) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_metrics_never_name_report_functions():
    """A metric's figures are its own functions or the report's by metric class, never ``"module:function"`` strings."""
    from fastrm_bench.builders import create_metric
    from fastrm_bench.registry import METRICS

    for name in METRICS.names():
        assert all(callable(f) for f in create_metric(name)[0].figures), name

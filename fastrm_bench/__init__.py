"""fastrm-bench: how good and how cheap are explanation maps of vision-language models."""

from importlib.metadata import PackageNotFoundError, version

from fastrm_bench import catalog as _catalog  # noqa: F401  (registers the built-ins)
from fastrm_bench.registry import METHODS, MODELS, TASKS, Registry, UnknownNameError

try:
    __version__ = version("fastrm-bench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"


def explain_answer(model, image, question, **kwargs):
    """Answer ``question`` about ``image`` with ``model`` (a name or a loaded adapter) and explain it with FastRM, in
    one generation that keeps only the final-norm hidden states: an `ExplainedAnswer` (the answer, one map per
    token, the entropy of the answer's map). Keyword arguments: `fastrm_bench.explainers.fastrm_method.explain_answer`."""
    from fastrm_bench.explainers.fastrm_method import explain_answer as _explain_answer

    return _explain_answer(model, image, question, **kwargs)


__all__ = ["METHODS", "MODELS", "TASKS", "Registry", "UnknownNameError", "__version__", "explain_answer"]

"""fastrm-bench: how good and how cheap are explanation maps of vision-language models."""

from importlib.metadata import PackageNotFoundError, version

from fastrm_bench import catalog as _catalog  # noqa: F401  (registers the built-ins)
from fastrm_bench.registry import METHODS, MODELS, TASKS, Registry, UnknownNameError

try:
    __version__ = version("fastrm-bench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"

__all__ = ["METHODS", "MODELS", "TASKS", "Registry", "UnknownNameError", "__version__"]

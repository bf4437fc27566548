"""stagate: spatial domains with a graph attention auto-encoder (STAGATE), in pure PyTorch.

Submodules (``pp``, ``tl``, ``pl``, ``io``, ``cluster``, ``datasets``) and :class:`STAGATE`
are imported on first use, so ``stagate --help`` and input errors answer without loading
torch and scanpy.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

from ._defaults import RECIPES, Recipe
from ._errors import NotFittedError, StagateInputError
from ._logging import set_verbosity

try:
    __version__ = version("stagate")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

_SUBMODULES = ("cluster", "datasets", "io", "pl", "pp", "tl")

__all__ = ["RECIPES", "STAGATE", "NotFittedError", "Recipe", "StagateInputError", "__version__",
           "cluster", "datasets", "io", "pl", "pp", "set_verbosity", "tl"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return import_module(f".{name}", __name__)
    if name == "STAGATE":
        return import_module(".model", __name__).STAGATE
    msg = f"module 'stagate' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted(__all__)

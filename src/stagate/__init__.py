"""stagate: spatial domains with a graph attention auto-encoder (STAGATE), in pure PyTorch."""

from importlib.metadata import PackageNotFoundError, version

from . import cluster, datasets, io, pl, pp, tl
from ._logging import set_verbosity
from ._validation import NotFittedError, StagateInputError
from .model import STAGATE

try:
    __version__ = version("stagate")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["STAGATE", "NotFittedError", "StagateInputError", "__version__", "cluster",
           "datasets", "io", "pl", "pp", "set_verbosity", "tl"]

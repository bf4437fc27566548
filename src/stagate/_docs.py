"""Parameter texts shared by many docstrings, filled in by :func:`doc_params` (scanpy's habit)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

DOC_ADATA = """\
adata
    Annotated data matrix, spots x genes."""

DOC_COPY = """\
copy
    Return a modified copy instead of writing into `adata`."""

DOC_LIBRARY_KEY = """\
library_key
    Column of `adata.obs` naming the section of each spot. Each section gets its own
    graph; no edge joins two sections."""

DOC_SPATIAL_KEY = """\
spatial_key
    Key of the coordinates in `adata.obsm`."""

DOC_RANDOM_STATE = """\
random_state
    Seed. The same seed gives bit-identical results on CPU."""


def doc_params(**kwds: str) -> Callable[[F], F]:
    """Fill ``{name}`` placeholders of a docstring with the shared texts above."""

    def decorator(obj: F) -> F:
        if obj.__doc__:
            obj.__doc__ = obj.__doc__.format(**{k: _indent(v) for k, v in kwds.items()})
        return obj

    return decorator


def _indent(text: str) -> str:
    # docstrings of functions are indented by four spaces below the first line
    lines = text.splitlines()
    return "\n".join([lines[0]] + ["    " + line for line in lines[1:]])

"""AnnData glue around the torch module: the `STAGATE` estimator."""

from ._stagate import STAGATE

__all__ = ["STAGATE"]

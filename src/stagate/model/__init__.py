"""AnnData glue around the torch module: the `STAGATE` estimator."""

from ._stagate import STAGATE, fit_side_by_side

__all__ = ["STAGATE", "fit_side_by_side"]

"""What one optimisation step sees: inputs, graph, and the seed rows its loss is taken on."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from ..module import NeighbourGraph
from ..module._sparse import csr_from_scipy, csr_transpose

#: below this fraction of non-zeros the input stays sparse (CSR x dense beats dense x dense)
SPARSE_DENSITY = 0.3


def expression_tensors(x) -> tuple[Tensor, Tensor | None]:
    """float32 tensors for the expression rows `x` (scipy sparse or numpy): ``(x, x_t)``,
    sparse CSR and its CSR transpose when `x` is sparse enough, else ``(dense x, None)``."""
    n_values = max(1, x.shape[0] * x.shape[1])
    density = (x.nnz if sp.issparse(x) else np.count_nonzero(x)) / n_values
    if density < SPARSE_DENSITY:
        x = sp.csr_matrix(x, dtype=np.float32)
        return csr_from_scipy(x), csr_from_scipy(x.T.tocsr())
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)), None


@dataclass
class Batch:
    """One step's data.

    Full-batch training is a single Batch over all spots. A minibatch holds a seed set and its
    2-hop neighbourhood: ``x``/``graph`` cover the neighbourhood, ``rows`` selects the seeds
    whose reconstruction error enters the loss, and ``x_sq`` is ``||X[rows]||^2``.
    """

    x: Tensor
    graph: NeighbourGraph
    rows: Tensor | slice = field(default_factory=lambda: slice(None))
    x_sq: Tensor | None = None
    pruned: dict = field(default_factory=dict)  # pruned_graph / pruned_edges, when used
    x_t: Tensor | None = None  # transpose of a sparse CSR x, built once

    def __post_init__(self) -> None:
        if self.x.layout == torch.sparse_csr and self.x_t is None:
            self.x_t = csr_transpose(self.x)
        if self.x_sq is None:
            if self.x.layout == torch.strided:
                self.x_sq = (self.x[self.rows].double() ** 2).sum()
            elif isinstance(self.rows, slice) and self.rows == slice(None):
                self.x_sq = (self.x.values().double() ** 2).sum()
            else:
                rows = self.x.to_dense()[self.rows]
                self.x_sq = (rows.double() ** 2).sum()

    def to(self, device: torch.device) -> Batch:
        pruned = {k: v.to(device) for k, v in self.pruned.items()}
        rows = self.rows.to(device) if isinstance(self.rows, Tensor) else self.rows
        x_t = None if self.x_t is None else self.x_t.to(device)
        return Batch(self.x.to(device), self.graph.to(device), rows, self.x_sq.to(device), pruned,
                     x_t)

    @property
    def inputs(self) -> dict:
        """Keyword arguments of ``module.encode`` besides x and graph."""
        return {"x_t": self.x_t} | self.pruned

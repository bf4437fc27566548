"""The neighbourhood structure the model runs on: CSR rows with self-loops, plus its transpose."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor


@dataclass(frozen=True)
class NeighbourGraph:
    """Neighbourhoods S_i (SNN neighbours of i plus i itself) in CSR form.

    Row ``i`` lists the spots ``j`` that spot ``i`` attends to. Edges are ordered by
    ``(dst, src)``, so per-edge vectors (attention) are the values of a CSR matrix directly.

    Shapes: ``crow`` (N+1,); ``src``, ``dst`` (E,); ``t_crow`` (N+1,), ``t_col``, ``t_perm`` (E,)
    describe the transpose (needed by the backward pass of the aggregation).
    """

    n_nodes: int
    crow: Tensor
    src: Tensor
    dst: Tensor
    t_crow: Tensor
    t_col: Tensor
    t_perm: Tensor

    @property
    def n_edges(self) -> int:
        return int(self.src.numel())

    @property
    def edge_index(self) -> Tensor:
        """PyG convention, ``(2, E)`` with row 0 the source ``j`` and row 1 the target ``i``."""
        return torch.stack([self.src, self.dst])

    @classmethod
    def from_scipy(cls, adj: sp.spmatrix, *, self_loops: bool = True) -> NeighbourGraph:
        """Build from an (N, N) adjacency: row i's non-zeros are the neighbours of i."""
        adj = sp.csr_matrix(adj, dtype=np.float32, copy=True)
        adj.setdiag(0)
        adj.eliminate_zeros()
        pattern = (adj != 0).astype(np.float32)
        if self_loops:
            pattern = pattern + sp.identity(adj.shape[0], dtype=np.float32, format="csr")
        pattern = sp.csr_matrix(pattern)
        pattern.sum_duplicates()
        pattern.sort_indices()
        return cls.from_csr_arrays(pattern.indptr, pattern.indices, adj.shape[0])

    @classmethod
    def from_csr_arrays(cls, indptr: np.ndarray, indices: np.ndarray, n: int) -> NeighbourGraph:
        crow = torch.as_tensor(np.asarray(indptr, dtype=np.int64))
        src = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        dst = torch.repeat_interleave(torch.arange(n), crow.diff())
        # transpose: edges ordered by (src, dst); t_perm maps transpose order -> edge order
        t_perm = torch.argsort(src * n + dst, stable=True)
        t_crow = torch.zeros(n + 1, dtype=torch.int64)
        t_crow[1:] = torch.cumsum(torch.bincount(src, minlength=n), 0)
        return cls(n, crow, src, dst, t_crow, dst[t_perm], t_perm)

    def to(self, device: torch.device | str) -> NeighbourGraph:
        return NeighbourGraph(
            self.n_nodes, *(getattr(self, f).to(device) for f in
                            ("crow", "src", "dst", "t_crow", "t_col", "t_perm"))
        )

    def edge_positions(self, sub: NeighbourGraph) -> Tensor:
        """Positions in this graph's edge order of the edges of its subgraph `sub`."""
        n = self.n_nodes
        keys = self.dst * n + self.src  # sorted: edges are ordered by (dst, src)
        sub_keys = sub.dst * n + sub.src
        pos = torch.searchsorted(keys, sub_keys)
        found = pos < keys.numel()
        if not bool(found.all()) or not torch.equal(keys[pos], sub_keys):
            msg = "The pruned graph has edges that the spatial graph lacks; rebuild it from it."
            raise ValueError(msg)
        return pos

    def to_scipy(self, values: Tensor | np.ndarray) -> sp.csr_matrix:
        """An (N, N) CSR matrix with `values` (E,) on this graph's edges (e.g. the attention)."""
        values = values.detach().cpu().numpy() if isinstance(values, Tensor) else values
        return sp.csr_matrix(
            (np.asarray(values), self.src.cpu().numpy(), self.crow.cpu().numpy()),
            shape=(self.n_nodes, self.n_nodes),
        )

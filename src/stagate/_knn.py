"""scanpy's ``pp.neighbors`` with a nearest-neighbour search that works with scipy >= 1.17.

Above 8,192 observations scanpy (1.11.5, the newest) searches neighbours with pynndescent,
whose result is a scipy sparse *array*; scanpy then calls ``getnnz`` on it, which sparse arrays
no longer have, and fails with AttributeError. Every UMAP, Leiden clustering and cell type-aware
pruning of more than 8,192 spots did (found on the 32,845-cell STARmap volume). Here the
search hands scanpy a sparse matrix instead: exact (scikit-learn, brute force) up to 100,000
spots, because pynndescent compiles for ~30 s in every process (9,000 x 30: 30 s the first
time, 1.1 s the second) while the exact search took 2.1 s at 33,000 and 17.6 s at 100,000
spots; above that pynndescent with scanpy's own parameters for it.
"""

from __future__ import annotations

import numpy as np
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

#: from this many observations on scanpy searches approximately, with pynndescent
SCANPY_APPROXIMATE_FROM = 8192
#: up to this many observations ours searches exactly
EXACT_UP_TO = 100_000


class SparseMatrixKnn:
    """A kNN transformer (scikit-learn's protocol) whose distance graphs are ``csr_matrix``."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def get_params(self, deep: bool = True) -> dict:
        return self.inner.get_params(deep)  # scanpy reads n_neighbors from here

    def fit(self, x, y=None) -> SparseMatrixKnn:
        self.inner.fit(x)
        return self

    def transform(self, x) -> sp.csr_matrix:
        return sp.csr_matrix(self.inner.transform(x))

    def fit_transform(self, x, y=None) -> sp.csr_matrix:
        return sp.csr_matrix(self.inner.fit_transform(x))


def neighbors(adata: AnnData, *, n_neighbors: int = 15, random_state: int = 0,
              **kwargs) -> None:
    """``sc.pp.neighbors(adata, n_neighbors=..., random_state=..., **kwargs)``, any size."""
    if adata.n_obs >= SCANPY_APPROXIMATE_FROM and "transformer" not in kwargs:
        if adata.n_obs <= EXACT_UP_TO:  # scanpy's own exact search, as below 8,192 spots
            kwargs["transformer"] = "sklearn"
        else:
            from pynndescent import PyNNDescentTransformer

            # scanpy's choice for this size (umap-learn's defaults for trees and iterations)
            search = PyNNDescentTransformer(
                n_neighbors=n_neighbors, metric=kwargs.get("metric", "euclidean"),
                n_jobs=sc.settings.n_jobs, random_state=random_state,
                n_trees=min(64, 5 + round(adata.n_obs ** 0.5 / 20.0)),
                n_iters=max(5, round(np.log2(adata.n_obs))))
            kwargs["transformer"] = SparseMatrixKnn(search)
    sc.pp.neighbors(adata, n_neighbors=n_neighbors, random_state=random_state, **kwargs)

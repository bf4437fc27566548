"""Leiden / Louvain on a kNN graph of an embedding, with a resolution search for a target count."""

from __future__ import annotations

import random
from typing import Literal

import igraph
import numpy as np
import scanpy as sc
from anndata import AnnData

from .._knn import neighbors
from .._logging import log


def knn_graph_clusters(
    data: np.ndarray,
    n_clusters: int | None = None,
    *,
    method: Literal["leiden", "louvain"] = "leiden",
    resolution: float | None = None,
    n_neighbors: int = 15,
    random_state: int = 0,
    max_steps: int = 40,
) -> tuple[np.ndarray, float]:
    """Cluster the rows of `data` by community detection on their kNN graph.

    With `n_clusters`, the resolution is searched by bisection until exactly that many
    communities appear (the closest count is kept when none hits it).

    Returns
    -------
    ``(labels, resolution)`` with labels in 0..k-1.
    """
    tmp = AnnData(np.asarray(data, dtype=np.float32))
    neighbors(tmp, n_neighbors=min(n_neighbors, tmp.n_obs - 1), use_rep="X",
              random_state=random_state)

    def run(res: float) -> np.ndarray:
        if method == "leiden":
            sc.tl.leiden(tmp, resolution=res, random_state=random_state, flavor="igraph",
                         n_iterations=2, directed=False, key_added="_c")
            return tmp.obs["_c"].cat.codes.to_numpy()
        g = sc._utils.get_igraph_from_adjacency(tmp.obsp["connectivities"], directed=False)
        igraph.set_random_number_generator(random.Random(random_state))
        part = g.community_multilevel(weights="weight", resolution=res)
        return np.asarray(part.membership)

    if n_clusters is None:
        res = 1.0 if resolution is None else resolution
        return run(res), res
    lo, hi = 0.0, 1.0
    labels = run(hi)
    while labels.max() + 1 < n_clusters and hi < 100:  # grow until enough communities
        lo, hi = hi, hi * 2
        labels = run(hi)
    best = (abs(labels.max() + 1 - n_clusters), labels, hi)
    for _ in range(max_steps):
        if best[0] == 0:
            break
        mid = (lo + hi) / 2
        labels = run(mid)
        k = labels.max() + 1
        if abs(k - n_clusters) < best[0]:
            best = (abs(k - n_clusters), labels, mid)
        if k < n_clusters:
            lo = mid
        else:
            hi = mid
    if best[0]:
        log.warning("%s: no resolution gave exactly %d clusters; closest has %d",
                    method, n_clusters, best[1].max() + 1)
    return best[1], best[2]

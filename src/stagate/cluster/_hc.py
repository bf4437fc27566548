"""Model-based hierarchical agglomeration (mclust's ``hc``), the initialisation of its EM.

Written from Fraley (1998), "Algorithms for model-based Gaussian hierarchical clustering",
SIAM J. Sci. Comput. 20:270-281, and mclust 6's documented defaults: the data are first
transformed (``hcUse = "SVD"``: standardise each column, rotate onto the right singular
vectors and scale each by 1/sqrt(singular value)), then agglomerated under the
unconstrained model (``hcModelName = "VVV"``) with its regularised criterion. A cluster of
``l`` points with scatter matrix ``W`` costs

    term = l * log( det(W / l) + beta * (tr(W) + alpha) / l )

(``det`` is 0 while ``l <= p``), ``alpha = traceW(Z / sqrt(n p))`` and ``beta = 1``; each step
merges the pair whose merge raises the total cost least.

Why by hand: no maintained Python library implements this criterion (scikit-learn's and
scipy's agglomerations are Ward-type, i.e. mclust's EII, and give different partitions).
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage


def svd_transform(x: np.ndarray) -> np.ndarray:
    """mclust's ``hcUse = "SVD"``: scaled data in its singular basis, whitened by sqrt(d)."""
    x = np.asarray(x, dtype=np.float64)
    sd = x.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = (x - x.mean(axis=0)) / sd
    scaled = scaled[:, np.isfinite(scaled).all(axis=0)]  # constant columns carry nothing
    _, d, vt = np.linalg.svd(scaled, full_matrices=False)
    keep = d > d[0] * 1e-12 if d.size else d > 0
    return (scaled @ vt[keep].T) / np.sqrt(d[keep])


class _Clusters:
    """Sizes, means, scatter matrices and costs of the current clusters (slots of the input)."""

    def __init__(self, z: np.ndarray, alpha: float, beta: float) -> None:
        n, p = z.shape
        self.p, self.alpha, self.beta = p, alpha, beta
        self.size = np.ones(n)
        self.mean = z.copy()
        self.scatter = np.zeros((n, p, p))
        self.trace = np.zeros(n)
        self.cost = self.terms(self.size, self.trace, None)

    def terms(self, size, trace, scatter) -> np.ndarray:
        """Criterion of clusters with these sizes, traces and (optional) scatter matrices."""
        log_reg = np.log(self.beta * (trace + self.alpha) / size)
        out = log_reg.copy()
        if scatter is not None:
            big = size > self.p
            if big.any():
                sign, logdet = np.linalg.slogdet(scatter[big])
                logdet = np.where(sign > 0, logdet - self.p * np.log(size[big]), -np.inf)
                out[big] = np.logaddexp(logdet, log_reg[big])
        return size * out

    def merged_cost(self, a: int, others: np.ndarray) -> np.ndarray:
        """Criterion of cluster `a` merged with each of `others`."""
        la, lk = self.size[a], self.size[others]
        l = la + lk
        delta = self.mean[others] - self.mean[a]
        c = la * lk / l
        trace = self.trace[a] + self.trace[others] + c * np.einsum("ij,ij->i", delta, delta)
        big = l > self.p
        cost = self.terms(l, trace, None)
        if big.any():
            s = (self.scatter[a] + self.scatter[others[big]]
                 + c[big, None, None] * delta[big, :, None] * delta[big, None, :])
            cost[big] = self.terms(l[big], trace[big], s)
        return cost


def hc_vvv(z: np.ndarray, *, alpha: float = 1.0, beta: float = 1.0,
           min_clusters: int = 1) -> np.ndarray:
    """Agglomerate the rows of `z` down to `min_clusters`; return the merges in order.

    Returns
    -------
    (n - min_clusters, 2) array of the slots merged at each step (the first slot survives).
    """
    z = np.asarray(z, dtype=np.float64)
    n, p = z.shape
    centred = z - z.mean(axis=0)
    alpha = max(alpha * float((centred**2).sum()) / (n * p), np.finfo(float).eps)
    cl = _Clusters(z, alpha, beta)
    # merge cost of every pair of singletons: 2 log(beta (|d|^2/2 + alpha) / 2) - 2 log(alpha beta)
    sq = np.einsum("ij,ij->i", z, z)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0)
    cost = 2 * np.log(beta * (d2 / 2 + alpha) / 2) - 2 * np.log(alpha * beta)
    np.fill_diagonal(cost, np.inf)
    row_min = cost.min(axis=1)
    row_arg = cost.argmin(axis=1)
    alive = np.ones(n, dtype=bool)
    merges = np.empty((max(n - min_clusters, 0), 2), dtype=np.int64)
    for step in range(n - min_clusters):
        i = int(np.argmin(row_min))
        j = int(row_arg[i])
        a, b = min(i, j), max(i, j)
        merges[step] = a, b
        # cluster a absorbs b
        la, lb = cl.size[a], cl.size[b]
        delta = cl.mean[b] - cl.mean[a]
        c = la * lb / (la + lb)
        cl.scatter[a] += cl.scatter[b] + c * np.outer(delta, delta)
        cl.trace[a] += cl.trace[b] + c * delta @ delta
        cl.mean[a] = (la * cl.mean[a] + lb * cl.mean[b]) / (la + lb)
        cl.size[a] = la + lb
        cl.cost[a] = cl.terms(cl.size[a:a + 1], cl.trace[a:a + 1], cl.scatter[a:a + 1])[0]
        alive[b] = False
        cost[b, :] = cost[:, b] = np.inf
        row_min[b] = np.inf
        others = np.flatnonzero(alive)
        others = others[others != a]
        cost[a, :] = np.inf
        if others.size:
            new = cl.merged_cost(a, others) - cl.cost[a] - cl.cost[others]
            cost[a, others] = new
            cost[others, a] = new
            # rows that pointed at a or b must look again; others only compare with a
            stale = others[(row_arg[others] == a) | (row_arg[others] == b)]
            better = others[new < row_min[others]]
            row_min[better] = cost[better, a]
            row_arg[better] = a
            if stale.size:
                row_min[stale] = cost[stale].min(axis=1)
                row_arg[stale] = cost[stale].argmin(axis=1)
        row_min[a] = cost[a].min()
        row_arg[a] = cost[a].argmin()
    return merges


def hc_eii(z: np.ndarray, min_clusters: int = 1) -> np.ndarray:
    """Ward agglomeration (mclust's ``hcEII``), for data with more columns than rows."""
    return linkage(np.asarray(z, dtype=np.float64), method="ward")


def partition(merges: np.ndarray, n: int, n_clusters: int) -> np.ndarray:
    """Labels 0..n_clusters-1 after replaying the first ``n - n_clusters`` merges."""
    if merges.ndim == 2 and merges.shape[1] == 4:  # a scipy linkage
        return fcluster(merges, n_clusters, criterion="maxclust") - 1
    parent = np.arange(n)
    for a, b in merges[: n - n_clusters]:
        parent[b] = a

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    roots = np.array([root(i) for i in range(n)])
    return np.unique(roots, return_inverse=True)[1]

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


#: a cluster this small is merged into a large one by the determinant lemma (rank update);
#: with few dimensions a direct determinant is cheaper, so at most (p - 1) // 3
_LOW_RANK = 8


class _Clusters:
    """Sizes, means, scatter matrices and costs of the current clusters (slots of the input).

    The determinant of a merged scatter matrix is what costs time. When one side is a large
    cluster with a positive-definite scatter ``W = L L^T`` and the other is small (at most
    ``low_rank`` points), ``W + U U^T`` (U: the small cluster's centred points and the scaled
    mean difference) has ``log det = log det W + log det(I + (L^-1 U)^T (L^-1 U))``: a rank
    update instead of a new factorisation.
    """

    def __init__(self, z: np.ndarray, alpha: float, beta: float) -> None:
        n, p = z.shape
        self.z = z
        self.p, self.alpha, self.beta = p, alpha, beta
        self.size = np.ones(n)
        self.mean = z.copy()
        self.scatter = np.zeros((n, p, p))
        self.trace = np.zeros(n)
        self.members: list[np.ndarray] = [np.array([i]) for i in range(n)]
        # centred points of small clusters, zero-padded to _LOW_RANK columns (zero columns
        # leave det(I + Y^T Y) unchanged); a singleton's centred point is 0
        self.low_rank = min(_LOW_RANK, (p - 1) // 3)
        self.low_pts = np.zeros((n, p, self.low_rank))
        self.logdet_w = np.full(n, -np.inf)  # log det W where W is positive definite
        self.chol_inv = np.zeros((n, p, p))  # L^-1 of W = L L^T, where positive definite
        self.cost = self.terms(self.size, self.trace, None)

    def terms(self, size, trace, scatter=None, logdet=None) -> np.ndarray:
        """Criterion of clusters with these sizes and traces, and scatter matrices or the
        log-determinants of those (-inf when singular); both None: only the trace part."""
        log_reg = np.log(self.beta * (trace + self.alpha) / size)
        out = log_reg.copy()
        if scatter is not None:
            sign, logdet = np.linalg.slogdet(scatter)
            logdet = np.where(sign > 0, logdet, -np.inf)
        if logdet is not None:
            big = size > self.p
            out[big] = np.logaddexp(logdet[big] - self.p * np.log(size[big]), log_reg[big])
        return size * out

    def absorb(self, a: int, b: int) -> None:
        """Cluster `a` absorbs cluster `b`."""
        la, lb = self.size[a], self.size[b]
        delta = self.mean[b] - self.mean[a]
        c = la * lb / (la + lb)
        self.scatter[a] += self.scatter[b] + c * np.outer(delta, delta)
        self.trace[a] += self.trace[b] + c * delta @ delta
        self.mean[a] = (la * self.mean[a] + lb * self.mean[b]) / (la + lb)
        self.size[a] = la + lb
        self.members[a] = np.concatenate([self.members[a], self.members[b]])
        self.members[b] = np.empty(0, dtype=np.int64)
        if self.size[a] <= self.low_rank:
            pts = (self.z[self.members[a]] - self.mean[a]).T
            self.low_pts[a] = 0
            self.low_pts[a, :, : pts.shape[1]] = pts
        self.logdet_w[a] = -np.inf
        if self.low_rank and self.size[a] > self.p:  # a factor only where rank updates use it
            try:
                chol = np.linalg.cholesky(self.scatter[a])
            except np.linalg.LinAlgError:
                chol = None
            if chol is not None and np.all(np.diag(chol) > 0):
                self.logdet_w[a] = 2 * np.log(np.diag(chol)).sum()
                self.chol_inv[a] = np.linalg.inv(chol)
        self.cost[a] = self.terms(self.size[a:a + 1], self.trace[a:a + 1],
                                  logdet=self.logdet_w[a:a + 1])[0]

    def _low_rank_factor(self, pts: np.ndarray, delta: np.ndarray, c: np.ndarray) -> np.ndarray:
        """(m, p, low_rank + 1): the small side's centred points and sqrt(c) * delta."""
        pts = np.broadcast_to(pts, (delta.shape[0], *pts.shape[-2:]))
        return np.concatenate([pts, (np.sqrt(c)[:, None] * delta)[:, :, None]], axis=2)

    def merged_cost(self, a: int, others: np.ndarray) -> np.ndarray:
        """Criterion of cluster `a` merged with each of `others`."""
        la, lk = self.size[a], self.size[others]
        size = la + lk
        delta = self.mean[others] - self.mean[a]
        c = la * lk / size
        trace = self.trace[a] + self.trace[others] + c * np.einsum("ij,ij->i", delta, delta)
        big = np.flatnonzero(size > self.p)
        if big.size == 0:
            return self.terms(size, trace)
        logdet = np.full(others.size, -np.inf)
        todo = np.ones(big.size, dtype=bool)
        if self.low_rank and np.isfinite(self.logdet_w[a]):  # a large, small k: rank update
            sel = np.flatnonzero(lk[big] <= self.low_rank)
            if sel.size:
                idx = big[sel]
                u = self._low_rank_factor(self.low_pts[others[idx]], delta[idx], c[idx])
                y = self.chol_inv[a] @ u
                logdet[idx] = self.logdet_w[a] + _logdet_identity_plus_gram(y)
                todo[sel] = False
        if la <= self.low_rank:  # a is the small side: large k with a factor, by rank update
            sel = np.flatnonzero(todo & np.isfinite(self.logdet_w[others[big]]))
            if sel.size:
                idx = big[sel]
                u = self._low_rank_factor(self.low_pts[a], delta[idx], c[idx])
                y = self.chol_inv[others[idx]] @ u
                logdet[idx] = self.logdet_w[others[idx]] + _logdet_identity_plus_gram(y)
                todo[sel] = False
        rest = big[todo]
        if rest.size:
            s = (self.scatter[a] + self.scatter[others[rest]]
                 + c[rest, None, None] * delta[rest, :, None] * delta[rest, None, :])
            sign, ld = np.linalg.slogdet(s)
            logdet[rest] = np.where(sign > 0, ld, -np.inf)
        return self.terms(size, trace, logdet=logdet)


def _logdet_identity_plus_gram(y: np.ndarray) -> np.ndarray:
    """log det(I + y^T y) for a stack y (m, p, r)."""
    gram = np.swapaxes(y, 1, 2) @ y
    gram[:, np.arange(y.shape[2]), np.arange(y.shape[2])] += 1
    return np.linalg.slogdet(gram)[1]


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
        cl.absorb(a, b)
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


def hc_eii(z: np.ndarray) -> np.ndarray:
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

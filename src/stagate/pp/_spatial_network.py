"""The spatial neighbour network (SNN): radius, KNN or an automatic radius, per section."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy.spatial import cKDTree

from .. import _keys
from .._docs import DOC_ADATA, DOC_COPY, DOC_LIBRARY_KEY, DOC_SPATIAL_KEY, doc_params
from .._logging import log
from .._validation import StagateInputError, check_coordinates, check_unique_spots

#: relative gap between consecutive pair distances that marks a lattice shell (Visium, ST)
_LATTICE_GAP = 0.1


@doc_params(adata=DOC_ADATA, copy=DOC_COPY, library_key=DOC_LIBRARY_KEY,
            spatial_key=DOC_SPATIAL_KEY)
def spatial_network(
    adata: AnnData,
    *,
    radius: float | Literal["auto"] | None = "auto",
    n_neighbors: int | None = None,
    target_neighbors: float = 8.0,
    library_key: str | None = None,
    spatial_key: str = _keys.SPATIAL,
    key_added: str = _keys.GRAPH,
    copy: bool = False,
) -> AnnData | None:
    """Build the spatial neighbour network (SNN) of each section.

    Three models, one per call:

    - radius model (``radius=r``): spots closer than `r` are neighbours (symmetric);
    - KNN model (``n_neighbors=k``): each spot's `k` nearest spots (row i lists them);
    - automatic radius (default): a radius chosen from the data so that the mean number of
      neighbours is close to `target_neighbors`. On a lattice (Visium, ST) it snaps to the gap
      after a full shell of neighbours, e.g. the 6 nearest on Visium's hexagonal grid.

    Parameters
    ----------
    {adata}
    radius
        Radius in units of ``obsm[spatial_key]``, or ``"auto"``. Set None with `n_neighbors`.
    n_neighbors
        KNN model: number of nearest spots.
    target_neighbors
        Automatic radius: wanted mean number of neighbours (the paper: 6-15; 6 on Visium).
    {library_key}
    {spatial_key}
    key_added
        Prefix of the keys written (squidpy's convention).
    {copy}

    Returns
    -------
    Updates `adata` (or returns a copy) with:

    ``obsp['{{key_added}}_connectivities']``
        CSR, 1 for each edge, no self-edges.
    ``obsp['{{key_added}}_distances']``
        CSR, Euclidean distance of each edge.
    ``uns['{{key_added}}_neighbors']``
        Keys, parameters (the radius used) and neighbour-count statistics.
    """
    use_knn = n_neighbors is not None
    if use_knn and radius not in (None, "auto"):
        msg = "Pass exactly one of `radius` (radius model) or `n_neighbors` (KNN model)."
        raise ValueError(msg)
    if not use_knn and radius is None:
        msg = "Pass `radius` (a number or 'auto') or `n_neighbors`."
        raise ValueError(msg)
    if use_knn and (int(n_neighbors) != n_neighbors or n_neighbors < 1):
        msg = f"n_neighbors == {n_neighbors}, must be a positive integer."
        raise ValueError(msg)
    if not use_knn and radius != "auto" and not radius > 0:
        msg = f"radius == {radius}, must be > 0."
        raise ValueError(msg)

    coords = check_coordinates(adata, spatial_key)
    sections = _sections(adata, library_key)
    check_unique_spots(coords, adata.obs_names, None if sections is None else sections.codes)
    groups = [np.arange(adata.n_obs)] if sections is None else [
        np.flatnonzero(sections.codes == c) for c in range(len(sections.categories))
    ]

    if use_knn:
        mode, param = "knn", int(n_neighbors)
    elif radius == "auto":
        mode, param = "radius", auto_radius([coords[g] for g in groups], target_neighbors)
        log.info("automatic radius %.4g (target %.3g neighbours per spot)", param, target_neighbors)
    else:
        mode, param = "radius", float(radius)

    parts = []
    for idx in groups:
        build = _knn_edges if mode == "knn" else _radius_edges
        rows, cols, dists = build(coords[idx], param)
        parts.append((idx[rows], idx[cols], dists))  # local -> global spot indices
    rows, cols, dists = (np.concatenate(p) for p in zip(*parts, strict=True))
    shape = (adata.n_obs, adata.n_obs)
    dist = sp.csr_matrix((dists, (rows, cols)), shape=shape)
    conn = sp.csr_matrix((np.ones_like(dists, dtype=np.float32), (rows, cols)), shape=shape)
    dist.sort_indices()
    conn.sort_indices()

    n_nbrs = np.diff(conn.indptr)
    stats = neighbour_stats(n_nbrs)
    if stats["n_isolated"] == adata.n_obs:
        nn = cKDTree(coords).query(coords, k=2)[0][:, 1] if adata.n_obs > 1 else np.array([0.0])
        msg = (
            f"The spatial network has no edges: every spot is isolated with "
            f"{mode}={param:.4g}. The median distance to the nearest spot is "
            f"{np.median(nn):.4g} (units of obsm[{spatial_key!r}]); use a larger radius, "
            f"e.g. radius={1.5 * np.median(nn):.4g}, or radius='auto'."
        )
        raise StagateInputError(msg)
    if stats["n_isolated"]:
        log.warning(
            "%d of %d spots have no neighbour (isolated); they attend only to themselves. "
            "Use a larger radius if that is unexpected.", stats["n_isolated"], adata.n_obs)

    target = adata.copy() if copy else adata
    target.obsp[_keys.conn_key(key_added)] = conn
    target.obsp[_keys.dist_key(key_added)] = dist
    target.uns[_keys.graph_uns_key(key_added)] = {
        "connectivities_key": _keys.conn_key(key_added),
        "distances_key": _keys.dist_key(key_added),
        "params": {"mode": mode, "radius": param if mode == "radius" else None,
                   "n_neighbors": param if mode == "knn" else None,
                   "auto_radius": radius == "auto" and not use_knn,
                   "target_neighbors": target_neighbors if radius == "auto" else None,
                   "library_key": library_key, "spatial_key": spatial_key},
        "stats": stats,
    }
    log.info("spatial network: %d edges, %.2f neighbours per spot on average",
             conn.nnz, stats["mean_neighbors"])
    return target if copy else None


def neighbour_stats(n_neighbors: np.ndarray) -> dict:
    """Mean, median, min, max neighbour count, isolated spots and the count histogram."""
    return {
        "mean_neighbors": float(n_neighbors.mean()),
        "median_neighbors": float(np.median(n_neighbors)),
        "min_neighbors": int(n_neighbors.min()),
        "max_neighbors": int(n_neighbors.max()),
        "n_isolated": int((n_neighbors == 0).sum()),
        "histogram": np.bincount(n_neighbors).astype(np.int64),
    }


def auto_radius(sections: list[np.ndarray], target_neighbors: float) -> float:
    """The radius giving about `target_neighbors` neighbours per spot on average.

    The mean neighbour count at radius r is (number of ordered pairs closer than r) / N, so
    the pair distances, sorted, give it for every r. Among the cut points whose mean count is
    within [0.6, 1.5] x target, a lattice shows large relative gaps between shells: the
    largest such gap wins (cut in its middle); without one, the count closest to target wins.
    """
    if target_neighbors <= 0:
        msg = f"target_neighbors == {target_neighbors}, must be > 0."
        raise ValueError(msg)
    n_total = sum(len(c) for c in sections)
    k = int(np.ceil(3 * target_neighbors)) + 1
    dists = []
    for c in sections:
        if len(c) < 2:
            continue
        d, _ = cKDTree(c).query(c, k=min(k, len(c)))
        dists.append(d[:, 1:].ravel())
    if not dists:
        msg = "Every section has a single spot; no spatial network can be built."
        raise StagateInputError(msg)
    d = np.sort(np.concatenate(dists))
    d = d[np.isfinite(d)]
    mean_count = np.arange(1, d.size + 1) / n_total  # neighbours per spot if r just above d[i]
    cut = np.flatnonzero((mean_count >= 0.6 * target_neighbors)
                         & (mean_count <= 1.5 * target_neighbors))
    cut = cut[cut < d.size - 1]
    if cut.size == 0:  # too few spots for the target: take everything we measured
        return float(d[-1] * 1.0001)
    gaps = (d[cut + 1] - d[cut]) / np.maximum(d[cut], np.finfo(float).tiny)
    if gaps.max() > _LATTICE_GAP:
        i = cut[np.argmax(gaps)]
    else:
        i = cut[np.argmin(np.abs(mean_count[cut] - target_neighbors))]
    return float((d[i] + d[i + 1]) / 2)


def _sections(adata: AnnData, library_key: str | None) -> pd.Categorical | None:
    if library_key is None:
        return None
    if library_key not in adata.obs:
        msg = f"library_key {library_key!r} is not a column of adata.obs."
        raise StagateInputError(msg)
    values = adata.obs[library_key]
    if values.isna().any():
        msg = f"adata.obs[{library_key!r}] has missing values; every spot needs a section."
        raise StagateInputError(msg)
    return pd.Categorical(values.astype(str))


def _radius_edges(coords: np.ndarray, radius: float):
    """Both directions of every pair closer than `radius` (strictly), with distances."""
    if len(coords) < 2:
        return (np.empty(0, np.int64),) * 2 + (np.empty(0),)
    pairs = cKDTree(coords).query_pairs(radius, output_type="ndarray")
    d = np.linalg.norm(coords[pairs[:, 0]] - coords[pairs[:, 1]], axis=1)
    keep = d < radius
    i, j, d = pairs[keep, 0], pairs[keep, 1], d[keep]
    return np.concatenate([i, j]), np.concatenate([j, i]), np.concatenate([d, d])


def _knn_edges(coords: np.ndarray, k: int):
    """Row i -> its k nearest spots (fewer when the section is smaller)."""
    k = min(k, len(coords) - 1)
    if k < 1:
        return (np.empty(0, np.int64),) * 2 + (np.empty(0),)
    d, j = cKDTree(coords).query(coords, k=k + 1)
    i = np.repeat(np.arange(len(coords)), k)
    # drop each spot itself (distance 0; coordinates are unique so it comes first)
    return i, j[:, 1:].ravel(), d[:, 1:].ravel()

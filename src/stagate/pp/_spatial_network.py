"""The spatial neighbour network (SNN): radius, KNN or an automatic radius, per section."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from scipy.spatial import cKDTree

from .. import _keys
from .._docs import DOC_ADATA, DOC_COPY, DOC_LIBRARY_KEY, DOC_SPATIAL_KEY, doc_params
from .._logging import log
from .._validation import StagateInputError, check_coordinates, check_unique_spots
from ._sections import between_section_edges, default_between_radius, section_categories

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
    section_order: Sequence[str] | None = None,
    between_radius: float | Literal["auto"] | None = None,
    spatial_key: str = _keys.SPATIAL,
    key_added: str = _keys.GRAPH,
    copy: bool = False,
) -> AnnData | None:
    """Build the spatial neighbour network (SNN) of each section, or the 3-D network of a stack.

    Three models for the graph within a section, one per call:

    - radius model (``radius=r``): spots closer than `r` are neighbours (symmetric);
    - KNN model (``n_neighbors=k``): each spot's `k` nearest spots (row i lists them);
    - automatic radius (default): a radius chosen from the data so that the mean number of
      neighbours is close to `target_neighbors`. On a lattice (Visium, ST) it snaps to the gap
      after a full shell of neighbours, e.g. the 6 nearest on Visium's hexagonal grid.

    Sections (`library_key`) each get their own graph, and no edge joins two of them, unless
    `between_radius` is given: then the graphs are stacked into the 3-D network of
    consecutive sections (the original's ``Cal_Spatial_Net_3D``), which adds an edge between
    every two spots of *adjacent* sections (in `section_order`) whose x-y positions are closer
    than `between_radius`. Sections that were not imaged in one frame must be aligned first
    (:func:`stagate.pp.align_sections`, then ``spatial_key='spatial_aligned'``).

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
    section_order
        Order of the sections in the stack (every label of ``obs[library_key]`` once). Default:
        the categories' order when the column is categorical, else the labels' natural order
        ("2" before "10").
    between_radius
        3-D network: radius in x-y (units of ``obsm[spatial_key]``) joining spots of adjacent
        sections. ``"auto"`` measures it from the data: half the within-section radius (under
        the KNN model, of the 95th percentile of the within-section edge lengths), so a spot
        is linked to the one or two spots that overlap it in the adjacent section rather than
        to their whole neighbourhood (see :func:`~stagate.pp._sections.default_between_radius`
        for the measurement behind it). None (default): no edges between sections.
    {spatial_key}
    key_added
        Prefix of the keys written (squidpy's convention); use a new one (e.g.
        ``'spatial_3d'``) to keep the 2-D graph beside the 3-D one.
    {copy}

    Returns
    -------
    Updates `adata` (or returns a copy) with:

    ``obsp['{{key_added}}_connectivities']``
        CSR, 1 for each edge, no self-edges.
    ``obsp['{{key_added}}_distances']``
        CSR, Euclidean distance of each edge.
    ``uns['{{key_added}}_neighbors']``
        Keys, parameters (the radius used) and neighbour-count statistics. For a 3-D network
        also ``edges``: the number of within- and between-section edges (stored entries of
        the CSR: an undirected pair counts twice) and, per adjacent pair,
        ``between_pairs`` (``section_a``, ``section_b``, ``n_edges``). An edge is a
        between-section edge exactly when its two
        ends lie in different sections of ``obs[library_key]``
        (:func:`between_section_mask`).
    """
    use_knn = n_neighbors is not None
    if use_knn and radius not in (None, "auto"):
        msg = "Pass exactly one of `radius` (radius model) or `n_neighbors` (KNN model)."
        raise StagateInputError(msg)
    if not use_knn and radius is None:
        msg = "Pass `radius` (a number or 'auto') or `n_neighbors`."
        raise StagateInputError(msg)
    if use_knn and (int(n_neighbors) != n_neighbors or n_neighbors < 1):
        msg = f"n_neighbors == {n_neighbors}, must be a positive integer."
        raise StagateInputError(msg)
    if not use_knn and radius != "auto" and not radius > 0:
        msg = f"radius == {radius}, must be > 0."
        raise StagateInputError(msg)

    stack = between_radius is not None
    if stack:
        if library_key is None:
            msg = ("between_radius builds the 3-D network of several sections; pass library_key, "
                   "the obs column naming each spot's section.")
            raise StagateInputError(msg)
        if between_radius != "auto" and not (np.isfinite(between_radius) and between_radius > 0):
            msg = f"between_radius == {between_radius}, must be > 0 (or 'auto')."
            raise StagateInputError(msg)
    if section_order is not None and library_key is None:
        msg = "section_order needs library_key, the obs column naming each spot's section."
        raise StagateInputError(msg)
    coords = check_coordinates(adata, spatial_key)
    sections = (None if library_key is None
                else section_categories(adata, library_key, section_order))
    if stack and len(sections.categories) < 2:
        msg = (f"The 3-D network needs at least two sections, but adata.obs[{library_key!r}] "
               f"holds one ({sections.categories[0]!r}); drop between_radius (command line: "
               f"--sections joint) to model a single section.")
        raise StagateInputError(msg)
    n_coincident = check_unique_spots(coords, adata.obs_names,
                                      None if sections is None else sections.codes,
                                      expression=adata.X)
    if n_coincident:
        log.warning(
            "%d spots share their position with another spot (different cells whose centroids "
            "coincide, as imaging tables often have); they are neighbours at distance 0.",
            n_coincident)
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
    n_within = rows.size
    edges = None
    if stack:
        if between_radius == "auto":
            reach = param if mode == "radius" else (
                float(np.quantile(dists, 0.95)) if dists.size else 0.0)
            between_radius = default_between_radius(reach)
            log.info("automatic between-section radius %.4g", between_radius)
        b_rows, b_cols, b_dists, pairs = between_section_edges(coords, sections,
                                                               float(between_radius))
        rows, cols = np.concatenate([rows, b_rows]), np.concatenate([cols, b_cols])
        dists = np.concatenate([dists, b_dists])
        edges = {"within": int(n_within), "between": int(b_rows.size),
                 "between_pairs": {
                     "section_a": np.array([p["sections"][0] for p in pairs], dtype=object),
                     "section_b": np.array([p["sections"][1] for p in pairs], dtype=object),
                     "n_edges": np.array([2 * p["n_edges"] for p in pairs], dtype=np.int64)}}
        log.info("3-D network: %d within- and %d between-section edges over %d sections",
                 edges["within"], edges["between"], len(sections.categories))
    shape = (adata.n_obs, adata.n_obs)
    dist = sp.csr_matrix((dists, (rows, cols)), shape=shape)
    conn = sp.csr_matrix((np.ones_like(dists, dtype=np.float32), (rows, cols)), shape=shape)
    dist.sort_indices()
    conn.sort_indices()

    n_nbrs = np.diff(conn.indptr)
    stats = neighbour_stats(n_nbrs)
    if stats["n_isolated"] == adata.n_obs:
        nn = cKDTree(coords).query(coords, k=2)[0][:, 1] if adata.n_obs > 1 else np.array([0.0])
        nn = nn[nn > 0] if (nn > 0).any() else nn  # coincident spots say nothing of spacing
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
                   "library_key": library_key, "spatial_key": spatial_key,
                   "section_order": (None if sections is None
                                     else np.asarray(sections.categories, dtype=object)),
                   "between_radius": float(between_radius) if stack else None},
        "stats": stats,
    }
    if edges is not None:
        target.uns[_keys.graph_uns_key(key_added)]["edges"] = edges
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
        raise StagateInputError(msg)
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
    # relative gaps; none after a zero distance (coincident spots are no lattice shell)
    gaps = np.where(d[cut] > 0, (d[cut + 1] - d[cut]) / np.maximum(d[cut], np.finfo(float).tiny),
                    0.0)
    if gaps.max() > _LATTICE_GAP:
        i = cut[np.argmax(gaps)]
    else:
        i = cut[np.argmin(np.abs(mean_count[cut] - target_neighbors))]
    return float((d[i] + d[i + 1]) / 2)


def between_section_mask(adata: AnnData, graph_key: str = _keys.GRAPH) -> np.ndarray:
    """For each stored edge of the graph `graph_key` (CSR order), whether it joins two sections.

    Parameters
    ----------
    adata
        Annotated data matrix with the graph.
    graph_key
        Name of the graph (its ``uns`` record gives the ``obsp`` keys and the ``library_key``
        it was built with; a graph built without sections has no between-section edge).

    Returns
    -------
    Boolean array, one entry per stored entry of the connectivities CSR, in its order.
    """
    conn_key, _, record = _keys.graph_keys(adata, graph_key)
    conn = sp.csr_matrix(adata.obsp[conn_key])
    library_key = record.get("params", {}).get("library_key")
    if library_key is None:
        return np.zeros(conn.nnz, dtype=bool)
    codes = section_categories(adata, library_key).codes
    rows = np.repeat(np.arange(conn.shape[0]), np.diff(conn.indptr))
    return codes[rows] != codes[conn.indices]


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
    i = np.broadcast_to(np.arange(len(coords))[:, None], j.shape)
    # drop each spot itself: with coincident spots it need not come first among the k + 1
    not_self = j != i
    keep = not_self & (np.cumsum(not_self, axis=1) <= k)
    return i[keep], j[keep], d[keep]

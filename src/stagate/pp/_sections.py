"""Several sections in one AnnData: their order, and the edges that join adjacent ones.

The 3-D spatial network of consecutive sections is the per-section 2-D network plus, for each
pair of *adjacent* sections in a given order, an edge between every two spots of the pair whose
(aligned) x-y positions are closer than a second radius. Only the order of the sections is
used, never a z coordinate. This module holds that combine step; the per-section graphs come
from :mod:`stagate.pp._spatial_network`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from natsort import natsorted
from scipy.spatial import cKDTree

from .._validation import StagateInputError


def section_categories(
    adata: AnnData, library_key: str, section_order: Sequence | None = None
) -> pd.Categorical:
    """``obs[library_key]`` as a categorical whose categories are the sections in order.

    The order is `section_order` when given (every section exactly once), else the natural
    order of the labels ("2" before "10"), or the categories' own order when the column is
    already categorical.
    """
    if library_key not in adata.obs:
        msg = (f"library_key {library_key!r} is not a column of adata.obs "
               f"(obs has {list(adata.obs.columns)}).")
        raise StagateInputError(msg)
    values = adata.obs[library_key]
    if values.isna().any():
        msg = f"adata.obs[{library_key!r}] has missing values; every spot needs a section."
        raise StagateInputError(msg)
    labels = values.astype(str)
    present = pd.unique(labels.to_numpy())
    if section_order is not None:
        order = [str(s) for s in section_order]
        unknown = [s for s in order if s not in set(present)]
        if unknown:
            msg = (f"section_order names sections not in adata.obs[{library_key!r}]: {unknown} "
                   f"(the sections are {natsorted(present)}).")
            raise StagateInputError(msg)
        missing = [s for s in present if s not in set(order)]
        if missing or len(set(order)) != len(order):
            msg = (f"section_order must list every section of adata.obs[{library_key!r}] once; "
                   f"missing {natsorted(missing)}" + (", duplicates present" if
                                                     len(set(order)) != len(order) else "") + ".")
            raise StagateInputError(msg)
    elif isinstance(values.dtype, pd.CategoricalDtype):
        order = [str(c) for c in values.cat.categories if str(c) in set(present)]
    else:
        order = natsorted(present)
    return pd.Categorical(labels.to_numpy(), categories=order)


def between_section_edges(
    coords: np.ndarray, sections: pd.Categorical, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """Both directions of every pair of spots in adjacent sections closer than `radius` in x-y.

    Returns global row and column indices, the x-y distances, and one record per adjacent
    pair: ``{"sections": (a, b), "n_edges": ...}`` (undirected edges). Raises when a pair of
    adjacent sections has no edge at all, naming it and a radius that would join it.
    """
    xy = np.asarray(coords, dtype=np.float64)[:, :2]
    order = list(sections.categories)
    members = [np.flatnonzero(sections.codes == c) for c in range(len(order))]
    rows, cols, dists, pairs = [], [], [], []
    for k in range(len(order) - 1):
        a, b = members[k], members[k + 1]
        ta, tb = cKDTree(xy[a]), cKDTree(xy[b])
        m = ta.sparse_distance_matrix(tb, radius, output_type="coo_matrix")
        keep = m.data < radius  # strictly closer, as within sections
        i, j, d = a[m.row[keep]], b[m.col[keep]], m.data[keep]
        if i.size == 0:
            nearest = tb.query(xy[a], k=1)[0]
            msg = (
                f"Sections {order[k]!r} and {order[k + 1]!r} are adjacent but no two of their "
                f"spots are closer than between_radius={radius:.4g} in x-y (nearest pair "
                f"{nearest.min():.4g} apart, median {np.median(nearest):.4g}). Align the "
                f"sections first (stagate.pp.align_sections, command line --align) or pass a "
                f"larger between_radius, e.g. {1.5 * np.median(nearest):.4g}."
            )
            raise StagateInputError(msg)
        rows += [i, j]
        cols += [j, i]
        dists += [d, d]
        pairs.append({"sections": (order[k], order[k + 1]), "n_edges": int(i.size)})
    if not rows:
        return (np.empty(0, np.int64),) * 2 + (np.empty(0),), pairs
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(dists), pairs


#: the automatic between-section radius, as a fraction of the within-section reach
BETWEEN_FRACTION = 0.5


def default_between_radius(within_reach: float) -> float:
    """Between-section radius measured from the data: half the within-section reach.

    `within_reach` is the within-section radius (under the KNN model, the 95th percentile of
    the within-section edge lengths), about 1.4 spot pitches on Visium. Half of it, about 0.7
    pitches, links each spot to the one or two spots that overlap it in the adjacent
    (aligned) section, its counterparts, rather than to their whole neighbourhood. Measured on
    DLPFC 151673 + 151676 (`bench/sections.py`, README): with the full within-section radius
    (~6 neighbours across, as many as within), the stack's domains became one map (adjacent
    agreement ARI 0.98) and per-section ARI fell from 0.57 / 0.62 (no edges between sections)
    to 0.41 / 0.43; with about one neighbour across, sections mixed in the embedding while
    per-section ARI stayed at the level of separate runs.
    """
    if not within_reach > 0:
        msg = ("The within-section network has no edges, so no between-section radius can be "
               "measured; pass between_radius explicitly.")
        raise StagateInputError(msg)
    return BETWEEN_FRACTION * float(within_reach)

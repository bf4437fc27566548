"""Cell type-aware module: prune SNN edges whose two ends fall in different pre-clusters."""

from __future__ import annotations

import numpy as np
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from .. import _keys
from .._docs import DOC_ADATA, DOC_COPY, DOC_RANDOM_STATE, doc_params
from .._knn import neighbors
from .._logging import log
from .._validation import StagateInputError


@doc_params(adata=DOC_ADATA, copy=DOC_COPY, random_state=DOC_RANDOM_STATE)
def prune_network(
    adata: AnnData,
    *,
    labels_key: str | None = None,
    resolution: float = 0.2,
    n_pcs: int = 30,
    graph_key: str = _keys.GRAPH,
    key_added: str = "spatial_pruned",
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Keep only the SNN edges whose two spots share a pre-cluster.

    Pre-clusters come from `labels_key` or, by default, from expression alone: PCA of the
    log-normalised ``X``, a kNN graph, and community detection at a small `resolution`
    (the paper uses Louvain at 0.2; we use Leiden, its refinement, for its seeded,
    deterministic implementation).

    Parameters
    ----------
    {adata}
    labels_key
        Column of ``obs`` with user-given pre-clusters.
    resolution
        Resolution of the pre-clustering.
    n_pcs
        Principal components for the pre-clustering.
    graph_key
        Prefix of the SNN to prune (from :func:`stagate.pp.spatial_network`).
    key_added
        Prefix of the pruned graph's keys.
    {random_state}
    {copy}

    Returns
    -------
    ``obsp['{{key_added}}_connectivities']``, ``obsp['{{key_added}}_distances']`` and
    ``obs['{{key_added}}_precluster']``.
    """
    graph_conn, graph_dist, _ = _keys.graph_keys(adata, graph_key)
    if labels_key is not None:
        if labels_key not in adata.obs:
            msg = f"labels_key {labels_key!r} is not a column of adata.obs."
            raise StagateInputError(msg)
        labels = adata.obs[labels_key].astype(str).to_numpy()
    else:
        labels = precluster(adata, resolution=resolution, n_pcs=n_pcs, random_state=random_state)
    codes = np.unique(labels, return_inverse=True)[1]

    target = adata.copy() if copy else adata
    for make, source in ((_keys.conn_key, graph_conn), (_keys.dist_key, graph_dist)):
        m = sp.csr_matrix(adata.obsp[source]).tocoo()
        same = codes[m.row] == codes[m.col]
        pruned = sp.csr_matrix((m.data[same], (m.row[same], m.col[same])), shape=m.shape)
        pruned.sort_indices()
        target.obsp[make(key_added)] = pruned
        if make is _keys.conn_key:
            kept, total = int(same.sum()), int(m.nnz)
    target.obs[f"{key_added}_precluster"] = labels.astype(str)
    target.obs[f"{key_added}_precluster"] = target.obs[f"{key_added}_precluster"].astype(
        "category")
    target.uns[_keys.graph_uns_key(key_added)] = {
        "connectivities_key": _keys.conn_key(key_added),
        "distances_key": _keys.dist_key(key_added),
        "params": {"pruned_from": graph_key, "labels_key": labels_key,
                   "resolution": resolution, "random_state": random_state},
    }
    log.info("pruned network keeps %d of %d edges (%d pre-clusters)", kept, total,
             codes.max() + 1)
    return target if copy else None


def precluster(adata: AnnData, *, resolution: float, n_pcs: int, random_state: int) -> np.ndarray:
    """Expression-only clusters: PCA -> kNN graph -> Leiden at `resolution`."""
    tmp = AnnData(adata.X.astype(np.float32) if adata.X is not None else None)
    n_comps = max(1, min(n_pcs, tmp.n_obs - 1, tmp.n_vars - 1))
    sc.pp.pca(tmp, n_comps=n_comps, random_state=random_state)
    neighbors(tmp, random_state=random_state)
    sc.tl.leiden(tmp, resolution=resolution, random_state=random_state, flavor="igraph",
                 n_iterations=2, directed=False)
    return tmp.obs["leiden"].to_numpy().astype(str)

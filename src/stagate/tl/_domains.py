"""tl.domains: cluster the embedding into spatial domains."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from natsort import natsorted

from .. import _keys
from .._docs import DOC_ADATA, DOC_COPY, DOC_RANDOM_STATE, doc_params
from .._logging import log
from .._validation import StagateInputError, check_n_domains
from ..cluster import knn_graph_clusters

METHODS = ("leiden", "louvain")


@doc_params(adata=DOC_ADATA, copy=DOC_COPY, random_state=DOC_RANDOM_STATE)
def domains(
    adata: AnnData,
    n_domains: int | None = None,
    *,
    use_rep: str = _keys.EMBEDDING,
    method: Literal["leiden", "louvain"] = "leiden",
    resolution: float | None = None,
    random_state: int = 0,
    key_added: str = _keys.DOMAIN,
    copy: bool = False,
) -> AnnData | None:
    """Cluster ``obsm[use_rep]`` into spatial domains.

    Parameters
    ----------
    {adata}
    n_domains
        Number of domains wanted. Leiden/Louvain search the resolution to hit it.
    use_rep
        Embedding in ``obsm`` (default: STAGATE's).
    method
        ``"leiden"`` or ``"louvain"`` on a 15-NN graph of the embedding.
    resolution
        Fixed resolution (Leiden/Louvain) when `n_domains` is None.
    {random_state}
    key_added
        Column of ``obs`` to write.
    {copy}

    Returns
    -------
    ``obs['{{key_added}}']``
        Domain labels, categorical strings "1".."K" in natural order.
    ``uns['{{key_added}}']``
        ``params`` (method, seed, resolution used).
    """
    if use_rep not in adata.obsm:
        msg = f"adata.obsm[{use_rep!r}] not found. Run `stagate.tl.stagate(adata)` first."
        raise StagateInputError(msg)
    if method not in METHODS:
        msg = f"method == {method!r}, must be one of {METHODS}."
        raise ValueError(msg)
    if n_domains is not None:
        n_domains = check_n_domains(n_domains, adata.n_obs)
    emb = np.asarray(adata.obsm[use_rep], dtype=np.float64)
    log.info("clustering %d spots into %s domains (%s)", adata.n_obs, n_domains or "?", method)
    labels, res = knn_graph_clusters(emb, n_domains, method=method, resolution=resolution,
                                     random_state=random_state)
    target = adata.copy() if copy else adata
    set_labels(target, labels, key_added)
    target.uns[key_added] = {"params": {"method": method, "n_domains": n_domains or -1,
                                        "resolution": float(res), "use_rep": use_rep,
                                        "random_state": random_state}}
    return target if copy else None


def set_labels(adata: AnnData, labels: np.ndarray, key: str) -> None:
    """Write 0-based integer labels as categories "1".."K" in natural order."""
    names = (np.asarray(labels) + 1).astype(str)
    adata.obs[key] = pd.Categorical(names, categories=natsorted(np.unique(names)))

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
from ..cluster import MODELS, MclustError, knn_graph_clusters, mclust_bic

METHODS = ("mclust", "leiden", "louvain")


@doc_params(adata=DOC_ADATA, copy=DOC_COPY, random_state=DOC_RANDOM_STATE)
def domains(
    adata: AnnData,
    n_domains: int | None = None,
    *,
    use_rep: str = _keys.EMBEDDING,
    method: Literal["mclust", "leiden", "louvain"] = "mclust",
    model: str = "EEE",
    resolution: float | None = None,
    n_domains_range: tuple[int, int] = (2, 15),
    random_state: int | None = None,
    n_init: int = 1,
    key_added: str = _keys.DOMAIN,
    copy: bool = False,
) -> AnnData | None:
    """Cluster ``obsm[use_rep]`` into spatial domains.

    Parameters
    ----------
    {adata}
    n_domains
        Number of domains wanted. None: mclust picks it by BIC over `n_domains_range`;
        Leiden/Louvain use `resolution`. Leiden/Louvain search the resolution to hit it.
    use_rep
        Embedding in ``obsm`` (default: STAGATE's).
    method
        ``"mclust"`` (default): Gaussian mixture initialised by model-based hierarchical
        agglomeration, the same partition as R's ``mclust`` (the original STAGATE's
        clustering) without R; ``"leiden"`` or ``"louvain"`` on a 15-NN graph of the embedding.
    model
        mclust covariance model: ``"EEE"`` (STAGATE's), ``"VVV"``, ``"EII"``, ``"VII"``.
    resolution
        Fixed resolution (Leiden/Louvain) when `n_domains` is None.
    n_domains_range
        Smallest and largest number of domains tried by BIC when `n_domains` is None.
    random_state
        Seed. mclust: seeds the initialisation subset drawn above 2000 spots, as R's
        ``set.seed`` does (default 2020, the original's); Leiden/Louvain: default 0.
    n_init
        mclust above 2000 spots: starts from that many initialisation subsets (seeds
        `random_state`, `random_state` + 1, ...), keeping the highest BIC. 1 (default) is
        R's answer; the default recipe of :func:`stagate.tl.consensus_domains` and
        ``stagate run`` uses 5.
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
    if n_domains is not None:
        n_domains = check_n_domains(n_domains, adata.n_obs)
    emb = np.asarray(adata.obsm[use_rep], dtype=np.float64)
    log.info("clustering %d spots into %s domains (%s)", adata.n_obs, n_domains or "?", method)
    labels, params = cluster_embedding(emb, n_domains, method=method, model=model,
                                       resolution=resolution, n_domains_range=n_domains_range,
                                       random_state=random_state, n_init=n_init)
    params = {"method": method, "use_rep": use_rep} | params
    target = adata.copy() if copy else adata
    set_labels(target, labels, key_added)
    target.uns[key_added] = {"params": params | {"n_domains": int(labels.max() + 1)}}
    return target if copy else None


def cluster_embedding(
    emb: np.ndarray, n_domains: int | None, *, method: str = "mclust", model: str = "EEE",
    resolution: float | None = None, n_domains_range: tuple[int, int] = (2, 15),
    random_state: int | None = None, n_init: int = 1,
) -> tuple[np.ndarray, dict]:
    """Cluster an embedding (spots x dims) as :func:`domains` does: (0-based labels, params)."""
    if method not in METHODS:
        msg = f"method == {method!r}, must be one of {METHODS}."
        raise StagateInputError(msg)
    if method == "mclust":
        if model not in MODELS:
            msg = f"model == {model!r}, must be one of {MODELS}."
            raise StagateInputError(msg)
        seed = 2020 if random_state is None else random_state
        if int(n_init) != n_init or n_init < 1:
            msg = f"n_init == {n_init!r}, must be a positive integer (mclust starts)."
            raise StagateInputError(msg)
        lo, hi = n_domains_range
        g_range = [n_domains] if n_domains else range(lo, min(hi, len(emb)) + 1)
        try:
            fit, bics = mclust_bic(emb, g_range, (model,), random_state=seed, n_init=n_init)
        except MclustError as err:
            msg = f"mclust failed on the embedding: {err}"
            raise StagateInputError(msg) from None
        return fit.labels, {"model": model, "random_state": seed, "n_init": n_init,
                            "loglik": fit.loglik,
                            "bic": fit.bic, "n_iter": fit.n_iter,
                            "bic_by_n_domains": {str(g): b for (_, g), b in bics.items()}}
    seed = 0 if random_state is None else random_state
    labels, res = knn_graph_clusters(emb, n_domains, method=method, resolution=resolution,
                                     random_state=seed)
    return labels, {"resolution": float(res), "random_state": seed}


def set_labels(adata: AnnData, labels: np.ndarray, key: str) -> None:
    """Write 0-based integer labels as categories "1".."K" in natural order."""
    names = (np.asarray(labels) + 1).astype(str)
    adata.obs[key] = pd.Categorical(names, categories=natsorted(np.unique(names)))

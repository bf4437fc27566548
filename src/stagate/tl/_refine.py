"""tl.refine_domains: smooth domain labels over the spatial network."""

from __future__ import annotations

import pandas as pd
from anndata import AnnData
from natsort import natsorted

from .. import _keys
from .._docs import DOC_ADATA, DOC_COPY, doc_params
from .._logging import log
from .._validation import StagateInputError
from ..cluster import majority_vote


@doc_params(adata=DOC_ADATA, copy=DOC_COPY)
def refine_domains(
    adata: AnnData,
    domain_key: str = _keys.DOMAIN,
    *,
    graph_key: str = _keys.GRAPH,
    n_rounds: int = 1,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Give each spot the majority domain of its spatial neighbourhood (itself included).

    Removes lone spots of one domain inside another, which clustering the embedding spot by
    spot leaves behind; a spot keeps its label on a tie with it. Uses the spatial network in
    graph `graph_key`: refinement crosses sections only where that graph joins them (the
    3-D graph of :func:`stagate.pp.spatial_network` with ``between_radius``).

    Parameters
    ----------
    {adata}
    domain_key
        Column of ``obs`` with the domains to refine (see :func:`stagate.tl.domains`).
    graph_key
        Name of the spatial graph (its ``uns`` record gives the ``obsp`` keys).
    n_rounds
        How many rounds of voting.
    key_added
        Column to write; default ``'{{domain_key}}_refined'``.
    {copy}

    Returns
    -------
    ``obs['{{key_added}}']``
        Refined domains, with the categories of `domain_key`.
    """
    if domain_key not in adata.obs:
        msg = f"adata.obs[{domain_key!r}] not found. Run `stagate.tl.domains(adata)` first."
        raise StagateInputError(msg)
    conn = _keys.graph_keys(adata, graph_key)[0]
    if int(n_rounds) < 1:
        msg = f"n_rounds == {n_rounds}, must be at least 1."
        raise StagateInputError(msg)
    key_added = key_added or f"{domain_key}_refined"
    labels = adata.obs[domain_key].astype(str).to_numpy()
    refined = majority_vote(labels, adata.obsp[conn], n_rounds=int(n_rounds))
    changed = int((refined != labels).sum())
    log.info("refined %s: %d of %d spots changed domain", domain_key, changed, adata.n_obs)
    target = adata.copy() if copy else adata
    old = adata.obs[domain_key]
    cats = old.cat.categories.astype(str) if isinstance(old.dtype, pd.CategoricalDtype) else None
    target.obs[key_added] = pd.Categorical(
        refined, categories=cats if cats is not None else natsorted(set(refined)))
    return target if copy else None

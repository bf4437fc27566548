"""After the domains: embedding neighbours, UMAP and PAGA; marker genes; spatial autocorrelation.

Everything here is scanpy's (neighbours, UMAP, PAGA, Wilcoxon with Benjamini-Hochberg,
Moran's I); this module only runs it on the STAGATE embedding under keys of its own, so a
user's own ``obsp['connectivities']``, ``obsm['X_umap']`` or ``uns['paga']`` are never
overwritten, and turns the results into tidy tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from .. import _keys
from .._docs import DOC_ADATA, doc_params
from .._knn import neighbors
from .._logging import log
from .._validation import require_key
from ._metrics import MISSING_LABELS

#: layout epochs of the UMAP of the embedding (see embedding_umap)
UMAP_EPOCHS = 200


@doc_params(adata=DOC_ADATA)
def embedding_umap(
    adata: AnnData,
    *,
    use_rep: str = _keys.EMBEDDING,
    groupby: str | None = _keys.DOMAIN,
    n_neighbors: int = 15,
    random_state: int = 0,
    key_added: str | None = None,
) -> None:
    """Neighbours, UMAP and (with `groupby`) PAGA of an embedding, under their own keys.

    Parameters
    ----------
    {adata}
    use_rep
        Embedding in ``obsm``.
    groupby
        obs column of the groups PAGA connects (the domains); None skips PAGA.
    n_neighbors
        Neighbours per spot in the embedding (scanpy's default).
    random_state
        Seed of the UMAP layout.
    key_added
        Prefix of the keys written; default `use_rep`.

    Returns
    -------
    ``obsp['{{key}}_connectivities']``, ``obsp['{{key}}_distances']``, ``uns['{{key}}_neighbors']``
        The embedding's neighbour graph (scanpy's ``neighbors``, Gaussian kernel on the
        exact `n_neighbors` nearest spots, under ``key_added``).
    ``obsm['{{key}}_umap']``
        The UMAP layout.
    ``uns['{{key}}_paga']``
        PAGA between the `groupby` groups: ``connectivities`` (groups x groups), ``groups``.
    """
    require_key(adata, "obsm", use_rep, "run stagate.tl.stagate (or consensus_domains) first")
    key = key_added or use_rep
    neighbors_key = f"{key}_neighbors"
    # Gaussian-kernel connectivities (on exact neighbours up to 8,192 spots): the UMAP-style
    # fuzzy set needs a numba compilation that took ~4 s of every run (DLPFC slice: 4.3 s vs
    # 0.4 s), and PAGA and the layout need only a weighted kNN graph
    neighbors(adata, use_rep=use_rep, n_neighbors=min(n_neighbors, adata.n_obs - 1),
              random_state=random_state, key_added=neighbors_key, method="gauss")
    # scanpy names the obsp matrices after key_added; keep ours: {key}_connectivities
    for kind in ("connectivities", "distances"):
        adata.obsp[f"{key}_{kind}"] = adata.obsp.pop(f"{neighbors_key}_{kind}")
        adata.uns[neighbors_key][f"{kind}_key"] = f"{key}_{kind}"
    verbosity = sc.settings.verbosity
    sc.settings.verbosity = 0  # scanpy logs that the graph is not UMAP's own: chosen above
    try:
        # 200 layout epochs: umap-learn's own choice above 10,000 points; it uses 500 below,
        # which took 6.2 s instead of 1.9 s on a DLPFC slice for the same picture
        sc.tl.umap(adata, random_state=random_state, neighbors_key=neighbors_key,
                   key_added=f"{key}_umap", maxiter=UMAP_EPOCHS)
    finally:
        sc.settings.verbosity = verbosity
    adata.uns.pop(f"{key}_umap", None)  # the UMAP's parameters: not needed, keep uns small
    if groupby is not None:
        paga(adata, groupby, key=key)
    log.info("added obsm[%r], obsp[%r]%s", f"{key}_umap", f"{key}_connectivities",
             f", uns[{key + '_paga'!r}]" if groupby else "")


@doc_params(adata=DOC_ADATA)
def paga(
    adata: AnnData,
    groupby: str = _keys.DOMAIN,
    *,
    key: str = _keys.EMBEDDING,
    key_added: str | None = None,
) -> None:
    """PAGA between groups of spots on the embedding's neighbour graph.

    scanpy's ``paga`` on the graph :func:`embedding_umap` stored under `key`. Run it on the
    domains to see how they relate, or on an annotation (cortical layers) to see whether the
    embedding itself has learnt their order, whatever the clustering made of it.

    Parameters
    ----------
    {adata}
    groupby
        obs column of the groups to connect.
    key
        Prefix the neighbour graph was stored under (``uns['{{key}}_neighbors']``).
    key_added
        uns key of the result; default ``'{{key}}_paga'`` for the domains and
        ``'{{key}}_paga_{{groupby}}'`` for any other column.

    Returns
    -------
    ``uns[key_added]``
        ``connectivities`` (groups x groups, sparse), ``connectivities_tree`` (scanpy's
        spanning tree of the strongest connections), ``groups`` (`groupby`) and ``names``
        (the groups, in the order of the matrices' rows).
    """
    neighbors_key = f"{key}_neighbors"
    require_key(adata, "uns", neighbors_key, "run stagate.tl.embedding_umap first")
    require_key(adata, "obs", groupby, "cluster the embedding first (stagate.tl.domains)")
    if key_added is None:
        key_added = f"{key}_paga" if groupby == _keys.DOMAIN else f"{key}_paga_{groupby}"
    saved = adata.uns.pop("paga", None)  # scanpy writes uns['paga']: the user's stays
    restore = None
    if adata.obs[groupby].dtype != "category":  # scanpy wants categories; leave obs as it was
        restore = adata.obs[groupby]
        adata.obs[groupby] = restore.astype(str).astype("category")
    try:
        names = [str(n) for n in adata.obs[groupby].cat.categories]
        sc.tl.paga(adata, groups=groupby, neighbors_key=neighbors_key)
        result = adata.uns.pop("paga")
    finally:
        if saved is not None:
            adata.uns["paga"] = saved
        if restore is not None:
            adata.obs[groupby] = restore
    adata.uns[key_added] = {
        "connectivities": sp.csr_matrix(result["connectivities"]),
        "connectivities_tree": sp.csr_matrix(result["connectivities_tree"]),
        "groups": groupby,
        "names": names,
    }


def paga_groups(adata: AnnData, record: dict) -> tuple[list[str], list[int]]:
    """A PAGA result's group names, in the order of its matrices' rows, and the rows that
    are groups of the tissue (not named like a missing annotation: "NA", "nan", ...)."""
    names = record.get("names")  # a numpy array after an h5ad round trip; absent in old runs
    if names is None:
        names = adata.obs[record["groups"]].astype("category").cat.categories
    names = [str(n) for n in names]
    return names, [i for i, name in enumerate(names) if name not in MISSING_LABELS]


#: groups up to which paga_path finds the best order exactly (2^n subsets); above, greedily
EXACT_PATH_MAX_GROUPS = 14


def paga_path(adata: AnnData, key: str = _keys.EMBEDDING, *,
              paga_key: str | None = None) -> list[str]:
    """The groups in the order PAGA connects most strongly: the heaviest path through all.

    Among all orders of the groups, the one whose consecutive groups have the largest summed
    PAGA connectivity (a maximum-weight Hamiltonian path), read from its less connected end.
    For a layered tissue (cortex) this is the order of the layers when the embedding has
    learnt it. Found exactly by dynamic programming over subsets (Held-Karp) up to
    ``EXACT_PATH_MAX_GROUPS`` groups; above that, greedily from the least connected group.
    Groups named like a missing annotation ("NA", "nan", "unknown", ...) are left out.

    Parameters
    ----------
    adata
        With a PAGA result (:func:`embedding_umap` or :func:`paga`).
    key
        Prefix the PAGA result was stored under: ``uns['{key}_paga']``.
    paga_key
        The uns key of the PAGA result itself, instead of `key` (e.g. ``'STAGATE_paga_layer'``).

    Returns
    -------
    The group names along the path.
    """
    record = adata.uns[paga_key or f"{key}_paga"]
    conn = np.asarray(sp.csr_matrix(record["connectivities"]).todense(), dtype=np.float64)
    names, keep = paga_groups(adata, record)
    names = [names[i] for i in keep]
    conn = np.maximum(conn, conn.T)[np.ix_(keep, keep)]
    np.fill_diagonal(conn, 0)
    if len(names) <= EXACT_PATH_MAX_GROUPS:
        order = _heaviest_path(conn)
    else:
        order = _greedy_path(conn)
    strength = conn.sum(1)
    if strength[order[-1]] < strength[order[0]]:  # read from the less connected end
        order = order[::-1]
    return [str(names[i]) for i in order]


def _heaviest_path(w: np.ndarray) -> list[int]:
    """Held-Karp over subsets: best[mask, j] = heaviest path visiting `mask`, ending at j.

    Written here because no library we depend on solves a maximum-weight Hamiltonian path;
    at 7-14 groups the 2^n x n table is small (14 groups: 230k cells).
    """
    n = len(w)
    if n <= 2:
        return list(range(n))
    full = (1 << n) - 1
    best = np.full((1 << n, n), -np.inf)
    came = np.full((1 << n, n), -1, dtype=np.int64)
    best[1 << np.arange(n), np.arange(n)] = 0.0
    bits = 1 << np.arange(n)
    for mask in range(1, full):
        # every path over `mask` ending at j, extended by every k outside it: best over j
        extended = best[mask][:, None] + w
        j_best = np.argmax(extended, axis=0)  # ties: the lowest j, so deterministic
        value = extended[j_best, np.arange(n)]
        for k in np.flatnonzero((mask & bits) == 0):
            nxt = mask | int(bits[k])
            if value[k] > best[nxt, k]:
                best[nxt, k] = value[k]
                came[nxt, k] = j_best[k]
    j = int(np.argmax(best[full]))
    order, mask = [j], full
    while came[mask, j] >= 0:
        prev = int(came[mask, j])
        mask ^= 1 << j
        order.append(prev)
        j = prev
    return order[::-1]


def _greedy_path(w: np.ndarray) -> list[int]:
    """From the least connected group, repeatedly the most connected unvisited one."""
    order = [int(np.argmin(w.sum(1)))]
    while len(order) < len(w):
        row = w[order[-1]].copy()
        row[order] = -1
        order.append(int(np.argmax(row)))
    return order


@doc_params(adata=DOC_ADATA)
def markers(
    adata: AnnData,
    *,
    groupby: str = _keys.DOMAIN,
    layer: str | None = None,
    genes: np.ndarray | list[str] | None = None,
    n_top: int | None = None,
    key_added: str | None = None,
) -> pd.DataFrame:
    """Marker genes of each domain: Wilcoxon rank-sum, one domain against the rest.

    scanpy's ``rank_genes_groups`` (Wilcoxon, Benjamini-Hochberg adjusted p-values, the
    fraction of spots expressing each gene in and outside the domain) on log-normalised
    expression of every gene, not only the model's.

    Parameters
    ----------
    {adata}
    groupby
        obs column of the domains.
    layer
        Layer of log-normalised expression; None reads ``X``.
    genes
        Test only these genes (names); default every gene.
    n_top
        Rows kept per domain in the returned table (sorted by score); None keeps all.
    key_added
        uns key of scanpy's full result; default ``'{{groupby}}_markers'``.

    Returns
    -------
    A tidy table, one row per (domain, gene): ``domain``, ``gene``, ``score``,
    ``log2_fold_change``, ``p_value``, ``p_value_adj`` (BH), ``frac_in`` (spots of the domain
    expressing it), ``frac_out`` (other spots), ``rank``. Also stored in
    ``uns['{{key_added}}']`` (scanpy's structured result) and, as the table,
    ``uns['{{key_added}}_table']``.
    """
    require_key(adata, "obs", groupby, "cluster the embedding first (stagate.tl.domains)")
    key = key_added or f"{groupby}_markers"
    groups = adata.obs[groupby].astype("category")
    sizes = groups.value_counts()
    # Wilcoxon needs two spots; the domains' own order
    testable = [str(c) for c in groups.cat.categories if sizes.get(c, 0) >= 2]
    view = adata if genes is None else adata[:, np.asarray(genes)]
    tmp = AnnData(X=view.X if layer is None else view.layers[layer],
                  obs=pd.DataFrame({groupby: groups.to_numpy()}, index=adata.obs_names),
                  var=pd.DataFrame(index=view.var_names))
    tmp.obs[groupby] = tmp.obs[groupby].astype("category")
    tmp.uns["log1p"] = {"base": None}  # natural log, as stagate.pp.preprocess writes
    sc.tl.rank_genes_groups(tmp, groupby, groups=testable, method="wilcoxon",
                            corr_method="benjamini-hochberg", pts=True, use_raw=False,
                            key_added=key)
    table = sc.get.rank_genes_groups_df(tmp, group=None, key=key)
    table = table.rename(columns={"group": "domain", "names": "gene", "scores": "score",
                                  "logfoldchanges": "log2_fold_change", "pvals": "p_value",
                                  "pvals_adj": "p_value_adj", "pct_nz_group": "frac_in",
                                  "pct_nz_reference": "frac_out"})
    table["rank"] = table.groupby("domain", observed=True).cumcount() + 1
    if n_top is not None:
        table = table[table["rank"] <= n_top]
    table = table.reset_index(drop=True)
    adata.uns[key] = tmp.uns[key]
    adata.uns[f"{key}_table"] = table
    log.info("marker genes of %d domains (%d genes tested): uns[%r]", len(testable),
             tmp.n_vars, f"{key}_table")
    return table


def morans_i(adata: AnnData, genes: list[str], *, graph_key: str = _keys.GRAPH,
             denoised_key: str = _keys.EMBEDDING) -> pd.DataFrame:
    """Moran's I of each gene on the spatial graph, measured and denoised side by side.

    scanpy's ``metrics.morans_i`` computes it on the graph as given.

    Parameters
    ----------
    adata
        Log-normalised expression in ``X``, the spatial graph, and the model's
        reconstruction (``layers`` or ``obsm['{denoised_key}_ReX']``).
    genes
        Gene names; those absent from ``var_names`` are skipped.
    graph_key
        The spatial graph (its ``obsp`` connectivities are the weights).
    denoised_key
        Key of the STAGATE outputs.

    Returns
    -------
    A table indexed by gene with columns ``measured`` and ``denoised``; genes the model did
    not use, and constant ones, get NaN.
    """
    conn = sp.csr_matrix(adata.obsp[_keys.graph_keys(adata, graph_key)[0]])
    genes = [g for g in genes if g in adata.var_names]
    measured = adata[:, genes].X
    measured = measured.toarray() if sp.issparse(measured) else np.asarray(measured)
    out = pd.DataFrame(index=pd.Index(genes, name="gene"))
    out["measured"] = _morans_i(conn, measured)
    rex = denoised_matrix(adata, genes, denoised_key)
    values = np.full(len(genes), np.nan)
    have = ~np.isnan(rex).all(0)
    if have.any():
        values[have] = _morans_i(conn, rex[:, have])
    out["denoised"] = values
    return out


def _morans_i(conn: sp.csr_matrix, values: np.ndarray) -> np.ndarray:
    """scanpy's Moran's I of each column; a constant column (e.g. a gene the reconstruction
    clamps to 0 everywhere) has no autocorrelation to measure: NaN, without scanpy's warning."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*variables were constant.*")
        return np.asarray(sc.metrics.morans_i(conn, values.T.astype(np.float64)))


def denoised_matrix(adata: AnnData, genes: list[str], key: str = _keys.EMBEDDING) -> np.ndarray:
    """The denoised expression of `genes` by name (spots x genes, float32).

    Parameters
    ----------
    adata
        After :func:`stagate.tl.stagate` or :func:`stagate.tl.consensus_domains`.
    genes
        Gene names (``var_names``).
    key
        Key the model's outputs were stored under.

    Returns
    -------
    The reconstruction, read from ``layers['{key}_ReX']`` when the model used every gene,
    else from ``obsm['{key}_ReX']`` (columns ``uns[key]['genes']``). Genes the model did
    not use get NaN columns.
    """
    name = _keys.recon_key(key)
    out = np.full((adata.n_obs, len(genes)), np.nan, dtype=np.float32)
    if name in adata.layers:
        idx = adata.var_names.get_indexer(genes)
        layer = adata.layers[name]
        cols = layer[:, idx]
        out[:] = cols.toarray() if sp.issparse(cols) else np.asarray(cols)
    elif name in adata.obsm:  # model genes only: columns named in uns[key]['genes']
        stored = adata.obsm[name]
        columns = (stored.columns if isinstance(stored, pd.DataFrame)  # files before 0.2
                   else pd.Index(adata.uns[key]["genes"]))
        where = columns.get_indexer(genes)
        known = np.flatnonzero(where >= 0)
        if known.size:
            out[:, known] = np.asarray(stored)[:, where[known]]
    return out


def attention_by_domain(adata: AnnData, *, domain_key: str = _keys.DOMAIN,
                        key: str = _keys.EMBEDDING) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Does a spot attend more to neighbours of its own domain than their number implies?

    For each spot with at least one neighbour (self excluded): ``attention_same``, the share
    of its attention (over neighbours, renormalised without the self-loop) on neighbours of
    its own domain, and ``expected_same``, the share of its neighbours in its domain (what
    uniform attention would give). At a domain's border (``expected_same < 1``) a difference
    shows the attention favouring its own domain; inside a domain both are 1.

    Parameters
    ----------
    adata
        With the attention ``obsp['{key}_attention']`` and the domains.
    domain_key
        obs column of the domains.
    key
        Key of the STAGATE outputs.

    Returns
    -------
    per_spot
        Indexed like ``obs``: ``attention_same``, ``expected_same``, ``self_attention``,
        ``border`` (bool).
    per_domain
        For each domain, over its border spots: ``n_border``, mean ``attention_same``,
        mean ``expected_same`` and their difference ``excess``; and the mean self-attention.
    """
    att = sp.csr_matrix(adata.obsp[_keys.attention_key(key)])
    labels = adata.obs[domain_key].astype(str).to_numpy()
    rows = np.repeat(np.arange(att.shape[0]), np.diff(att.indptr))
    cols = att.indices
    vals = att.data.astype(np.float64)
    other = rows != cols
    same = (labels[rows] == labels[cols]) & other
    n = att.shape[0]
    total = np.bincount(rows[other], vals[other], minlength=n)
    on_same = np.bincount(rows[same], vals[same], minlength=n)
    n_nb = np.bincount(rows[other], minlength=n)
    n_same = np.bincount(rows[same], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_spot = pd.DataFrame({
            "attention_same": on_same / total,
            "expected_same": n_same / n_nb,
            "self_attention": np.bincount(rows[~other], vals[~other], minlength=n),
        }, index=adata.obs_names)
    per_spot["border"] = per_spot["expected_same"] < 1
    per_spot[domain_key] = labels
    border = per_spot[per_spot["border"]]
    per_domain = border.groupby(domain_key).agg(
        n_border=("attention_same", "size"), attention_same=("attention_same", "mean"),
        expected_same=("expected_same", "mean"))
    per_domain["excess"] = per_domain["attention_same"] - per_domain["expected_same"]
    per_domain["self_attention"] = per_spot.groupby(domain_key)["self_attention"].mean()
    return per_spot.drop(columns=domain_key), per_domain

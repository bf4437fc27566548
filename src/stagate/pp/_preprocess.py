"""The published preprocessing: seurat_v3 HVGs on raw counts, normalise to 1e4, log1p."""

from __future__ import annotations

import numpy as np
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from .. import _keys
from .._docs import DOC_ADATA, DOC_COPY, doc_params
from .._logging import log
from .._validation import StagateInputError, check_counts


@doc_params(adata=DOC_ADATA, copy=DOC_COPY)
def preprocess(
    adata: AnnData,
    *,
    n_top_genes: int | None = 3000,
    layer: str | None = None,
    target_sum: float = 1e4,
    subset: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Select highly variable genes on raw counts, then normalise and log-transform.

    The STAGATE protocol: ``seurat_v3`` highly variable genes computed on the raw counts
    (top 3000), each spot scaled to `target_sum` total counts, then ``log1p``. Small imaging
    panels (fewer genes than `n_top_genes`, or ``n_top_genes=None``) keep all genes.

    Parameters
    ----------
    {adata}
    n_top_genes
        Number of highly variable genes; None keeps every gene.
    layer
        Layer holding the raw counts; None reads ``adata.X``.
    target_sum
        Total counts per spot after normalisation.
    subset
        Keep only the selected genes (the model's input). With False, all genes stay and
        ``var['highly_variable']`` marks the model's genes.
    {copy}

    Returns
    -------
    Updates `adata` (or returns a copy) with:

    ``layers['counts']``
        The raw counts.
    ``X``
        Log-normalised expression (float32).
    ``var['highly_variable']``
        The genes the model will use.
    ``uns['stagate_preprocess']``
        The parameters.
    """
    counts = adata.X if layer is None else adata.layers[layer]
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    if counts is None or 0 in adata.shape:
        msg = f"The expression matrix is empty (shape {adata.shape}); nothing to preprocess."
        raise StagateInputError(msg)
    check_counts(counts, what=where)
    target = adata.copy() if copy else adata
    # keep the counts as they are (no float copy: a million spots hold gigabytes of them)
    counts = target.X if layer is None else target.layers[layer]
    target.layers[_keys.COUNTS_LAYER] = counts if sp.issparse(counts) else sp.csr_matrix(counts)

    totals = np.asarray(target.layers[_keys.COUNTS_LAYER].sum(axis=1)).ravel()
    if (totals == 0).any():
        names = target.obs_names[totals == 0][:5].tolist()
        msg = (
            f"{int((totals == 0).sum())} spot(s) have no counts at all (e.g. {names}); "
            f"remove them first (sc.pp.filter_cells(adata, min_counts=1))."
        )
        raise StagateInputError(msg)

    if n_top_genes is None or n_top_genes >= target.n_vars:
        target.var["highly_variable"] = True
        log.info("using all %d genes (panel smaller than n_top_genes)", target.n_vars)
    else:
        sc.pp.highly_variable_genes(
            target, flavor="seurat_v3", n_top_genes=n_top_genes, layer=_keys.COUNTS_LAYER
        )
        log.info("selected %d highly variable genes (seurat_v3)", n_top_genes)

    work = AnnData(sp.csr_matrix(target.layers[_keys.COUNTS_LAYER], dtype=np.float32, copy=True))
    sc.pp.normalize_total(work, target_sum=target_sum)  # in place on the one float copy
    np.log1p(work.X.data, out=work.X.data)
    target.X = work.X
    if subset:
        target._inplace_subset_var(target.var["highly_variable"].to_numpy())
    target.uns["stagate_preprocess"] = {
        "params": {"n_top_genes": n_top_genes, "target_sum": target_sum, "layer": layer,
                   "subset": subset, "flavor": "seurat_v3"}
    }
    return target if copy else None

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
    batch_key: str | None = None,
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
    batch_key
        Column of ``obs`` naming sections: highly variable genes are chosen jointly, ranked
        by how variable they are within each section (scanpy's ``batch_key``), so a gene
        that merely differs between sections is not preferred.
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
        if batch_key is not None and batch_key not in target.obs:
            msg = f"batch_key {batch_key!r} is not a column of adata.obs."
            raise StagateInputError(msg)
        sc.pp.highly_variable_genes(
            target, flavor="seurat_v3", n_top_genes=n_top_genes, layer=_keys.COUNTS_LAYER,
            batch_key=batch_key,
        )
        log.info("selected %d highly variable genes (seurat_v3)", n_top_genes)

    hvg = target.var["highly_variable"].to_numpy(dtype=bool)
    if subset and not hvg.all():
        # subset before normalising: only the model's genes get a float copy (the totals
        # above cover every gene, as normalise-then-subset would); X and the counts layer
        # are one matrix here, so it is subset once
        if target.X is target.layers[_keys.COUNTS_LAYER]:
            target.X = None
        target._inplace_subset_var(hvg)
    target.X = log_normalise(target.layers[_keys.COUNTS_LAYER], totals, target_sum)
    target.uns["stagate_preprocess"] = {
        "params": {"n_top_genes": n_top_genes, "target_sum": target_sum, "layer": layer,
                   "subset": subset, "flavor": "seurat_v3", "batch_key": batch_key}
    }
    return target if copy else None


def log_normalise(counts: sp.csr_matrix, totals: np.ndarray, target_sum: float) -> sp.csr_matrix:
    """``log1p(counts / totals * target_sum)`` as float32 CSR, one copy of `counts`.

    The arithmetic of scanpy's ``normalize_total`` (per-row factor ``totals / target_sum`` in
    float32, then a division), so the result is bit-identical to it; the totals are passed
    in because they must cover every gene while `counts` may hold only the selected ones.
    """
    x = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    factor = totals.astype(np.float32) / target_sum
    factor[factor == 0] = 1  # spots without counts are rejected earlier; never divide by 0
    np.true_divide(x.data, np.repeat(factor, np.diff(x.indptr)), out=x.data)
    np.log1p(x.data, out=x.data)
    return x

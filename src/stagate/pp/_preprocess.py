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
            f"remove them first (sc.pp.filter_cells(adata, min_counts=1); on the command "
            f"line: --min-counts 1)."
        )
        raise StagateInputError(msg)

    if batch_key is not None and batch_key not in target.obs:
        msg = f"batch_key {batch_key!r} is not a column of adata.obs."
        raise StagateInputError(msg)
    n_variable = _fewest_variable_genes(target.layers[_keys.COUNTS_LAYER],
                                        None if batch_key is None else target.obs[batch_key])
    if n_top_genes is None or n_top_genes >= target.n_vars:
        target.var["highly_variable"] = True
        log.info("using all %d genes (panel smaller than n_top_genes)", target.n_vars)
    elif n_variable < _MIN_VARIABLE_GENES:
        # seurat_v3 fits a loess curve of variance against mean: with a handful of genes the
        # fit is singular, and with fewer than 4 it crashes the interpreter (scikit-misc)
        target.var["highly_variable"] = True
        log.warning("only %d genes vary across spots%s, too few to rank by variability; "
                    "all %d genes are used", n_variable,
                    " within a section" if batch_key else "", target.n_vars)
    else:
        try:
            sc.pp.highly_variable_genes(
                target, flavor="seurat_v3", n_top_genes=n_top_genes, layer=_keys.COUNTS_LAYER,
                batch_key=batch_key,
            )
            log.info("selected %d highly variable genes (seurat_v3)", n_top_genes)
        except ValueError as err:  # the loess fit is singular (genes with equal means)
            target.var["highly_variable"] = True
            log.warning("seurat_v3 could not rank the genes by variability (%s); all %d genes "
                        "are used", err, target.n_vars)

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


#: fewest varying genes for which seurat_v3's loess fit is reliable (it fails below ~15)
_MIN_VARIABLE_GENES = 30


def _fewest_variable_genes(counts, batches) -> int:
    """The smallest number, over sections, of distinct means among genes whose counts vary
    across spots (the points seurat_v3's loess fit gets)."""
    groups = [None] if batches is None else [
        np.flatnonzero((batches == b).to_numpy()) for b in batches.unique()]
    fewest = None
    for rows in groups:
        mean, var = _column_moments(counts if rows is None else counts[rows])
        n = int(np.unique(np.round(mean[var > 1e-12], 12)).size)
        fewest = n if fewest is None else min(fewest, n)
    return fewest or 0


def _column_moments(m) -> tuple[np.ndarray, np.ndarray]:
    """Column means and variances without a float copy of the matrix (chunks of its data)."""
    n = m.shape[0]
    if not sp.issparse(m):
        d = np.asarray(m, dtype=np.float64)
        return d.mean(axis=0), d.var(axis=0)
    m = sp.csr_matrix(m)
    s1 = np.zeros(m.shape[1])
    s2 = np.zeros(m.shape[1])
    for start in range(0, m.nnz, 10_000_000):
        idx = m.indices[start:start + 10_000_000]
        v = m.data[start:start + 10_000_000].astype(np.float64)
        s1 += np.bincount(idx, v, minlength=m.shape[1])
        s2 += np.bincount(idx, v * v, minlength=m.shape[1])
    mean = s1 / n
    return mean, s2 / n - mean**2


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

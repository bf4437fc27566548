"""Does the reconstruction recover signal, or only smooth? A held-out check by count splitting.

Smoothing raises Moran's I whether or not it recovers biology, so Moran's I alone cannot tell.
Here each count is split by binomial thinning into a training half and a test half (for
Poisson counts the halves are independent draws of the same expression: the "molecular
cross-validation" of Batson et al. 2019, "count splitting" of Neufeld et al. 2023). The
model is trained on the training half only, and its reconstruction is compared with the
untouched test half, against two references computed
from the same training half: the measured values themselves, and a plain spatial smoothing
(each spot's mean over itself and its spatial neighbours). A reconstruction that beats the
smoothing predicts held-out expression better than averaging neighbours does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .. import _keys
from .._docs import DOC_ADATA, doc_params
from .._logging import log
from .._validation import StagateInputError, check_counts
from ..pp._preprocess import log_normalise


def thin_counts(counts, fraction: float, rng: np.random.Generator):
    """Binomial thinning: (kept, rest) with kept ~ Binomial(counts, fraction), CSR."""
    counts = sp.csr_matrix(counts)
    data = np.rint(counts.data).astype(np.int64)
    kept = rng.binomial(data, fraction)
    # each half owns its index arrays: eliminate_zeros rewrites them in place
    a = sp.csr_matrix((kept.astype(np.float32), counts.indices.copy(), counts.indptr.copy()),
                      counts.shape)
    b = sp.csr_matrix(((data - kept).astype(np.float32), counts.indices.copy(),
                       counts.indptr.copy()), counts.shape)
    a.eliminate_zeros()
    b.eliminate_zeros()
    return a, b


def _columnwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(0) / den, np.nan)


@doc_params(adata=DOC_ADATA)
def evaluate_denoising(
    adata: AnnData,
    *,
    fraction: float = 0.5,
    genes: list[str] | None = None,
    layer: str | None = _keys.COUNTS_LAYER,
    n_top_genes: int | None = 3000,
    random_state: int = 0,
    **stagate_kwds,
) -> tuple[pd.DataFrame, dict]:
    """Held-out check of the denoised expression by binomial count splitting.

    Parameters
    ----------
    {adata}
        Raw counts in `layer` (or ``X`` when `layer` is None or absent), coordinates in
        ``obsm['spatial']``. Not modified.
    fraction
        Share of each count given to the training half.
    genes
        Genes to score (must be among the model's); default every gene the model uses.
    n_top_genes
        Highly variable genes the model is trained on (chosen on the training half).
    random_state
        Seed of the split and of training.
    **stagate_kwds
        Training settings for :func:`stagate.tl.stagate` (recipe, n_epochs, device, ...).

    Returns
    -------
    per_gene
        Indexed by gene: Pearson correlation across spots with the log-normalised test half
        of ``measured`` (the training half itself), ``smoothed`` (its neighbourhood mean) and
        ``denoised`` (STAGATE's reconstruction from the training half).
    summary
        Median and mean of each column, the number of genes, and how often the denoised
        values beat each reference.
    """
    from .. import pp
    from ._stagate import stagate

    source = adata.layers[layer] if layer and layer in adata.layers else adata.X
    check_counts(source, what="the counts to split")
    if not 0 < fraction < 1:
        msg = f"fraction must be between 0 and 1 (exclusive), got {fraction}."
        raise StagateInputError(msg)
    rng = np.random.default_rng(random_state)
    train_counts, test_counts = thin_counts(source, fraction, rng)
    keep = np.asarray(train_counts.sum(1)).ravel() > 0
    keep &= np.asarray(test_counts.sum(1)).ravel() > 0
    train = AnnData(train_counts[keep], obs=pd.DataFrame(index=adata.obs_names[keep]),
                    var=pd.DataFrame(index=adata.var_names))
    train.obsm[_keys.SPATIAL] = np.asarray(adata.obsm[_keys.SPATIAL])[keep]
    pp.preprocess(train, n_top_genes=n_top_genes, subset=False)
    pp.spatial_network(train)
    log.info("denoising check: training on a %.0f%% thinning of the counts", 100 * fraction)
    stagate(train, random_state=random_state, **stagate_kwds)
    model_genes = list(train.uns[_keys.EMBEDDING]["genes"])
    genes = model_genes if genes is None else [g for g in genes if g in set(model_genes)]
    if not genes:
        msg = "None of the requested genes is among the model's genes."
        raise StagateInputError(msg)
    idx = train.var_names.get_indexer(genes)
    measured = np.asarray(train.X[:, idx].toarray(), dtype=np.float64)
    conn = sp.csr_matrix(train.obsp[_keys.conn_key()])
    pattern = (conn != 0).astype(np.float64) + sp.identity(conn.shape[0])
    smoothed = sp.diags(1 / np.asarray(pattern.sum(1)).ravel()) @ pattern @ measured
    from ._downstream import denoised_matrix

    denoised = denoised_matrix(train, genes).astype(np.float64)
    test_half = test_counts[keep][:, adata.var_names.get_indexer(genes)]
    # the same normalisation as the training half (totals over every gene, then log1p)
    test = log_normalise(test_half, np.asarray(test_counts[keep].sum(1)).ravel(),
                         1e4).toarray().astype(np.float64)
    per_gene = pd.DataFrame({
        "measured": _columnwise_pearson(measured, test),
        "smoothed": _columnwise_pearson(smoothed, test),
        "denoised": _columnwise_pearson(denoised, test),
    }, index=pd.Index(genes, name="gene"))
    valid = per_gene.dropna()
    summary = {
        "n_genes": int(len(valid)), "fraction": fraction,
        "median": {c: round(float(valid[c].median()), 4) for c in valid},
        "mean": {c: round(float(valid[c].mean()), 4) for c in valid},
        "denoised_beats_measured": round(float((valid.denoised > valid.measured).mean()), 4),
        "denoised_beats_smoothed": round(float((valid.denoised > valid.smoothed).mean()), 4),
    }
    return per_gene, summary

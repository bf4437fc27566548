"""Accuracy against a manual annotation, on annotated spots only."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from .._validation import StagateInputError, require_key

#: label values that mean "not annotated"
MISSING_LABELS = frozenset({"NA", "nan", "NaN", "", "None", "unknown", "Unknown"})


def annotated_mask(labels: pd.Series | np.ndarray) -> np.ndarray:
    """True where a spot carries a real annotation (not missing, not "NA")."""
    s = pd.Series(labels)
    return (~s.isna() & ~s.astype(str).isin(MISSING_LABELS)).to_numpy()


def composition(adata: AnnData, label_key: str, domain_key: str = "domain") -> pd.DataFrame:
    """Spots per (domain, annotation), domains in their own order; spots without an
    annotation ("NA", missing) are left out, as they are from the ARI."""
    known = annotated_mask(adata.obs[label_key])
    counts = pd.crosstab(adata.obs[domain_key][known].astype(str),
                         adata.obs[label_key][known].astype(str))
    domains = adata.obs[domain_key].astype("category").cat.categories
    counts = counts.loc[[str(c) for c in domains if str(c) in counts.index]]
    counts.index.name = None
    counts.columns.name = None
    return counts


def score_domains(adata: AnnData, *, label_key: str, domain_key: str = "domain",
                  groupby: str | None = None) -> dict:
    """ARI and NMI of ``obs[domain_key]`` against ``obs[label_key]`` on annotated spots.

    Spots whose label is missing or one of "NA", "nan", "", "unknown" are left out.

    Parameters
    ----------
    adata
        Annotated data with both columns in ``obs``.
    label_key
        Column with the manual annotation.
    domain_key
        Column with the predicted domains.
    groupby
        Column naming sections: also score each section on its own.

    Returns
    -------
    ``{"ari", "nmi", "n_scored"}``; with `groupby` also ``"per_section": {section: {"ari",
    "nmi", "n_scored"}}`` for each section with annotated spots.
    """
    for key in (label_key, domain_key):
        if key not in adata.obs:
            msg = f"adata.obs[{key!r}] not found (obs has {list(adata.obs.columns)})."
            raise StagateInputError(msg)
    truth = adata.obs[label_key]
    mask = annotated_mask(truth)
    if not mask.any():
        msg = f"adata.obs[{label_key!r}] has no annotated spot (all missing or 'NA')."
        raise StagateInputError(msg)
    t = truth.astype(str).to_numpy()
    p = adata.obs[domain_key].astype(str).to_numpy()
    out = _scores(t[mask], p[mask])
    if groupby is not None:
        require_key(adata, "obs", groupby)
        groups = adata.obs[groupby].astype(str).to_numpy()
        out["per_section"] = {g: _scores(t[mask & (groups == g)], p[mask & (groups == g)])
                              for g in pd.unique(groups) if (mask & (groups == g)).any()}
    return out


def _scores(truth: np.ndarray, pred: np.ndarray) -> dict:
    return {"ari": float(adjusted_rand_score(truth, pred)),
            "nmi": float(normalized_mutual_info_score(truth, pred)), "n_scored": int(truth.size)}

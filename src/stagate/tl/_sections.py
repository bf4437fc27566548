"""How well several sections were integrated: mixing in the embedding, agreement in space."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy.spatial import cKDTree
from sklearn.metrics import adjusted_rand_score

from .. import _keys
from .._docs import DOC_ADATA, doc_params
from .._logging import log
from .._validation import StagateInputError, require_key
from ..pp._sections import section_categories


@doc_params(adata=DOC_ADATA)
def section_mixing(
    adata: AnnData,
    *,
    use_rep: str = _keys.EMBEDDING,
    section_key: str = _keys.SECTION,
    domain_key: str | None = None,
    perplexity: float = 30.0,
    key_added: str | None = "section_ilisi",
) -> dict:
    """Mixing of the sections in the embedding: the integration LISI (iLISI), scaled to [0, 1].

    For every spot, the inverse Simpson index of the sections among its embedding neighbours
    (weighted by a Gaussian kernel of the given perplexity; Korsunsky et al. 2019, computed by
    ``harmonypy.compute_lisi``), scaled as in scIB: ``(iLISI - 1) / (n_sections - 1)``, so 0
    means each spot sees only its own section and 1 means all sections equally. A batch effect
    between sections shows as a low score; sections that hold different tissue also score low,
    so compare methods on the same sections, and read the per-domain values (a domain present
    in one section only cannot mix).

    Parameters
    ----------
    {adata}
    use_rep
        Embedding in ``obsm``.
    section_key
        Column of ``obs`` naming each spot's section.
    domain_key
        Optional column of ``obs`` with domains: adds the mean score per domain.
    perplexity
        Effective number of neighbours of the kernel (harmonypy's default, 30).
    key_added
        ``obs`` column for each spot's scaled iLISI (None: not stored).

    Returns
    -------
    ``{{"ilisi": median scaled iLISI, "ilisi_mean": mean, "per_section": {{section: median}},
    "per_domain": {{domain: mean}}}}`` (``per_domain`` only with `domain_key`).
    """
    from harmonypy import compute_lisi

    require_key(adata, "obsm", use_rep, "Run stagate.tl.stagate(adata) first")
    sections = section_categories(adata, section_key)
    n_sections = len(sections.categories)
    if n_sections < 2:
        msg = f"adata.obs[{section_key!r}] holds one section; mixing needs at least two."
        raise StagateInputError(msg)
    x = np.asarray(adata.obsm[use_rep], dtype=np.float64)
    perplexity = float(min(perplexity, (adata.n_obs - 1) / 3))  # harmonypy uses 3 x perplexity
    meta = pd.DataFrame({"section": sections.astype(str)}, index=adata.obs_names)
    lisi = compute_lisi(x, meta, ["section"], perplexity=perplexity)[:, 0]
    scaled = (lisi - 1) / (n_sections - 1)
    out = {"ilisi": float(np.median(scaled)), "ilisi_mean": float(np.mean(scaled)),
           "per_section": {str(s): float(np.median(scaled[sections.codes == c]))
                           for c, s in enumerate(sections.categories)}}
    if domain_key is not None:
        require_key(adata, "obs", domain_key, "Run stagate.tl.domains(adata) first")
        dom = adata.obs[domain_key].astype(str).to_numpy()
        out["per_domain"] = {d: float(scaled[dom == d].mean()) for d in pd.unique(dom)}
    if key_added is not None:
        adata.obs[key_added] = scaled.astype(np.float32)
    log.info("section mixing (scaled iLISI): median %.3f over %d sections", out["ilisi"],
             n_sections)
    return out


@doc_params(adata=DOC_ADATA)
def section_agreement(
    adata: AnnData,
    domain_key: str = _keys.DOMAIN,
    *,
    section_key: str = _keys.SECTION,
    spatial_key: str = _keys.SPATIAL,
    max_distance: float | None = None,
) -> dict:
    """Do adjacent sections get the same domains at the same place?

    Each spot of a section is paired with the nearest spot of the previous section (in the
    section order) in x-y, if one lies within `max_distance`; the agreement of a pair of
    sections is the adjusted Rand index between the domains of the paired spots. ARI ignores
    how domains are named, so it also compares sections clustered separately.

    Parameters
    ----------
    {adata}
    domain_key
        Column of ``obs`` with the domains.
    section_key
        Column of ``obs`` naming each spot's section (its order is the stack's order).
    spatial_key
        Aligned coordinates in ``obsm`` (e.g. ``'spatial_aligned'`` after
        :func:`stagate.pp.align_sections`).
    max_distance
        Largest x-y distance of a pair. Default: 1.5 x the median distance between
        neighbouring spots within a section.

    Returns
    -------
    ``{{"mean_ari": ..., "pairs": [{{"sections": (a, b), "ari": ..., "n_pairs": ...}}, ...]}}``.
    """
    require_key(adata, "obs", domain_key, "Run stagate.tl.domains(adata) first")
    require_key(adata, "obsm", spatial_key)
    sections = section_categories(adata, section_key)
    xy = np.asarray(adata.obsm[spatial_key], dtype=np.float64)[:, :2]
    dom = adata.obs[domain_key].astype(str).to_numpy()
    members = [np.flatnonzero(sections.codes == c) for c in range(len(sections.categories))]
    if max_distance is None:
        nearest = [cKDTree(xy[m]).query(xy[m], k=2)[0][:, 1] for m in members if m.size > 1]
        pitches = [np.median(d[d > 0]) for d in nearest if (d > 0).any()]  # coincident: 0
        max_distance = 1.5 * float(np.median(pitches)) if pitches else np.inf
    pairs = []
    for k in range(1, len(members)):
        prev, cur = members[k - 1], members[k]
        d, j = cKDTree(xy[prev]).query(xy[cur], k=1)
        ok = d <= max_distance
        ari = (float(adjusted_rand_score(dom[prev[j[ok]]], dom[cur[ok]])) if ok.sum() > 1
               else float("nan"))
        pairs.append({"sections": (str(sections.categories[k - 1]), str(sections.categories[k])),
                      "ari": ari, "n_pairs": int(ok.sum())})
    aris = [p["ari"] for p in pairs if np.isfinite(p["ari"])]
    return {"mean_ari": float(np.mean(aris)) if aris else float("nan"), "pairs": pairs}

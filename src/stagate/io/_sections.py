"""Several sections, read one by one, into one AnnData with a section column."""

from __future__ import annotations

from collections.abc import Mapping

import anndata as ad
import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _keys
from .._logging import log
from .._validation import StagateInputError
from ._common import INPUT_KEY


def concat_sections(sections: Mapping[str, AnnData], *, key: str = _keys.SECTION) -> AnnData:
    """Stack sections (raw counts, ``obsm['spatial']``) into one AnnData, in the given order.

    Genes are those shared by every section (files of one study often hold different gene
    sets): how many each section loses is logged and kept in ``uns['stagate_sections']``. Spot
    names get the section name appended (``AAAC...-1-151673``), since Visium barcodes repeat
    across slides. Tissue images move to ``uns['spatial'][section name]``.

    Parameters
    ----------
    sections
        Section name -> AnnData, in section order (consecutive sections next to each other).
    key
        ``obs`` column written with each spot's section (categorical, in the given order).

    Returns
    -------
    One AnnData: the shared genes, ``obs[key]``, ``obsm['spatial']``, ``uns['spatial']``
    (images, where present), ``uns['stagate_input']`` of the first section with every
    section's source, and ``uns['stagate_sections']`` (order, spots and genes lost per section).
    """
    names = [str(n) for n in sections]
    if len(set(names)) != len(names):
        msg = f"Section names must be unique, got {names}."
        raise StagateInputError(msg)
    if not names:
        msg = "No section given."
        raise StagateInputError(msg)
    units = {n: (a.uns.get(INPUT_KEY, {}).get("unit") or "unknown") for n, a in sections.items()}
    known = {u for u in units.values() if u != "unknown"}
    if len(known) > 1:
        msg = (f"The sections' coordinates are in different units ({units}); convert them to one "
               f"unit before analysing them together.")
        raise StagateInputError(msg)
    for n, a in sections.items():
        if a.n_obs == 0:
            msg = f"Section {n!r} has no spots."
            raise StagateInputError(msg)
        if _keys.SPATIAL not in a.obsm:
            msg = f"Section {n!r} has no coordinates in obsm['spatial']."
            raise StagateInputError(msg)
        if a.obsm[_keys.SPATIAL].shape[1] != next(iter(sections.values())).obsm[
                _keys.SPATIAL].shape[1]:
            msg = "The sections' coordinates have different numbers of columns (2-D vs 3-D)."
            raise StagateInputError(msg)
    shared = _shared_genes(sections)
    lost = {n: int(a.n_vars - shared.size) for n, a in sections.items()}
    for n in names:
        if lost[n]:
            log.warning("section %s: %d of %d genes are not in every section and are dropped",
                        n, lost[n], sections[n].n_vars)
    parts = []
    for n, a in sections.items():
        sub = a[:, shared]
        part = AnnData(X=sub.X, obs=a.obs.copy(), var=pd.DataFrame(index=shared))
        part.obs_names = [f"{s}-{n}" for s in a.obs_names]
        part.obsm[_keys.SPATIAL] = np.asarray(a.obsm[_keys.SPATIAL], dtype=np.float64)
        for k in a.layers:
            part.layers[k] = sub.layers[k]
        part.obs[key] = n
        parts.append(part)
    out = ad.concat(parts, join="inner", merge=None)
    out.obs[key] = pd.Categorical(out.obs[key].astype(str), categories=names)
    images = {}
    for n, a in sections.items():
        libs = a.uns.get("spatial", {})
        if libs:
            images[n] = next(iter(libs.values()))
    if images:
        out.uns["spatial"] = images
    first = dict(next(iter(sections.values())).uns.get(INPUT_KEY, {}))
    first["sources"] = np.asarray([str(a.uns.get(INPUT_KEY, {}).get("source", n))
                                   for n, a in sections.items()], dtype=object)
    out.uns[INPUT_KEY] = first
    out.uns["stagate_sections"] = {
        "key": key, "order": np.asarray(names, dtype=object),
        "n_spots": np.asarray([sections[n].n_obs for n in names], dtype=np.int64),
        "genes_lost": np.asarray([lost[n] for n in names], dtype=np.int64),
        "n_shared_genes": int(shared.size),
    }
    log.info("%d sections, %d spots, %d shared genes", len(names), out.n_obs, shared.size)
    return out


def _shared_genes(sections: Mapping[str, AnnData]) -> pd.Index:
    shared = None
    for n, a in sections.items():
        if not a.var_names.is_unique:
            msg = (f"Section {n!r} has duplicated gene names; make them unique first "
                   f"(adata.var_names_make_unique()).")
            raise StagateInputError(msg)
        shared = a.var_names if shared is None else shared.intersection(a.var_names, sort=False)
    if shared.size == 0:
        msg = ("The sections share no gene name (are some named by symbol and others by "
               "Ensembl ID?); they cannot be modelled together.")
        raise StagateInputError(msg)
    return shared

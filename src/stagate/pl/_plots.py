"""Plots a biologist reads: domain maps, UMAP, neighbour counts, loss, raw vs denoised genes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.colors import to_hex

from .. import _keys
from .._validation import StagateInputError, require_key

#: above this many points scatter plots are rasterised (vector files stay small)
_RASTERISE_ABOVE = 5000


def _palette(n: int) -> list:
    cmap = plt.get_cmap("tab20" if n > 10 else "tab10")
    return [cmap(i % cmap.N) for i in range(n)]


def _colours(adata: AnnData, key: str, cats: Sequence) -> list:
    """The colours of `key`'s categories: ``uns['{key}_colors']`` (scanpy's place for them,
    e.g. from :func:`match_colors`) when it holds one per category, else our palette."""
    stored = adata.uns.get(f"{key}_colors")
    if stored is not None and len(stored) == len(cats):
        return list(stored)
    return _palette(len(cats))


def match_colors(adata: AnnData, key: str = _keys.DOMAIN, *, reference: str) -> None:
    """Colour the domains after an annotation, so the two maps read side by side.

    Each domain is matched one-to-one to the annotation class it shares most spots with
    (Hungarian matching on the counts; unannotated spots left out) and takes that class's
    colour; domains left without a class (or matched to one they hold no spot of) take
    colours no class uses. Stored where scanpy
    keeps colours, so every plot here and scanpy's own use them.

    Parameters
    ----------
    adata
        With ``obs[key]`` and ``obs[reference]``.
    key
        The domains.
    reference
        The annotation.

    Returns
    -------
    ``uns['{reference}_colors']`` (kept when it already holds one colour per class, else our
    palette, in its categories' order) and ``uns['{key}_colors']`` (in the domains' order).
    """
    from scipy.optimize import linear_sum_assignment

    from ..tl._metrics import composition

    classes = [str(c) for c in _categories(adata.obs[reference])]
    class_colours = [to_hex(c) for c in _colours(adata, reference, classes)]  # the user's kept
    counts = composition(adata, reference, key)  # domains x classes, annotated spots only
    table = counts.to_numpy()
    rows, cols = linear_sum_assignment(-table)
    matched = {str(counts.index[r]): class_colours[classes.index(str(counts.columns[c]))]
               for r, c in zip(rows, cols, strict=True)
               if table[r, c] > 0}  # never the colour of a class the domain has no spot of
    spare = [c for c in (to_hex(x) for x in _palette(10) + _palette(20))
             if c not in class_colours]
    domains = [str(d) for d in _categories(adata.obs[key])]
    unmatched = iter(spare + [to_hex(x) for x in _palette(len(domains))])
    adata.uns[f"{reference}_colors"] = class_colours
    adata.uns[f"{key}_colors"] = [matched.get(d) or next(unmatched) for d in domains]


def _spot_size(n: int) -> float:
    return float(np.clip(30000 / max(n, 1), 0.05, 40))


def _categories(labels) -> list:
    """The label categories in their order (a categorical's own, else sorted)."""
    return list(labels.cat.categories) if hasattr(labels, "cat") else sorted(set(labels))


def _categorical_scatter(ax: Axes, xy: np.ndarray, labels, title: str, kwds: Mapping,
                         colours: Sequence | None = None) -> Axes:
    cats = _categories(labels)
    values = np.asarray(labels.astype(str))
    colours = _palette(len(cats)) if colours is None else colours
    for c, colour in zip(cats, colours, strict=True):
        m = values == str(c)
        ax.scatter(xy[m, 0], xy[m, 1], s=_spot_size(len(xy)), color=colour, label=str(c),
                   linewidths=0, rasterized=len(xy) > _RASTERISE_ABOVE, **kwds)
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, markerscale=2,
              fontsize="small")
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def domains(
    adata: AnnData, *, key: str = _keys.DOMAIN, spatial_key: str = _keys.SPATIAL,
    section_key: str | None = None, image: str | None = "hires", library_id: str | None = None,
    title: str | None = None, ax: Axes | None = None, ncols: int = 4,
    scatter_kwds: Mapping[str, Any] = MappingProxyType({}),
) -> Axes | np.ndarray:
    """Domain map in tissue coordinates (y down, as on the slide image).

    When ``uns['spatial'][library_id]['images'][image]`` exists (Visium, scverse layout), the
    tissue image is drawn underneath, scaled by its ``tissue_{image}_scalef``; None skips it.
    With `section_key`, one panel per section (in its categories' order, each over its own
    image, ``uns['spatial'][section]``) and one shared legend; returns the array of axes.
    """
    require_key(adata, "obs", key, "Run stagate.tl.domains(adata) first")
    require_key(adata, "obsm", spatial_key)
    if section_key is not None:
        return _domains_by_section(adata, key=key, spatial_key=spatial_key,
                                   section_key=section_key, image=image, title=title,
                                   ncols=ncols, scatter_kwds=scatter_kwds)
    ax = plt.figure(figsize=(6, 5)).gca() if ax is None else ax
    xy = np.asarray(adata.obsm[spatial_key])[:, :2]
    drew_image = image is not None and _draw_tissue_image(ax, adata, image, library_id)
    kwds = {"alpha": 0.8} | dict(scatter_kwds) if drew_image else scatter_kwds
    _categorical_scatter(ax, xy, adata.obs[key], title or key, kwds,
                         _colours(adata, key, _categories(adata.obs[key])))
    if not drew_image:
        ax.invert_yaxis()
    return ax


def _domains_by_section(adata, *, key, spatial_key, section_key, image, title, ncols,
                        scatter_kwds) -> np.ndarray:
    from ..pp._sections import section_categories

    sections = section_categories(adata, section_key)
    names = list(sections.categories)
    ncols = max(1, min(ncols, len(names)))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols + 1.5, 4.2 * nrows),
                             squeeze=False)
    labels = adata.obs[key]
    cats = _categories(labels)
    colours = dict(zip(map(str, cats), _colours(adata, key, cats), strict=True))
    xy_all = np.asarray(adata.obsm[spatial_key])[:, :2]
    values = labels.astype(str).to_numpy()
    libraries = adata.uns.get("spatial", {})
    for k, (ax, name) in enumerate(zip(axes.flat, names, strict=False)):
        m = sections.codes == k
        drew = (image is not None and name in libraries
                and _draw_tissue_image(ax, adata, image, name))
        for c in cats:
            sel = m & (values == str(c))
            ax.scatter(xy_all[sel, 0], xy_all[sel, 1], s=_spot_size(int(m.sum())),
                       color=colours[str(c)], linewidths=0, alpha=0.8 if drew else 1.0,
                       rasterized=int(m.sum()) > _RASTERISE_ABOVE, **scatter_kwds)
        if not drew:
            ax.invert_yaxis()
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        label = f"{section_key} {name}" if str(name).isdigit() else str(name)  # "section 2"
        ax.set_title(f"{label} ({int(m.sum())} spots)")
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], marker="o", ls="", color=colours[str(c)], label=str(c))
               for c in cats]
    fig.legend(handles=handles, loc="center right", frameon=False, title=key,
               fontsize="small")
    fig.suptitle(title or key)
    fig.tight_layout(rect=(0, 0, 1 - 1.3 / fig.get_figwidth(), 1))
    return axes


def domains_3d(
    adata: AnnData, *, key: str = _keys.DOMAIN, spatial_key: str = _keys.SPATIAL,
    section_key: str | None = None, title: str | None = None, elev: float = 25,
    azim: float = -60,
) -> Axes:
    """The stack (or volume) in 3-D, coloured by domain.

    The third axis is the section's position in the stack with `section_key` (sections are
    ordered, their spacing is not known), else the third column of ``obsm[spatial_key]``.
    """
    require_key(adata, "obs", key, "Run stagate.tl.domains(adata) first")
    require_key(adata, "obsm", spatial_key)
    coords = np.asarray(adata.obsm[spatial_key], dtype=float)
    sections = None
    if section_key is not None:
        from ..pp._sections import section_categories

        sections = section_categories(adata, section_key)
        z, zlabel = sections.codes.astype(float), "section"
    elif coords.shape[1] >= 3:
        z, zlabel = coords[:, 2], "z"
    else:
        msg = f"obsm[{spatial_key!r}] is 2-D; pass section_key to stack the sections."
        raise StagateInputError(msg)
    fig = plt.figure(figsize=(7, 6))
    ax = fig.add_subplot(projection="3d")
    labels = adata.obs[key]
    cats = _categories(labels)
    values = labels.astype(str).to_numpy()
    size = float(np.clip(60000 / max(adata.n_obs, 1), 0.3, 20))
    for c, colour in zip(cats, _colours(adata, key, cats), strict=True):
        m = values == str(c)
        ax.scatter(coords[m, 0], coords[m, 1], z[m], s=size, color=colour, label=str(c),
                   linewidths=0, depthshade=False, rasterized=True)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel(zlabel)
    ax.locator_params(axis="x", nbins=5)  # the default crowds the slanted x/y tick labels
    ax.locator_params(axis="y", nbins=5)
    ax.invert_yaxis()
    if sections is not None:
        ax.set_zticks(np.arange(len(sections.categories)))
        ax.set_zticklabels(sections.categories, fontsize="small")
    ax.view_init(elev=elev, azim=azim)
    # the legend outside the 3-D box, clear of the z axis label
    fig.legend(*ax.get_legend_handles_labels(), loc="center right", frameon=False,
               markerscale=2, fontsize="small", title=key)
    fig.subplots_adjust(left=0, right=0.8)
    ax.set_title(title or f"{key} in 3-D")
    return ax


def _draw_tissue_image(ax: Axes, adata: AnnData, image: str, library_id: str | None) -> bool:
    libraries = adata.uns.get("spatial", {})
    if not libraries:
        return False
    lib = libraries.get(library_id) if library_id else next(iter(libraries.values()))
    img = (lib or {}).get("images", {}).get(image)
    scale = (lib or {}).get("scalefactors", {}).get(f"tissue_{image}_scalef")
    if img is None or scale is None:
        return False
    h, w = img.shape[:2]
    # extent in full-resolution pixels; imshow's origin puts y downwards as on the slide
    ax.imshow(img, extent=(0, w / scale, h / scale, 0))
    return True


def umap(
    adata: AnnData, *, color: str = _keys.DOMAIN, basis: str | None = None,
    title: str | None = None, ax: Axes | None = None, paga: bool = False,
    scatter_kwds: Mapping[str, Any] = MappingProxyType({}),
) -> Axes:
    """UMAP of the embedding coloured by a categorical `color`.

    `basis` defaults to ``obsm['STAGATE_umap']`` (:func:`stagate.tl.embedding_umap`), else
    scanpy's ``X_umap``. With `paga`, the PAGA connectivities between the `color` groups
    (``uns['STAGATE_paga']``) are drawn over it: a line between group centres, as thick as
    the connectivity (those under 0.05 left out)."""
    basis = basis or next((b for b in (f"{_keys.EMBEDDING}_umap", "X_umap")
                           if b in adata.obsm), f"{_keys.EMBEDDING}_umap")
    if basis not in adata.obsm:
        msg = (f"adata.obsm[{basis!r}] not found. Run stagate.tl.embedding_umap(adata) "
               f"first.")
        raise StagateInputError(msg)
    ax = plt.figure(figsize=(6, 5)).gca() if ax is None else ax
    xy = np.asarray(adata.obsm[basis])
    _categorical_scatter(ax, xy, adata.obs[color], title or f"UMAP of the embedding ({color})",
                         scatter_kwds, _colours(adata, color, _categories(adata.obs[color])))
    ax.set_aspect("auto")
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    paga_key = f"{basis.removesuffix('_umap')}_paga"
    if paga and paga_key in adata.uns:
        groups = adata.uns[paga_key]["groups"]
        _draw_paga(ax, xy, adata.obs[groups], sp.csr_matrix(adata.uns[paga_key]["connectivities"]),
                   _colours(adata, groups, _categories(adata.obs[groups])))
    return ax


def _draw_paga(ax: Axes, xy: np.ndarray, groups, conn: sp.csr_matrix, colours: Sequence,
               threshold: float = 0.05) -> None:
    cats = _categories(groups)
    values = groups.astype(str).to_numpy()
    centres = np.array([np.median(xy[values == str(c)], axis=0) for c in cats])
    coo = sp.triu(conn, k=1).tocoo()
    for i, j, w in zip(coo.row, coo.col, coo.data, strict=True):
        if w >= threshold:
            ax.plot(*centres[[i, j]].T, color="black", lw=0.5 + 6 * w, alpha=0.7, zorder=3)
    ax.scatter(centres[:, 0], centres[:, 1], s=160, c=list(colours), edgecolors="black",
               zorder=4)
    for (x, y), c in zip(centres, cats, strict=True):
        ax.annotate(str(c), (x, y), ha="center", va="center", fontsize=7, zorder=5)


def paga(
    adata: AnnData, *, paga_key: str = f"{_keys.EMBEDDING}_paga",
    labels: Sequence[str] | None = None, title: str | None = None, ax: Axes | None = None,
    threshold: float = 0.05, random_state: int = 0,
) -> Axes:
    """The PAGA graph of :func:`stagate.tl.paga` (or ``embedding_umap``) drawn as a graph.

    scanpy's ``pl.paga``: one node per group (as large as the group, in the colours of the
    domain plots), edges as thick as the connectivity (those under `threshold` left out),
    placed by a force-directed layout (seeded, so the same picture every time). Groups named
    like a missing annotation ("NA", ...) are left out.

    Parameters
    ----------
    adata
        With ``uns[paga_key]``.
    paga_key
        The PAGA result: ``'STAGATE_paga'`` (domains) or e.g. ``'STAGATE_paga_layer'``.
    labels
        Node labels, one per group in the matrix order; default the group names.
    title, ax, threshold, random_state
        Title, axes to draw on, weakest edge drawn, seed of the layout.

    Returns
    -------
    The axes.
    """
    import scanpy as sc

    from ..tl._downstream import paga_groups

    require_key(adata, "uns", paga_key, "run stagate.tl.embedding_umap (or tl.paga) first")
    record = adata.uns[paga_key]
    groups = record["groups"]
    # unannotated spots ("NA") are no group of the tissue: left out of the graph
    names, keep = paga_groups(adata, record)
    ax = plt.figure(figsize=(5, 4.5)).gca() if ax is None else ax
    colours = [to_hex(c) for c in _colours(adata, groups, names)]
    values = adata.obs[groups].astype(str).to_numpy()
    shown = np.isin(values, [names[i] for i in keep])
    # scanpy's plot reads uns['paga'] and a categorical obs column: it gets a small AnnData
    # of its own holding both, so the user's uns['paga'] and obs are never touched
    view = AnnData(
        obs=pd.DataFrame({groups: pd.Categorical(values[shown],
                                                 categories=[names[i] for i in keep])},
                         index=adata.obs_names[shown]),
        uns={"paga": {"connectivities":
                      sp.csr_matrix(record["connectivities"])[keep][:, keep],
                      "connectivities_tree":
                      sp.csr_matrix(record["connectivities_tree"])[keep][:, keep],
                      "groups": groups},
             f"{groups}_colors": [colours[i] for i in keep]})
    sc.pl.paga(view, ax=ax, show=False, threshold=threshold, random_state=random_state,
               labels=None if labels is None else [labels[i] for i in keep],
               fontsize=11, fontoutline=3, node_size_scale=2.5, frameon=False,
               title=title or f"PAGA graph ({groups})", layout="fr")
    return ax


def neighbors_histogram(adata: AnnData, *, key: str = _keys.GRAPH,
                        ax: Axes | None = None) -> Axes:
    """Histogram of the number of neighbours per spot in the spatial graph `key`."""
    conn_key = _keys.graph_keys(adata, key)[0]
    n_nbrs = np.diff(sp.csr_matrix(adata.obsp[conn_key]).indptr)
    hist = np.bincount(n_nbrs)
    ax = plt.figure(figsize=(5, 3.5)).gca() if ax is None else ax
    ax.bar(np.arange(hist.size), hist, color="#4c72b0")
    mean = float(n_nbrs.mean())
    ax.axvline(mean, color="k", ls="--", lw=1)
    ax.set_xlabel("neighbours per spot")
    ax.set_ylabel("spots")
    ax.set_title(f"spatial network: {mean:.2f} neighbours per spot")
    return ax


def loss(adata: AnnData, *, key: str = _keys.EMBEDDING, ax: Axes | None = None) -> Axes:
    """Training loss per epoch."""
    if key not in adata.uns or "loss" not in adata.uns[key]:
        msg = f"adata.uns[{key!r}]['loss'] not found. Run stagate.tl.stagate(adata) first."
        raise StagateInputError(msg)
    ax = plt.figure(figsize=(5, 3.5)).gca() if ax is None else ax
    ax.plot(np.asarray(adata.uns[key]["loss"]), color="#4c72b0")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("reconstruction MSE")
    return ax


def genes(
    adata: AnnData, genes: Sequence[str], *, key: str = _keys.EMBEDDING,
    spatial_key: str = _keys.SPATIAL, cmap: str = "viridis",
    titles: Sequence[str] | None = None,
) -> np.ndarray:
    """Log-normalised (``X``) vs denoised (``layers['{key}_ReX']``) maps of `genes`.

    Returns the (2, n_genes) array of axes: first row measured, second row denoised.
    `titles` replaces the gene names in the panel titles (e.g. symbols for Ensembl IDs)."""
    from ..tl._downstream import denoised_matrix

    layer = _keys.recon_key(key)
    if layer not in adata.layers and layer not in adata.obsm:
        msg = f"adata.layers[{layer!r}] not found. Run stagate.tl.stagate(adata) first."
        raise StagateInputError(msg)
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        msg = f"genes {missing} are not in adata.var_names."
        raise StagateInputError(msg)
    xy = np.asarray(adata.obsm[spatial_key])[:, :2]
    fig, axes = plt.subplots(2, len(genes), figsize=(3 * len(genes), 6), squeeze=False)
    denoised = denoised_matrix(adata, list(genes), key)
    for j, g in enumerate(genes):
        col = adata.var_names.get_loc(g)
        measured = adata.X[:, col]
        measured = np.asarray(measured.toarray() if sp.issparse(measured) else measured).ravel()
        name = g if titles is None else titles[j]
        for i, (v, what) in enumerate([(measured, "log-normalised"),
                                        (denoised[:, j], "STAGATE denoised")]):
            ax = axes[i, j]
            ax.set_title(f"{name}\n{what}", fontsize="medium")
            if np.isnan(v).all():  # a gene the model did not use has no reconstruction
                ax.scatter(xy[:, 0], xy[:, 1], s=_spot_size(len(xy)), color="lightgrey",
                           linewidths=0, rasterized=len(xy) > _RASTERISE_ABOVE)
                ax.text(0.5, 0.5, "not a model gene:\nno denoised values", ha="center",
                        va="center", transform=ax.transAxes, fontsize="small")
            else:
                dots = ax.scatter(xy[:, 0], xy[:, 1], c=v, s=_spot_size(len(xy)), cmap=cmap,
                                  linewidths=0, rasterized=len(xy) > _RASTERISE_ABOVE)
                fig.colorbar(dots, ax=ax, shrink=0.7, label="expression")
            ax.set_aspect("equal")
            ax.invert_yaxis()
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return axes


def attention(
    adata: AnnData, spot: str | int, *, key: str = _keys.EMBEDDING,
    spatial_key: str = _keys.SPATIAL, graph_key: str = _keys.GRAPH, ax: Axes | None = None,
) -> Axes:
    """Which neighbours `spot` attends to: its attention row drawn on the tissue (the view
    spans 4 median edge lengths of the graph `graph_key` around the spot)."""
    att_key = _keys.attention_key(key)
    if att_key not in adata.obsp:
        msg = f"adata.obsp[{att_key!r}] not found. Run stagate.tl.stagate(adata) first."
        raise StagateInputError(msg)
    i = adata.obs_names.get_loc(spot) if isinstance(spot, str) else int(spot)
    row = sp.csr_matrix(adata.obsp[att_key])[i]
    xy = np.asarray(adata.obsm[spatial_key])[:, :2]
    ax = plt.figure(figsize=(5, 5)).gca() if ax is None else ax
    dist_key = _keys.graph_keys(adata, graph_key)[1]
    centre, span = xy[i], (4 * np.median(sp.csr_matrix(adata.obsp[dist_key]).data)
                           if dist_key in adata.obsp else None)
    from matplotlib.colors import TwoSlopeNorm

    ax.scatter(xy[:, 0], xy[:, 1], s=_spot_size(len(xy)), color="lightgrey", linewidths=0)
    # attention x neighbourhood size: 1 = what uniform attention would give; the raw weights
    # of a 7-spot neighbourhood all sit near 1/7, a scale on which differences vanish
    relative = row.data * row.nnz
    spread = max(1e-3, float(np.abs(relative - 1).max()))
    sc_ = ax.scatter(xy[row.indices, 0], xy[row.indices, 1], c=relative, cmap="RdBu_r",
                     norm=TwoSlopeNorm(1.0, 1 - spread, 1 + spread),
                     s=4 * _spot_size(len(xy)), edgecolors="grey", linewidths=0.3)
    ax.scatter([xy[i, 0]], [xy[i, 1]], marker="*", s=12 * _spot_size(len(xy)),
               facecolors="none", edgecolors="black", linewidths=1.2, label="focal spot")
    ax.legend(loc="upper right", frameon=False, fontsize="small")
    plt.colorbar(sc_, ax=ax, label="attention / uniform share (1 = uniform)")
    if span:
        ax.set_xlim(centre[0] - span, centre[0] + span)
        ax.set_ylim(centre[1] + span, centre[1] - span)
    ax.set_aspect("equal")
    ax.set_title(f"attention of {adata.obs_names[i]}")
    return ax

"""Plots a biologist reads: domain maps, UMAP, neighbour counts, loss, raw vs denoised genes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from matplotlib.axes import Axes

from .. import _keys
from .._validation import StagateInputError, require_key

#: above this many points scatter plots are rasterised (vector files stay small)
_RASTERISE_ABOVE = 5000


def _palette(n: int) -> list:
    cmap = plt.get_cmap("tab20" if n > 10 else "tab10")
    return [cmap(i % cmap.N) for i in range(n)]


def _spot_size(n: int) -> float:
    return float(np.clip(30000 / max(n, 1), 0.05, 40))


def _categories(labels) -> list:
    """The label categories in their order (a categorical's own, else sorted)."""
    return list(labels.cat.categories) if hasattr(labels, "cat") else sorted(set(labels))


def _categorical_scatter(ax: Axes, xy: np.ndarray, labels, title: str, kwds: Mapping) -> Axes:
    cats = _categories(labels)
    values = np.asarray(labels.astype(str))
    colours = _palette(len(cats))
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
    _categorical_scatter(ax, xy, adata.obs[key], title or key, kwds)
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
    colours = dict(zip(map(str, cats), _palette(len(cats)), strict=True))
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
    for c, colour in zip(cats, _palette(len(cats)), strict=True):
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
    adata: AnnData, *, color: str = _keys.DOMAIN, basis: str = "X_umap",
    title: str | None = None, ax: Axes | None = None,
    scatter_kwds: Mapping[str, Any] = MappingProxyType({}),
) -> Axes:
    """UMAP of the embedding coloured by a categorical `color` (run ``sc.tl.umap`` first)."""
    if basis not in adata.obsm:
        msg = f"adata.obsm[{basis!r}] not found. Run sc.pp.neighbors(adata, use_rep='STAGATE') " \
              "and sc.tl.umap(adata) first."
        raise StagateInputError(msg)
    ax = plt.figure(figsize=(6, 5)).gca() if ax is None else ax
    _categorical_scatter(ax, np.asarray(adata.obsm[basis]), adata.obs[color],
                         title or f"UMAP ({color})", scatter_kwds)
    ax.set_aspect("auto")
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
) -> np.ndarray:
    """Log-normalised (``X``) vs denoised (``layers['{key}_ReX']``) maps of `genes`.

    Returns the (2, n_genes) array of axes: first row measured, second row denoised."""
    layer = _keys.recon_key(key)
    if layer not in adata.layers:
        msg = f"adata.layers[{layer!r}] not found. Run stagate.tl.stagate(adata) first."
        raise StagateInputError(msg)
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        msg = f"genes {missing} are not in adata.var_names."
        raise StagateInputError(msg)
    xy = np.asarray(adata.obsm[spatial_key])[:, :2]
    fig, axes = plt.subplots(2, len(genes), figsize=(3 * len(genes), 6), squeeze=False)
    for j, g in enumerate(genes):
        col = adata.var_names.get_loc(g)
        for i, (mat, what) in enumerate([(adata.X, "log-normalised"),
                                          (adata.layers[layer], "STAGATE denoised")]):
            v = mat[:, col]
            v = np.asarray(v.toarray() if sp.issparse(v) else v).ravel()
            ax = axes[i, j]
            dots = ax.scatter(xy[:, 0], xy[:, 1], c=v, s=_spot_size(len(xy)), cmap=cmap,
                              linewidths=0, rasterized=len(xy) > _RASTERISE_ABOVE)
            fig.colorbar(dots, ax=ax, shrink=0.7, label="expression")
            ax.set_title(f"{g} ({what})")
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
    ax.scatter(xy[:, 0], xy[:, 1], s=_spot_size(len(xy)), color="lightgrey", linewidths=0)
    sc_ = ax.scatter(xy[row.indices, 0], xy[row.indices, 1], c=row.data, cmap="Reds",
                     s=4 * _spot_size(len(xy)), vmin=0)
    plt.colorbar(sc_, ax=ax, label="attention")
    if span:
        ax.set_xlim(centre[0] - span, centre[0] + span)
        ax.set_ylim(centre[1] + span, centre[1] - span)
    ax.set_aspect("equal")
    ax.set_title(f"attention of {adata.obs_names[i]}")
    return ax

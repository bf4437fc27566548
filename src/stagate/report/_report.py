"""Build report.html from a finished run (the result AnnData and its summary).

The page is rendered from ``template.html.j2`` with jinja2; every figure is a PNG embedded as
base64, so the file opens offline and can be mailed as it is. Each section is made by one
function below; a section whose inputs are absent (no UMAP after --no-umap, no labels) is
left out rather than shown empty.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .. import _keys, pl
from .._logging import log
from ..tl._metrics import composition

TEMPLATE = "template.html.j2"
#: marker rows shown per domain in the report's table
TOP_MARKERS = 5
#: attention whose 1st-99th percentile ratios to the uniform share lie closer than this is
#: reported as uniform
UNIFORM_SPREAD = 0.01


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fig(ax) -> plt.Figure:
    return np.ravel(ax)[0].figure


def _section(sid: str, title: str, **kwds) -> dict:
    return {"id": sid, "title": title, "text": kwds.get("text"), "kpis": kwds.get("kpis", []),
            "tables": kwds.get("tables", []), "figures": kwds.get("figures", [])}


def _cell(column: str, v, digits: int):
    if not isinstance(v, float | np.floating):
        return v
    if not np.isfinite(v):
        return "n/a"
    if "p_value" in column:  # p-values span hundreds of orders of magnitude
        return f"{v:.1e}"
    return round(float(v), digits) + 0.0  # + 0.0: no "-0.0" in the tables


def _table(frame: pd.DataFrame, caption: str | None = None, digits: int = 3) -> dict:
    columns = [str(c) for c in frame.columns]
    rows = [[_cell(c, v, digits) for c, v in zip(columns, row, strict=True)]
            for row in frame.itertuples(index=False)]
    return {"columns": columns, "rows": rows, "caption": caption}


# -- sections ---------------------------------------------------------------------------------
def _side_by_side(vote: dict) -> str:
    """What the voting runs' worker processes did, for the recipe line."""
    workers = vote.get("workers", 1)
    if workers <= 1:
        return ""
    if vote.get("side_by_side") == "clustering":  # trained here (GPU, minibatches)
        return f", trained one by one and clustered in {workers} worker processes"
    return f" trained in {workers} worker processes"


def _what_was_run(summary: dict) -> dict:
    cfg = summary.get("config", {})
    recipe = summary.get("recipe", {})
    vote = summary.get("consensus", {})
    params = [("input", cfg.get("input_path", summary.get("input_path", "?"))),
              ("format / coordinate unit", "{} / {}".format(
                  summary.get("input", {}).get("format", "?"),
                  summary.get("input", {}).get("coordinate_unit", "?"))),
              ("spots x genes used by the model", f"{summary['n_spots']} x "
                                                  f"{summary['n_genes_used']}"),
              ("domains", summary["n_domains"]),
              ("recipe", f"{recipe.get('name')}: {recipe.get('n_epochs')} epochs, "
                         f"{recipe.get('lr_schedule')} lr {recipe.get('lr')}, width "
                         f"{recipe.get('hidden_dim')}, {recipe.get('n_runs')} run(s)"
                         + _side_by_side(vote)),
              ("seed", summary["seed"]), ("device", summary["device"]),
              ("graph", ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                  for k, v in summary.get("graph", {}).items())),
              ("clustering", cfg.get("cluster_method", "mclust")
               + (f", best BIC of {recipe['cluster_inits']} starts"
                  if recipe.get("cluster_inits", 1) > 1
                  and cfg.get("cluster_method", "mclust") == "mclust" else "")),
              ("stagate version", summary.get("version"))]
    if vote.get("n_runs", 1) > 1:
        params.append(("runs' agreement (mean pairwise ARI)", vote["mean_pairwise_ari"]))
    stages = pd.DataFrame({"stage": list(summary["seconds"]),
                           "seconds": [float(v) for v in summary["seconds"].values()]})
    return _section("run", "What was run", tables=[
        _table(pd.DataFrame(params, columns=["setting", "value"])),
        _table(stages, "Seconds per stage (total = preprocessing to clustering and downstream; "
                       "read and write are outside it)", 1)])


def _domains(adata: AnnData, summary: dict) -> dict:
    sections = summary.get("sections")
    section_key = sections["key"] if sections else None
    label_key = summary.get("config", {}).get("label_key")
    figures = []
    title = f"STAGATE domains (K={summary['n_domains']})"
    ax = pl.domains(adata, key=_keys.DOMAIN, title=title, section_key=section_key)
    figures.append({"png": _png(_fig(ax)), "caption": "Domains found, on the tissue"})
    if label_key and label_key in adata.obs:
        ax = pl.domains(adata, key=label_key, title=f"Annotation: {label_key}",
                        section_key=section_key)
        figures.append({"png": _png(_fig(ax)), "caption": "Manual annotation (ground truth)"})
    kpis = []
    if "ari" in summary:
        kpis = [{"value": f"{summary['ari']:.3f}", "label": f"ARI vs {label_key}"},
                {"value": f"{summary['nmi']:.3f}", "label": "NMI"}]
    sizes = adata.obs[_keys.DOMAIN].value_counts().sort_index()
    table = pd.DataFrame({"domain": sizes.index.astype(str), "spots": sizes.to_numpy()})
    if "domain_support" in adata.obs:
        support = adata.obs.groupby(_keys.DOMAIN, observed=True)["domain_support"].mean()
        table["share of runs agreeing"] = support.reindex(sizes.index).to_numpy()
    tables = [_table(table)]
    if label_key and label_key in adata.obs:
        counts = composition(adata, label_key)
        index = sizes.index.astype(str)
        table[f"main {label_key}"] = counts.idxmax(axis=1).reindex(index).to_numpy()
        table["its share of the annotated spots"] = (
            counts.max(axis=1) / counts.sum(axis=1)).reindex(index).to_numpy()
        tables = [_table(table), _table(counts.reset_index(names="domain"),
                                        f"Spots of each {label_key} (columns) in each domain")]
    text = None
    if summary.get("consensus", {}).get("n_runs", 1) > 1:
        text = (f"Domains are the majority vote of {summary['consensus']['n_runs']} training "
                f"runs; the runs agree at mean pairwise ARI "
                f"{summary['consensus']['mean_pairwise_ari']:.3f} (1 = identical).")
    return _section("domains", "Spatial domains", kpis=kpis, text=text, tables=tables,
                    figures=figures)


def _qc(adata: AnnData) -> dict:
    figures = []
    counts = adata.layers.get(_keys.COUNTS_LAYER)
    spatial = _keys.graph_coordinates(adata) if _keys.graph_uns_key() in adata.uns \
        else _keys.SPATIAL
    if counts is not None and spatial in adata.obsm:
        xy = np.asarray(adata.obsm[spatial])[:, :2]
        total = np.asarray(counts.sum(1)).ravel()
        n_genes = np.asarray((counts > 0).sum(1)).ravel()
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        for ax, v, name in zip(axes, (total, n_genes), ("counts per spot", "genes per spot"),
                               strict=True):
            dots = ax.scatter(xy[:, 0], xy[:, 1], c=v, s=max(1.0, 6e4 / len(xy)) ** 0.5,
                              cmap="viridis", linewidths=0, rasterized=len(xy) > 20_000)
            fig.colorbar(dots, ax=ax, shrink=0.8, label=name)
            ax.set_title(name)
            ax.set_aspect("equal")
            ax.invert_yaxis()
            ax.set_xticks([])
            ax.set_yticks([])
        figures.append({"png": _png(fig), "caption": "Counts and detected genes per spot"})
    ax = pl.neighbors_histogram(adata)
    figures.append({"png": _png(ax.figure), "caption": "Neighbours per spot in the spatial "
                                                        "network the model was trained on"})
    return _section("qc", "Quality control", figures=figures)


def _umap(adata: AnnData, label_key: str | None = None) -> dict | None:
    basis = f"{_keys.EMBEDDING}_umap"
    if basis not in adata.obsm:
        return None
    ax = pl.umap(adata, color=_keys.DOMAIN, basis=basis, paga=True,
                 title="UMAP of the STAGATE embedding, with PAGA")
    figures = [{"png": _png(ax.figure), "caption": "UMAP coloured by domain; lines join "
                                                   "domains PAGA connects, as thick as the "
                                                   "connectivity"}]
    tables = []
    paga_key = f"{_keys.EMBEDDING}_paga"
    text = None
    if paga_key in adata.uns:
        from ..tl import paga_path

        labelled = bool(label_key and label_key in adata.obs)
        mostly = composition(adata, label_key).idxmax(axis=1) if labelled else pd.Series()

        def named(domain: str) -> str:  # with its most frequent annotation, when there is one
            return f"{domain} ({mostly[domain]})" if domain in mostly.index else domain

        conn = sp.csr_matrix(adata.uns[paga_key]["connectivities"]).toarray()
        names = [named(str(d)) for d in adata.obs[_keys.DOMAIN].cat.categories]
        tables.append(_table(pd.DataFrame(conn, columns=names).assign(
            domain=names)[["domain", *names]], "PAGA connectivity between domains"))
        path = [named(d) for d in paga_path(adata)]
        text = ("Strongest PAGA path (the order of the domains whose neighbours in it are "
                "the most connected): " + " - ".join(path)
                + (f"; in brackets each domain's most frequent {label_key}." if labelled
                   else "."))
        label_paga = f"{_keys.EMBEDDING}_paga_{label_key}"
        with_labels = labelled and label_paga in adata.uns
        if with_labels:
            text += (f" The same path over the annotation's own groups, on the same embedding "
                     f"graph: {' - '.join(paga_path(adata, paga_key=label_paga))}. It shows the "
                     f"order the embedding has learnt, whatever the clustering made of it.")
        fig, axes = plt.subplots(1, 2 if with_labels else 1, figsize=(11 if with_labels else 5.5,
                                                                       4.8), squeeze=False)
        pl.paga(adata, ax=axes[0, 0], labels=names, title="PAGA graph of the domains")
        if with_labels:
            pl.paga(adata, paga_key=label_paga, ax=axes[0, 1],
                    title=f"PAGA graph of the annotation ({label_key})")
        figures.append({"png": _png(fig), "caption": "PAGA as a graph: one node per group, "
                                                     "edges as thick as the connectivity "
                                                     "(under 0.05 left out)"})
    return _section("umap", "UMAP and PAGA", text=text, tables=tables, figures=figures)


def _markers(adata: AnnData) -> dict | None:
    key = f"{_keys.DOMAIN}_markers_table"
    if key not in adata.uns:
        return None
    table = pd.DataFrame(adata.uns[key])
    top = table[table["rank"] <= TOP_MARKERS][["domain", "rank", "gene", "log2_fold_change",
                                               "p_value_adj", "frac_in", "frac_out"]]
    figures = []
    genes = list(dict.fromkeys(table[table["rank"] <= 3]["gene"]))
    if genes:
        import scanpy as sc

        tmp = AnnData(adata[:, genes].X, obs=adata.obs[[_keys.DOMAIN]].copy())
        tmp.var_names = genes
        dot = sc.pl.dotplot(tmp, genes, groupby=_keys.DOMAIN, show=False, return_fig=True,
                            title="top 3 markers per domain (log-normalised)")
        dot.make_figure()
        figures.append({"png": _png(dot.fig), "caption": "Dot plot: colour = mean expression, "
                                                        "size = fraction of spots expressing"})
    # each domain's best-ranked marker among the model's genes: only those have a
    # reconstruction to compare with the measured map
    used = set(adata.uns[_keys.EMBEDDING]["genes"])
    firsts = table[table["gene"].isin(used)].groupby("domain", observed=True,
                                                      sort=False).head(1)
    for start in range(0, min(len(firsts), 12), 4):  # four genes a row, readable
        part = firsts.iloc[start:start + 4]
        axes = pl.genes(adata, part["gene"].tolist(),
                        titles=[f"{g} (domain {d})" for g, d in zip(part["gene"], part["domain"],
                                                                   strict=True)])
        figures.append({"png": _png(_fig(axes)), "wide": True,
                        "caption": "Each domain's top marker among the model's genes: "
                                   "measured (top row) vs STAGATE denoised (bottom row)"})
    text = ("Wilcoxon rank-sum, each domain against all other spots, on log-normalised "
            "expression of every gene detected in enough spots; p-values adjusted by "
            "Benjamini-Hochberg. The full table is markers.csv.")
    tables = [_table(top, f"Top {TOP_MARKERS} markers per domain")]
    moran_key = "domain_markers_morans_i"
    if moran_key in adata.uns:
        moran = pd.DataFrame(adata.uns[moran_key])
        tables.append(_table(moran.head(20), "Moran's I (spatial autocorrelation on the spatial "
                                             "network) of top markers, measured vs denoised"))
    return _section("markers", "Domain marker genes", text=text, tables=tables,
                    figures=figures)


def _attention(adata: AnnData) -> dict | None:
    if "attention_by_domain" not in adata.uns:
        return None
    per_domain = pd.DataFrame(adata.uns["attention_by_domain"])
    att = sp.csr_matrix(adata.obsp[_keys.attention_key()])
    relative = att.data * np.repeat(np.diff(att.indptr), np.diff(att.indptr))
    low, high = np.quantile(relative, [0.01, 0.99])
    uniform = high - low < UNIFORM_SPREAD
    figures = []
    from ..tl import attention_by_domain

    per_spot, _ = attention_by_domain(adata)
    border = per_spot[per_spot["border"]]
    if len(border) and not uniform:  # a uniform map would be one flat colour
        spot = int(adata.obs_names.get_indexer([border["expected_same"].idxmin()])[0])
        ax = pl.attention(adata, spot, spatial_key=_keys.graph_coordinates(adata))
        figures.append({"png": _png(ax.figure),
                        "caption": "Attention of one border spot (star) on its neighbours, "
                                   "relative to uniform attention"})
    text = ("At domain borders: the share of each spot's attention (self excluded) on "
            "neighbours of its own domain, against the share of such neighbours (what uniform "
            "attention gives). 'excess' > 0 means the attention favours the spot's own domain. "
            f"Over all spots, attention weights lie between {low:.2f} "
            f"and {high:.2f} times the uniform share (1st-99th "
            "percentile). Two properties of STAGATE's attention explain why it barely follows "
            "domains: its score sigmoid(v_s.h_i + v_r.h_j) passes through a sigmoid before the "
            "softmax, so no neighbour can get more than e = 2.72 times another's weight; and it "
            "ranks the neighbours j of every spot by the same value v_r.h_j, whatever spot i "
            "asks (GAT's 'static' attention, Brody et al. 2022), so it cannot prefer neighbours "
            "that resemble i.")
    if uniform:
        text += (" Here the attention is uniform: every spot weighs all its neighbours "
                 "equally, so the model averaged each neighbourhood as a plain graph "
                 "convolution would (usually because its scores are so large that the "
                 "sigmoid gives 1 for every neighbour).")
    return _section("attention", "Attention", text=text, tables=[_table(per_domain)],
                    figures=figures)


def _training(adata: AnnData) -> dict:
    ax = pl.loss(adata)
    ax.set_title("training loss (reference run)" if "runs" in adata.uns[_keys.EMBEDDING]
                 else "training loss")
    return _section("training", "Training", figures=[{"png": _png(ax.figure),
                                                      "caption": "Reconstruction error per epoch"}])


def _scores(summary: dict) -> dict | None:
    per_section = summary.get("per_section")
    if not per_section:
        return None
    rows = [{"section": k, **v} for k, v in per_section.items()]
    return _section("scores", "Scores per section", tables=[_table(pd.DataFrame(rows))])


# -- the page ---------------------------------------------------------------------------------
def render_report(adata: AnnData, summary: dict) -> str:
    """The HTML text of the report of a finished run."""
    import jinja2

    label_key = summary.get("config", {}).get("label_key")
    if (label_key and label_key in adata.obs and _keys.DOMAIN in adata.obs
            and f"{_keys.DOMAIN}_colors" not in adata.uns):  # a run made before the colours
        pl.match_colors(adata, _keys.DOMAIN, reference=label_key)
    builders = [lambda: _what_was_run(summary), lambda: _domains(adata, summary),
                lambda: _qc(adata), lambda: _umap(adata, label_key), lambda: _markers(adata),
                lambda: _attention(adata), lambda: _training(adata), lambda: _scores(summary)]
    sections = []
    for build in builders:
        part = build()
        if part is not None:
            sections.append(part)
    env = jinja2.Environment(loader=jinja2.PackageLoader("stagate", "report"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    source = summary.get("config", {}).get("input_path") or summary.get("input_path") or "run"
    name = Path(str(source[0] if isinstance(source, list) else source)).name
    return env.get_template(TEMPLATE).render(
        title=html.unescape(name), sections=sections,
        subtitle=f"{summary['n_spots']} spots, {summary['n_domains']} domains, stagate "
                 f"{summary.get('version')}")


def write_report(adata: AnnData, summary: dict, path: str | os.PathLike) -> Path:
    """Write report.html to `path` atomically (temporary file, then rename)."""
    path = Path(path)
    text = render_report(adata, summary)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path

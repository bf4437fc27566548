"""The whole job, input AnnData to domains, shared by `stagate run` and `stagate demo`."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData

from . import _keys, pl, pp, tl
from ._defaults import CONVERGENCE_TOL, DEFAULT_RECIPE, resolve_training
from ._logging import log
from ._validation import StagateInputError, check_counts, check_n_domains, finite_or_none
from .pp._sections import section_categories
from .tl._consensus import checkpoint_beside
from .tl._metrics import annotated_mask, composition
from .tl._stagate import store_reconstruction

#: obs column of the refined domains (``--refine``); the domains are ``obs[_keys.DOMAIN]``,
#: the same name as :func:`stagate.tl.domains` and :func:`stagate.pl.domains` use
REFINED = f"{_keys.DOMAIN}_refined"


@dataclass
class PipelineConfig:
    """Every choice of a run; written to summary.json."""

    n_domains: int
    label_key: str | None = None
    seed: int = 0
    device: str = "auto"
    # expression
    n_top_genes: int | None = 3000
    log_normalised: bool = False  # input X is already log-normalised: skip preprocessing
    min_counts: int = 0  # drop spots with fewer total counts first (1: the empty ones)
    # graph
    radius: float | str | None = "auto"
    n_neighbors: int | None = None
    target_neighbors: float = 8.0
    library_key: str | None = None
    # several sections
    section_key: str | None = None  # obs column naming sections; None: one section
    sections: str | None = None  # "joint3d", "joint", "separate"; None: joint3d if several
    section_order: list | None = None
    between_radius: float | str = "auto"
    align: bool = False
    spatial_key: str = _keys.SPATIAL
    # model: the recipe's settings, each overridden when not None (see _defaults.RECIPES)
    recipe: str = DEFAULT_RECIPE
    n_epochs: int | None = None
    lr: float | None = None
    hidden_dim: int | None = None
    latent_dim: int | None = None
    n_runs: int | None = None
    cluster_inits: int | None = None
    n_jobs: int | None = None  # worker processes for the voting runs (None: one per core)
    alpha: float = 0.0
    batch_size: int | str | None = "auto"
    checkpoint: str | Path | None = None
    step_every: str = "epoch"
    tol: float | None = CONVERGENCE_TOL
    # domains
    cluster_method: str = "mclust"
    refine: bool = False
    umap: bool = True
    downstream: bool = True  # marker genes, Moran's I, attention summary (the report's facts)
    show_progress: bool = True
    extra: dict = field(default_factory=dict)


def run_pipeline(adata: AnnData, cfg: PipelineConfig, *, copy: bool = True
                 ) -> tuple[AnnData, dict]:
    """Preprocess, build the SNN, train, cluster and score; returns (result, summary).

    With ``copy=False`` `adata` itself is processed (the CLI's freshly read object: no
    second copy of a large dataset in memory)."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        what = "no spots (rows)" if adata.n_obs == 0 else "no genes (columns)"
        msg = f"The input holds {what}: shape {adata.shape}. Check the file and its filtering."
        raise StagateInputError(msg)
    check_n_domains(cfg.n_domains, adata.n_obs)
    training = resolve_training(cfg.recipe, n_epochs=cfg.n_epochs, lr=cfg.lr,
                                hidden_dim=cfg.hidden_dim, latent_dim=cfg.latent_dim,
                                n_runs=cfg.n_runs, cluster_inits=cfg.cluster_inits)
    if int(training["n_runs"]) != training["n_runs"] or training["n_runs"] < 1:
        msg = f"--runs must be a positive integer, got {training['n_runs']!r}."
        raise StagateInputError(msg)
    if cfg.label_key is not None:
        _check_labels(adata, cfg.label_key)
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()][:3].tolist()
        msg = (f"Gene names are duplicated (e.g. {dup}); make them unique first "
               f"(adata.var_names_make_unique()) or sum the duplicates.")
        raise StagateInputError(msg)
    stages = Stages()
    t_all = time.perf_counter()
    with stages("preprocess"):
        adata, cfg, mode, section_key = _prepare(adata, cfg, copy=copy)
    with stages("graph"):
        train_graph, spatial_key = _build_graphs(adata, cfg, mode, section_key, stages)
    n_runs = training.pop("n_runs")
    cluster_inits = training.pop("cluster_inits")
    _train_and_cluster(adata, cfg, mode, section_key, train_graph, training, n_runs,
                       cluster_inits, stages)
    from .train._distributed import world

    if world()[0] != 0:  # torchrun: the other ranks only help training
        return adata, {}
    if cfg.refine:
        with stages("cluster"):
            tl.refine_domains(adata, _keys.DOMAIN, key_added=REFINED)
    failed: dict[str, str] = {}  # optional stages that failed: the domains are kept anyway
    if cfg.umap:
        with (stages("umap", "UMAP and PAGA of the embedding (--no-umap skips them)"),
              optional_stage("umap", "--no-umap", failed)):
            tl.embedding_umap(adata, groupby=_keys.DOMAIN, random_state=cfg.seed)
            if cfg.label_key is not None:  # has the embedding learnt the annotation's order?
                tl.paga(adata, cfg.label_key)
    downstream = None
    if cfg.downstream:
        with (stages("markers", "marker genes, Moran's I, attention by domain (--no-report "
                                "skips them)"),
              optional_stage("markers", "--no-report", failed)):
            downstream = add_downstream(adata, train_graph)
    seconds = stages.seconds
    seconds["total"] = time.perf_counter() - t_all

    graph = adata.uns[_keys.graph_uns_key()]
    from . import __version__

    summary = {
        "n_spots": int(adata.n_obs),
        "n_genes_used": int(len(adata.uns[_keys.EMBEDDING]["genes"])),
        "n_domains": int(cfg.n_domains),
        "mean_neighbors": graph["stats"]["mean_neighbors"],
        "n_isolated": graph["stats"]["n_isolated"],
        "trained_on_graph": train_graph,
        "graph": {k: v for k, v in graph["params"].items() if v is not None},
        "seed": cfg.seed,
        "device": adata.uns[_keys.EMBEDDING]["params"]["device_used"],
        "batch_size_used": adata.uns[_keys.EMBEDDING]["params"]["batch_size_used"],
        "version": __version__,
        "final_loss": float(adata.uns[_keys.EMBEDDING]["loss"][-1]),
        "epochs_trained": len(adata.uns[_keys.EMBEDDING]["loss"]),
        "recipe": {"name": cfg.recipe, "n_runs": n_runs, "cluster_inits": cluster_inits}
        | training,
        "consensus": _consensus_summary(adata, n_runs),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "config": {k: v for k, v in asdict(cfg).items() if k != "extra"},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count()},
    }
    if downstream is not None:
        summary["downstream"] = downstream
    if f"{_keys.EMBEDDING}_paga" in adata.uns:
        with optional_stage("paga", "--no-umap", failed):
            summary["paga"] = _paga_summary(adata, cfg.label_key)
    if failed:
        summary["failed_stages"] = failed
    if section_key is not None:
        summary["sections"] = _sections_summary(adata, section_key, mode, spatial_key, cfg)
    if cfg.label_key is not None:
        scores = tl.score_domains(adata, label_key=cfg.label_key, domain_key=_keys.DOMAIN,
                                  groupby=section_key)
        if mode == "separate":  # domain names differ between sections: pooled ARI is void
            scores = {"per_section": scores["per_section"]}
        summary.update(scores)
        if cfg.refine:
            refined = tl.score_domains(adata, label_key=cfg.label_key,
                                       domain_key=REFINED)
            summary.update({f"{k}_refined": v for k, v in refined.items()})
        pl.match_colors(adata, _keys.DOMAIN, reference=cfg.label_key)  # maps side by side
    source = adata.uns.get("stagate_input", {})
    summary["input"] = {"format": source.get("format", "anndata"),
                        "coordinate_unit": source.get("unit", "unknown"),
                        "um_per_unit": finite_or_none(source.get("um_per_unit"))}
    if summary["input"]["um_per_unit"] and summary["graph"].get("radius"):
        summary["graph"]["radius_um"] = summary["graph"]["radius"] * summary["input"]["um_per_unit"]
    summary.update(cfg.extra)
    return adata, summary


#: genes detected in fewer spots than this are not tested for markers (no power, only
#: multiple-testing burden)
MARKER_MIN_SPOTS = 10


def _paga_summary(adata: AnnData, label_key: str | None) -> dict:
    """The heaviest PAGA path over the domains and, with labels, over the annotation."""
    out = {"path": tl.paga_path(adata)}
    if label_key is not None:
        mostly = composition(adata, label_key).idxmax(axis=1)
        out["path_main_label"] = [str(mostly.get(d, "")) for d in out["path"]]
        out["label_path"] = tl.paga_path(adata,
                                         paga_key=f"{_keys.EMBEDDING}_paga_{label_key}")
    return out


def add_downstream(adata: AnnData, graph_key: str) -> dict:
    """Marker genes of each domain (every detected gene), Moran's I of the top markers
    measured vs denoised, and how the attention treats domain borders; facts for the summary
    and the report."""
    detected = np.asarray((adata.layers[_keys.COUNTS_LAYER] > 0).sum(0)).ravel() \
        if _keys.COUNTS_LAYER in adata.layers else np.full(adata.n_vars, MARKER_MIN_SPOTS)
    genes = adata.var_names[detected >= MARKER_MIN_SPOTS]
    table = tl.markers(adata, groupby=_keys.DOMAIN, genes=genes)
    top = table[table["rank"] <= 5]
    tops = top[top["rank"] == 1]["gene"].tolist()
    moran = tl.morans_i(adata, list(dict.fromkeys(top["gene"])), graph_key=graph_key)
    adata.uns["domain_markers_morans_i"] = moran.reset_index()
    _, per_domain = tl.attention_by_domain(adata, domain_key=_keys.DOMAIN)
    adata.uns["attention_by_domain"] = per_domain.reset_index()
    return {
        "markers": {"n_genes_tested": int(len(genes)), "min_spots_detected": MARKER_MIN_SPOTS,
                    "test": "Wilcoxon rank-sum, one domain vs the rest, Benjamini-Hochberg",
                    "top_per_domain": {
                        str(r.domain): {"gene": r.gene,
                                        "log2_fold_change": _round(r.log2_fold_change, 3),
                                        "p_value_adj": float(r.p_value_adj)}
                        for r in top[top["rank"] == 1].itertuples()}},
        "morans_i_top_markers": {
            "genes": len(moran), "measured_median": _round(moran["measured"].median()),
            "denoised_median": _round(moran["denoised"].median()),
            "first_markers": {g: {"measured": _round(moran.loc[g, "measured"]),
                                  "denoised": _round(moran.loc[g, "denoised"])}
                              for g in tops if g in moran.index}},
        "attention_at_borders": {
            "attention_same_domain": _round(np.average(per_domain["attention_same"],
                                                       weights=per_domain["n_border"])),
            "expected_same_domain": _round(np.average(per_domain["expected_same"],
                                                      weights=per_domain["n_border"])),
            "note": "border spots: share of attention on neighbours of their own domain vs the "
                    "share of such neighbours (uniform attention would give the second)"},
    }


def _round(v, digits: int = 4):
    v = float(v)
    return None if not np.isfinite(v) else round(v, digits)


class Stages:
    """Times and logs the steps of a run: ``with stages("graph"): ...`` adds the seconds to
    ``stages.seconds["graph"]`` (a step entered twice adds up)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, what: str | None = None):
        log.info("%s...", what or name)
        t = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - t
            self.seconds[name] = self.seconds.get(name, 0.0) + took
            log.info("%s done in %.1f s", name, took)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds


@contextlib.contextmanager
def optional_stage(name: str, skip_option: str, failed: dict[str, str]):
    """Run a stage whose failure must not cost the run its domains (UMAP, markers, report):
    an error is logged as a warning and recorded in `failed` (summary.json `failed_stages`),
    and the run goes on; hours of training are not lost to a figure."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - any error of an optional stage; Ctrl-C passes
        failed[name] = f"{type(err).__name__}: {err}"
        log.warning("the %s stage failed (%s: %s); the domains, embedding and other results "
                    "are written without it (%s skips it). Please report this error.",
                    name, type(err).__name__, err, skip_option, exc_info=log.isEnabledFor(10))


def _prepare(adata: AnnData, cfg: PipelineConfig, *, copy: bool):
    """Copy (or not), set the input's own domain columns aside, resolve the section mode,
    normalise: returns (adata, cfg, mode, section_key)."""
    adata = adata.copy() if copy else adata
    for col in (_keys.DOMAIN, REFINED):  # the input's own column of that name is kept aside
        if col in adata.obs:
            kept = f"{col}_input"
            log.warning("obs[%r] of the input is renamed obs[%r]: the run writes its domains "
                        "to obs[%r]", col, kept, col)
            adata.obs = adata.obs.rename(columns={col: kept})
            if cfg.label_key == col:
                cfg = replace(cfg, label_key=kept)
    if cfg.min_counts > 0:
        adata = _drop_spots_below(adata, cfg.min_counts)
    mode = _section_mode(adata, cfg)
    section_key = cfg.section_key if mode != "single" else None
    if section_key is not None:  # categories in section order, for every step below
        adata.obs[section_key] = section_categories(adata, section_key, cfg.section_order)
    if cfg.log_normalised:
        adata.var["highly_variable"] = True
    else:
        layer = _counts_layer(adata)
        # every gene stays (markers are tested on all of them); the model reads the HVGs
        pp.preprocess(adata, n_top_genes=cfg.n_top_genes, layer=layer, batch_key=section_key,
                      subset=False)
    return adata, cfg, mode, section_key


def _drop_spots_below(adata: AnnData, min_counts: int) -> AnnData:
    """The spots with at least `min_counts` total counts (X, else layers['counts'])."""
    counts = adata.X if _counts_layer(adata) is None else adata.layers[_keys.COUNTS_LAYER]
    totals = np.asarray(counts.sum(axis=1)).ravel()
    keep = totals >= min_counts
    if keep.all():
        return adata
    if not keep.any():
        msg = (f"No spot has {min_counts} counts or more (most counts in a spot: "
               f"{totals.max():g}); lower --min-counts.")
        raise StagateInputError(msg)
    log.warning("dropped %d of %d spots with fewer than %d counts (--min-counts); the "
                "results hold the other %d", int((~keep).sum()), adata.n_obs, min_counts,
                int(keep.sum()))
    return adata[keep].copy()


def _build_graphs(adata: AnnData, cfg: PipelineConfig, mode: str, section_key: str | None,
                  stages: Stages) -> tuple[str, str]:
    """Align sections (optional), build the spatial network (and the 3-D one, and the
    pruned one): returns (the graph to train on, the coordinates key it was built on)."""
    spatial_key = cfg.spatial_key
    if cfg.align:
        t = time.perf_counter()
        pp.align_sections(adata, section_key, section_order=cfg.section_order,
                          spatial_key=spatial_key, random_state=cfg.seed)
        spatial_key = _keys.ALIGNED
        stages.add("align", time.perf_counter() - t)
    graph_kwds = {"radius": None if cfg.n_neighbors else cfg.radius,
                  "n_neighbors": cfg.n_neighbors, "target_neighbors": cfg.target_neighbors,
                  "spatial_key": spatial_key}
    pp.spatial_network(adata, library_key=section_key or cfg.library_key,
                       section_order=cfg.section_order if section_key else None, **graph_kwds)
    train_graph = _keys.GRAPH
    if mode == "joint3d":
        within = adata.uns[_keys.graph_uns_key()]["params"]
        if within["mode"] == "radius":  # the same within-section radius, measured once
            graph_kwds["radius"] = within["radius"]
        pp.spatial_network(adata, library_key=section_key, section_order=cfg.section_order,
                           between_radius=cfg.between_radius, key_added=_keys.GRAPH_3D,
                           **graph_kwds)
        train_graph = _keys.GRAPH_3D
    if cfg.alpha > 0:
        pp.prune_network(adata, graph_key=train_graph, random_state=cfg.seed)
    return train_graph, spatial_key


def _train_and_cluster(adata: AnnData, cfg: PipelineConfig, mode: str, section_key,
                       train_graph: str, training: dict, n_runs: int, cluster_inits: int,
                       stages: Stages) -> None:
    """Train the recipe and find the domains: one run then one clustering, or several runs,
    each clustered, then their vote (``tl.consensus_domains``)."""
    from .train._distributed import world

    train_kwds = training | {"recipe": cfg.recipe, "alpha": cfg.alpha, "device": cfg.device,
                             "batch_size": cfg.batch_size, "step_every": cfg.step_every,
                             "tol": cfg.tol, "show_progress": cfg.show_progress}
    if n_runs > 1:  # training and clustering interleave: split the time afterwards
        cluster_kwds = {"n_domains": cfg.n_domains, "n_runs": n_runs, "random_state": cfg.seed,
                        "method": cfg.cluster_method, "key_added": _keys.DOMAIN,
                        "n_jobs": cfg.n_jobs, "cluster_inits": cluster_inits}
        t = time.perf_counter()
        if mode == "separate":
            _fit_separately(adata, section_key, cfg, train_kwds, consensus=cluster_kwds)
        else:
            tl.consensus_domains(adata, graph_key=train_graph, checkpoint=cfg.checkpoint,
                                 **cluster_kwds, **train_kwds)
        record = adata.uns[_keys.DOMAIN]["consensus"]
        if record.get("side_by_side") == "clustering":  # runs trained here, one by one
            train_s = record["train_seconds"]
        else:  # runs may train and cluster side by side: split their wall-clock time by
            # the share each stage took within the runs
            busy = record["train_seconds"] + record["cluster_seconds"]
            train_s = (record.get("runs_seconds", busy) * record["train_seconds"]
                       / max(busy, 1e-9))
        stages.add("train", train_s)
        stages.add("cluster", time.perf_counter() - t - train_s)
        return
    train_kwds["random_state"] = cfg.seed
    with stages("train"):
        if mode == "separate":
            _fit_separately(adata, section_key, cfg, train_kwds)
        else:
            tl.stagate(adata, graph_key=train_graph, checkpoint=cfg.checkpoint, **train_kwds)
    if world()[0] != 0:
        return
    with stages("cluster"):
        if mode == "separate":  # each section's own clustering: domain names are not shared
            _cluster_separately(adata, section_key, cfg, cluster_inits)
        else:
            tl.domains(adata, cfg.n_domains, method=cfg.cluster_method, n_init=cluster_inits,
                       key_added=_keys.DOMAIN)


def _consensus_summary(adata: AnnData, n_runs: int) -> dict:
    """How stable the answer is: the runs' seeds and their partitions' agreement."""
    if n_runs == 1:
        return {"n_runs": 1, "note": "one training run (no vote)"}
    record = adata.uns[_keys.DOMAIN]["consensus"]
    return {"n_runs": n_runs, "seeds": np.asarray(record["seeds"]).tolist(),
            "reference_run": int(record["reference"]),
            "mean_pairwise_ari": round(float(record["mean_agreement"]), 4),
            "pairwise_ari": np.round(np.asarray(record["agreement"]), 4).tolist(),
            "mean_support": round(float(record["mean_support"]), 4),
            "workers": int(record.get("workers", 1)),
            "side_by_side": str(record.get("side_by_side", "nothing")),
            **({"per_section_mean_pairwise_ari": record["per_section_mean_agreement"]}
               if "per_section_mean_agreement" in record else {}),
            "note": "domains are the majority vote of the runs; pairwise ARI near 1 means "
                    "the runs found the same domains"}


def _check_labels(adata: AnnData, label_key: str) -> None:
    """Before any work: the annotation to score against exists and has two classes."""
    if label_key not in adata.obs:
        msg = f"--label-key {label_key!r} is not a column of obs (has {list(adata.obs)})."
        raise StagateInputError(msg)
    labels = adata.obs[label_key]
    classes = labels[annotated_mask(labels)].astype(str).unique()
    if len(classes) < 2:
        what = "no annotated spot" if len(classes) == 0 else f"one class ({classes[0]!r})"
        msg = (f"--label-key {label_key!r} has {what}; ARI/NMI need at least two annotated "
               f"classes. Pick another column or drop --label-key.")
        raise StagateInputError(msg)


def _section_mode(adata: AnnData, cfg: PipelineConfig) -> str:
    """"single", or how several sections are modelled: "joint3d", "joint", "separate"."""
    if cfg.sections not in (None, "joint3d", "joint", "separate"):
        msg = f"sections == {cfg.sections!r}, must be 'joint3d', 'joint' or 'separate'."
        raise StagateInputError(msg)
    categories = (None if cfg.section_key is None else
                  section_categories(adata, cfg.section_key, cfg.section_order))
    if categories is None or len(categories.categories) < 2:
        if cfg.sections is not None or cfg.align:  # asked for a multi-section model
            what = "--align" if cfg.align else f"--sections {cfg.sections}"
            found = ("pass several inputs, or --section-key naming the obs column of each "
                     "spot's section" if categories is None else
                     f"but obs[{cfg.section_key!r}] holds one ({categories.categories[0]!r})")
            msg = f"{what} needs several sections: {found}."
            raise StagateInputError(msg)
        return "single"
    if cfg.sections == "separate":
        sizes = np.bincount(categories.codes, minlength=len(categories.categories))
        for name, n in zip(categories.categories, sizes, strict=True):
            if n < cfg.n_domains:
                msg = (f"Section {name!r} has {n} spots, fewer than --n-domains "
                       f"{cfg.n_domains}; it cannot be clustered on its own (use --sections "
                       f"joint3d or joint).")
                raise StagateInputError(msg)
    return cfg.sections or "joint3d"


def _fit_separately(adata: AnnData, section_key: str, cfg: PipelineConfig, kwds: dict,
                    consensus: dict | None = None) -> None:
    """Train one model per section; gather embeddings, reconstructions and attention.

    With `consensus` (arguments of tl.consensus_domains), each section's runs also vote on
    its domains: obs[DOMAIN] gets each section's own labels, uns[DOMAIN] the records."""
    import scipy.sparse as sp

    order = list(adata.obs[section_key].cat.categories)
    z = recon = None
    att_rows, att_cols, att_vals = [], [], []
    losses, seconds, record = {}, 0.0, None
    domains = pd.Series("", index=adata.obs_names, dtype=object)
    votes: dict[str, dict] = {}
    support = np.zeros(adata.n_obs, np.float32)
    for name in order:
        rows = np.flatnonzero((adata.obs[section_key] == name).to_numpy())
        sub = adata[rows].copy()
        ckpt = checkpoint_beside(cfg.checkpoint, name)
        log.info("section %s: training its own model on %d spots", name, sub.n_obs)
        if consensus is None:
            tl.stagate(sub, graph_key=_keys.GRAPH, checkpoint=ckpt, **kwds)
        else:
            tl.consensus_domains(sub, graph_key=_keys.GRAPH, checkpoint=ckpt, **consensus,
                                 **kwds)
            domains.iloc[rows] = sub.obs[_keys.DOMAIN].astype(str).to_numpy()
            support[rows] = sub.obs[f"{_keys.DOMAIN}_support"].to_numpy()
            votes[str(name)] = dict(sub.uns[_keys.DOMAIN]["consensus"])
        emb = sub.obsm[_keys.EMBEDDING]
        rex = (sub.layers[_keys.recon_key()] if _keys.recon_key() in sub.layers
               else np.asarray(sub.obsm[_keys.recon_key()]))
        if z is None:
            z = np.zeros((adata.n_obs, emb.shape[1]), np.float32)
            recon = np.zeros((adata.n_obs, rex.shape[1]), np.float32)
        z[rows], recon[rows] = emb, rex
        att = sp.coo_matrix(sub.obsp[_keys.attention_key()])  # local -> global spot ids
        att_rows.append(rows[att.row])
        att_cols.append(rows[att.col])
        att_vals.append(att.data)
        record = record or dict(sub.uns[_keys.EMBEDDING])
        losses[name] = np.asarray(sub.uns[_keys.EMBEDDING]["loss"])
        seconds += float(sub.uns[_keys.EMBEDDING]["train_seconds"])
    adata.obsm[_keys.EMBEDDING] = z
    store_reconstruction(adata, recon, record["genes"], _keys.EMBEDDING)
    attention = sp.csr_matrix((np.concatenate(att_vals), (np.concatenate(att_rows),
                                                          np.concatenate(att_cols))),
                              shape=(adata.n_obs, adata.n_obs))
    attention.sort_indices()
    adata.obsp[_keys.attention_key()] = attention
    record["loss"] = losses[order[0]]
    record["loss_per_section"] = losses
    record["train_seconds"] = seconds
    record["params"] = dict(record["params"]) | {"sections": "separate"}
    adata.uns[_keys.EMBEDDING] = record
    if consensus is not None:
        cats = sorted(set(domains), key=lambda v: (len(v), v))
        adata.obs[_keys.DOMAIN] = pd.Categorical(domains.to_numpy(), categories=cats)
        adata.obs[f"{_keys.DOMAIN}_support"] = support
        first = votes[str(order[0])]
        adata.uns[_keys.DOMAIN] = {"consensus": first | {
            "train_seconds": sum(v["train_seconds"] for v in votes.values()),
            "cluster_seconds": sum(v["cluster_seconds"] for v in votes.values()),
            "runs_seconds": sum(v["runs_seconds"] for v in votes.values()),
            "mean_agreement": float(np.mean([v["mean_agreement"] for v in votes.values()])),
            "mean_support": float(np.mean([v["mean_support"] for v in votes.values()])),
            "per_section_mean_agreement": {k: v["mean_agreement"] for k, v in votes.items()},
        }}


def _cluster_separately(adata: AnnData, section_key: str, cfg: PipelineConfig,
                        cluster_inits: int = 1) -> None:
    labels = pd.Series("", index=adata.obs_names, dtype=object)
    for name in adata.obs[section_key].cat.categories:
        mask = (adata.obs[section_key] == name).to_numpy()
        sub = AnnData(obs=pd.DataFrame(index=adata.obs_names[mask]))
        sub.obsm[_keys.EMBEDDING] = adata.obsm[_keys.EMBEDDING][mask]
        tl.domains(sub, cfg.n_domains, method=cfg.cluster_method, n_init=cluster_inits,
                   key_added="d")
        labels[mask] = sub.obs["d"].astype(str).to_numpy()
    cats = sorted(set(labels), key=lambda v: (len(v), v))
    adata.obs[_keys.DOMAIN] = pd.Categorical(labels.to_numpy(), categories=cats)


def _sections_summary(adata: AnnData, section_key: str, mode: str, spatial_key: str,
                      cfg: PipelineConfig) -> dict:
    cats = adata.obs[section_key].cat.categories
    out = {"key": section_key, "mode": mode, "order": [str(c) for c in cats],
           "n_spots": {str(c): int((adata.obs[section_key] == c).sum()) for c in cats},
           "aligned": bool(cfg.align), "coordinates": spatial_key,
           "domains_shared": mode != "separate"}
    info = adata.uns.get("stagate_sections", {})
    if "genes_lost" in info:
        out["genes_lost"] = dict(zip(map(str, info["order"]),
                                     map(int, info["genes_lost"]), strict=True))
    if mode == "joint3d":
        record = adata.uns[_keys.graph_uns_key(_keys.GRAPH_3D)]
        edges = record["edges"]
        out["between_radius"] = record["params"]["between_radius"]
        out["edges"] = {"within": edges["within"], "between": edges["between"],
                        "between_pairs": [
                            {"sections": [str(a), str(b)], "n_edges": int(n)}
                            for a, b, n in zip(edges["between_pairs"]["section_a"],
                                               edges["between_pairs"]["section_b"],
                                               edges["between_pairs"]["n_edges"], strict=True)]}
    if cfg.align:
        out["transforms"] = {k: np.asarray(v).round(6).tolist()
                             for k, v in adata.uns[_keys.ALIGNED]["transforms"].items()}
    out["mixing"] = tl.section_mixing(adata, section_key=section_key,
                                      domain_key=_keys.DOMAIN)
    if mode == "separate":
        out["mixing"]["note"] = ("separate models: each section's embedding lives in its own "
                                 "space, so this mixing is not comparable with a joint model's")
    out["agreement"] = tl.section_agreement(adata, _keys.DOMAIN, section_key=section_key,
                                            spatial_key=spatial_key)
    return out


def _counts_layer(adata: AnnData) -> str | None:
    """Where the raw counts are: X, else layers['counts']; otherwise a clear error."""
    try:
        check_counts(adata.X, what="adata.X")
        return None
    except StagateInputError as err:
        if _keys.COUNTS_LAYER in adata.layers:
            check_counts(adata.layers[_keys.COUNTS_LAYER], what="adata.layers['counts']")
            return _keys.COUNTS_LAYER
        msg = f"{err} (Already log-normalised data can be used with --log-normalised.)"
        raise StagateInputError(msg) from None


def nonspatial_ari(adata: AnnData, cfg: PipelineConfig) -> float:
    """ARI of the same clustering on 30 PCs of the same expression: what space adds."""
    t = time.perf_counter()
    log.info("non-spatial baseline: PCA + %s on the same genes...", cfg.cluster_method)
    hvg = adata.var["highly_variable"].to_numpy(dtype=bool)  # the genes the model used
    tmp = AnnData(adata.X[:, hvg], obs=adata.obs[[cfg.label_key]].copy())  # PCA keeps sparse
    sc.pp.pca(tmp, n_comps=min(30, min(tmp.shape) - 1), random_state=cfg.seed)
    tl.domains(tmp, cfg.n_domains, use_rep="X_pca", method=cfg.cluster_method,
               key_added="pca_domain")
    ari = tl.score_domains(tmp, label_key=cfg.label_key, domain_key="pca_domain")["ari"]
    log.info("non-spatial baseline done in %.1f s", time.perf_counter() - t)
    return ari


#: every file a run writes into --out; --force replaces them as a whole
OUTPUT_FILES = ("stagate.h5ad", "stagate.zarr", "domains.png", "domains_3d.png", "umap.png",
                "markers.csv", "report.html", "summary.json")


def claim_output_folder(out: Path, *, force: bool = False):
    """Check, before any work, that `out` may receive results, and hold it for this run.

    Refuses a folder that already holds results (unless `force`), a place that cannot be
    written, and a folder another run is writing to right now. Returns an open lock file:
    keep it until the results are written (the operating system releases it if the process
    dies, so a killed run never blocks the next one).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        msg = f"--out {out} is a file, not a folder; pass a folder path."
        raise StagateInputError(msg)
    if out.exists() and not force and any((out / n).exists() for n in OUTPUT_FILES):
        msg = f"{out} already holds results; pass --force to replace them."
        raise StagateInputError(msg)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        lock = open(out.parent / f".{out.name}.stagate-lock", "w")  # noqa: SIM115
    except OSError as err:
        msg = (f"Cannot write results to {out} ({err.strerror or err}); choose another --out "
               f"or make {out.parent} writable.")
        raise StagateInputError(msg) from None
    try:
        import fcntl

        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # pragma: no cover - not on POSIX: no lock, the rest still holds
        pass
    except OSError:
        lock.close()
        msg = (f"Another stagate run is writing to {out} right now; wait for it or pick "
               f"another --out.")
        raise StagateInputError(msg) from None
    # staging folders of runs into this --out that were killed while writing (none can be
    # live: we hold the lock)
    for stale in out.parent.glob(f".{out.name}.stagate-tmp-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    return lock


def write_outputs(adata: AnnData, summary: dict, out: Path, *, force: bool = False,
                  lock=None, report: bool = True) -> None:
    """Write stagate.h5ad, domains.png, umap.png and summary.json into `out`, atomically.

    Everything is written into a temporary folder beside `out` first and moved in at the end,
    so an error never leaves a half-written result; with `force`, result files of an earlier
    run that this run does not write (e.g. umap.png after --no-umap) are removed, so the
    folder holds one run's results. The seconds spent writing are recorded in
    ``summary["seconds"]["write"]`` (summary.json is written last). `lock` is the claim of
    :func:`claim_output_folder` when the caller took it before its work (it is released here).
    """
    import matplotlib.pyplot as plt

    out = Path(out)
    names = OUTPUT_FILES
    lock = lock or claim_output_folder(out, force=force)  # also makes out.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.stagate-tmp-", dir=out.parent))
    t_write = time.perf_counter()
    try:
        # lzf: several times faster than gzip at a similar ratio on count matrices
        _h5ad_safe(adata).write_h5ad(tmp / "stagate.h5ad", compression="lzf")
        title = f"STAGATE domains (K={summary['n_domains']})"
        if "ari" in summary:
            title += f", ARI {summary['ari']:.3f}"
        sections = summary.get("sections")
        if sections is not None and not sections["domains_shared"]:
            title += " (separate models: domain names differ between sections)"
        ax = pl.domains(adata, key=_keys.DOMAIN, title=title,
                        section_key=sections["key"] if sections else None)
        fig = np.ravel(ax)[0].figure
        fig.savefig(tmp / "domains.png", dpi=150, bbox_inches="tight")
        plt.close(fig)
        coordinates = _keys.graph_coordinates(adata)  # aligned, or a volume's 3 columns
        if sections is not None or np.asarray(adata.obsm[coordinates]).shape[1] == 3:
            ax = pl.domains_3d(adata, key=_keys.DOMAIN, spatial_key=coordinates,
                               section_key=sections["key"] if sections else None,
                               title="STAGATE domains, stacked" if sections else None)
            ax.figure.savefig(tmp / "domains_3d.png", dpi=150, bbox_inches="tight")
            plt.close(ax.figure)
        if f"{_keys.EMBEDDING}_umap" in adata.obsm:
            ax = pl.umap(adata, color=_keys.DOMAIN, basis=f"{_keys.EMBEDDING}_umap", paga=True)
            ax.figure.savefig(tmp / "umap.png", dpi=150, bbox_inches="tight")
            plt.close(ax.figure)
        if adata.uns.get("stagate_input", {}).get("format") == "spatialdata":
            from .io import write_spatialdata_results

            write_spatialdata_results(adata, tmp / "stagate.zarr")
        markers = f"{_keys.DOMAIN}_markers_table"
        if markers in adata.uns:
            pd.DataFrame(adata.uns[markers]).to_csv(tmp / "markers.csv", index=False)
        if report:
            from .report import write_report

            t_report = time.perf_counter()
            failed = summary.setdefault("failed_stages", {})
            with optional_stage("report", "--no-report", failed):
                write_report(adata, summary, tmp / "report.html")
            if not failed:
                summary.pop("failed_stages")
            summary["seconds"]["report"] = round(time.perf_counter() - t_report, 3)
        summary["seconds"]["write"] = round(time.perf_counter() - t_write, 3)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
        out.mkdir(exist_ok=True)
        written = {f.name for f in tmp.iterdir()}
        for name in names:  # results of an earlier run (only reached with --force)
            if (out / name).is_dir() and name in written:
                shutil.rmtree(out / name)  # a folder (stagate.zarr) is not replaced in place
            elif name not in written and (out / name).exists():
                _remove(out / name)
        for name in sorted(written, key=lambda n: n == "summary.json"):  # summary last
            os.replace(tmp / name, out / name)
    except OSError as err:  # disk full, quota, read-only file system...
        msg = (f"Writing the results failed ({err.strerror or err}); {out} is left as it was. "
               f"Free some space or choose another --out.")
        raise StagateInputError(msg) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        lock.close()
    log.info("wrote %s", ", ".join(str(out / n) for n in names if (out / n).exists()))




def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def _h5ad_safe(adata: AnnData) -> AnnData:
    """Store pandas string-dtype columns as categories: anndata writes those everywhere,
    while pandas >= 3 reads text columns as a string dtype that older anndata refuses."""
    for df in (adata.obs, adata.var):
        for col in df.columns:
            if isinstance(df[col].dtype, pd.StringDtype):
                df[col] = df[col].astype("category")
    if isinstance(adata.obs_names.dtype, pd.StringDtype):
        adata.obs_names = adata.obs_names.astype(object)
    if isinstance(adata.var_names.dtype, pd.StringDtype):
        adata.var_names = adata.var_names.astype(object)
    return adata


def _json_default(o):
    if isinstance(o, np.integer | np.floating):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)

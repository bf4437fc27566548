"""The whole job, input AnnData to domains, shared by `stagate run` and `stagate demo`."""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData

from . import _keys, pl, pp, tl
from ._logging import log
from ._validation import StagateInputError, check_counts, check_n_domains
from .train._loop import CONVERGENCE_TOL


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
    # graph
    radius: float | str | None = "auto"
    n_neighbors: int | None = None
    target_neighbors: float = 8.0
    library_key: str | None = None
    # model
    alpha: float = 0.0
    n_epochs: int = 1000
    lr: float = 1e-3
    batch_size: int | str | None = "auto"
    checkpoint: str | Path | None = None
    step_every: str = "epoch"
    tol: float | None = CONVERGENCE_TOL
    hidden_dim: int = 512
    latent_dim: int = 30
    # domains
    cluster_method: str = "mclust"
    refine: bool = False
    umap: bool = True
    show_progress: bool = True
    extra: dict = field(default_factory=dict)


def run_pipeline(adata: AnnData, cfg: PipelineConfig, *, copy: bool = True
                 ) -> tuple[AnnData, dict]:
    """Preprocess, build the SNN, train, cluster and score; returns (result, summary).

    With ``copy=False`` `adata` itself is processed (the CLI's freshly read object: no
    second copy of a large dataset in memory)."""
    check_n_domains(cfg.n_domains, adata.n_obs)
    if cfg.label_key is not None and cfg.label_key not in adata.obs:
        msg = f"--label-key {cfg.label_key!r} is not a column of obs (has {list(adata.obs)})."
        raise StagateInputError(msg)
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()

    t = time.perf_counter()
    adata = adata.copy() if copy else adata
    if cfg.log_normalised:
        adata.var["highly_variable"] = True
    else:
        layer = _counts_layer(adata)
        pp.preprocess(adata, n_top_genes=cfg.n_top_genes, layer=layer)
    seconds["preprocess"] = time.perf_counter() - t

    t = time.perf_counter()
    pp.spatial_network(adata, radius=None if cfg.n_neighbors else cfg.radius,
                       n_neighbors=cfg.n_neighbors, target_neighbors=cfg.target_neighbors,
                       library_key=cfg.library_key)
    if cfg.alpha > 0:
        pp.prune_network(adata, random_state=cfg.seed)
    seconds["graph"] = time.perf_counter() - t

    t = time.perf_counter()
    tl.stagate(adata, alpha=cfg.alpha, n_epochs=cfg.n_epochs, lr=cfg.lr,
               hidden_dim=cfg.hidden_dim, latent_dim=cfg.latent_dim, random_state=cfg.seed,
               device=cfg.device, batch_size=cfg.batch_size, checkpoint=cfg.checkpoint,
               step_every=cfg.step_every, tol=cfg.tol,
               show_progress=cfg.show_progress)
    seconds["train"] = time.perf_counter() - t
    from .train._distributed import world

    if world()[0] != 0:  # torchrun: the other ranks only help training
        return adata, {}

    t = time.perf_counter()
    tl.domains(adata, cfg.n_domains, method=cfg.cluster_method, key_added="stagate_domain")
    if cfg.refine:
        tl.refine_domains(adata, "stagate_domain", key_added="stagate_domain_refined")
    seconds["cluster"] = time.perf_counter() - t

    if cfg.umap:
        t = time.perf_counter()
        sc.pp.neighbors(adata, use_rep=_keys.EMBEDDING, random_state=cfg.seed)
        sc.tl.umap(adata, random_state=cfg.seed)
        seconds["umap"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t_all

    graph = adata.uns[_keys.graph_uns_key()]
    from . import __version__

    summary = {
        "n_spots": int(adata.n_obs),
        "n_genes_used": int(len(adata.uns[_keys.EMBEDDING]["genes"])),
        "n_domains": int(cfg.n_domains),
        "mean_neighbors": graph["stats"]["mean_neighbors"],
        "n_isolated": graph["stats"]["n_isolated"],
        "graph": {k: v for k, v in graph["params"].items() if v is not None},
        "seed": cfg.seed,
        "device": adata.uns[_keys.EMBEDDING]["params"]["device_used"],
        "batch_size_used": adata.uns[_keys.EMBEDDING]["params"]["batch_size_used"],
        "version": __version__,
        "final_loss": float(adata.uns[_keys.EMBEDDING]["loss"][-1]),
        "epochs_trained": len(adata.uns[_keys.EMBEDDING]["loss"]),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "config": {k: v for k, v in asdict(cfg).items() if k != "extra"},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count()},
    }
    if cfg.label_key is not None:
        summary.update(tl.score_domains(adata, label_key=cfg.label_key,
                                        domain_key="stagate_domain"))
        if cfg.refine:
            refined = tl.score_domains(adata, label_key=cfg.label_key,
                                       domain_key="stagate_domain_refined")
            summary.update({f"{k}_refined": v for k, v in refined.items()})
    source = adata.uns.get("stagate_input", {})
    summary["input"] = {"format": source.get("format", "anndata"),
                        "coordinate_unit": source.get("unit", "unknown"),
                        "um_per_unit": _finite_or_none(source.get("um_per_unit"))}
    if summary["input"]["um_per_unit"] and summary["graph"].get("radius"):
        summary["graph"]["radius_um"] = summary["graph"]["radius"] * summary["input"]["um_per_unit"]
    summary.update(cfg.extra)
    return adata, summary


def _finite_or_none(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


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
    tmp = AnnData(adata.X, obs=adata.obs[[cfg.label_key]].copy())  # PCA keeps it sparse
    sc.pp.pca(tmp, n_comps=min(30, min(tmp.shape) - 1), random_state=cfg.seed)
    tl.domains(tmp, cfg.n_domains, use_rep="X_pca", method=cfg.cluster_method,
               key_added="pca_domain")
    return tl.score_domains(tmp, label_key=cfg.label_key, domain_key="pca_domain")["ari"]


def write_outputs(adata: AnnData, summary: dict, out: Path, *, force: bool = False) -> None:
    """Write stagate.h5ad, domains.png, umap.png and summary.json into `out`, atomically.

    Everything is written into a temporary folder beside `out` first and moved in at the end,
    so an error never leaves a half-written result. The seconds spent writing are recorded
    in ``summary["seconds"]["write"]`` (summary.json is written last).
    """
    import matplotlib.pyplot as plt

    out = Path(out)
    names = ["stagate.h5ad", "domains.png", "umap.png", "summary.json"]
    if out.exists() and not force and any((out / n).exists() for n in names):
        msg = f"{out} already holds results; pass --force to overwrite them."
        raise StagateInputError(msg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    t_write = time.perf_counter()
    try:
        # lzf: several times faster than gzip at a similar ratio on count matrices
        _h5ad_safe(adata).write_h5ad(tmp / "stagate.h5ad", compression="lzf")
        title = f"STAGATE domains (K={summary['n_domains']})"
        if "ari" in summary:
            title += f", ARI {summary['ari']:.3f}"
        ax = pl.domains(adata, key="stagate_domain", title=title)
        ax.figure.savefig(tmp / "domains.png", dpi=150, bbox_inches="tight")
        plt.close(ax.figure)
        if "X_umap" in adata.obsm:
            ax = pl.umap(adata, color="stagate_domain")
            ax.figure.savefig(tmp / "umap.png", dpi=150, bbox_inches="tight")
            plt.close(ax.figure)
        summary["seconds"]["write"] = round(time.perf_counter() - t_write, 3)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
        out.mkdir(exist_ok=True)
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %s", ", ".join(str(out / n) for n in names if (out / n).exists()))




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

"""Command line: `stagate run`, `stagate demo`. Thin wrappers around `_pipeline`."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

import click

from ._defaults import CONVERGENCE_TOL, DEFAULT_RECIPE, RECIPES, Recipe
from ._errors import StagateInputError


class _Group(click.Group):
    """Turn bad-input errors into one clear line and exit 1 (--debug shows the traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (StagateInputError, FileExistsError, OSError) as err:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if isinstance(err, OSError) and not isinstance(err, FileNotFoundError | PermissionError
                                                          | IsADirectoryError):
                raise
            raise click.ClickException(str(err)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(None, "-V", "--version", package_name="stagate")
@click.option("-v", "--verbose", count=True, help="-v for progress messages, -vv for debug.")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, debug: bool) -> None:
    """Spatial domains with STAGATE. Run `stagate COMMAND -h` for details."""
    import matplotlib

    from ._logging import set_verbosity

    matplotlib.use("Agg")  # files only: the command line never opens a window
    ctx.obj = {"debug": debug}
    set_verbosity(["WARNING", "INFO", "DEBUG"][min(verbose + 1, 2)])


def _shared_options(f):
    opts = [
        click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
                     required=True, help="Output folder."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Random seed (CPU runs are bit-identical for a seed)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                     show_default=True, help="Where to train."),
        click.option("--radius", type=str, default="auto", show_default=True,
                     help="Radius of the spatial network in coordinate units, or 'auto'."),
        click.option("--n-neighbors", type=int, default=None,
                     help="KNN network with this many neighbours instead of a radius."),
        click.option("--target-neighbors", type=float, default=8.0, show_default=True,
                     help="Mean neighbours per spot wanted by the automatic radius."),
        click.option("--library-key", type=str, default=None,
                     help="obs column naming sections; no edges between sections (one "
                          "section analysed as several). For a stack use --section-key."),
        click.option("--section-key", type=str, default=None,
                     help="obs column naming the section of each spot: model several "
                          "sections (see --sections). With several inputs, the column "
                          "written (default 'section')."),
        click.option("--sections", "sections_mode",
                     type=click.Choice(["joint3d", "joint", "separate"]), default=None,
                     help="Several sections: 'joint3d' (default; consecutive sections) one "
                          "model on the 3-D network joining adjacent sections; 'joint' one "
                          "model, no edges between sections (replicates or distant slices: "
                          "the most accurate on two DLPFC slides); 'separate' one model per "
                          "section."),
        click.option("--section-order", type=str, default=None,
                     help="Comma-separated section names in stack order (default: the "
                          "inputs' order, or the natural order of --section-key's labels)."),
        click.option("--between-radius", type=str, default="auto", show_default=True,
                     help="joint3d: x-y radius joining spots of adjacent sections, or 'auto' "
                          "(half the within-section radius: each spot to its counterparts)."),
        click.option("--align", is_flag=True,
                     help="Align each section rigidly onto the previous one (expression + "
                          "position) before building the graph; for sections not imaged in "
                          "one frame."),
        click.option("--spatial-key", type=str, default="spatial", show_default=True,
                     help="obsm key of the coordinates (e.g. spatial3d for a 3-D volume)."),
        click.option("--alpha", type=float, default=0.0, show_default=True,
                     help="Cell type-aware module weight (0 = off; 0.5 in the tutorial)."),
        click.option("--recipe", type=click.Choice(list(RECIPES)), default=DEFAULT_RECIPE,
                     show_default=True,
                     help="Training recipe. " + "; ".join(
                         f"{name}: {_describe(r)}" for name, r in RECIPES.items())
                     + ". 'paper' reproduces the original's training. Options below "
                       "override single settings of the recipe."),
        click.option("--epochs", "n_epochs", type=click.IntRange(min=1), default=None,
                     help="Epochs per run (the recipe's by default; the most with --tol)."),
        click.option("--runs", "n_runs", type=click.IntRange(min=1), default=None,
                     help="Training runs that vote on the domains (the recipe's by default; "
                          "1 = a single run, as the original)."),
        click.option("--cluster-inits", type=click.IntRange(min=1), default=None,
                     help="mclust starts per clustering, each from another random subset "
                          "for its initialisation (above 2000 spots); the highest BIC is "
                          "kept (the recipe's by default; 1 = R's single start)."),
        click.option("--jobs", "n_jobs", type=click.IntRange(min=1), default=None,
                     help="Worker processes training voting runs side by side on CPU, one "
                          "thread each (default: one per core; 1 = one run after another "
                          "in this process, each on every core). On a GPU the runs train "
                          "one by one and their clusterings go to the workers."),
        click.option("--hidden-dim", type=click.IntRange(min=1), default=None,
                     help="Width of the attention layer (the recipe's by default)."),
        click.option("--tol", type=float, default=CONVERGENCE_TOL or 0.0, show_default=True,
                     help="Early stopping: stop once the loss fell by less than this fraction "
                          "over the last 50 epochs (e.g. 0.01: ~5x faster, may cost accuracy); "
                          "0 trains all --epochs, as the original."),
        click.option("--lr", type=float, default=None,
                     help="Peak learning rate (the recipe's by default)."),
        click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, help="Save training state here every 100 epochs and on "
                                        "Ctrl-C; rerun with the same file to resume."),
        click.option("--batch-size", type=str, default="auto", show_default=True,
                     help="Seed spots per exact 2-hop minibatch; 'auto' trains on the whole "
                          "graph up to 100,000 spots, 'full' always does."),
        click.option("--step-every", type=click.Choice(["epoch", "batch"]), default="epoch",
                     show_default=True, help="Minibatches: one optimiser step per epoch "
                                             "(= full-batch training) or per batch."),
        click.option("--n-top-genes", type=int, default=3000, show_default=True,
                     help="Highly variable genes (seurat_v3); all genes for smaller panels."),
        click.option("--cluster-method", type=click.Choice(["mclust", "leiden", "louvain"]),
                     default="mclust", show_default=True,
                     help="How to cluster the embedding into domains (mclust = R's "
                          "mclust EEE, as the original, without R)."),
        click.option("--refine", is_flag=True,
                     help="Also write obs['domain_refined']: each spot's neighbourhood "
                          "majority domain (removes lone spots)."),
        click.option("--no-umap", is_flag=True, help="Skip the UMAP and PAGA (faster on large "
                                                     "data)."),
        click.option("--no-report", is_flag=True,
                     help="Skip marker genes, Moran's I, the attention summary and "
                          "report.html (the fastest run)."),
        click.option("--force", is_flag=True, help="Overwrite results already in --out."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _describe(r: Recipe) -> str:
    runs = "one run" if r.n_runs == 1 else f"{r.n_runs} runs voting"
    starts = "" if r.cluster_inits == 1 else f", best of {r.cluster_inits} mclust starts"
    return (f"{r.n_epochs} epochs, {r.lr_schedule} lr {r.lr:g}, width {r.hidden_dim}, "
            f"{runs}{starts}")


def _config(n_domains, label_key, opts: dict, **extra):
    from ._pipeline import PipelineConfig

    radius = opts["radius"]
    if opts["n_neighbors"] is not None:
        if radius != "auto":
            msg = "Pass either --radius or --n-neighbors, not both."
            raise click.UsageError(msg)
        radius = None
    else:
        radius = _positive_or_auto(radius, "--radius")
    return PipelineConfig(
        n_domains=n_domains, label_key=label_key, seed=opts["seed"], device=opts["device"],
        n_top_genes=opts["n_top_genes"], log_normalised=opts.get("log_normalised", False),
        min_counts=opts.get("min_counts", 0),
        radius=radius, n_neighbors=opts["n_neighbors"],
        target_neighbors=opts["target_neighbors"], library_key=opts["library_key"],
        section_key=opts["section_key"], sections=opts["sections_mode"],
        section_order=(None if not opts["section_order"] else
                       [x.strip() for x in opts["section_order"].split(",") if x.strip()]),
        between_radius=_positive_or_auto(opts["between_radius"], "--between-radius"),
        align=opts["align"],
        spatial_key=opts["spatial_key"],
        alpha=opts["alpha"], recipe=opts["recipe"], n_epochs=opts["n_epochs"], lr=opts["lr"],
        n_runs=opts["n_runs"], cluster_inits=opts["cluster_inits"], n_jobs=opts["n_jobs"],
        hidden_dim=opts["hidden_dim"],
        batch_size=_batch_size(opts["batch_size"]), checkpoint=opts["checkpoint"],
        step_every=opts["step_every"], tol=opts["tol"] or None,
        cluster_method=opts["cluster_method"], refine=opts["refine"], umap=not opts["no_umap"],
        downstream=not opts["no_report"],
        show_progress=not opts["quiet"], extra=extra,
    )


def _positive_or_auto(value: str, option: str) -> float | str:
    """A radius option: 'auto' or a positive finite number, else a usage error."""
    if value == "auto":
        return value
    try:
        radius = float(value)
    except ValueError:
        radius = float("nan")
    if not 0 < radius < float("inf"):
        msg = f"{option} must be a positive number or 'auto', got {value!r}."
        raise click.UsageError(msg)
    return radius


def _batch_size(value: str):
    if value in ("auto", "full"):
        return None if value == "full" else "auto"
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        msg = f"--batch-size must be 'auto', 'full' or a positive integer, got {value!r}."
        raise click.UsageError(msg)
    return size


@cli.command()
@click.argument("input_paths", metavar="INPUT...", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--format", "input_format",
              type=click.Choice(["auto", "h5ad", "spatialdata", "visium", "visium_hd", "xenium",
                                 "merscope", "cosmx", "slideseq", "stereoseq", "imaging"]),
              default="auto", show_default=True,
              help="Input format; auto detects it from what INPUT is (file or folder).")
@click.option("--coords", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Slide-seq/imaging: coordinates table, when INPUT is the "
                                 "count matrix itself.")
@click.option("--bin-size", type=click.IntRange(min=1), default=None,
              help="Stereo-seq GEM: bin size in DNBs (default 50); Visium HD: bin size in um, "
                   "2, 8 or 16 (default 8).")
@click.option("--table", "table", default=None,
              help="SpatialData store: the table to analyse (when it holds several); the "
                   "results are written to OUT/stagate.zarr as a table on the same region.")
@click.option("--x-col", default=None, help="Column of the x coordinate, if not 'x'.")
@click.option("--y-col", default=None, help="Column of the y coordinate, if not 'y'.")
@click.option("--n-domains", type=click.IntRange(min=2), required=True,
              help="Number of spatial domains to find.")
@click.option("--label-key", type=str, default=None,
              help="obs column with a manual annotation: report ARI/NMI against it.")
@click.option("--log-normalised", is_flag=True,
              help="X is already log-normalised (skip HVG selection and normalisation).")
@click.option("--min-counts", type=click.IntRange(min=0), default=0, show_default=True,
              help="Drop spots with fewer total counts before anything else (1: the empty "
                   "ones); the results hold the other spots.")
@_shared_options
def run(input_paths: tuple[Path, ...], n_domains: int, label_key: str | None,
        input_format: str, coords: Path | None, bin_size: int, x_col: str | None,
        y_col: str | None, table: str | None, **opts) -> None:
    """Find spatial domains in INPUT: an .h5ad (raw counts in X or layers['counts'],
    coordinates in obsm['spatial']), a Space Ranger folder, a Stereo-seq GEM file, or a
    Slide-seq / imaging count matrix with its coordinates table.

    Several INPUTs are sections of one tissue, in stack order: they are modelled together
    (--sections), on the genes they share; obs['section'] names each spot's input."""
    from . import io
    from ._pipeline import run_pipeline, write_outputs

    if len(input_paths) > 1:
        opts["section_key"] = opts["section_key"] or "section"
    cfg = _config(n_domains, label_key, opts,
                  input_path=[str(p) for p in input_paths] if len(input_paths) > 1
                  else str(input_paths[0]))
    with _claim(opts) as lock:  # fail now, not after training
        t = time.perf_counter()
        reads = [io.read(p, input_format, coordinates=coords, bin_size=bin_size, x_col=x_col,
                         y_col=y_col, table=table) for p in input_paths]
        if len(reads) == 1:
            adata = reads[0]
        else:
            names = _section_names(input_paths)
            if cfg.section_order is None:
                cfg.section_order = names
            adata = io.concat_sections(dict(zip(names, reads, strict=True)), key=cfg.section_key)
            del reads
        read_s = time.perf_counter() - t
        result, summary = run_pipeline(adata, cfg, copy=False)
        if _is_secondary_rank():
            return
        summary["seconds"]["read"] = round(read_s, 3)
        write_outputs(result, summary, opts["out"], force=opts["force"], lock=lock,
                      report=not opts["no_report"])
        _report(summary, opts["out"])


def _section_names(paths: tuple[Path, ...]) -> list[str]:
    """A name per input: the file's stem, or the folder's (the parent of Space Ranger's outs/)."""
    names = []
    for p in paths:
        p = p.resolve()
        name = p.name
        for suffix in (".gz", ".h5ad", ".h5", ".gem", ".tsv", ".txt", ".csv"):
            name = name.removesuffix(suffix)
        if name in ("outs", "filtered_feature_bc_matrix") and p.parent.name:
            name = p.parent.name
        names.append(name)
    if len(set(names)) < len(names):  # e.g. the same file name in different folders
        names = [f"{i + 1}_{n}" for i, n in enumerate(names)]
    return names


@contextlib.contextmanager
def _claim(opts: dict):
    """Check --out and hold it for this run, released however the run ends (under torchrun
    only rank 0 writes: the others do not claim it)."""
    if os.environ.get("RANK", "0") != "0":
        yield None
        return
    from ._pipeline import claim_output_folder

    lock = claim_output_folder(opts["out"], force=opts["force"])
    try:
        yield lock
    finally:
        lock.close()


def _is_secondary_rank() -> bool:
    """Under torchrun every process trains its share; only rank 0 clusters and writes."""
    from .train._distributed import world

    return world()[0] != 0


@cli.command()
@click.option("--n-spots", type=click.IntRange(min=50), default=3000, show_default=True,
              help="Size of the simulated section.")
@click.option("--n-domains", type=click.IntRange(min=2), default=6, show_default=True)
@_shared_options
def demo(n_spots: int, n_domains: int, **opts) -> None:
    """Run the whole pipeline on the built-in simulator and compare with a non-spatial
    clustering of the same data."""
    from ._pipeline import nonspatial_ari, run_pipeline, write_outputs
    from .datasets import simulate

    cfg = _config(n_domains, "domain_truth", opts, input_path=f"simulate(n_spots={n_spots})")
    with _claim(opts) as lock:
        adata = simulate(n_spots, n_domains=n_domains, random_state=opts["seed"])
        result, summary = run_pipeline(adata, cfg, copy=False)
        if _is_secondary_rank():
            return
        summary["nonspatial_ari"] = nonspatial_ari(result, cfg)
        write_outputs(result, summary, opts["out"], force=opts["force"], lock=lock,
                      report=not opts["no_report"])
        _report(summary, opts["out"])
    click.echo(f"non-spatial clustering (PCA + {cfg.cluster_method}) ARI: "
               f"{summary['nonspatial_ari']:.3f}; STAGATE ARI: {summary['ari']:.3f}")


@cli.command()
@click.argument("result_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report(result_dir: Path) -> None:
    """Remake RESULT_DIR/report.html from a finished run (its stagate.h5ad and summary.json),
    e.g. after a run with --no-report or with a newer stagate."""
    import json

    import anndata

    from .report import write_report

    paths = {name: result_dir / name for name in ("stagate.h5ad", "summary.json")}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        msg = (f"{result_dir} is not a finished stagate run: {', '.join(missing)} missing. "
               f"Pass the --out folder of a `stagate run`.")
        raise StagateInputError(msg)
    adata = anndata.read_h5ad(paths["stagate.h5ad"])
    summary = json.loads(paths["summary.json"].read_text())
    if "markers" not in summary.get("downstream", {}) and "domain_markers_table" not in adata.uns:
        from ._pipeline import add_downstream

        summary["downstream"] = add_downstream(adata, summary.get("trained_on_graph", "spatial"))
    write_report(adata, summary, result_dir / "report.html")
    click.echo(f"wrote {result_dir / 'report.html'}")


def _report(summary: dict, out: Path) -> None:
    s = summary["seconds"]
    line = (f"{summary['n_spots']} spots, {summary['n_genes_used']} genes, "
            f"{summary['mean_neighbors']:.2f} neighbours/spot, device {summary['device']}; "
            f"graph {s['graph']:.1f}s, train {s['train']:.1f}s, cluster {s['cluster']:.1f}s, "
            f"total {s['total']:.1f}s")
    if "ari" in summary:
        line += f"; ARI {summary['ari']:.3f}, NMI {summary['nmi']:.3f}"
    click.echo(line)
    vote = summary.get("consensus", {})
    if vote.get("n_runs", 1) > 1:
        click.echo(f"recipe {summary['recipe']['name']}: {vote['n_runs']} runs voted on the "
                   f"domains; runs agree with each other at mean ARI "
                   f"{vote['mean_pairwise_ari']:.3f}, {100 * vote['mean_support']:.0f}% of "
                   f"votes per spot for its domain")
    sections = summary.get("sections")
    if sections:
        parts = [f"{len(sections['order'])} sections ({sections['mode']})",
                 f"mixing (scaled iLISI) {sections['mixing']['ilisi']:.3f}",
                 f"adjacent-section agreement (ARI) {sections['agreement']['mean_ari']:.3f}"]
        if "per_section" in summary:
            parts.append("ARI per section " + ", ".join(
                f"{k} {v['ari']:.3f}" for k, v in summary["per_section"].items()))
        click.echo("; ".join(parts))
    for stage, error in summary.get("failed_stages", {}).items():
        click.echo(f"warning: the optional {stage} stage failed ({error}); everything else "
                   f"was written", err=True)
    files = ", ".join(f.name for f in sorted(Path(out).iterdir()) if not f.name.startswith("."))
    click.echo(f"results in {out}/ ({files})")


def main() -> None:  # pragma: no cover
    logging.captureWarnings(True)
    sys.exit(cli())

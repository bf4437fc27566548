"""One (method, dataset, seed) run of the peer comparison (see bench/README.md).

Prints one JSON line: ARI, NMI, seconds per stage, versions. Run by bench/compare.py, each run
in a fresh process: `stagate` in the project's environment, the peers (`stagate_modern`,
`banksy`, `pca`) in the peers' environment (bench/setup_peers.sh). Every method's embedding is
clustered by the same code, stagate.cluster.mclust (EEE, seed 2020, equal to R's mclust), taken
from this checkout's source so the peers' environment needs no install of our package.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = Path(os.environ.get("STAGATE_DATA", ROOT.parent / "shared" / "data"))

#: the STAGATE tutorials' settings per dataset; `radius` is the original's rad_cutoff
DATASETS = {
    "dlpfc_151673": {"n_domains": 7, "label_key": "layer", "radius": 150},
    "dlpfc_151676": {"n_domains": 7, "label_key": "layer", "radius": 150},
    "starmap_visual_cortex": {"n_domains": 7, "label_key": "layer", "radius": 400,
                              "subset": "in_1207_benchmark_subset"},
}
N_TOP_GENES = 3000
MCLUST_SEED = 2020  # the tutorials' mclust_R(random_seed=2020)

stages: dict[str, float] = {}
extra: dict = {}  # method-specific facts worth recording (e.g. epochs trained)


@contextlib.contextmanager
def stage(name: str):
    t = time.perf_counter()
    yield
    stages[name] = stages.get(name, 0.0) + time.perf_counter() - t


def load(name: str):
    import anndata as ad

    a = ad.read_h5ad(DATA / name / f"{name}.h5ad")
    subset = DATASETS[name].get("subset")
    if subset:
        a = a[a.obs[subset].astype(bool).to_numpy()].copy()
    return a


def tutorial_preprocess(a) -> None:
    """The STAGATE tutorials' preprocessing: seurat_v3 top-3000 HVGs, normalise 1e4, log1p."""
    import scanpy as sc

    sc.pp.highly_variable_genes(a, flavor="seurat_v3", n_top_genes=min(N_TOP_GENES, a.n_vars - 1))
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)


def run_stagate(a, spec: dict, seed: int):
    """Ours, default settings, through the public API a user calls."""
    with stage("load"):
        import stagate as st
    with stage("preprocess"):
        st.pp.preprocess(a)
    with stage("graph"):
        st.pp.spatial_network(a)
    with stage("train"):
        st.tl.stagate(a, random_state=seed, device="cpu", show_progress=False)
    extra["epochs"] = len(a.uns["STAGATE"]["loss"])
    return a.obsm["STAGATE"]


def input_file(name: str) -> Path:
    """The dataset as `stagate run` reads it: the file itself, or (STARmap) its benchmark
    subset written once beside the other inputs (not timed: a user has their file)."""
    subset = DATASETS[name].get("subset")
    if not subset:
        return DATA / name / f"{name}.h5ad"
    folder = Path(os.environ.get("STAGATE_BENCH_INPUTS", "/tmp/stagate_bench_inputs"))
    path = folder / f"{name}.h5ad"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.h5ad")
        load(name).write_h5ad(tmp)
        os.replace(tmp, path)
    return path


def run_stagate_cli(name: str, seed: int, recipe: str) -> dict:
    """The whole `stagate run` a user types (read, preprocess, graph, train, cluster, UMAP,
    figures, h5ad, summary.json), in this process; its own clustering and scores."""
    import tempfile

    from stagate.cli import cli

    spec = DATASETS[name]
    out = Path(tempfile.mkdtemp(prefix="stagate-bench-")) / "out"
    args = ["run", str(input_file(name)), "--n-domains", str(spec["n_domains"]),
            "--label-key", spec["label_key"], "--seed", str(seed), "--recipe", recipe,
            "--device", "cpu", "--quiet", "--out", str(out)]
    with contextlib.redirect_stdout(sys.stderr):
        cli.main(args, standalone_mode=False)
    summary = json.loads((out / "summary.json").read_text())
    stages.update(summary["seconds"])
    extra.update({"recipe": summary["recipe"], "consensus": summary["consensus"],
                  "epochs": summary["epochs_trained"]})
    return summary


def run_stagate_modern(a, spec: dict, seed: int, device: str = "cpu"):
    """The PyG original (stagate-modern), its tutorial protocol. Its training ends by
    copying the embedding to the host, so the train stage's clock includes the GPU's work."""
    with stage("load"):
        import STAGATE_pyG
    with stage("preprocess"):
        tutorial_preprocess(a)
    with stage("graph"):
        STAGATE_pyG.Cal_Spatial_Net(a, rad_cutoff=spec["radius"], verbose=False)
    with stage("train"):
        a = STAGATE_pyG.train_STAGATE(a, random_seed=seed, verbose=False, device=device)
    return a.obsm["STAGATE"]


def mclust_domains(emb, spec: dict):
    """Every method's embedding clustered alike: mclust EEE with the tutorials' seed."""
    import numpy as np

    from stagate.cluster import mclust

    return mclust(np.asarray(emb, dtype=np.float64), spec["n_domains"], model="EEE",
                  random_state=MCLUST_SEED)


def score(a, spec: dict, labels) -> tuple[float, float]:
    """ARI and NMI against the annotation on the annotated spots ("NA" is no layer: left
    out, as our own scores do)."""
    import numpy as np
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from stagate.tl._metrics import annotated_mask

    truth = a.obs[spec["label_key"]]
    known = annotated_mask(truth)
    t, p = truth[known].astype(str).to_numpy(), np.asarray(labels)[known]
    return adjusted_rand_score(t, p), normalized_mutual_info_score(t, p)


def run_banksy(a, spec: dict, seed: int):
    """Official Python BANKSY: neighbourhood-augmented expression (lambda 0.8), 20 PCs."""
    with stage("load"):
        import numpy as np
        from banksy.embed_banksy import generate_banksy_matrix
        from banksy.initialize_banksy import initialize_banksy
        from banksy_utils.umap_pca import pca_umap

    np.random.seed(seed)
    with stage("preprocess"):
        tutorial_preprocess(a)
        a = a[:, a.var["highly_variable"].to_numpy()].copy()
        a.obs["x"], a.obs["y"] = a.obsm["spatial"][:, 0], a.obsm["spatial"][:, 1]
    with contextlib.redirect_stdout(sys.stderr):  # BANKSY prints progress to stdout
        with stage("graph"):
            d = initialize_banksy(a, ("x", "y", "spatial"), num_neighbours=15,
                                  nbr_weight_decay="scaled_gaussian", max_m=1,
                                  plt_edge_hist=False, plt_nbr_weights=False, plt_theta=False)
        with stage("train"):
            d, _ = generate_banksy_matrix(a, d, [0.8], max_m=1, verbose=False)
            pca_umap(d, pca_dims=[20], plt_remaining_var=False, add_umap=False)
    return d["scaled_gaussian"][0.8]["adata"].obsm["reduced_pc_20"]


def run_pca(a, spec: dict, seed: int):
    """Non-spatial baseline: 30 PCs of the same log-normalised HVGs."""
    with stage("load"):
        import scanpy as sc
    with stage("preprocess"):
        tutorial_preprocess(a)
    with stage("train"):
        b = a[:, a.var["highly_variable"].to_numpy()].copy()
        sc.pp.pca(b, n_comps=30, random_state=seed)
    return b.obsm["X_pca"]


#: whole `stagate run` per recipe: (method name -> recipe)
CLI_METHODS = {"stagate_run_default": "default", "stagate_run_paper": "paper"}
METHODS = {"stagate": run_stagate, "stagate_modern": run_stagate_modern,
           "banksy": run_banksy, "pca": run_pca}


def versions(method: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch", "numpy", "scanpy", "anndata", "scikit-learn"]
    names += {"stagate_modern": ["stagate-modern", "torch-geometric"],
              "banksy": ["pybanksy"]}.get(method, [])
    out = {}
    for n in names:
        with contextlib.suppress(PackageNotFoundError):
            out[n] = version(n)
    if method == "stagate":
        import stagate

        out["stagate"] = stagate.__version__
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("method", choices=list(METHODS) + list(CLI_METHODS))
    ap.add_argument("dataset", choices=list(DATASETS))
    ap.add_argument("seed", type=int)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    spec = DATASETS[args.dataset]
    if args.method in CLI_METHODS:
        input_file(args.dataset)  # STARmap: the subset file exists before the clock starts
        summary = run_stagate_cli(args.dataset, args.seed, CLI_METHODS[args.method])
        print(json.dumps({
            "method": args.method, "dataset": args.dataset, "seed": args.seed,
            "ari": summary["ari"], "nmi": summary["nmi"], "n_spots": summary["n_spots"],
            "seconds": {**stages, "total_in_process": time.perf_counter() - T_START},
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "versions": versions("stagate"), **extra}), flush=True)
        return

    with stage("load"):
        import numpy as np
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        a = load(args.dataset)
    emb = METHODS[args.method](a, spec, args.seed)
    with stage("cluster"):
        labels = mclust_domains(emb, spec)
    if os.environ.get("STAGATE_BENCH_KEEP"):  # for ablations: keep embedding and graph
        import scipy.sparse as sp

        keep = Path(os.environ["STAGATE_BENCH_KEEP"])
        keep.mkdir(parents=True, exist_ok=True)
        np.save(keep / f"{args.method}_{args.dataset}_{args.seed}.npy", np.asarray(emb))
        if "spatial_connectivities" in a.obsp:
            graph = sp.csr_matrix(a.obsp["spatial_connectivities"])
            sp.save_npz(keep / f"{args.dataset}_graph.npz", graph)
    ari, nmi = score(a, spec, labels)
    total = time.perf_counter() - T_START
    print(json.dumps({
        "method": args.method, "dataset": args.dataset, "seed": args.seed,
        "ari": ari, "nmi": nmi,
        "n_spots": int(a.n_obs), "seconds": {**stages, "total_in_process": total},
        # the whole process's peak resident memory (Linux reports KiB)
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "versions": versions(args.method), **extra,
    }), flush=True)


if __name__ == "__main__":
    main()

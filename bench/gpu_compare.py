"""Ours (both recipes) against the PyG original on a GPU: training seconds and ARI per dataset.

One process runs everything, so CUDA starts once; a warm-up fit comes before any clock. Per
dataset and seed: ours through the pipeline a user runs (`stagate run` without UMAP and report:
preprocess, graph, train, cluster, score), and the original (stagate-modern) with its
tutorial protocol, its embedding clustered by our mclust (EEE, seed 2020, equal to R's), as
bench/compare_worker.py does on CPU. Before that, on the first dataset, the seconds per epoch
of one training run of each recipe and a profile of the default recipe's epochs.

    python bench/gpu_compare.py --out DIR [--datasets ...] [--device cuda]

Writes DIR/gpu_compare.jsonl (one line per run, appended as each finishes), DIR/epochs.json
and DIR/profile.txt. The data folder is STAGATE_DATA (default ../shared/data).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_worker as cw  # noqa: E402  (the CPU comparison's datasets and protocol)
from compare import machine  # noqa: E402

import stagate as st  # noqa: E402
from stagate._pipeline import PipelineConfig, run_pipeline  # noqa: E402


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def device_info(device: str) -> dict:
    info = machine() | {"torch": torch.__version__}
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        info |= {"gpu": p.name, "gpu_memory_gb": round(p.total_memory / 2**30, 1),
                 "cuda": torch.version.cuda}
    return info


def prepared(name: str):
    """The dataset preprocessed and with its graph, as `stagate run` makes them."""
    a = cw.load(name)
    st.pp.preprocess(a)
    st.pp.spatial_network(a)
    return a


def epoch_seconds(a, device: str, epochs: int) -> dict:
    """Seconds per epoch of one training run of each recipe (full batch, after warm-up)."""
    out = {}
    for recipe in ("default", "paper"):
        for graphs in ("1", "0"):  # CUDA graphs on (the default) and off
            os.environ["STAGATE_CUDA_GRAPHS"] = graphs
            model = st.STAGATE(recipe=recipe, n_epochs=epochs, device=device,
                               show_progress=False)
            model.fit(a)
            sync(device)
            out[recipe + ("" if graphs == "1" else "_no_cuda_graphs")] = {
                "epochs": epochs, "train_seconds": model.train_seconds_,
                "ms_per_epoch": 1e3 * model.train_seconds_ / epochs,
                "hidden_dim": model.hidden_dim}
    os.environ["STAGATE_CUDA_GRAPHS"] = "1"
    # what five runs trained as one model would cost: five disjoint copies of the slice
    import anndata as ad
    import scipy.sparse as sp

    copies = ad.concat([a] * 5, index_unique="-")
    copies.var = a.var.copy()
    copies.obsp["spatial_connectivities"] = sp.block_diag(
        [a.obsp["spatial_connectivities"]] * 5, format="csr")
    copies.obsp["spatial_distances"] = sp.block_diag([a.obsp["spatial_distances"]] * 5,
                                                     format="csr")
    copies.uns = a.uns
    model = st.STAGATE(n_epochs=epochs, device=device, show_progress=False).fit(copies)
    out["default_5_copies"] = {"epochs": epochs, "train_seconds": model.train_seconds_,
                               "ms_per_epoch": 1e3 * model.train_seconds_ / epochs}
    return out


def profile_epochs(a, device: str, epochs: int, path: Path) -> None:
    """torch.profiler over a short default-recipe fit: where an epoch's time goes."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    model = st.STAGATE(n_epochs=epochs, device=device, show_progress=False)
    with profile(activities=acts) as prof:
        model.fit(a)
        sync(device)
    sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=30)
    path.write_text(f"{epochs} epochs, default recipe, {a.n_obs} spots\n{table}\n")
    print(table[:6000], flush=True)


def run_ours(name: str, seed: int, recipe: str, device: str) -> dict:
    spec = cw.DATASETS[name]
    a = cw.load(name)
    sync(device)
    t = time.perf_counter()
    cfg = PipelineConfig(n_domains=spec["n_domains"], label_key=spec["label_key"], seed=seed,
                         device=device, recipe=recipe, umap=False, downstream=False,
                         show_progress=False)
    res, summary = run_pipeline(a, cfg, copy=False)
    sync(device)
    wall = time.perf_counter() - t
    runs = res.uns["STAGATE"].get("runs")  # the voting runs' own training-loop seconds
    loop_s = float(np.sum(runs["train_seconds"]) if runs else res.uns["STAGATE"]["train_seconds"])
    return {"method": f"stagate_{recipe}", "dataset": name, "seed": seed, "ari": summary["ari"],
            "nmi": summary["nmi"], "seconds": summary["seconds"] | {"wall": wall},
            "train_loop_seconds": loop_s, "epochs": summary["epochs_trained"]}


def run_original(name: str, seed: int, device: str) -> dict:
    """The original as bench/compare_worker.py runs it on CPU, on `device`."""
    spec = cw.DATASETS[name]
    cw.stages.clear()
    a = cw.load(name)
    emb = cw.run_stagate_modern(a, spec, seed, device=device)
    with cw.stage("cluster"):
        labels = cw.mclust_domains(emb, spec)
    ari, nmi = cw.score(a, spec, labels)
    return {"method": "stagate_modern", "dataset": name, "seed": seed, "ari": ari,
            "nmi": nmi, "seconds": dict(cw.stages), "epochs": 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--datasets", nargs="+", default=list(cw.DATASETS))
    ap.add_argument("--seeds-default", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--seeds-paper", type=int, nargs="*", default=[0])
    ap.add_argument("--seeds-original", type=int, nargs="*", default=[0])
    ap.add_argument("--epoch-bench", type=int, default=200, help="epochs per recipe; 0 skips")
    ap.add_argument("--profile-epochs", type=int, default=20, help="0 skips the profile")
    ap.add_argument("--skip-original", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    args.out.mkdir(parents=True, exist_ok=True)
    info = device_info(args.device)
    print(json.dumps(info), flush=True)
    (args.out / "machine.json").write_text(json.dumps(info, indent=1))

    first = prepared(args.datasets[0])
    st.STAGATE(n_epochs=20, device=args.device, show_progress=False).fit(first)  # warm-up
    if args.epoch_bench:
        ep = epoch_seconds(first, args.device, args.epoch_bench)
        print(json.dumps(ep), flush=True)
        (args.out / "epochs.json").write_text(json.dumps(ep | {"machine": info}, indent=1))
    if args.profile_epochs:
        profile_epochs(first, args.device, args.profile_epochs, args.out / "profile.txt")

    rows: list[dict] = []
    jobs = []
    for name in args.datasets:
        jobs += [("original", name, s) for s in ([] if args.skip_original
                                                 else args.seeds_original)]
        jobs += [("paper", name, s) for s in args.seeds_paper]
        jobs += [("default", name, s) for s in args.seeds_default]
    with open(args.out / "gpu_compare.jsonl", "a") as f:
        for what, name, seed in jobs:
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    row = (run_original(name, seed, args.device) if what == "original"
                           else run_ours(name, seed, what, args.device))
            except Exception as err:  # noqa: BLE001 - one failed run must not end the others
                print(f"{name} {what} seed {seed} FAILED: {type(err).__name__}: {err}",
                      flush=True)
                continue
            row["device"] = args.device
            rows.append(row)
            f.write(json.dumps(row) + "\n")
            f.flush()
            print(f"{name} {row['method']} seed {seed}: ARI {row['ari']:.3f}, train "
                  f"{row['seconds']['train']:.2f} s, loop {row.get('train_loop_seconds')}",
                  flush=True)
    print("| dataset | method | ARI mean | train s median | cluster s median |")
    print("|---|---|---|---|---|")
    for name in args.datasets:
        for method in ("stagate_modern", "stagate_paper", "stagate_default"):
            rs = [r for r in rows if r["dataset"] == name and r["method"] == method]
            if rs:
                print(f"| {name} | {method} | {statistics.mean(r['ari'] for r in rs):.3f} | "
                      f"{statistics.median(r['seconds']['train'] for r in rs):.2f} | "
                      f"{statistics.median(r['seconds'].get('cluster', 0) for r in rs):.2f} |")


if __name__ == "__main__":
    main()

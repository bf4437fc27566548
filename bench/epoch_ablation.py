"""Time of one training epoch on a DLPFC slice, lever by lever, in one process.

Variants (each the previous plus one change), median of --epochs timed epochs after warm-up:

- ``torch_kernels``: torch's CSR products for the aggregation and X W1, autograd's
  backward of the Gram term (the code before the levers below)
- ``numba_kernels``: our numba CSR x dense and SDDMM kernels (module/_cpu_kernels.py)
- ``symmetric_gram``: + the Gram term's hand-written backward (default: what ships)
- ``bf16_gram``: + the four Gram-sized products in bfloat16 (not shipped; timing only)

    python bench/epoch_ablation.py [--dataset dlpfc_151673] [--epochs 30]

Writes bench/results/epoch_ablation_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from pathlib import Path

import anndata as ad
import torch
from compare import machine  # bench/compare.py

import stagate as st
from stagate.model._data import model_input
from stagate.module import STAGATEModule, _autoencoder, _sparse
from stagate.train import Batch
from stagate.train._distributed import SeedLoss

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STAGATE_DATA", ROOT.parent / "shared" / "data"))


SYMMETRIC_GRAM = _autoencoder.gram_inner


def autograd_gram(a, b):
    return ((a.T @ a) * (b.T @ b)).sum(dtype=torch.float64)


def bf16_gram(a, b):
    return SYMMETRIC_GRAM(a.bfloat16(), b.bfloat16()).to(torch.float64)


VARIANTS = {
    "torch_kernels": {"cpu_kernels": False, "gram": autograd_gram},
    "numba_kernels": {"cpu_kernels": True, "gram": autograd_gram},
    "symmetric_gram": {"cpu_kernels": True, "gram": SYMMETRIC_GRAM},
    "bf16_gram": {"cpu_kernels": True, "gram": bf16_gram},
}


def epoch_times(batch: Batch, n_genes: int, n_epochs: int) -> list[float]:
    module = STAGATEModule(n_genes)
    module.reset_parameters(torch.Generator().manual_seed(0))
    step = SeedLoss(module)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3, weight_decay=1e-4)
    times = []
    for i in range(n_epochs + 3):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        step(batch).backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 5.0)
        opt.step()
        if i >= 3:  # warm-up: allocator, numba's cached kernels
            times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="dlpfc_151673")
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    adata = ad.read_h5ad(DATA / args.dataset / f"{args.dataset}.h5ad")
    st.pp.preprocess(adata)
    st.pp.spatial_network(adata)
    data = model_input(adata, layer=None, use_hvg=True, graph_key="spatial", pruned_key=None)
    batch = Batch(data.x, data.graph)
    on_cpu, gram = _sparse._on_cpu, _autoencoder.gram_inner
    results = {}
    try:
        for name, v in VARIANTS.items():
            _sparse._on_cpu = on_cpu if v["cpu_kernels"] else (lambda t: False)
            _autoencoder.gram_inner = v["gram"]
            times = epoch_times(batch, data.x.shape[1], args.epochs)
            results[name] = {"median_ms": 1000 * statistics.median(times),
                             "min_ms": 1000 * min(times), "max_ms": 1000 * max(times)}
            print(f"{name:15s} median {results[name]['median_ms']:.1f} ms/epoch", flush=True)
    finally:
        _sparse._on_cpu, _autoencoder.gram_inner = on_cpu, gram
    base = results["torch_kernels"]["median_ms"]
    for r in results.values():
        r["speedup_vs_torch_kernels"] = base / r["median_ms"]
    out = {"dataset": args.dataset, "n_spots": adata.n_obs, "n_genes": int(data.x.shape[1]),
           "epochs_timed": args.epochs, "threads": torch.get_num_threads(),
           "machine": machine(), "torch": torch.__version__, "variants": results}
    path = ROOT / "bench" / "results" / "epoch_ablation_cpu.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, path)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""The largest realistic shape: a simulated Visium HD section at 8 um, end to end.

    python bench/scale_visium_hd.py [--side 775] [--genes 18000] [--epochs 3]

Writes a Space Ranger-like Visium HD output (``binned_outputs/square_008um/`` with the 10x
``filtered_feature_bc_matrix.h5``, ``spatial/tissue_positions.parquet`` and the scale
factors) of side x side bins (775 x 775 = ~600k bins, the size of a 6.5 mm capture area at
8 um) and `genes` genes, then runs, in a fresh process,
``stagate run OUTS --n-domains 7 --label-key domain_truth --epochs E --runs 1 --no-umap
--no-report`` with the default minibatches (exact 2-hop batches of 8192 seeds above 100k
spots) and records wall time, peak RSS and summary.json's seconds per stage. The simulated
counts are drawn sparsely (each bin's ~150 UMIs assigned to genes by its domain's
expression programme, curved layered domains), not timed: that is the user's input. Few
epochs: seconds per epoch is what the full training multiplies. Appends to
bench/results/scale_visium_hd_cpu.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from compare import machine
from scale import CHILD  # the timed `stagate` process, as bench/scale.py runs it

ROOT = Path(__file__).resolve().parents[1]
UM_PER_PX = 0.2737


def simulate_hd(side: int, n_genes: int, n_domains: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    row, col = np.divmod(np.arange(side * side), side)
    u, v = col / side, row / side
    depth = v + 0.1 * np.sin(2 * np.pi * 1.3 * u) + 0.3 * (u - 0.5) ** 2
    domain = np.searchsorted(np.quantile(depth, np.linspace(0, 1, n_domains + 1)[1:-1]), depth)
    base = np.exp(rng.normal(-1.5, 1.8, n_genes))
    fold = np.exp(rng.normal(0, 1.0, (n_domains, n_genes)) * (rng.random((n_domains, n_genes))
                                                                < 0.05))
    programme = base * fold
    programme /= programme.sum(1, keepdims=True)
    umis = rng.poisson(rng.lognormal(np.log(150), 0.5, side * side)).astype(np.int64)
    rows, cols = [], []
    for d in range(n_domains):
        bins = np.flatnonzero(domain == d)
        total = int(umis[bins].sum())
        rows.append(np.repeat(bins, umis[bins]))
        cols.append(rng.choice(n_genes, size=total, p=programme[d]))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    counts = sp.csr_matrix((np.ones(rows.size, np.int32), (rows, cols)),
                           shape=(side * side, n_genes))
    counts.sum_duplicates()
    keep = np.asarray(counts.sum(1)).ravel() > 0
    return counts[keep], row[keep], col[keep], domain[keep]


def write_visium_hd(outs: Path, counts, row, col, domain) -> None:
    folder = outs / "binned_outputs" / "square_008um"
    (folder / "spatial").mkdir(parents=True)
    barcodes = np.array([f"s_008um_{r:05d}_{c:05d}-1" for r, c in zip(row, col, strict=True)])
    m = sp.csc_matrix(counts.T)
    with h5py.File(folder / "filtered_feature_bc_matrix.h5", "w") as f:
        g = f.create_group("matrix")
        g["barcodes"] = barcodes.astype("S")
        g["data"] = m.data.astype(np.int32)
        g["indices"] = m.indices.astype(np.int64)
        g["indptr"] = m.indptr.astype(np.int64)
        g["shape"] = np.array(m.shape, dtype=np.int32)
        feats = g.create_group("features")
        n_genes = counts.shape[1]
        feats["id"] = np.array([f"ENSG{i:011d}" for i in range(n_genes)]).astype("S")
        feats["name"] = np.array([f"Gene{i}" for i in range(n_genes)]).astype("S")
        feats["feature_type"] = np.array(["Gene Expression"] * n_genes).astype("S")
        feats["genome"] = np.array(["GRCh38"] * n_genes).astype("S")
        feats["_all_tag_keys"] = np.array([b"genome"])
    px = 8 / UM_PER_PX
    pd.DataFrame({"barcode": barcodes, "in_tissue": 1, "array_row": row, "array_col": col,
                  "pxl_row_in_fullres": row * px, "pxl_col_in_fullres": col * px}).to_parquet(
        folder / "spatial" / "tissue_positions.parquet")
    (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(
        {"microns_per_pixel": UM_PER_PX, "bin_size_um": 8.0, "spot_diameter_fullres": px}))
    # the truth, for the label key: an obs column is not part of Space Ranger's output, so
    # it is scored afterwards from this file
    pd.Series(domain, index=barcodes).to_csv(outs / "truth.csv")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=775)
    ap.add_argument("--genes", type=int, default=18000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" /
                    "scale_visium_hd_cpu.jsonl")
    args = ap.parse_args()
    env = os.environ | {"PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory() as tmp:
        outs = Path(tmp) / "outs"
        t = time.perf_counter()
        counts, row, col, domain = simulate_hd(args.side, args.genes)
        write_visium_hd(outs, counts, row, col, domain)
        prepare_s = time.perf_counter() - t
        result_dir = Path(tmp) / "result"
        cmd = [sys.executable, "-c", CHILD, "run", str(outs), "--n-domains", "7",
               "--epochs", str(args.epochs), "--runs", "1", "--no-umap", "--no-report",
               "--device", "cpu", "--quiet", "--out", str(result_dir)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.exit(proc.stderr[-3000:])
        line = next(x for x in proc.stdout.splitlines() if x.startswith("SCALE_RESULT"))
        summary = json.loads((result_dir / "summary.json").read_text())
        record = json.loads(line.split(" ", 1)[1]) | {
            "n_bins": int(counts.shape[0]), "n_genes": int(counts.shape[1]),
            "nnz": int(counts.nnz), "epochs": args.epochs, "prepare_s": round(prepare_s, 1),
            "seconds": summary["seconds"], "batch_size_used": summary["batch_size_used"],
            "n_genes_used": summary["n_genes_used"], "input": summary["input"],
            "mean_neighbors": summary["mean_neighbors"], "machine": machine(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with args.out.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()

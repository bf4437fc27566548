"""Write the inputs of the mclust reference (tests/data/mclust/*.csv.gz and cases.csv).

Inputs: STAGATE embeddings (seed 0, default `stagate run`) of the shared DLPFC slices and
STARmap subset, 30 PCs of DLPFC 151673's log-normalised HVGs, and synthetic mixtures.
Then run `Rscript bench/mclust_reference/run_mclust.R tests/data/mclust`.

    python bench/mclust_reference/make_inputs.py --runs /tmp/acc
(--runs: a folder with <dataset>_seed0/stagate.h5ad from bench/accuracy.py --keep)
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import anndata as ad
import numpy as np
import scanpy as sc

import stagate as sg

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "mclust"


def write(name: str, x: np.ndarray) -> None:
    # float32 values written exactly (9 significant digits), read identically by R and numpy
    with gzip.open(OUT / f"{name}.csv.gz", "wt") as fh:
        np.savetxt(fh, np.asarray(x, dtype=np.float32), delimiter=",", fmt="%.9g")


def synthetic() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    out = {}
    # separated spherical blobs, 4 x 250 in 5-d
    out["synth_blobs"] = np.vstack([rng.normal(c, 1.0, (250, 5))
                                    for c in rng.normal(0, 4, (4, 5))])
    # overlapping elongated clusters sharing one covariance (the EEE model's case), 6 x 300
    a = rng.normal(size=(8, 8))
    cov = a @ a.T / 8 + np.eye(8) * 0.1
    means = rng.normal(0, 1.6, (6, 8))
    out["synth_eee"] = np.vstack([rng.multivariate_normal(m, cov, 300) for m in means])
    # unequal sizes and shapes, 3 clusters in 3-d
    out["synth_vvv"] = np.vstack([
        rng.multivariate_normal([0, 0, 0], np.diag([1, 0.2, 0.5]), 500),
        rng.multivariate_normal([3, 1, 0], [[1, 0.8, 0], [0.8, 1, 0], [0, 0, 0.3]], 200),
        rng.multivariate_normal([0, 4, 2], np.eye(3) * 0.5, 100)])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=Path, required=True)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    cases = []
    for ds in ("dlpfc_151673", "dlpfc_151676", "starmap_visual_cortex"):
        emb = ad.read_h5ad(args.runs / f"{ds}_seed0" / "stagate.h5ad").obsm["STAGATE"]
        write(f"{ds}_stagate", emb)
        cases.append((f"{ds}_stagate", 7, "EEE", 2020))
    raw = ad.read_h5ad(ROOT.parent / "shared" / "data" / "dlpfc_151673" / "dlpfc_151673.h5ad")
    sg.pp.preprocess(raw)
    sc.pp.pca(raw, n_comps=30, random_state=0)
    write("dlpfc_151673_pca", raw.obsm["X_pca"])
    cases.append(("dlpfc_151673_pca", 7, "EEE", 2020))
    for name, x in synthetic().items():
        write(name, x)
    cases += [("synth_blobs", 4, "EEE", 2020), ("synth_eee", 6, "EEE", 2020),
              ("synth_vvv", 3, "EEE", 2020), ("synth_vvv", 3, "VVV", 2020),
              ("synth_blobs", 4, "EII", 2020), ("synth_blobs", 4, "VII", 2020),
              ("synth_eee", 6, "VVV", 2020)]
    # a second seed on data above the subset size: the R-identical subset draw matters
    cases.append(("dlpfc_151673_stagate", 7, "EEE", 1))
    with (OUT / "cases.csv").open("w") as fh:
        fh.write("name,G,model,seed\n")
        for c in cases:
            fh.write(",".join(map(str, c)) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()

"""ARI with and without spatial refinement of the domains (tl.refine_domains), per method.

Reads the embeddings that `STAGATE_BENCH_KEEP=DIR python bench/compare.py` kept, clusters
each with the benchmark's mclust (EEE, seed 2020) and refines the labels by one round of
majority vote over the dataset's spatial network (the one our pipeline built; the same graph
for every method). Writes bench/results/refine_ablation_cpu.json and prints a table.

    python bench/refine_ablation.py DIR
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from stagate.cluster import majority_vote, mclust

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_worker import DATASETS, MCLUST_SEED, load  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("keep", type=Path)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    rows: dict = {}
    for ds, spec in DATASETS.items():
        graph_file = args.keep / f"{ds}_graph.npz"
        if not graph_file.exists():
            continue
        graph = sp.load_npz(graph_file)
        truth = load(ds).obs[spec["label_key"]]
        known = truth.notna().to_numpy()
        t = truth[known].astype(str).to_numpy()
        for f in sorted(args.keep.glob(f"*_{ds}_*.npy")):
            method, seed = f.stem.split(f"_{ds}_")
            seed = int(seed)
            labels = mclust(np.load(f).astype(np.float64), spec["n_domains"], model="EEE",
                            random_state=MCLUST_SEED)
            refined = majority_vote(labels, graph)
            rows.setdefault((method, ds), []).append(
                (seed, adjusted_rand_score(t, labels[known]),
                 adjusted_rand_score(t, refined[known])))
    out = []
    print("| dataset | method | ARI mean (sd) | refined ARI mean (sd) | seeds |")
    print("|---|---|---|---|---|")
    for (method, ds), v in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        v.sort()
        raw, ref = [x[1] for x in v], [x[2] for x in v]
        out.append({"method": method, "dataset": ds, "seeds": [x[0] for x in v],
                    "ari": raw, "ari_refined": ref})
        print(f"| {ds} | {method} | {statistics.mean(raw):.3f} ({sd(raw):.3f}) | "
              f"{statistics.mean(ref):.3f} ({sd(ref):.3f}) | {len(v)} |")
    path = ROOT / "bench" / "results" / "refine_ablation_cpu.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, path)


if __name__ == "__main__":
    main()

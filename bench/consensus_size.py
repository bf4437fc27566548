"""How many voting runs: the vote of K runs for K = 1..10, on kept training runs.

    python bench/consensus_size.py --out bench/results/consensus_size_cpu.json

Reads the embeddings bench/recipe_sweep.py kept (--keep) for seeds 0 .. 24 of one variant,
clusters each run once as the default recipe does (mclust EEE, best BIC of 5 starts), then
for each K forms floor(25 / K) disjoint groups of K runs (group g: seeds g*K .. g*K+K-1) and
votes each group (stagate.cluster.consensus_vote, what ships). The mean and SD over groups
are what a user of a K-run recipe sees from seed to seed. The runs' labels are computed once
and shared by every K, so the K differ only in how many votes they count.
"""

from __future__ import annotations

import argparse
import json
import statistics as stats
import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

import stagate as st
from stagate.cluster._consensus import consensus_vote

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import machine  # noqa: E402
from compare_worker import DATASETS, MCLUST_SEED  # noqa: E402
from recipe_sweep import add_kept_run_arguments, kept_file, kept_truth  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    add_kept_run_arguments(ap)
    ap.add_argument("--seeds", type=int, default=25, help="kept runs per dataset")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 7, 8, 10])
    ap.add_argument("--starts", type=int, default=5, help="mclust starts per run")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    keep = Path(args.keep)
    result = {"variant": args.variant, "seeds": args.seeds, "starts": args.starts,
              "machine": machine(), "datasets": {}}
    for ds in args.datasets:
        truth, known = kept_truth(keep, ds)
        k = DATASETS[ds]["n_domains"]
        labels = np.stack([
            st.cluster.mclust_bic(np.load(kept_file(keep, ds, args.variant, s)), [k],
                                  ("EEE",), random_state=MCLUST_SEED,
                                  n_init=args.starts)[0].labels
            for s in range(args.seeds)])
        per_size = {}
        for size in args.sizes:
            groups = [labels[g * size:(g + 1) * size] for g in range(args.seeds // size)]
            aris = [adjusted_rand_score(truth[known], consensus_vote(p)[0][known])
                    for p in groups]
            per_size[str(size)] = {"mean": round(stats.mean(aris), 4),
                                   "sd": round(stats.stdev(aris), 4) if len(aris) > 1 else None,
                                   "groups": len(aris), "values": [round(x, 4) for x in aris]}
        result["datasets"][ds] = per_size
        print(ds, {s: (v["mean"], v["sd"]) for s, v in per_size.items()}, flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

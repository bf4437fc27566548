"""Consensus rules on kept training runs: one run vs a vote of K runs, and other rules.

    python bench/consensus_ablation.py --variant h128_e300_cos2 --runs 5 --groups 5 \
        --out bench/results/consensus_ablation_cpu.json

Reads the embeddings and mclust labels that bench/recipe_sweep.py kept (--keep) for seeds
0 .. runs*groups-1 and forms `groups` disjoint consensus groups of `runs` runs each (group g:
seeds g*runs .. g*runs+runs-1), so the spread over groups is the seed-to-seed spread a user
of the consensus sees. Rules:

- ``single``: each run alone (the spread of one run);
- ``vote``: stagate.cluster.consensus_vote (Hungarian matching + majority; what ships);
- ``vote_refine``: the vote, then one round of neighbourhood majority (tl.refine_domains);
- ``coassoc``: co-association matrix of the K partitions, average-linkage tree cut at K
  domains (evidence accumulation, Fred & Jain 2005; needs N x N, so small data only);
- ``concat``: the K embeddings side by side, 30 principal components, one mclust;
- ``aligned_mean``: every run's embedding (centred, unit scale) rotated onto the reference
  run's by orthogonal Procrustes, averaged, one mclust;
- ``vote_starts3`` / ``vote_starts5``: the vote, each run clustered by mclust keeping the best
  BIC of 3 / 5 starts (initialisation subsets of seeds 2020, 2021, ...; what the default
  recipe ships with 5). Above 2000 spots only; on smaller data they equal ``vote``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics as stats
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.distance import squareform
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

import stagate as st
from stagate.cluster._consensus import consensus_vote

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_worker import DATASETS, MCLUST_SEED, load  # noqa: E402
from recipe_sweep import add_kept_run_arguments, kept_file, kept_truth  # noqa: E402


def scale(z: np.ndarray) -> np.ndarray:
    """Centred, with unit mean squared norm per spot (runs' embeddings differ in scale)."""
    z = np.asarray(z, dtype=np.float64) - np.mean(z, axis=0)
    return z / np.sqrt((z**2).sum() / len(z))


def coassociation(parts: np.ndarray, k: int) -> np.ndarray:
    n = parts.shape[1]
    co = np.zeros((n, n), np.float32)
    for p in parts:
        co += p[:, None] == p[None, :]
    dist = 1 - co / len(parts)
    np.fill_diagonal(dist, 0)
    tree = linkage(squareform(dist, checks=False), method="average")
    return fcluster(tree, k, criterion="maxclust") - 1


def main() -> None:
    ap = argparse.ArgumentParser()
    add_kept_run_arguments(ap)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--groups", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    keep = Path(args.keep)
    result = {"variant": args.variant, "runs": args.runs, "groups": args.groups,
              "machine": platform.processor() or platform.machine(), "datasets": {}}
    for ds in args.datasets:
        a = load(ds)
        st.pp.preprocess(a)
        st.pp.spatial_network(a)
        truth, known = kept_truth(keep, ds)
        k = DATASETS[ds]["n_domains"]

        def ari(labels, known=known, truth=truth):
            return adjusted_rand_score(truth[known], np.asarray(labels)[known])

        scores: dict[str, list[float]] = {r: [] for r in (
            "single", "vote", "vote_refine", "coassoc", "concat", "aligned_mean",
            "single_starts5", "vote_starts3", "vote_starts5")}
        seconds: dict[str, list[float]] = {r: [] for r in scores}
        agreement = []
        for g in range(args.groups):
            seeds = range(g * args.runs, (g + 1) * args.runs)
            parts = np.stack([np.load(kept_file(keep, ds, args.variant, s, mclust=True))
                              for s in seeds])
            embs = [np.load(kept_file(keep, ds, args.variant, s)) for s in seeds]
            scores["single"] += [ari(p) for p in parts]
            t = time.perf_counter()
            vote, info = consensus_vote(parts)
            seconds["vote"].append(time.perf_counter() - t)
            agreement.append(info["mean_agreement"])
            scores["vote"].append(ari(vote))
            st.tl._domains.set_labels(a, vote, "vote")
            st.tl.refine_domains(a, "vote", key_added="vote_refined")
            scores["vote_refine"].append(ari(a.obs["vote_refined"].astype(str).to_numpy()))
            t = time.perf_counter()
            scores["coassoc"].append(ari(coassociation(parts, k)))
            seconds["coassoc"].append(time.perf_counter() - t)
            t = time.perf_counter()
            z = PCA(30, random_state=0).fit_transform(np.hstack(embs))
            scores["concat"].append(ari(st.cluster.mclust(z, k, model="EEE",
                                                          random_state=MCLUST_SEED)))
            seconds["concat"].append(time.perf_counter() - t)
            t = time.perf_counter()
            scaled = [scale(e) for e in embs]
            ref = scaled[info["reference"]]
            mean = np.mean([e @ orthogonal_procrustes(e, ref)[0] for e in scaled], axis=0)
            scores["aligned_mean"].append(ari(st.cluster.mclust(mean, k, model="EEE",
                                                                random_state=MCLUST_SEED)))
            seconds["aligned_mean"].append(time.perf_counter() - t)
            for n_init in (3, 5):
                t = time.perf_counter()
                best = [st.cluster.mclust_bic(e, [k], ("EEE",), random_state=MCLUST_SEED,
                                              n_init=n_init)[0].labels for e in embs]
                seconds[f"vote_starts{n_init}"].append(time.perf_counter() - t)
                scores[f"vote_starts{n_init}"].append(ari(consensus_vote(np.stack(best))[0]))
                if n_init == 5:
                    scores["single_starts5"] += [ari(b) for b in best]
        result["datasets"][ds] = {
            rule: {"mean": round(stats.mean(v), 4), "sd": round(stats.stdev(v), 4),
                   "values": [round(x, 4) for x in v],
                   "median_s": round(stats.median(seconds[rule]), 3) if seconds[rule] else None}
            for rule, v in scores.items()} | {"mean_pairwise_ari": round(stats.mean(agreement), 4)}
        print(ds, json.dumps({r: (v["mean"], v["sd"]) for r, v in
                              result["datasets"][ds].items() if isinstance(v, dict)}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

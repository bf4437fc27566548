"""mclust starts on kept training runs: does keeping the best BIC of more starts, each from
the hierarchical clustering of another random subset, steady the vote?

    python bench/mclust_starts.py --dataset starmap_visual_cortex --runs 50 \
        --rules r:1 f80:5 f80:10 f80:20 --out bench/results/mclust_starts_starmap_cpu.json

Reads the embeddings bench/recipe_sweep.py kept (--keep) for seeds 0 .. runs-1 of the chosen
variant, clusters each with every rule, and forms disjoint groups of 5 runs (group g: seeds
5g .. 5g+4) voted as the default recipe votes, so the spread over groups is the seed-to-seed
spread a user of the consensus sees. A rule is SUBSET:STARTS: ``r`` is R's subset (2,000 rows,
none below that: one start whatever STARTS says), ``fNN`` a subset of min(2,000, NN% of the
rows) drawn for every start, ``STARTS`` starts with seeds 2020, 2021, ...
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics as stats
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

from stagate.cluster._consensus import consensus_vote
from stagate.cluster._mclust import SUBSET_SIZE, mclust_bic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_worker import DATASETS, MCLUST_SEED  # noqa: E402
from recipe_sweep import CHOSEN, KEEP, kept_file, kept_truth  # noqa: E402

GROUP = 5  # runs per vote, as the default recipe


def subset_size(rule: str, n: int) -> int:
    kind = rule.split(":")[0]
    if kind == "r":
        return SUBSET_SIZE
    return min(SUBSET_SIZE, int(n * int(kind[1:]) / 100))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=list(DATASETS), required=True)
    ap.add_argument("--variant", default=CHOSEN)
    ap.add_argument("--runs", type=int, default=25)
    ap.add_argument("--rules", nargs="+", default=["r:1", "f80:5", "f80:10"])
    ap.add_argument("--keep", default=KEEP)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    k = DATASETS[args.dataset]["n_domains"]
    truth, mask = kept_truth(Path(args.keep), args.dataset)
    embeddings = [np.load(kept_file(Path(args.keep), args.dataset, args.variant, s))
                  for s in range(args.runs)]
    n = len(embeddings[0])
    result = {"dataset": args.dataset, "variant": args.variant, "runs": args.runs,
              "n_spots": n, "rules": {},
              "machine": {"cpu": platform.processor() or platform.machine(),
                          "python": platform.python_version()},
              "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for rule in args.rules:
        starts = int(rule.split(":")[1])
        size = subset_size(rule, n)
        t = time.perf_counter()
        labels = [mclust_bic(z, [k], ("EEE",), random_state=MCLUST_SEED, subset_size=size,
                             n_init=starts)[0].labels for z in embeddings]
        seconds = (time.perf_counter() - t) / len(embeddings)
        single = [adjusted_rand_score(truth[mask], lab[mask]) for lab in labels]
        votes = []
        for g in range(len(labels) // GROUP):
            vote, _ = consensus_vote(np.array(labels[g * GROUP:(g + 1) * GROUP]))
            votes.append(adjusted_rand_score(truth[mask], vote[mask]))
        row = {"subset": size if size < n else None, "starts": starts if size < n else 1,
               "single_mean": stats.mean(single), "single_sd": stats.stdev(single),
               "vote_mean": stats.mean(votes), "vote_sd": stats.stdev(votes),
               "votes": [round(v, 4) for v in votes], "seconds_per_run": seconds}
        result["rules"][rule] = row
        print(f"{args.dataset} {rule}: one run {row['single_mean']:.3f} ({row['single_sd']:.3f})"
              f", vote of {GROUP} {row['vote_mean']:.3f} ({row['vote_sd']:.3f}) over "
              f"{len(votes)} groups, {seconds:.2f} s per run", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Time our mclust against R's mclust on the reference inputs, in the same run.

For each case of tests/data/mclust/cases.csv: median of --repeats fits in this process
(ours) and median of --repeats ``system.time(Mclust(...))`` inside one Rscript process
(R's, start-up excluded). Writes bench/results/mclust_speed.json and prints a table.

    python bench/mclust_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

from stagate.cluster import fit_mclust

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "tests" / "data" / "mclust"

R_TIMER = """
suppressMessages(library(mclust))
args <- commandArgs(trailingOnly = TRUE)
x <- as.matrix(read.csv(gzfile(args[1]), header = FALSE))
G <- as.integer(args[2]); model <- args[3]; seed <- as.integer(args[4]); k <- as.integer(args[5])
ts <- sapply(seq_len(k), function(i) {
  set.seed(seed)
  system.time(m <- Mclust(x, G = G, modelNames = model, verbose = FALSE))[["elapsed"]]
})
set.seed(seed); m <- Mclust(x, G = G, modelNames = model, verbose = FALSE)
cat(median(ts), "\\n"); cat(m$classification, "\\n")
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with (REF / "cases.csv").open() as fh:
        cases = list(csv.DictReader(fh))
    script = ROOT / "bench" / "results" / ".mclust_timer.R"
    script.write_text(R_TIMER)
    rows = []
    try:
        for c in cases:
            path = REF / f"{c['name']}.csv.gz"
            x = np.loadtxt(path, delimiter=",")
            g, model, seed = int(c["G"]), c["model"], int(c["seed"])
            ours = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                fit = fit_mclust(x, g, model, random_state=seed)
                ours.append(time.perf_counter() - t0)
            out = subprocess.run(["Rscript", str(script), str(path), str(g), model, str(seed),
                                  str(args.repeats)], capture_output=True, text=True,
                                 check=True).stdout.split("\n")
            r_seconds = float(out[0])
            r_labels = np.array(out[1].split(), dtype=int)
            row = {"case": f"{c['name']} {model} G={g} seed={seed}", "n": x.shape[0],
                   "d": x.shape[1], "ours_s": statistics.median(ours), "r_s": r_seconds,
                   "r_over_ours": r_seconds / statistics.median(ours),
                   "ari_vs_r": adjusted_rand_score(r_labels, fit.labels)}
            rows.append(row)
            print(f"{row['case']}: ours {row['ours_s']:.2f}s, R {r_seconds:.2f}s, "
                  f"R/ours {row['r_over_ours']:.2f}, ARI vs R {row['ari_vs_r']:.4f}", flush=True)
    finally:
        script.unlink(missing_ok=True)
    ratios = [r["r_over_ours"] for r in rows]
    summary = {"machine": {"cpu": platform.processor() or platform.machine(),
                           "cores": os.cpu_count(), "platform": platform.platform()},
               "repeats": args.repeats, "median_r_over_ours": statistics.median(ratios),
               "min_r_over_ours": min(ratios), "date": time.strftime("%Y-%m-%d"),
               "cases": rows}
    (ROOT / "bench" / "results" / "mclust_speed.json").write_text(json.dumps(summary, indent=2))
    print(f"median R/ours {summary['median_r_over_ours']:.2f}, "
          f"min {summary['min_r_over_ours']:.2f}")


if __name__ == "__main__":
    main()

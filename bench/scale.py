"""Wall time and peak memory of the whole `stagate run` at growing sizes, on the built-in
simulator, each size in its own process.

    python bench/scale.py [--sizes 10000 100000 1000000] [--epochs 3] [--device cpu]

For each size the simulated section (raw counts, 1000 genes, 6 domains) is first written to
an .h5ad (not timed: that is the user's input); then a fresh process runs
``stagate run IN.h5ad --n-domains 6 --label-key domain_truth --epochs E --no-umap`` and its
wall time and peak RSS are recorded with the seconds per stage from summary.json (read,
preprocess, graph, train, cluster, write). Training mode is the default: full batch up to
100k spots, exact minibatches above.

The number of epochs is a parameter because 1000 epochs of a million spots on a 2-core CPU
take hours: seconds per epoch and the other stages are what scale with N. Results are
appended to bench/results/scale_<device>.jsonl; the last row per size is summarised with
the growth factors between consecutive sizes (``--summarise`` prints it alone).
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

from compare import machine  # CPU model from /proc/cpuinfo, cores, platform

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys, time
from stagate.cli import cli
t0 = time.perf_counter()
cli(sys.argv[1:], standalone_mode=False)
print("SCALE_RESULT " + json.dumps({"wall_s": time.perf_counter() - t0,
      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}))
"""

SIMULATE = """
import sys
from stagate.datasets import simulate
simulate(int(sys.argv[1]), n_domains=6, random_state=0).write_h5ad(sys.argv[2])
"""


def run_size(n: int, epochs: int, device: str) -> dict:
    env = os.environ | {"PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "in.h5ad"
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", SIMULATE, str(n), str(data)], check=True, env=env)
        simulate_s = time.perf_counter() - t
        cmd = [sys.executable, "-c", CHILD, "run", str(data), "--n-domains", "6",
               "--label-key", "domain_truth", "--epochs", str(epochs), "--device", device,
               "--no-umap", "--quiet", "--out", str(Path(tmp) / "out")]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.exit(f"size {n} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        line = next(x for x in proc.stdout.splitlines() if x.startswith("SCALE_RESULT "))
        child = json.loads(line.split(" ", 1)[1])
        summary = json.loads((Path(tmp) / "out" / "summary.json").read_text())
    return {"n_spots": n, "epochs": epochs, "command": "stagate run", "device": summary["device"],
            "batch_size_used": summary.get("batch_size_used"),
            "wall_s": round(child["wall_s"], 1), "peak_rss_gb": round(child["peak_rss_gb"], 2),
            "seconds": summary["seconds"],
            "train_s_per_epoch": round(summary["seconds"]["train"] / epochs, 2),
            "ari": summary["ari"], "simulate_s_untimed": round(simulate_s, 1),
            "machine": machine(),
            "date": time.strftime("%Y-%m-%d")}


def summarise(results: Path) -> str:
    rows: dict[int, dict] = {}
    for line in results.read_text().splitlines():
        r = json.loads(line)
        if r.get("command") == "stagate run":  # older rows timed `stagate demo`
            rows[r["n_spots"]] = r
    out = ["| spots | mode | wall s | wall growth per 10x spots | train s/epoch | peak RSS GB | "
           "read / preprocess / graph / train / cluster / write s |",
           "|---|---|---|---|---|---|---|"]
    prev = None
    for n in sorted(rows):
        r, s = rows[n], rows[n]["seconds"]
        growth = ("" if prev is None else
                  f"{r['wall_s'] / prev['wall_s'] * 10 / (n / prev['n_spots']):.1f}")
        stages = " / ".join(f"{s.get(k, float('nan')):.1f}" for k in
                            ("read", "preprocess", "graph", "train", "cluster", "write"))
        out.append(f"| {n:,} | {r['batch_size_used']} | {r['wall_s']:.1f} | {growth} | "
                   f"{r['train_s_per_epoch']:.2f} | {r['peak_rss_gb']:.2f} | {stages} |")
        prev = r
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--summarise", action="store_true", help="only print the summary table")
    args = ap.parse_args()
    results = ROOT / "bench" / "results" / f"scale_{args.device}.jsonl"
    results.parent.mkdir(parents=True, exist_ok=True)
    if not args.summarise:
        for n in args.sizes:
            row = run_size(n, args.epochs, args.device)
            with results.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    print(summarise(results))


if __name__ == "__main__":
    main()

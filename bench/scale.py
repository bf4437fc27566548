"""Wall time and peak memory of `stagate demo` (the whole pipeline on the built-in simulator)
at growing sizes, each size in its own process.

    python bench/scale.py [--sizes 10000 100000 1000000] [--epochs 3] [--device cpu]

The number of epochs is a parameter because 1000 epochs of a million spots on a 2-core CPU
take hours: time per epoch and the other stages are what scale with N. Results are appended
to bench/results/scale_<device>.jsonl (per size: seconds per stage, wall, peak RSS, epochs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys, time
from stagate.cli import cli
t0 = time.perf_counter()
cli(sys.argv[1:], standalone_mode=False)
print("SCALE_RESULT " + json.dumps({"wall_s": time.perf_counter() - t0,
      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    results = ROOT / "bench" / "results" / f"scale_{args.device}.jsonl"
    results.parent.mkdir(parents=True, exist_ok=True)
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-c", CHILD, "demo", "--n-spots", str(n), "--epochs",
                   str(args.epochs), "--device", args.device, "--no-umap", "--quiet",
                   "--out", str(Path(tmp) / "out")]
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env=os.environ | {"PYTHONWARNINGS": "ignore"})
            if proc.returncode != 0:
                sys.exit(f"size {n} failed:\n{proc.stderr[-3000:]}")
            line = next(x for x in proc.stdout.splitlines() if x.startswith("SCALE_RESULT "))
            child = json.loads(line.split(" ", 1)[1])
            summary = json.loads((Path(tmp) / "out" / "summary.json").read_text())
        row = {"n_spots": n, "epochs": args.epochs, "device": summary["device"],
               "batch_size": summary["config"]["batch_size"], "wall_s": round(child["wall_s"], 1),
               "peak_rss_gb": round(child["peak_rss_gb"], 2),
               "seconds": summary["seconds"],
               "train_s_per_epoch": round(summary["seconds"]["train"] / args.epochs, 2),
               "ari": summary["ari"], "nonspatial_ari": summary["nonspatial_ari"],
               "machine": {"cpu": platform.processor() or platform.machine(),
                           "cores": os.cpu_count()}, "date": time.strftime("%Y-%m-%d")}
        with results.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

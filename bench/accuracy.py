"""ARI of `stagate run` (default settings) on the shared real data, seeds 0-4.

Each (dataset, seed) runs as its own `stagate run` process; summaries are appended as JSON
lines to bench/results/accuracy_<device>.jsonl, and a markdown table is printed.

    python bench/accuracy.py [--seeds 0 1 2 3 4] [--datasets dlpfc_151673 ...] [--device cpu]

The data folder defaults to ../shared/data; STAGATE_DATA overrides it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
from compare import machine

from stagate._pipeline import _h5ad_safe

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STAGATE_DATA", ROOT.parent / "shared" / "data"))
DATASETS = {
    "dlpfc_151673": {"n_domains": 7, "label_key": "layer"},
    "dlpfc_151676": {"n_domains": 7, "label_key": "layer"},
    "starmap_visual_cortex": {"n_domains": 7, "label_key": "layer",
                              "subset": "in_1207_benchmark_subset"},
}


def input_file(name: str, tmp: Path) -> Path:
    path = DATA / name / f"{name}.h5ad"
    spec = DATASETS[name]
    if "subset" not in spec:
        return path
    a = ad.read_h5ad(path)
    a = a[a.obs[spec["subset"]].astype(bool).to_numpy()].copy()
    out = tmp / f"{name}_subset.h5ad"
    _h5ad_safe(a).write_h5ad(out)
    return out


def run_once(name: str, path: Path, seed: int, *, device: str, out: Path,
             extra: list[str]) -> dict:
    """One `stagate run` process on dataset `name` (file `path`); its summary as a row."""
    spec = DATASETS[name]
    cmd = [sys.executable, "-m", "stagate", "run", str(path), "--n-domains",
           str(spec["n_domains"]), "--label-key", spec["label_key"], "--seed", str(seed),
           "--device", device, "--out", str(out), "--quiet", "--no-umap", "--force", *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=os.environ | {"PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - t0
    s = json.loads((out / "summary.json").read_text())
    print(f"{name} seed {seed} {' '.join(extra)}: ARI {s['ari']:.3f} NMI {s['nmi']:.3f} "
          f"train {s['seconds']['train']:.1f}s total {s['seconds']['total']:.1f}s", flush=True)
    return {"dataset": name, "seed": seed, "ari": s["ari"], "nmi": s["nmi"],
            "seconds": s["seconds"], "process_wall_s": round(wall, 2), "device": s["device"],
            "batch_size_used": s.get("batch_size_used"), "version": s["version"],
            "mean_neighbors": s["mean_neighbors"], "options": extra,
            "machine": machine(),
            "date": time.strftime("%Y-%m-%d")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--keep", type=Path, default=None, help="keep seed-0 outputs here")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                    help="more `stagate run` options")
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} is absent: this benchmark needs the shared real data.")
    results = ROOT / "bench" / "results" / f"accuracy_{args.device}.jsonl"
    results.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.datasets:
            path = input_file(name, tmp)
            for seed in args.seeds:
                out = (args.keep / f"{name}_seed{seed}") if args.keep else tmp / f"{name}_{seed}"
                row = run_once(name, path, seed, device=args.device, out=out, extra=args.extra)
                rows.append(row)
                with results.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
    print("\n| dataset | ARI mean | ARI sd | ARIs | train s (median) | total s (median) |")
    print("|---|---|---|---|---|---|")
    for name in args.datasets:
        r = [x for x in rows if x["dataset"] == name]
        aris = [x["ari"] for x in r]
        print(f"| {name} | {statistics.mean(aris):.3f} | "
              f"{statistics.stdev(aris) if len(aris) > 1 else 0:.3f} | "
              f"{', '.join(f'{a:.3f}' for a in aris)} | "
              f"{statistics.median(x['seconds']['train'] for x in r):.1f} | "
              f"{statistics.median(x['seconds']['total'] for x in r):.1f} |")


if __name__ == "__main__":
    main()

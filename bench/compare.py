"""Side-by-side benchmark: ours vs the PyG original (stagate-modern), BANKSY and PCA.

Each (method, dataset, seed) runs in its own process (bench/compare_worker.py); within a
seed and dataset the methods run one after another, original and ours adjacent, so drift of
the machine hits all alike. Results are appended as JSON lines to
bench/results/compare_<device>.jsonl and summarised in bench/results/compare_<device>.md.

    bash bench/setup_peers.sh            # once: the peers' own virtual environment
    python bench/compare.py              # seeds 0-4, three datasets, four methods
    python bench/compare.py --summarise  # only rebuild the markdown table

Needs ../shared/data (or STAGATE_DATA).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
WORKER = ROOT / "compare_worker.py"
PEER_PYTHON = ROOT / ".peer-venv" / "bin" / "python"
METHODS = ["stagate_modern", "stagate_run_default", "stagate_run_paper", "stagate", "banksy",
           "pca"]
#: what --methods runs unless told: the original, our whole `stagate run` (default recipe),
#: BANKSY, PCA
DEFAULT_METHODS = ["stagate_modern", "stagate_run_default", "banksy", "pca"]
DATASETS = ["dlpfc_151673", "dlpfc_151676", "starmap_visual_cortex"]
LABELS = {"stagate_run_default": "ours: stagate run (default recipe)",
          "stagate_run_paper": "ours: stagate run --recipe paper",
          "stagate": "stagate (ours, 1000 epochs, API)",
          "stagate_modern": "original (stagate-modern)",
          "banksy": "BANKSY", "pca": "PCA (non-spatial)"}


def machine() -> dict:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def run_one(method: str, dataset: str, seed: int, peer_python: Path) -> dict:
    python = sys.executable if method.startswith("stagate_run") or method == "stagate" \
        else str(peer_python)
    t = time.perf_counter()
    proc = subprocess.Popen([python, str(WORKER), method, dataset, str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        msg = f"{method} {dataset} seed {seed} failed:\n{err[-3000:]}"
        raise RuntimeError(msg)
    rec = json.loads(out.strip().splitlines()[-1])
    rec["seconds"]["total"] = wall
    return rec


def summarise(records: list[dict]) -> str:
    rows = ["| dataset | method | ARI mean (sd) | ARI seeds | NMI mean | total s median (min-max) "
            "| train s median | peak RSS GB median |", "|---|---|---|---|---|---|---|---|"]
    med: dict = {}
    for ds in DATASETS:
        for m in METHODS:
            rs = sorted((r for r in records if r["dataset"] == ds and r["method"] == m),
                        key=lambda r: r["seed"])
            if not rs:
                continue
            ari = [r["ari"] for r in rs]
            tot = [r["seconds"]["total"] for r in rs]
            rss = [r["peak_rss_gb"] for r in rs]
            sd = statistics.stdev(ari) if len(ari) > 1 else 0.0
            med[ds, m] = (statistics.median(tot), statistics.mean(ari), statistics.median(rss), sd)
            rows.append(
                f"| {ds} | {LABELS[m]} | {statistics.mean(ari):.3f} ({sd:.3f}) | "
                f"{' '.join(f'{a:.3f}' for a in ari)} | "
                f"{statistics.mean(r['nmi'] for r in rs):.3f} | "
                f"{statistics.median(tot):.1f} ({min(tot):.1f}-{max(tot):.1f}) | "
                f"{statistics.median(r['seconds'].get('train', 0) for r in rs):.1f} | "
                f"{statistics.median(rss):.2f} |")
    rows += ["", "| dataset | ours | original/ours time | BANKSY/ours time | ours/original "
             "peak RSS | ARI ours - original | ARI ours - BANKSY |",
             "|---|---|---|---|---|---|---|"]
    for ds in DATASETS:
        for ours in ("stagate_run_default", "stagate_run_paper", "stagate"):
            if (ds, ours) not in med:
                continue
            o = med[ds, ours]
            time_ratio = {m: f"{med[ds, m][0] / o[0]:.1f}" if (ds, m) in med else "-"
                          for m in ("stagate_modern", "banksy")}
            ari_diff = {m: f"{o[1] - med[ds, m][1]:+.3f}" if (ds, m) in med else "-"
                        for m in ("stagate_modern", "banksy")}
            rss = (f"{o[2] / med[ds, 'stagate_modern'][2]:.2f}"
                   if (ds, "stagate_modern") in med else "-")
            rows.append(f"| {ds} | {LABELS[ours]} | {time_ratio['stagate_modern']} | "
                        f"{time_ratio['banksy']} | {rss} | {ari_diff['stagate_modern']} | "
                        f"{ari_diff['banksy']} |")
    m = records[-1]["machine"] if records else {}
    return (f"Machine: {m.get('cpu')}, {m.get('cores')} cores, device {records[-1]['device']}"
            if records else "") + "\n\n" + "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    ap.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=METHODS)
    ap.add_argument("--peer-python", type=Path, default=PEER_PYTHON)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "compare_cpu.jsonl")
    ap.add_argument("--summarise", action="store_true", help="only rebuild the markdown table")
    args = ap.parse_args()
    if not args.summarise:
        if any(m in ("stagate_modern", "banksy", "pca") for m in args.methods) and \
                not args.peer_python.exists():
            sys.exit(f"{args.peer_python} not found: run `bash bench/setup_peers.sh` first.")
        info = machine()
        args.out.parent.mkdir(parents=True, exist_ok=True)  # before hours of runs, not after
        for seed in args.seeds:
            for ds in args.datasets:
                for method in args.methods:
                    rec = run_one(method, ds, seed, args.peer_python)
                    rec |= {"device": "cpu", "machine": info,
                            "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
                    with args.out.open("a") as f:
                        f.write(json.dumps(rec) + "\n")
                    print(f"{ds} seed {seed} {method:15s} ARI {rec['ari']:.3f} "
                          f"total {rec['seconds']['total']:.1f} s "
                          f"RSS {rec['peak_rss_gb']:.2f} GB", flush=True)
    records = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    table = summarise(records)
    md = args.out.with_suffix(".md")
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text(table)
    os.replace(tmp, md)
    print(table)


if __name__ == "__main__":
    main()

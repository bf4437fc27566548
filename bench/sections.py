"""Several sections: separate vs joint vs joint 3-D models, on the shared data.

Every case is one whole `stagate run` (read to written outputs) in its own process, so the
time and peak RSS are a user's. Results are appended as JSON lines to
bench/results/sections_<device>.jsonl; `--summarise` writes the markdown table
bench/results/sections_<device>.md.

    python bench/sections.py                         # every case below, seeds 0-2
    python bench/sections.py --cases dlpfc --seeds 0
    python bench/sections.py --summarise

Cases
- dlpfc: DLPFC 151673 + 151676 (same donor, two Visium slides, so `--align`), 7 domains,
  per-section ARI against `obs['layer']`, section mixing and adjacent-section agreement.
- breast: breast cancer ST, 4 consecutive sections already in one frame (`--section-key
  section`), 5 domains (no labels): mixing and agreement.
- starmap3d: STARmap 3-D cortex volume (33,598 cells, 28 genes, `obsm['spatial3d']`) as one
  3-D graph; cells without any signal (753) are dropped first. Time and peak memory, 7 domains,
  200 epochs (STARMAP3D_EPOCHS).

Needs ../shared/data (or STAGATE_DATA).
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

from compare import machine  # CPU model from /proc/cpuinfo, cores, platform
from scale import CHILD  # runs `stagate` in-process, prints wall time and peak RSS

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STAGATE_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "bench" / "results"
MODES = ["separate", "joint", "joint3d"]
#: the 33k-cell volume trains at ~1.4 s/epoch on a 2-core CPU: 1000 epochs would take 23 min
STARMAP3D_EPOCHS = 200

PREPARE_STARMAP3D = """
import sys, numpy as np, anndata as ad
a = ad.read_h5ad(sys.argv[1])
a = a[np.asarray(a.X.sum(axis=1)).ravel() > 0].copy()
a.write_h5ad(sys.argv[2])
"""


def dataset(name: str) -> Path:
    path = DATA / name / f"{name}.h5ad"
    if not path.exists():
        sys.exit(f"{path} is absent: this benchmark needs ../shared/data (or STAGATE_DATA)")
    return path


def run_cli(args: list[str], out: Path) -> dict:
    env = os.environ | {"PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-c", CHILD, "run", *args, "--quiet", "--no-umap", "--force",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("SCALE_RESULT "))
    child = json.loads(line.split(" ", 1)[1])
    summary = json.loads((out / "summary.json").read_text())
    return {"wall_s": round(child["wall_s"], 1), "peak_rss_gb": round(child["peak_rss_gb"], 2),
            "summary": summary}


def record(case: str, mode: str, seed: int, args: list[str], res: dict) -> dict:
    s = res["summary"]
    sec = s.get("sections", {})
    row = {"case": case, "mode": mode, "seed": seed, "command": "stagate run " + " ".join(args),
           "wall_s": res["wall_s"], "peak_rss_gb": res["peak_rss_gb"],
           "seconds": s["seconds"], "epochs": s["epochs_trained"], "n_spots": s["n_spots"],
           "ari": s.get("ari"),
           "per_section_ari": {k: v["ari"] for k, v in s.get("per_section", {}).items()},
           "mixing": sec.get("mixing"), "agreement": sec.get("agreement"),
           "edges": sec.get("edges"), "between_radius": sec.get("between_radius"),
           "transforms": sec.get("transforms"), "mean_neighbors": s["mean_neighbors"],
           "device": s["device"], "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
    return row


def cases(names: list[str], seeds: list[int], tmp: Path, modes: list[str] = MODES):
    if "dlpfc" in names:
        a, b = dataset("dlpfc_151673"), dataset("dlpfc_151676")
        for seed in seeds:
            for mode in modes:
                yield "dlpfc_151673+151676", mode, seed, [
                    str(a), str(b), "--sections", mode, "--align", "--n-domains", "7",
                    "--label-key", "layer", "--seed", str(seed)]
    if "breast" in names:
        f = dataset("breast_cancer_st_4sections")
        for seed in seeds:
            for mode in modes:
                yield "breast_cancer_st_4sections", mode, seed, [
                    str(f), "--section-key", "section", "--sections", mode, "--n-domains", "5",
                    "--seed", str(seed)]
    if "starmap3d" in names:
        src = dataset("starmap_3d_cortex")
        prepared = tmp / "starmap3d.h5ad"
        subprocess.run([sys.executable, "-c", PREPARE_STARMAP3D, str(src), str(prepared)],
                       check=True)
        for seed in seeds[:1]:
            yield "starmap_3d_cortex", "volume3d", seed, [
                str(prepared), "--spatial-key", "spatial3d", "--n-domains", "7",
                "--epochs", str(STARMAP3D_EPOCHS), "--seed", str(seed)]


def summarise(path: Path) -> str:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    latest = {}
    for r in rows:  # the newest row of each (case, mode and between radius, seed)
        mode = r["mode"]
        if r.get("between_radius"):
            mode += f" (between radius {r['between_radius']:.4g})"
        latest[(r["case"], mode, r["seed"])] = r
    out = ["| case | mode | seeds | ARI per section, mean (SD) | mixing (scaled iLISI) | "
           "adjacent-section agreement (ARI) | median wall s | peak RSS GB |",
           "|---|---|---|---|---|---|---|---|"]
    groups: dict = {}
    for (case, mode, _), r in sorted(latest.items()):
        groups.setdefault((case, mode), []).append(r)
    for (case, mode), rs in groups.items():
        seeds = ",".join(str(r["seed"]) for r in rs)
        per = {}
        for r in rs:
            for k, v in r["per_section_ari"].items():
                per.setdefault(k, []).append(v)
        ari = "; ".join(
            f"{k.split('_')[-1]} {statistics.mean(v):.3f}"
            + (f" ({statistics.stdev(v):.3f})" if len(v) > 1 else "") for k, v in per.items())
        mix = [r["mixing"]["ilisi"] for r in rs if r["mixing"]]
        agr = [r["agreement"]["mean_ari"] for r in rs if r["agreement"]]
        cells = [case, mode, seeds, ari or "n/a",
                 f"{statistics.mean(mix):.3f}" if mix else "n/a",
                 f"{statistics.mean(agr):.3f}" if agr else "n/a",
                 f"{statistics.median(r['wall_s'] for r in rs):.1f}",
                 f"{max(r['peak_rss_gb'] for r in rs):.2f}"]
        out.append("| " + " | ".join(cells) + " |")
    m = rows[-1]["machine"]
    out.append(f"\nMachine: {m['cpu']}, {m['cores']} cores; {rows[-1]['device']}.")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["dlpfc", "breast", "starmap3d"],
                        choices=["dlpfc", "breast", "starmap3d"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--summarise", action="store_true")
    args = parser.parse_args()
    results = RESULTS / f"sections_{args.device}.jsonl"
    if not args.summarise:
        with tempfile.TemporaryDirectory() as tmp:
            for case, mode, seed, cli_args in cases(args.cases, args.seeds, Path(tmp),
                                                    args.modes):
                cli_args = [*cli_args, "--device", args.device]
                res = run_cli(cli_args, Path(tmp) / f"{case}_{mode}_{seed}")
                row = record(case, mode, seed, cli_args, res)
                print(json.dumps({k: row[k] for k in ("case", "mode", "seed", "wall_s",
                                                      "per_section_ari")} |
                                 {"ilisi": (row["mixing"] or {}).get("ilisi"),
                                  "agreement": (row["agreement"] or {}).get("mean_ari")}),
                      flush=True)
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                if case == "starmap_3d_cortex" or (seed == args.seeds[0] and mode == "joint3d"):
                    # keep the figures of one run per case for the README
                    for name in ("domains.png", "domains_3d.png"):
                        src = Path(tmp) / f"{case}_{mode}_{seed}" / name
                        if src.exists():
                            dst = RESULTS / "figures" / f"{case}_{mode}_{name}"
                            dst.parent.mkdir(exist_ok=True)
                            dst.write_bytes(src.read_bytes())
    (RESULTS / f"sections_{args.device}.md").write_text(summarise(results))
    print((RESULTS / f"sections_{args.device}.md").read_text())


if __name__ == "__main__":
    main()

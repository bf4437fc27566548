"""Section alignment: time and accuracy of `pp.align_sections` on simulated section pairs.

A simulated Visium-like section and a copy rotated by a known angle, shifted, jittered by
10 um and with 10% of its spots dropped (the counts are the same draw: what differs is the
geometry) are aligned; reported are the seconds of `align_sections` alone (expression PCA,
transport, ICP), the angle error and the RMS distance of the aligned spots to their true
positions, per size. Results: bench/results/align_cpu.jsonl.

    python bench/align.py                       # 2k, 5k, 20k spots per section, 3 repeats
    python bench/align.py --sizes 20000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from compare import machine

import stagate as sg

RESULTS = Path(__file__).resolve().parent / "results" / "align_cpu.jsonl"


def pair(n: int, angle: float, seed: int):
    a = sg.datasets.simulate(n, n_genes=1000, n_domains=6, random_state=seed)
    rng = np.random.default_rng(seed + 1)
    th = np.radians(angle)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    b = a.copy()
    b.obsm["spatial"] = a.obsm["spatial"] @ rot.T + np.array([1500.0, -700.0]) \
        + rng.normal(0, 10, a.obsm["spatial"].shape)
    keep = rng.random(n) > 0.1
    b = b[keep].copy()
    both = sg.io.concat_sections({"A": a, "B": b})
    sg.pp.preprocess(both, n_top_genes=500)
    return both, a.obsm["spatial"][keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[2000, 5000, 20000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--angle", type=float, default=35.0)
    args = parser.parse_args()
    for n in args.sizes:
        secs, errs, rmss = [], [], []
        for rep in range(args.repeats):
            both, truth = pair(n, args.angle, seed=rep)
            t = time.perf_counter()
            sg.pp.align_sections(both, "section", random_state=rep)
            secs.append(time.perf_counter() - t)
            m = both.uns["spatial_aligned"]["transforms"]["B"]
            errs.append(abs(np.degrees(np.arctan2(m[1, 0], m[0, 0])) + args.angle))
            moved = both.obsm["spatial_aligned"][both.obs["section"].to_numpy() == "B"]
            rmss.append(float(np.sqrt(((moved - truth) ** 2).sum(axis=1).mean())))
        row = {"n_spots_per_section": n, "repeats": args.repeats, "angle": args.angle,
               "median_seconds": round(statistics.median(secs), 2),
               "seconds": [round(x, 2) for x in secs],
               "max_angle_error_deg": round(max(errs), 3),
               "median_rms_um": round(statistics.median(rmss), 1),
               "jitter_rms_um": round(10 * np.sqrt(2), 1), "spot_pitch_um": 100,
               "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
        print(json.dumps({k: v for k, v in row.items() if k != "machine"}), flush=True)
        with RESULTS.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

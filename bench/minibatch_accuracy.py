"""Minibatch vs full-batch training on the shared DLPFC slices: same ARI within seed noise?

    python bench/minibatch_accuracy.py [--seeds 0 1 2 3 4] [--batch-size 1024]
        [--datasets dlpfc_151673 dlpfc_151676] [--device cpu] [--summarise]

For each (dataset, seed) two `stagate run` processes run back to back with default settings:
full batch (``--batch-size full``) and exact minibatches (``--batch-size N``, default 1024
seeds, i.e. 4 batches with their 2-hop halos on a 3.6k-spot slice; one Adam step per epoch,
the default). Minibatch training computes the full-graph loss and gradient in pieces, so
the two differ only by float summation order, which 1000 epochs and mclust amplify into a
seed-like spread. Rows go to bench/results/minibatch_vs_full_<device>.jsonl; the table
compares, per dataset, the mean and SD of ARI over seeds and the mean per-seed difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from accuracy import DATA, ROOT, input_file, run_once


def summarise(path: Path) -> str:
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    out = ["| dataset | batch size | ARI per seed | mean | SD | train s (median) |",
           "|---|---|---|---|---|---|"]
    diffs = []
    for name in sorted({r["dataset"] for r in rows}):
        by_mode: dict[str, dict[int, dict]] = {}
        for r in rows:
            if r["dataset"] == name:
                by_mode.setdefault(str(r["batch_size_used"]), {})[r["seed"]] = r
        for mode, runs in by_mode.items():
            aris = [runs[s]["ari"] for s in sorted(runs)]
            sd = statistics.stdev(aris) if len(aris) > 1 else 0.0
            out.append(f"| {name} | {mode} | {' '.join(f'{a:.3f}' for a in aris)} | "
                       f"{statistics.mean(aris):.3f} | {sd:.3f} | "
                       f"{statistics.median(r['seconds']['train'] for r in runs.values()):.1f} |")
        modes = list(by_mode)
        if len(modes) == 2:
            a, b = by_mode[modes[0]], by_mode[modes[1]]
            both = sorted(set(a) & set(b))
            d = [b[s]["ari"] - a[s]["ari"] for s in both]
            diffs.append(f"{name}: mean ARI difference ({modes[1]} - {modes[0]}) over seeds "
                         f"{both}: {statistics.mean(d):+.3f}; per seed "
                         f"{' '.join(f'{x:+.3f}' for x in d)}")
    return "\n".join(out + [""] + diffs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--datasets", nargs="+", default=["dlpfc_151673", "dlpfc_151676"])
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--summarise", action="store_true", help="only print the table")
    args = ap.parse_args()
    results = ROOT / "bench" / "results" / f"minibatch_vs_full_{args.device}.jsonl"
    if not args.summarise:
        if not DATA.exists():
            sys.exit(f"{DATA} is absent: this benchmark needs the shared real data.")
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            for name in args.datasets:
                path = input_file(name, tmp)
                for seed in args.seeds:
                    for size in ("full", str(args.batch_size)):
                        row = run_once(name, path, seed, device=args.device,
                                       out=tmp / f"{name}_{seed}_{size}",
                                       extra=["--batch-size", size])
                        with results.open("a") as fh:
                            fh.write(json.dumps(row) + "\n")
    print(summarise(results))


if __name__ == "__main__":
    main()

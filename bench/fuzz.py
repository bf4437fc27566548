"""The longer fuzzing run of tests/test_properties.py (the suite runs 40 examples a test).

Each round runs the property tests in a fresh interpreter with many examples and a new
hypothesis seed, so an interpreter crash (a segfault in a compiled dependency, as
scikit-misc's loess gave on tiny gene sets) shows as a failed round with its seed.

    python bench/fuzz.py                      # 5 rounds of 1000 examples per test
    python bench/fuzz.py --rounds 20 --examples 5000 --max-spots 10000

Appends one JSON line per round to bench/results/fuzz.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from compare import machine

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--max-spots", type=int, default=10_000,
                        help="largest coordinate set drawn (the suite: 300)")
    args = parser.parse_args()
    failed = 0
    for k in range(args.rounds):
        seed = int(time.time() * 1000) % 2**31
        env = os.environ | {"STAGATE_FUZZ_EXAMPLES": str(args.examples),
                            "STAGATE_FUZZ_MAX_SPOTS": str(args.max_spots)}
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-X", "faulthandler", "-m", "pytest", "-q",
                               "-p", "no:cacheprovider", f"--hypothesis-seed={seed}",
                               str(ROOT / "tests" / "test_properties.py")],
                              capture_output=True, text=True, env=env, cwd=ROOT)
        row = {"round": k, "seed": seed, "examples_per_test": args.examples,
               "max_spots": args.max_spots,
               "returncode": proc.returncode, "seconds": round(time.perf_counter() - t, 1),
               "tail": proc.stdout[-1500:] if proc.returncode else proc.stdout.strip()[-200:],
               "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
        failed += proc.returncode != 0
        print(json.dumps({k: row[k] for k in ("round", "seed", "returncode", "seconds")}),
              flush=True)
        with (ROOT / "bench" / "results" / "fuzz.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

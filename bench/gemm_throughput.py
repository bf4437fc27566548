"""How fast this CPU runs the Gram products that dominate an epoch, fp32 GEMM vs BLAS syrk.

    python bench/gemm_throughput.py

The DLPFC shapes: ``H3^T H3`` with H3 (3639, 512), ``W1^T W1`` with W1 (3000, 512); also the
STARmap cell count (1207). torch's ``a.T @ a`` (full GEMM) against scipy's ``ssyrk`` (one
triangle, half the multiply-adds), median of 20 after a warm-up, both in this process.
Writes bench/results/gemm_throughput_<machine>.json with GFLOP/s, the number behind the
"why not 30x" paragraph of bench/README.md.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
from compare import machine
from scipy.linalg import blas

ROOT = Path(__file__).resolve().parents[1]


def median_seconds(f, repeats: int = 20, warmup: int = 1) -> float:
    """Median wall-clock seconds of `repeats` calls of `f`, after `warmup` untimed calls."""
    for _ in range(warmup):
        f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    torch.manual_seed(0)
    rows = []
    for n in (3639, 3000, 1207):
        a = torch.randn(n, 512)
        a_t = a.numpy().T  # Fortran-ordered view: syrk reads it without a copy
        flop = 2 * n * 512 * 512
        gemm = median_seconds(lambda a=a: a.T @ a)
        syrk = median_seconds(lambda a_t=a_t: blas.ssyrk(1.0, a_t, trans=0, lower=0))
        rows.append({"rows": n, "cols": 512, "gemm_ms": round(gemm * 1e3, 2),
                     "gemm_gflops": round(flop / gemm / 1e9, 1),
                     "syrk_ms": round(syrk * 1e3, 2), "gemm_over_syrk": round(gemm / syrk, 2)})
        print(rows[-1], flush=True)
    out = {"results": rows, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "machine": machine(), "date": time.strftime("%Y-%m-%d")}
    path = ROOT / "bench" / "results" / "gemm_throughput_cpu.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

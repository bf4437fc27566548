"""Two per-epoch levers measured and not shipped: bf16 Gram products, and five runs batched
into one model.

    python bench/epoch_levers.py --out bench/results/epoch_levers_cpu.json

1. bf16: the four Gram products of an epoch at width 128 (``H3^T H3``, ``W1^T W1`` and their
   backward products) in float32 vs bfloat16 (native on CPUs with AVX512-BF16/AMX).
2. Batched runs: R runs as one model whose parameters carry a run axis: one sparse ``X W1``
   for all runs (``W1`` is G x R*128), per-run attention, multi-run CSR aggregation kernels
   (numba, written here), batched Gram products; median epoch time against R separate
   single-run epochs of the shipped module. Adam steps are included in both.

Medians of timed repetitions, ratios against the baseline in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from numba import njit, prange
from torch import nn

import stagate as st
from stagate.model._data import model_input
from stagate.module import STAGATEModule
from stagate.module._layers import segment_softmax
from stagate.module._sparse import sparse_input_product
from stagate.train._distributed import SeedLoss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import machine  # noqa: E402
from compare_worker import load  # noqa: E402
from gemm_throughput import median_seconds  # noqa: E402


def median_ms(step, repeats: int = 30) -> float:
    return 1e3 * median_seconds(step, repeats=repeats, warmup=3)


# -- multi-run aggregation: out[i, r] = sum_k alpha[k, r] h[src_k, r] ---------------------------
@njit(parallel=True, cache=False)
def _agg_runs(indptr, indices, alpha, h, out):  # pragma: no cover - compiled
    runs, width = h.shape[1], h.shape[2]
    for i in prange(out.shape[0]):
        out[i] = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            for r in range(runs):
                a = alpha[k, r]
                for f in range(width):
                    out[i, r, f] += a * h[j, r, f]


@njit(parallel=True, cache=False)
def _sddmm_runs(indptr, indices, left, right, out):  # pragma: no cover - compiled
    runs, width = left.shape[1], left.shape[2]
    for i in prange(left.shape[0]):
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            for r in range(runs):
                acc = 0.0
                for f in range(width):
                    acc += left[i, r, f] * right[j, r, f]
                out[k, r] = acc


def _agg(crow, col, alpha, h):
    out = torch.empty_like(h)
    _agg_runs(crow.numpy(), col.numpy(), alpha.detach().contiguous().numpy(),
              h.detach().contiguous().numpy(), out.numpy())
    return out


class AggRuns(torch.autograd.Function):
    @staticmethod
    def forward(ctx, alpha, h, g):  # type: ignore[override]
        ctx.g = g
        ctx.save_for_backward(alpha, h)
        return _agg(g.crow, g.src, alpha, h)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        alpha, h = ctx.saved_tensors
        g = ctx.g
        grad = grad.contiguous()
        grad_h = _agg(g.t_crow, g.t_col, alpha[g.t_perm], grad)
        grad_alpha = torch.empty(alpha.shape, dtype=h.dtype)
        _sddmm_runs(g.crow.numpy(), g.src.numpy(), grad.numpy(),
                    h.detach().contiguous().numpy(), grad_alpha.numpy())
        return grad_alpha, grad_h, None


class RunsModule(nn.Module):
    """R independent STAGATE models trained as one (parameters with a run axis)."""

    def __init__(self, genes: int, hidden: int, latent: int, runs: int) -> None:
        super().__init__()
        self.runs, self.hidden = runs, hidden
        self.W1 = nn.Parameter(torch.empty(genes, runs, hidden).uniform_(-0.05, 0.05))
        self.W2 = nn.Parameter(torch.empty(runs, hidden, latent).uniform_(-0.05, 0.05))
        self.v_s = nn.Parameter(torch.empty(runs, hidden).uniform_(-0.05, 0.05))
        self.v_r = nn.Parameter(torch.empty(runs, hidden).uniform_(-0.05, 0.05))

    def forward(self, batch) -> torch.Tensor:
        g = batch.graph
        n, genes = batch.x.shape[0], self.W1.shape[0]
        xw = sparse_input_product(batch.x, batch.x_t, self.W1.view(genes, -1))
        xw = xw.view(n, self.runs, self.hidden)
        s = torch.einsum("nrh,rh->nr", xw, self.v_s)
        r = torch.einsum("nrh,rh->nr", xw, self.v_r)
        alpha = segment_softmax(torch.sigmoid(s[g.dst] + r[g.src]), g.dst, g.n_nodes)
        z = torch.einsum("nrh,rhl->nrl", F.elu(AggRuns.apply(alpha, xw, g)), self.W2)
        h3 = F.elu(AggRuns.apply(alpha, torch.einsum("nrl,rhl->nrh", z, self.W2), g))
        cross = (h3 * xw).sum(dtype=torch.float64)
        a, b = h3.transpose(0, 1), self.W1.transpose(0, 1)
        gram = ((a.transpose(1, 2) @ a) * (b.transpose(1, 2) @ b)).sum(dtype=torch.float64)
        return batch.x_sq * self.runs - 2 * cross + gram


def epoch_times(batch, n_runs: int) -> tuple[float, float]:
    """Median ms of one epoch (forward, backward, Adam) of one run, and of `n_runs` runs
    batched into one model."""
    genes = batch.x.shape[1]
    single = STAGATEModule(genes, 128, 30)
    loss_single = SeedLoss(single)
    opt_single = torch.optim.Adam(single.parameters(), lr=1e-3)

    def step_single():
        opt_single.zero_grad()
        loss_single(batch).backward()
        opt_single.step()

    runs = RunsModule(genes, 128, 30, n_runs)
    opt_runs = torch.optim.Adam(runs.parameters(), lr=1e-3)

    def step_runs():
        opt_runs.zero_grad()
        runs(batch).backward()
        opt_runs.step()

    return median_ms(step_single), median_ms(step_runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["dlpfc_151673", "starmap_visual_cortex"])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    result = {"machine": machine() | {"threads": torch.get_num_threads(),
                                      "torch": torch.__version__},
              "datasets": {}}
    for name in args.datasets:
        a = load(name)
        st.pp.preprocess(a)
        st.pp.spatial_network(a)
        batch = model_input(a, layer=None, use_hvg=True, graph_key="spatial",
                            pruned_key=None).batch()
        n, genes = batch.x.shape
        # 1. Gram products, float32 vs bfloat16
        h, w = torch.randn(n, 128), torch.randn(genes, 128)

        def gram(h=h, w=w, dtype=torch.float32):
            hb, wb = h.to(dtype), w.to(dtype)
            ga, gb = (hb.T @ hb).float(), (wb.T @ wb).float()
            (hb @ gb.to(dtype)).float(), (wb @ ga.to(dtype)).float()

        fp32 = median_ms(gram)
        bf16 = median_ms(lambda: gram(dtype=torch.bfloat16))
        one, batched = epoch_times(batch, args.runs)
        result["datasets"][name] = {
            "shape": [n, genes],
            "gram_fp32_ms": round(fp32, 3), "gram_bf16_ms": round(bf16, 3),
            "gram_bf16_speedup": round(fp32 / bf16, 2),
            "single_run_epoch_ms": round(one, 2),
            f"{args.runs}_single_runs_ms": round(args.runs * one, 2),
            f"{args.runs}_runs_batched_ms": round(batched, 2),
            "batched_speedup": round(args.runs * one / batched, 2)}
        print(name, json.dumps(result["datasets"][name]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

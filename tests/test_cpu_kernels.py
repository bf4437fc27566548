"""The numba CPU kernels against dense references, in float32 and float64."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from stagate.module._cpu_kernels import csr_dense, sddmm


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_csr_dense_and_sddmm_match_dense_products(dtype):
    a = sp.random(40, 30, density=0.2, format="lil", random_state=0, dtype=np.float64)
    a[5] = 0  # an empty row
    a = a.tocsr()
    crow = torch.as_tensor(a.indptr.astype(np.int64))
    col = torch.as_tensor(a.indices.astype(np.int64))
    vals = torch.as_tensor(a.data, dtype=dtype)
    dense_a = torch.as_tensor(a.toarray(), dtype=dtype)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(30, 7, generator=g, dtype=dtype)
    left = torch.randn(40, 7, generator=g, dtype=dtype)
    torch.testing.assert_close(csr_dense(crow, col, vals, h, 40), dense_a @ h)
    rows = torch.repeat_interleave(torch.arange(40), crow.diff())
    torch.testing.assert_close(sddmm(crow, col, left, h), (left @ h.T)[rows, col])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sddmm_sums_each_edge_in_feature_order(dtype):
    # edges are summed four at a time for speed; each dot product must still be the plain
    # feature-order sum, bit for bit (results of earlier versions are reproduced exactly)
    degrees = np.arange(12) % 10  # rows with 0..9 edges: blocks of four and the rest
    crow = torch.as_tensor(np.concatenate([[0], np.cumsum(degrees)]).astype(np.int64))
    rng = np.random.default_rng(1)
    col = torch.as_tensor(np.concatenate([rng.choice(15, d, replace=False) for d in degrees])
                          .astype(np.int64))
    g = torch.Generator().manual_seed(3)
    left = torch.randn(len(degrees), 37, generator=g, dtype=dtype)
    right = torch.randn(15, 37, generator=g, dtype=dtype)
    scalar = np.float32 if dtype == torch.float32 else np.float64
    expected = []
    for i, d in enumerate(degrees):
        for k in range(int(crow[i]), int(crow[i]) + d):
            acc = scalar(0)
            for f in range(37):
                acc = scalar(acc + scalar(left[i, f].item()) * scalar(right[col[k], f].item()))
            expected.append(acc)
    got = sddmm(crow, col, left, right).numpy()
    assert got.tobytes() == np.array(expected, dtype=scalar).tobytes()

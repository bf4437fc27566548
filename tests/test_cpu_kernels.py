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

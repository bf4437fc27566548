"""CUDA: the same math on the GPU (skipped without one; run on the lent GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stagate as sg
from stagate.module import STAGATEModule, aggregate

from .test_layers import random_graph

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")


def test_aggregate_gradients_on_cuda():
    g = random_graph(20, 0.2, seed=3).to("cuda")
    alpha = torch.rand(g.n_edges, dtype=torch.float64, device="cuda", requires_grad=True)
    h = torch.randn(g.n_nodes, 5, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, x: aggregate(a, x, g), (alpha, h))


def test_module_matches_cpu():
    g = random_graph(40, 0.15)
    torch.manual_seed(0)
    m = STAGATEModule(30, 16, 4)
    x = torch.rand(40, 30)
    x[x < 0.6] = 0
    z_cpu, xhat_cpu, _ = m(x, g)
    m_gpu = STAGATEModule(30, 16, 4).cuda()
    m_gpu.load_state_dict(m.state_dict())
    xs = x.to_sparse_csr().cuda()
    from stagate.module._sparse import csr_transpose

    z_gpu = m_gpu.encode(xs, g.to("cuda"), x_t=csr_transpose(xs)).z
    torch.testing.assert_close(z_gpu.cpu(), z_cpu, rtol=1e-4, atol=1e-5)


def test_fit_on_cuda_close_to_cpu(sim):
    kw = {"n_epochs": 50, "hidden_dim": 64, "latent_dim": 8, "show_progress": False}
    cpu = sg.STAGATE(device="cpu", **kw).fit(sim)
    gpu = sg.STAGATE(device="cuda", **kw).fit(sim)
    assert str(gpu.device_) == "cuda"
    np.testing.assert_allclose(gpu.history_, cpu.history_, rtol=1e-3)
    np.testing.assert_allclose(gpu.embedding_, cpu.embedding_, rtol=1e-2, atol=1e-3)

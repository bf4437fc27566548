"""CUDA: the same math on the GPU (skipped without one; run on the lent GPU machine)."""

from __future__ import annotations

import logging

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


def _fit_logged(sim, caplog, **kw):
    with caplog.at_level(logging.INFO, logger="stagate"):
        return sg.STAGATE(device="cuda", show_progress=False, **kw).fit(sim)


@pytest.mark.parametrize("recipe", ["default", "paper"])
def test_cuda_graph_training_matches_the_plain_loop(sim, caplog, monkeypatch, recipe):
    # 60 epochs: eager warm-up, recording, a block of 50 replays read at once, and the rest;
    # the default recipe's cosine schedule checks that a replay reads the current rate
    kw = {"recipe": recipe, "n_epochs": 60, "hidden_dim": 64, "latent_dim": 8}
    graphed = _fit_logged(sim, caplog, **kw)
    assert "recorded as a CUDA graph" in caplog.text
    assert "failed" not in caplog.text
    caplog.clear()
    monkeypatch.setenv("STAGATE_CUDA_GRAPHS", "0")
    plain = _fit_logged(sim, caplog, **kw)
    assert "CUDA graph" not in caplog.text
    assert len(graphed.history_) == len(plain.history_) == 60
    np.testing.assert_allclose(graphed.history_, plain.history_, rtol=1e-4)
    np.testing.assert_allclose(graphed.embedding_, plain.embedding_, rtol=1e-2, atol=1e-3)


def test_cuda_graph_early_stopping_stops_where_the_plain_loop_does(sim, monkeypatch):
    kw = {"n_epochs": 400, "hidden_dim": 64, "latent_dim": 8, "tol": 0.05,
          "lr_schedule": "constant", "show_progress": False, "device": "cuda"}
    graphed = sg.STAGATE(**kw).fit(sim)
    monkeypatch.setenv("STAGATE_CUDA_GRAPHS", "0")
    plain = sg.STAGATE(**kw).fit(sim)
    assert len(graphed.history_) < 400
    assert abs(len(graphed.history_) - len(plain.history_)) <= 2  # GPU sums: last bits differ


def test_runs_on_cuda_are_clustered_in_workers(sim):
    kw = {"n_epochs": 30, "hidden_dim": 32, "latent_dim": 6, "show_progress": False}
    out = sg.tl.consensus_domains(sim, 4, n_runs=3, n_jobs=3, device="cuda", copy=True, **kw)
    record = out.uns["domain"]["consensus"]
    assert record["side_by_side"] == "clustering" and record["workers"] == 3
    assert out.obs["domain"].nunique() == 4

"""The model's math: attention rows, aggregation, tied weights, the Gram-form loss."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from stagate.module import NeighbourGraph, STAGATEModule, TiedGATLayer, aggregate
from stagate.module._layers import segment_softmax


def four_node_graph() -> NeighbourGraph:
    adj = sp.csr_matrix(np.array([[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0]]))
    return NeighbourGraph.from_scipy(adj)


def random_graph(n=30, p=0.15, seed=0) -> NeighbourGraph:
    rng = np.random.default_rng(seed)
    a = rng.random((n, n)) < p
    a = a | a.T
    return NeighbourGraph.from_scipy(sp.csr_matrix(a.astype(float)))


def test_self_loops_added_once():
    g = four_node_graph()
    assert g.n_edges == 6 + 4
    pairs = set(zip(g.dst.tolist(), g.src.tolist(), strict=True))
    assert all((i, i) in pairs for i in range(4))


def test_attention_rows_sum_to_one():
    torch.manual_seed(0)
    g = four_node_graph()
    layer = TiedGATLayer(8)
    h = torch.randn(4, 8)
    out, alpha = layer(h, g)
    assert out.shape == (4, 8)
    assert ((alpha > 0) & (alpha < 1)).all()
    row_sums = torch.zeros(4).index_add_(0, g.dst, alpha)
    torch.testing.assert_close(row_sums, torch.ones(4))


def test_attention_matches_dense_reference():
    torch.manual_seed(1)
    g = random_graph()
    layer = TiedGATLayer(16)
    h = torch.randn(g.n_nodes, 16)
    out, alpha = layer(h, g)
    s, r = h @ layer.v_s, h @ layer.v_r
    logits = torch.sigmoid(s[:, None] + r[None, :])
    mask = torch.zeros(g.n_nodes, g.n_nodes, dtype=torch.bool)
    mask[g.dst, g.src] = True
    dense = torch.where(mask, logits.exp(), torch.zeros(()))
    dense = dense / dense.sum(1, keepdim=True)
    torch.testing.assert_close(out, dense @ h, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alpha, dense[g.dst, g.src])


def test_segment_softmax_is_bit_identical_to_pyg():
    # our softmax replaces torch_geometric's (an import of ~2.3 s): same values and
    # gradients to the bit, so results of earlier versions are reproduced exactly
    pyg = pytest.importorskip("torch_geometric.utils", reason="torch_geometric is a test extra")
    torch.manual_seed(2)
    g = random_graph(40, 0.2, seed=5)
    logits = torch.randn(g.n_edges, dtype=torch.float64, requires_grad=True)
    ours = segment_softmax(logits, g.dst, g.n_nodes)
    theirs = pyg.softmax(logits, g.dst, num_nodes=g.n_nodes)
    assert torch.equal(ours, theirs)
    weights = torch.randn(g.n_edges, dtype=torch.float64)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), logits)
    (grad_theirs,) = torch.autograd.grad((theirs * weights).sum(), logits)
    assert torch.equal(grad_ours, grad_theirs)


def test_aggregate_gradients_match_autograd_reference():
    g = random_graph(20, 0.2, seed=3)
    alpha = torch.rand(g.n_edges, dtype=torch.float64, requires_grad=True)
    h = torch.randn(g.n_nodes, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, x: aggregate(a, x, g), (alpha, h))


def test_decoder_uses_the_encoder_weights():
    m = STAGATEModule(12, 8, 3)
    # one parameter each: no decoder copies
    names = [n for n, _ in m.named_parameters()]
    assert names == ["W1", "W2", "att.v_s", "att.v_r"]


def test_decoder_gradient_reaches_encoder_weights():
    torch.manual_seed(0)
    g = random_graph(25, 0.2)
    m = STAGATEModule(12, 8, 3)
    x = torch.rand(g.n_nodes, 12)
    enc = m.encode(x, g)
    x_hat = m.reconstruct(m.decode_hidden(enc, g))
    ((x - x_hat) ** 2).sum().backward()
    full = m.W1.grad.clone()
    # the same loss with the decoder's W1 detached: what the PyG original gets
    m.zero_grad()
    enc = m.encode(x, g)
    x_hat = m.decode_hidden(enc, g) @ m.W1.detach().T
    ((x - x_hat) ** 2).sum().backward()
    encoder_only = m.W1.grad.clone()
    assert full.abs().sum() > 0
    assert not torch.allclose(full, encoder_only)  # the decoder path adds its gradient


def test_gram_loss_equals_direct_loss_and_gradients():
    torch.manual_seed(0)
    g = random_graph(40, 0.1)
    m = STAGATEModule(50, 16, 4).double()
    x = torch.rand(g.n_nodes, 50, dtype=torch.float64)
    rows = torch.tensor([0, 3, 5, 7, 11, 30])
    for sel in (slice(None), rows):
        m.zero_grad()
        z, x_hat, _ = m(x, g)
        direct = ((x[sel] - x_hat[sel]) ** 2).sum()
        direct.backward()
        grads_direct = [p.grad.clone() for p in m.parameters()]
        m.zero_grad()
        enc = m.encode(x, g)
        h3 = m.decode_hidden(enc, g)
        gram = m.sum_squared_error((x[sel] ** 2).sum(), enc.xw, h3, rows=sel)
        gram.backward()
        torch.testing.assert_close(gram, direct)
        for a, b in zip(grads_direct, (p.grad for p in m.parameters()), strict=True):
            torch.testing.assert_close(a, b)


def test_sparse_and_dense_input_agree():
    torch.manual_seed(0)
    g = random_graph(30, 0.15)
    m = STAGATEModule(20, 8, 3)
    x = torch.rand(g.n_nodes, 20)
    x[x < 0.7] = 0
    z_dense = m.encode(x, g).z
    xs = x.to_sparse_csr()
    z_sparse = m.encode(xs, g).z
    torch.testing.assert_close(z_dense, z_sparse, rtol=1e-5, atol=1e-6)


def test_cell_type_aware_attention_mixes_and_rows_sum_to_one():
    torch.manual_seed(0)
    full = random_graph(30, 0.2)
    adj = full.to_scipy(torch.ones(full.n_edges)).toarray()
    pruned_adj = adj.copy()
    pruned_adj[:15, 15:] = 0
    pruned_adj[15:, :15] = 0
    pruned = NeighbourGraph.from_scipy(sp.csr_matrix(pruned_adj))
    pos = full.edge_positions(pruned)
    m = STAGATEModule(10, 8, 3, alpha_mix=0.5)
    h = torch.randn(30, 8)
    alpha = m.attention(h, full, pruned_edges=pos, pruned_graph=pruned)
    torch.testing.assert_close(torch.zeros(30).index_add_(0, full.dst, alpha), torch.ones(30))
    a_sp = m.att.attention(h, full)
    torch.testing.assert_close(alpha[pos] - 0.5 * a_sp[pos],
                               0.5 * m.att_pruned.attention(h, pruned))

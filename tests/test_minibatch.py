"""Exact minibatches: summed over an epoch's batches, the seeds' loss and its gradient are
the full-graph loss and gradient (no sampling, no edges lost at batch borders)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from stagate.module import NeighbourGraph, STAGATEModule
from stagate.train import Batch
from stagate.train._minibatch import MinibatchPlan, neighbourhood_batch


def loss_and_grads(module, batches):
    module.zero_grad()
    total = torch.zeros((), dtype=torch.float64)
    for b in batches:
        enc = module.encode(b.x, b.graph, **b.inputs)
        sse = module.sum_squared_error(b.x_sq, enc.xw, module.decode_hidden(enc, b.graph),
                                       rows=b.rows)
        sse.backward()
        total += sse.detach()
    return total, [p.grad.clone() for p in module.parameters()]


def _sparse_expression(x) -> sp.csr_matrix:
    """`x` with its smaller values zeroed: ~10% non-zero, like a Visium HVG matrix."""
    x = sp.csr_matrix(x, dtype=np.float64)
    x.data[x.data < np.quantile(x.data, 0.75)] = 0
    x.eliminate_zeros()
    return x


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_minibatch_loss_and_gradient_equal_full_graph(sim, layout):
    adj = sim.obsp["spatial_connectivities"]
    x = sim.X if layout == "dense" else _sparse_expression(sim.X)  # log-normalised
    torch.manual_seed(0)
    m = STAGATEModule(sim.n_vars, 32, 6).double()
    full = Batch(torch.as_tensor(x.toarray(), dtype=torch.float64), NeighbourGraph.from_scipy(adj))
    loss_full, grads_full = loss_and_grads(m, [full])
    plan = MinibatchPlan(adj, x, batch_size=37, random_state=1)
    batches = list(plan)
    assert len(batches) == len(plan) and sum(b.rows.stop for b in batches) == sim.n_obs
    # a sparse input stays sparse in the batches (X W1 then uses its sparsity)
    expected = torch.sparse_csr if layout == "sparse" else torch.strided
    assert all(b.x.layout == expected for b in batches)
    for b in batches:
        b.x = b.x.double()
        b.x_t = None if b.x_t is None else b.x_t.double()
    loss_mb, grads_mb = loss_and_grads(m, batches)
    torch.testing.assert_close(loss_mb, loss_full, rtol=1e-9, atol=1e-6)
    for a, b in zip(grads_mb, grads_full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def test_batch_holds_the_two_hop_neighbourhood():
    # a path 0-1-2-3-4-5: seeds {0} need 1 and 2, nothing further
    n = 6
    adj = sp.diags([np.ones(n - 1), np.ones(n - 1)], [-1, 1], format="csr")
    adj = adj + sp.identity(n, format="csr")
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    batch, nodes = neighbourhood_batch(np.array([0]), sp.csr_matrix(adj), x)
    assert list(nodes) == [0, 1, 2]
    np.testing.assert_array_equal(batch.x.numpy(), x[[0, 1, 2]])
    rows = batch.graph.dst.numpy()
    # node 2 is the outer ring: only its self-loop
    assert set(batch.graph.src.numpy()[rows == 2]) == {2}


def test_epochs_shuffle_reproducibly(sim):
    plan = MinibatchPlan(sim.obsp["spatial_connectivities"], sim.X, batch_size=50,
                         random_state=3)
    first = [s.copy() for s in plan.seeds(0)]
    again = MinibatchPlan(sim.obsp["spatial_connectivities"], sim.X, batch_size=50,
                          random_state=3).seeds(0)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(np.concatenate(first), np.concatenate(plan.seeds(1)))
    assert np.array_equal(np.sort(np.concatenate(first)), np.arange(sim.n_obs))


@pytest.mark.parametrize("tiles", ["rcm", "kd_tree"])
def test_batches_are_spatially_compact(sim, tiles):
    coords = sim.obsm["spatial"] if tiles == "kd_tree" else None
    plan = MinibatchPlan(sim.obsp["spatial_connectivities"], sim.X, batch_size=100,
                         coordinates=coords)
    halo = [neighbourhood_batch(s, plan.adj, plan.x)[1].size / s.size for s in plan.seeds(0)]
    rng = np.random.default_rng(0)
    random = [neighbourhood_batch(np.sort(s), plan.adj, plan.x)[1].size / s.size
              for s in np.array_split(rng.permutation(sim.n_obs), 4)]
    assert np.mean(halo) < 0.6 * np.mean(random)


def test_kd_tree_tiles_partition_the_spots_and_keep_halos_thin_as_tissue_grows():
    # a square grid: RCM cuts bands as wide as the tissue, k-d tree tiles stay square
    def halo(side, coordinates):
        i, j = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
        coords = np.c_[i.ravel(), j.ravel()].astype(float)
        n = side * side
        right = np.flatnonzero(j.ravel() < side - 1)
        down = np.flatnonzero(i.ravel() < side - 1)
        rows = np.r_[right, down]
        cols = np.r_[right + 1, down + side]
        adj = sp.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
        adj = (adj + adj.T).tocsr()
        plan = MinibatchPlan(adj, sp.csr_matrix((n, 1), dtype=np.float32), batch_size=400,
                             coordinates=coords if coordinates else None)
        seeds = np.concatenate(plan.chunks)
        assert np.array_equal(np.sort(seeds), np.arange(n))  # every spot once
        assert max(c.size for c in plan.chunks) <= 400
        nodes = sum(neighbourhood_batch(c, plan.adj, plan.x)[1].size for c in plan.chunks)
        return nodes / n

    # measured: k-d tiles 1.41 (60 x 60) and 1.45 (200 x 200); RCM bands 1.39 and 2.34
    assert halo(200, True) < 1.5 < halo(200, False)
    assert abs(halo(200, True) - halo(60, True)) < 0.05  # independent of the tissue size
    assert halo(200, False) > halo(60, False) + 0.1  # RCM bands: grows with the tissue


def test_batched_inference_equals_full_graph_inference(sim):
    import stagate as sg
    from stagate.model._data import minibatch_plan

    m = sg.STAGATE(n_epochs=5, hidden_dim=32, latent_dim=6, device="cpu",
                   show_progress=False).fit(sim)
    full = (m.embedding_.copy(), m.reconstruction_.copy(), m.attention_.copy())
    plan = minibatch_plan(sim, layer=None, use_hvg=True, graph_key="spatial", pruned_key=None,
                          batch_size=53, random_state=0)
    m._infer_batched(plan)
    np.testing.assert_allclose(m.embedding_, full[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m.reconstruction_, full[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m.attention_.toarray(), full[2].toarray(), rtol=1e-5, atol=1e-7)


def test_minibatch_training_is_deterministic_and_resumable(sim, tmp_path):
    import stagate as sg

    kw = {"hidden_dim": 32, "latent_dim": 6, "device": "cpu", "show_progress": False,
          "batch_size": 120, "lr_schedule": "constant"}  # constant: may train on
    a = sg.STAGATE(n_epochs=6, **kw).fit(sim)
    b = sg.STAGATE(n_epochs=6, **kw).fit(sim)
    np.testing.assert_array_equal(a.embedding_, b.embedding_)
    ckpt = tmp_path / "c.pt"
    sg.STAGATE(n_epochs=3, **kw).fit(sim, checkpoint=ckpt)
    r = sg.STAGATE(n_epochs=6, **kw).fit(sim, checkpoint=ckpt)
    np.testing.assert_array_equal(r.history_, a.history_)
    np.testing.assert_array_equal(r.embedding_, a.embedding_)
    att = a.attention_
    np.testing.assert_allclose(np.asarray(att.sum(axis=1)).ravel(), 1, rtol=1e-5)
    assert att.nnz == sim.obsp["spatial_connectivities"].nnz + sim.n_obs


def test_minibatches_with_one_step_per_epoch_equal_full_batch_training(sim):
    import stagate as sg

    kw = {"hidden_dim": 32, "latent_dim": 6, "device": "cpu", "show_progress": False,
          "n_epochs": 8, "random_state": 4}
    full = sg.STAGATE(batch_size=None, **kw).fit(sim)
    mb = sg.STAGATE(batch_size=90, step_every="epoch", **kw).fit(sim)
    np.testing.assert_allclose(mb.history_, full.history_, rtol=1e-5)
    np.testing.assert_allclose(mb.embedding_, full.embedding_, rtol=1e-3, atol=1e-4)
    per_batch = sg.STAGATE(batch_size=90, step_every="batch", **kw).fit(sim)
    assert per_batch.history_[-1] != pytest.approx(full.history_[-1], rel=1e-5)

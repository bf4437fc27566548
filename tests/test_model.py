"""Training: determinism, checkpoint/resume, outputs written under their keys."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

import stagate as sg


def fit(adata, **kw):
    kw.setdefault("n_epochs", 30)
    kw.setdefault("hidden_dim", 64)
    kw.setdefault("latent_dim", 8)
    return sg.STAGATE(device="cpu", show_progress=False, **kw).fit(adata)


def test_same_seed_bit_identical_on_cpu(sim):
    a, b = fit(sim, random_state=3), fit(sim, random_state=3)
    np.testing.assert_array_equal(a.embedding_, b.embedding_)
    np.testing.assert_array_equal(a.reconstruction_, b.reconstruction_)
    assert a.history_ == b.history_
    c = fit(sim, random_state=4)
    assert not np.array_equal(a.embedding_, c.embedding_)


def test_loss_decreases(sim):
    m = fit(sim, n_epochs=60)
    assert m.history_[-1] < 0.8 * m.history_[0]


def test_resume_from_checkpoint_equals_uninterrupted(sim, tmp_path):
    # a constant learning rate (the paper's) may train on with a larger budget
    ckpt = tmp_path / "ckpt.pt"
    full = fit(sim, n_epochs=20, lr_schedule="constant")
    sg.STAGATE(device="cpu", show_progress=False, n_epochs=12, hidden_dim=64,
               latent_dim=8, lr_schedule="constant").fit(sim, checkpoint=ckpt)
    resumed = sg.STAGATE(device="cpu", show_progress=False, n_epochs=20, hidden_dim=64,
                         latent_dim=8, lr_schedule="constant").fit(sim, checkpoint=ckpt)
    assert len(resumed.history_) == 20
    np.testing.assert_array_equal(full.history_, resumed.history_)
    np.testing.assert_array_equal(full.embedding_, resumed.embedding_)


def test_tl_stagate_writes_documented_keys(sim):
    x_before = sim.X.copy()
    sg.tl.stagate(sim, n_epochs=5, hidden_dim=32, latent_dim=6, show_progress=False,
                  device="cpu")
    assert sim.obsm["STAGATE"].shape == (sim.n_obs, 6)
    rex = sim.layers["STAGATE_ReX"]
    assert rex.shape == sim.shape and (rex >= 0).all()
    att = sim.obsp["STAGATE_attention"]
    np.testing.assert_allclose(np.asarray(att.sum(axis=1)).ravel(), 1, rtol=1e-5)
    # the attention lives on the graph plus self-loops
    conn = sim.obsp["spatial_connectivities"]
    assert att.nnz == conn.nnz + sim.n_obs
    assert len(sim.uns["STAGATE"]["loss"]) == 5
    assert (sim.X != x_before).nnz == 0  # X untouched


def test_copy_leaves_input_alone(sim):
    out = sg.tl.stagate(sim, n_epochs=2, hidden_dim=16, latent_dim=4, show_progress=False,
                        copy=True, device="cpu")
    assert "STAGATE" in out.obsm and "STAGATE" not in sim.obsm


def test_cell_type_aware_module(sim):
    sg.pp.prune_network(sim, random_state=0)
    assert sim.obsp["spatial_pruned_connectivities"].nnz <= sim.obsp["spatial_connectivities"].nnz
    sg.tl.stagate(sim, alpha=0.5, n_epochs=5, hidden_dim=16, latent_dim=4,
                  show_progress=False, device="cpu")
    att = sim.obsp["STAGATE_attention"]
    np.testing.assert_allclose(np.asarray(att.sum(axis=1)).ravel(), 1, rtol=1e-5)


def test_subset_genes_reconstruction_goes_to_obsm(sim_raw, tmp_path):
    a = sim_raw.copy()
    sg.pp.preprocess(a, n_top_genes=50, subset=False)
    sg.pp.spatial_network(a)
    sg.tl.stagate(a, n_epochs=2, hidden_dim=16, latent_dim=4, show_progress=False, device="cpu")
    assert a.obsm["STAGATE_ReX"].shape == (a.n_obs, 50)
    assert "STAGATE_ReX" not in a.layers
    # columns are the model genes, in uns order; denoised_matrix picks them by name
    genes = list(a.uns["STAGATE"]["genes"])
    assert genes == list(a.var_names[a.var["highly_variable"]])
    other = a.var_names[~a.var["highly_variable"].to_numpy()][0]
    picked = sg.tl.denoised_matrix(a, [genes[7], other, genes[0]])
    np.testing.assert_array_equal(picked[:, 0], a.obsm["STAGATE_ReX"][:, 7])
    np.testing.assert_array_equal(picked[:, 2], a.obsm["STAGATE_ReX"][:, 0])
    assert np.isnan(picked[:, 1]).all()
    # and it survives the h5ad round trip as a plain array (one dataset, not one per gene)
    path = tmp_path / "a.h5ad"
    a.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(sg.tl.denoised_matrix(back, [genes[7]])[:, 0], picked[:, 0])


def test_save_load_transform(sim, tmp_path):
    m = fit(sim, n_epochs=5)
    m.save(tmp_path)
    with pytest.raises(FileExistsError):
        m.save(tmp_path)
    loaded = sg.STAGATE.load(tmp_path)
    np.testing.assert_allclose(loaded.transform(sim), m.embedding_, rtol=1e-5, atol=1e-6)


def test_unfitted_model_says_so():
    with pytest.raises(sg.NotFittedError, match="fit"):
        sg.STAGATE().save("x")


def test_missing_graph_is_named(sim_raw):
    a = sim_raw.copy()
    sg.pp.preprocess(a)
    with pytest.raises(ValueError, match="spatial_network"):
        fit(a)


def test_convergence_rule():
    from stagate.train._loop import converged

    assert not converged([3.0, 2.0, 1.0], None, 2)
    assert not converged([3.0, 2.0], 0.01, 2)  # too short to judge
    assert not converged([3.0, 2.0, 1.9], 0.01, 2)  # fell by 37% over 2 epochs
    assert converged([1.0, 0.999, 0.998], 0.01, 2)  # fell by 0.2%


def test_early_stopping_stops_where_the_loss_flattens(sim):
    m = fit(sim, n_epochs=300, tol=0.05, hidden_dim=32)
    h = m.history_
    assert 50 < len(h) < 300
    assert h[-51] - h[-1] < 0.05 * h[-51]  # the rule holds at the last epoch
    assert h[-52] - h[-2] >= 0.05 * h[-52]  # and not one epoch earlier
    assert len(fit(sim, n_epochs=60, tol=None, hidden_dim=32).history_) == 60


def test_a_diverging_loss_ends_in_one_clear_error(sim):
    from stagate._validation import StagateInputError

    sim.X = sim.X * 1e30  # absurd scale: the loss overflows
    with pytest.raises(StagateInputError, match="Training diverged.*lower learning rate"):
        sg.STAGATE(n_epochs=5, show_progress=False, hidden_dim=16, latent_dim=4).fit(sim)


def test_cuda_graphs_only_where_they_apply(monkeypatch):
    import torch

    from stagate.train._loop import use_cuda_graph

    cpu, cuda, one = torch.device("cpu"), torch.device("cuda"), [object()]
    assert use_cuda_graph(cuda, one, n_ranks=1, checkpoint=None)
    assert not use_cuda_graph(cpu, one, n_ranks=1, checkpoint=None)
    assert not use_cuda_graph(cuda, one, n_ranks=2, checkpoint=None)  # torchrun: DDP hooks
    assert not use_cuda_graph(cuda, one, n_ranks=1, checkpoint="run.pt")  # saved each 100
    assert not use_cuda_graph(cuda, one * 2, n_ranks=1, checkpoint=None)  # minibatches
    monkeypatch.setenv("STAGATE_CUDA_GRAPHS", "0")
    assert not use_cuda_graph(cuda, one, n_ranks=1, checkpoint=None)


def test_replayed_losses_are_read_in_order_and_a_nan_names_its_epoch():
    import torch

    from stagate._logging import progress
    from stagate._validation import StagateInputError
    from stagate.train._loop import CapturedStep, _read_losses, _set_lr

    step = CapturedStep(graph=None, loss=None, batch=None)
    step.pending = [torch.tensor(v, dtype=torch.float64) for v in (3.0, 2.0, 1.0)]
    history, bar = [5.0], progress(show=False)
    _read_losses(step, history, epoch=3, lr=1e-3, bar=bar)
    assert history == [5.0, 3.0, 2.0, 1.0] and step.n_pending == 0
    step.pending = [torch.tensor(0.5), torch.tensor(float("nan"))]
    with pytest.raises(StagateInputError, match="at epoch 6"):
        _read_losses(step, history, epoch=5, lr=1e-3, bar=bar)

    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=torch.tensor(1e-3))
    lr_tensor = opt.param_groups[0]["lr"]
    _set_lr(opt, 5e-4)  # a recorded graph reads this very tensor: changed in place
    assert opt.param_groups[0]["lr"] is lr_tensor and float(lr_tensor) == pytest.approx(5e-4)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    _set_lr(opt, 5e-4)
    assert opt.param_groups[0]["lr"] == 5e-4


@pytest.mark.parametrize("batch_size", [None, 150])
def test_fit_without_outputs_keeps_the_same_embedding(sim, batch_size):
    kw = {"n_epochs": 8, "hidden_dim": 32, "latent_dim": 6, "device": "cpu",
          "show_progress": False, "batch_size": batch_size}
    full = sg.STAGATE(**kw).fit(sim)
    lean = sg.STAGATE(**kw).fit(sim, keep_outputs=False)
    np.testing.assert_array_equal(lean.embedding_, full.embedding_)
    assert lean.reconstruction_ is None and lean.attention_ is None
    lean.infer(sim)  # computed on demand, as after drop_outputs
    np.testing.assert_array_equal(lean.reconstruction_, full.reconstruction_)
    assert (lean.attention_ != full.attention_).nnz == 0

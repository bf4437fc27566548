"""Training recipes, the learning-rate schedule and the consensus of several runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import adjusted_rand_score

import stagate as sg
from stagate._defaults import RECIPES, resolve_training
from stagate.cli import cli
from stagate.cluster._consensus import consensus_vote, match_labels
from stagate.tl._consensus import run_checkpoint, run_seeds
from stagate.train._loop import learning_rate
from stagate.train._workers import can_fork, cpu_cores

SMALL = {"hidden_dim": 32, "latent_dim": 6, "device": "cpu", "show_progress": False}


# -- recipes and the schedule ----------------------------------------------------------------
def test_paper_recipe_is_the_originals_training():
    paper = RECIPES["paper"]
    assert (paper.hidden_dim, paper.latent_dim, paper.n_epochs, paper.lr, paper.lr_schedule,
            paper.n_runs, paper.weight_decay, paper.gradient_clip) == (
        512, 30, 1000, 1e-3, "constant", 1, 1e-4, 5.0)
    m = sg.STAGATE(recipe="paper")
    assert (m.hidden_dim, m.n_epochs, m.lr, m.lr_schedule) == (512, 1000, 1e-3, "constant")


def test_overrides_replace_single_settings():
    s = resolve_training("default", n_epochs=7, lr=None)
    assert s["n_epochs"] == 7 and s["lr"] == RECIPES["default"].lr
    with pytest.raises(sg.StagateInputError, match="Unknown recipe 'fast'"):
        resolve_training("fast")


def test_paper_recipe_equals_explicit_constant_training(sim):
    """--recipe paper is the training that existed before recipes: same numbers, bit for bit."""
    a = sg.STAGATE(recipe="paper", n_epochs=8, **SMALL).fit(sim)
    b = sg.STAGATE(recipe="default", n_epochs=8, lr=1e-3, lr_schedule="constant",
                   **SMALL).fit(sim)
    np.testing.assert_array_equal(a.embedding_, b.embedding_)


def test_cosine_schedule():
    lrs = [learning_rate(e, 100, 2e-3, "cosine") for e in range(100)]
    assert lrs[0] == pytest.approx(2e-3 / 5)  # warm-up over 5 epochs
    assert lrs[4] == pytest.approx(2e-3)  # peak at the end of the warm-up
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))  # then only decays
    assert lrs[-1] == pytest.approx(2e-5)  # to 1% of the peak
    assert {learning_rate(e, 100, 1e-3, "constant") for e in range(100)} == {1e-3}


def test_a_decaying_schedule_refuses_a_checkpoint_of_another_budget(sim, tmp_path):
    """With a cosine schedule the rate at each epoch depends on the epoch budget, so a
    checkpoint of a shorter run is another run (with a constant rate it may train on)."""
    ckpt = tmp_path / "c.pt"
    kw = SMALL | {"lr_schedule": "cosine"}
    sg.STAGATE(n_epochs=4, **kw).fit(sim, checkpoint=ckpt)
    with pytest.raises(sg.StagateInputError, match="belongs to another run"):
        sg.STAGATE(n_epochs=10, **kw).fit(sim, checkpoint=ckpt)
    again = sg.STAGATE(n_epochs=4, **kw).fit(sim, checkpoint=ckpt)  # same run: resumes
    assert len(again.history_) == 4


# -- the vote ---------------------------------------------------------------------------------
def test_match_labels_undoes_a_renaming(rng):
    ref = rng.integers(0, 5, 300)
    perm = rng.permutation(5)
    np.testing.assert_array_equal(match_labels(perm[ref], ref), ref)


def test_vote_takes_the_majority_and_is_label_free(rng):
    truth = np.repeat(np.arange(4), 50)
    parts = []
    for _ in range(5):  # each run: renamed labels, 10% of spots wrong at random
        noisy = truth.copy()
        flip = rng.random(truth.size) < 0.1
        noisy[flip] = rng.integers(0, 4, flip.sum())
        parts.append(rng.permutation(4)[noisy])
    labels, info = consensus_vote(np.stack(parts))
    assert adjusted_rand_score(truth, labels) > max(adjusted_rand_score(truth, p) for p in parts)
    assert adjusted_rand_score(truth, labels) > 0.95
    assert info["agreement"].shape == (5, 5)
    assert 0 < info["mean_agreement"] < 1
    assert ((info["support"] >= 0.2) & (info["support"] <= 1)).all()


def test_vote_ties_go_to_the_reference_run():
    # runs 0 and 1 agree (reference is 0), runs 2 and 3 split the second half differently
    parts = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1], [0, 1, 1, 1]])
    labels, info = consensus_vote(parts)
    assert info["reference"] in (0, 1)
    np.testing.assert_array_equal(labels, [0, 0, 1, 1])


def test_run_seeds_are_reproducible_and_disjoint():
    assert run_seeds(0, 5) == run_seeds(0, 5)
    assert not set(run_seeds(0, 5)) & set(run_seeds(1, 5))
    assert run_checkpoint("x/ckpt.pt", 2).name == "ckpt.run2.pt"


# -- consensus_domains on the simulator --------------------------------------------------------
def test_consensus_domains_writes_votes_and_is_reproducible(sim):
    kw = SMALL | {"n_epochs": 40, "n_runs": 3, "random_state": 3}
    a = sg.tl.consensus_domains(sim, 4, copy=True, **kw)
    b = sg.tl.consensus_domains(sim, 4, copy=True, **kw)
    np.testing.assert_array_equal(a.obs["domain"], b.obs["domain"])
    np.testing.assert_array_equal(a.obsm["STAGATE"], b.obsm["STAGATE"])
    assert a.obsm["domain_runs"].shape == (sim.n_obs, 3)
    assert a.obs["domain_support"].between(1 / 3, 1).all()
    record = a.uns["domain"]["consensus"]
    assert record["n_runs"] == 3 and len(record["seeds"]) == 3
    # the stored outputs are the reference run's: its embedding clusters into its own labels
    ref = record["reference"]
    assert a.uns["STAGATE"]["runs"]["reference"] == ref
    assert a.layers["STAGATE_ReX"].shape == (sim.n_obs, sim.n_vars)
    rows = np.asarray(a.obsp["STAGATE_attention"].sum(1)).ravel()
    np.testing.assert_allclose(rows, 1, atol=1e-5)
    # the consensus is at least as close to the truth as the typical run here
    runs = [adjusted_rand_score(sim.obs["domain_truth"], a.obsm["domain_runs"][:, i])
            for i in range(3)]
    vote = adjusted_rand_score(sim.obs["domain_truth"], a.obs["domain"])
    assert vote >= np.median(runs) - 0.02


def test_consensus_resumes_each_run_from_its_checkpoint(sim, tmp_path):
    kw = SMALL | {"n_epochs": 12, "n_runs": 2}
    ckpt = tmp_path / "ckpt.pt"
    first = sg.tl.consensus_domains(sim, 4, copy=True, checkpoint=ckpt, **kw)
    assert (tmp_path / "ckpt.run0.pt").exists() and (tmp_path / "ckpt.run1.pt").exists()
    again = sg.tl.consensus_domains(sim, 4, copy=True, checkpoint=ckpt, **kw)
    np.testing.assert_array_equal(first.obsm["STAGATE"], again.obsm["STAGATE"])
    np.testing.assert_array_equal(first.obs["domain"], again.obs["domain"])


def test_cli_records_recipe_and_consensus(sim_raw, tmp_path):
    path = tmp_path / "in.h5ad"
    sim_raw.write_h5ad(path)
    out = tmp_path / "o"
    res = CliRunner().invoke(cli, ["run", str(path), "--n-domains", "4", "--epochs", "15",
                                   "--runs", "3", "--hidden-dim", "32", "--quiet", "--no-umap",
                                   "--label-key", "domain_truth", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "3 runs voted" in res.output
    s = json.loads((out / "summary.json").read_text())
    assert s["recipe"]["name"] == "default" and s["recipe"]["n_runs"] == 3
    assert s["recipe"]["n_epochs"] == 15 and s["recipe"]["hidden_dim"] == 32
    assert s["consensus"]["n_runs"] == 3 and len(s["consensus"]["seeds"]) == 3
    assert -1 <= s["consensus"]["mean_pairwise_ari"] <= 1
    paper = tmp_path / "p"
    res = CliRunner().invoke(cli, ["run", str(path), "--n-domains", "4", "--recipe", "paper",
                                   "--epochs", "5", "--quiet", "--no-umap", "--out", str(paper)])
    assert res.exit_code == 0, res.output
    s = json.loads((paper / "summary.json").read_text())
    assert s["recipe"]["hidden_dim"] == 512 and s["consensus"]["n_runs"] == 1
    assert s["recipe"]["lr_schedule"] == "constant" and s["epochs_trained"] == 5


def test_consensus_runs_go_through_minibatches(sim):
    """Each voting run trains on exact minibatches when asked, like a single run."""
    a = sg.tl.consensus_domains(sim, 4, n_runs=2, n_epochs=5, batch_size=150, copy=True,
                                **SMALL)
    assert a.uns["STAGATE"]["params"]["batch_size_used"] == 150
    assert a.obsm["domain_runs"].shape == (sim.n_obs, 2)


# -- voting runs side by side in worker processes -----------------------------------------------
needs_fork = pytest.mark.skipif(not can_fork() or cpu_cores() < 2,
                                reason="worker processes need Linux (fork) and 2+ cores")


@needs_fork
def test_runs_in_workers_give_the_same_domains_as_one_after_another(sim):
    """Each run is the same computation wherever it trains; on data this small every torch
    operation is single-threaded anyway, so the results are equal to the last bit."""
    kw = SMALL | {"n_epochs": 25, "n_runs": 3, "random_state": 5}
    here = sg.tl.consensus_domains(sim, 4, copy=True, n_jobs=1, **kw)
    two = sg.tl.consensus_domains(sim, 4, copy=True, n_jobs=2, **kw)
    three = sg.tl.consensus_domains(sim, 4, copy=True, n_jobs=3, **kw)
    assert here.uns["domain"]["consensus"]["workers"] == 1
    assert two.uns["domain"]["consensus"]["workers"] == 2  # 2 runs in workers, 1 here
    assert three.uns["domain"]["consensus"]["workers"] == 3
    for other in (two, three):
        np.testing.assert_array_equal(here.obsm["domain_runs"], other.obsm["domain_runs"])
        np.testing.assert_array_equal(here.obsm["STAGATE"], other.obsm["STAGATE"])
        np.testing.assert_array_equal(here.uns["STAGATE"]["runs"]["final_loss"],
                                      other.uns["STAGATE"]["runs"]["final_loss"])


@needs_fork
def test_an_error_in_a_worker_run_reaches_the_caller(sim):
    with pytest.raises(sg.StagateInputError, match="diverged"):
        sg.tl.consensus_domains(sim, 4, n_runs=2, n_jobs=2, n_epochs=3, lr=1e30, copy=True,
                                **SMALL)


@needs_fork
def test_workers_resume_their_runs_checkpoints(sim, tmp_path):
    kw = SMALL | {"n_epochs": 12, "n_runs": 2, "n_jobs": 2}
    ckpt = tmp_path / "ckpt.pt"
    first = sg.tl.consensus_domains(sim, 4, copy=True, checkpoint=ckpt, **kw)
    assert (tmp_path / "ckpt.run0.pt").exists() and (tmp_path / "ckpt.run1.pt").exists()
    again = sg.tl.consensus_domains(sim, 4, copy=True, checkpoint=ckpt, **kw)
    np.testing.assert_array_equal(first.obsm["STAGATE"], again.obsm["STAGATE"])


@needs_fork
def test_runs_trained_here_are_clustered_in_workers(sim):
    """Minibatch (or GPU) runs train in this process; their clusterings go to workers and
    give the domains one-after-another clustering gives."""
    kw = SMALL | {"n_epochs": 10, "n_runs": 3, "random_state": 2, "batch_size": 150}
    here = sg.tl.consensus_domains(sim, 4, copy=True, n_jobs=1, **kw)
    aside = sg.tl.consensus_domains(sim, 4, copy=True, n_jobs=3, **kw)
    assert here.uns["domain"]["consensus"]["side_by_side"] == "nothing"
    record = aside.uns["domain"]["consensus"]
    assert record["side_by_side"] == "clustering" and record["workers"] == 3
    np.testing.assert_array_equal(here.obsm["domain_runs"], aside.obsm["domain_runs"])
    np.testing.assert_array_equal(here.obs["domain"], aside.obs["domain"])


def test_workers_only_where_they_can_help(sim):
    from stagate.tl._consensus import _n_workers

    assert _n_workers(sim, 5, {"device": "cpu"}, 1) == 1
    assert _n_workers(sim, 5, {"device": "cpu", "batch_size": 100}, 4) == 1  # minibatches
    assert _n_workers(sim, 2, {"device": "cpu"}, 8) == (2 if can_fork() else 1)  # <= runs
    with pytest.raises(sg.StagateInputError, match="n_jobs"):
        _n_workers(sim, 5, {"device": "cpu"}, 0)
    from stagate.tl._consensus import _n_cluster_workers

    assert _n_cluster_workers(5, 1) == 1
    assert _n_cluster_workers(2, 8) == (2 if can_fork() else 1)  # at most one per run


def test_a_fitted_model_pickles_by_value(sim):
    import pickle

    model = sg.STAGATE(n_epochs=5, **SMALL).fit(sim)
    back = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(back.embedding_, model.embedding_)
    for (name, w), (_, v) in zip(model.module_.state_dict().items(),
                                 back.module_.state_dict().items(), strict=True):
        assert torch.equal(w, v), name
    np.testing.assert_array_equal(back.transform(sim), model.transform(sim))


@needs_fork
def test_workers_never_wait_on_a_progress_bar_lock_held_in_the_parent(tmp_path):
    """A thread of the parent (tqdm's monitor, say) may hold tqdm's lock when the workers
    are forked; they must not wait for it (the suite once hung there). Run in a child
    process with a timeout, so a regression fails instead of hanging."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import stagate as sg
        from tqdm.auto import tqdm
        a = sg.datasets.simulate(300, n_genes=100, n_domains=3, random_state=0)
        sg.pp.preprocess(a)
        sg.pp.spatial_network(a)
        with tqdm.get_lock():  # held here for the whole vote, workers forked meanwhile
            sg.tl.consensus_domains(a, 3, n_runs=2, n_jobs=2, n_epochs=5, hidden_dim=16,
                                    latent_dim=4, device="cpu", show_progress=False)
        print("voted", a.obs["domain"].nunique())
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "voted 3" in done.stdout

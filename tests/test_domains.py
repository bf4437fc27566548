from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import stagate as sg
from stagate.cluster import knn_graph_clusters


def blobs(n_per=60, k=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (k, 5))
    x = np.vstack([rng.normal(c, 1, (n_per, 5)) for c in centres])
    return x, np.repeat(np.arange(k), n_per)


@pytest.mark.parametrize("method", ["leiden", "louvain"])
def test_resolution_search_hits_requested_count(method):
    x, truth = blobs()
    labels, _ = knn_graph_clusters(x, 4, method=method)
    assert labels.max() + 1 == 4
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth, labels) > 0.95


def test_domains_labels_and_score_skip_na():
    x, truth = blobs()
    a = AnnData(np.zeros((len(x), 1), dtype=np.float32))
    a.obsm["STAGATE"] = x
    lab = pd.Series(truth.astype(str))
    lab[:10] = "NA"
    a.obs["layer"] = lab.to_numpy()
    sg.tl.domains(a, 4, random_state=0)
    assert list(a.obs["domain"].cat.categories) == ["1", "2", "3", "4"]
    s = sg.tl.score_domains(a, label_key="layer")
    assert s["n_scored"] == len(x) - 10 and s["ari"] > 0.95


def test_more_domains_than_spots():
    a = AnnData(np.zeros((5, 1), dtype=np.float32))
    a.obsm["STAGATE"] = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.raises(sg.StagateInputError, match="must be <= the number of spots"):
        sg.tl.domains(a, 6)


def test_missing_embedding_named():
    with pytest.raises(sg.StagateInputError, match="tl.stagate"):
        sg.tl.domains(AnnData(np.zeros((5, 1), dtype=np.float32)), 2)


def test_majority_vote_removes_lone_spots_and_keeps_ties():
    import scipy.sparse as sp

    from stagate.cluster import majority_vote

    # a path 0-1-2-3-4-5: spot 2 is a lone "b" inside "a"; 4|5 is a clean border
    adj = sp.diags([np.ones(5), np.ones(5)], [1, -1], shape=(6, 6), format="csr")
    labels = np.array(["a", "a", "b", "a", "c", "c"])
    out = majority_vote(labels, adj)
    assert out.tolist() == ["a", "a", "a", "a", "c", "c"]
    # spot 3 sees a, a(self), c: keeps a; spot 4 sees a, c(self), c: keeps c
    isolated = sp.csr_matrix((6, 6))
    assert majority_vote(labels, isolated).tolist() == labels.tolist()


def test_refine_domains_on_the_simulator(sim):
    import stagate as sg

    sim.obs["noisy"] = sim.obs["domain_truth"].astype(str).to_numpy()
    rng = np.random.default_rng(0)
    flip = rng.choice(sim.n_obs, sim.n_obs // 10, replace=False)
    values = sim.obs["noisy"].to_numpy().copy()
    values[flip] = rng.choice(np.unique(values), flip.size)
    sim.obs["noisy"] = values
    sg.tl.refine_domains(sim, "noisy")
    truth = sim.obs["domain_truth"].astype(str).to_numpy()
    before = (values == truth).mean()
    after = (sim.obs["noisy_refined"].astype(str).to_numpy() == truth).mean()
    assert after > before + 0.05
    with pytest.raises(sg.StagateInputError, match="not found"):
        sg.tl.refine_domains(sim, "missing")

"""After the domains: markers, UMAP/PAGA, Moran's I, attention by domain; against references."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

import stagate as sg


def _planted(rng, n_per=60):
    """Three domains in a row; gene_a marks domain A, gene_c domain C, the rest is noise."""
    labels = np.repeat(["A", "B", "C"], n_per)
    n = labels.size
    x = rng.poisson(1.0, (n, 30)).astype(np.float32)
    x[labels == "A", 0] += 6
    x[labels == "C", 1] += 6
    a = AnnData(np.log1p(x), obs=pd.DataFrame({"domain": pd.Categorical(labels)},
                                               index=[f"s{i}" for i in range(n)]),
                var=pd.DataFrame(index=["gene_a", "gene_c"] + [f"g{i}" for i in range(28)]))
    a.obsm["spatial"] = np.column_stack([np.arange(n) % 20, np.arange(n) // 20]).astype(float)
    return a


def test_markers_find_planted_genes_with_bh_and_fractions(rng):
    a = _planted(rng)
    table = sg.tl.markers(a)
    top = table[table["rank"] == 1].set_index("domain")["gene"]
    assert top["A"] == "gene_a" and top["C"] == "gene_c"
    first = table[(table.domain == "A") & (table.gene == "gene_a")].iloc[0]
    assert first.p_value_adj < 1e-10 and first.log2_fold_change > 1
    # Benjamini-Hochberg: adjusted >= raw, and the same ranking
    assert (table.p_value_adj >= table.p_value - 1e-15).all()
    # fractions expressing, against a direct count
    expressed = np.asarray(a[a.obs.domain == "A", "g3"].X).ravel() > 0
    row = table[(table.domain == "A") & (table.gene == "g3")].iloc[0]
    assert row.frac_in == pytest.approx(expressed.mean())
    assert "domain_markers_table" in a.uns and "domain_markers" in a.uns


def test_markers_cover_genes_outside_the_model(sim_raw):
    a = sim_raw.copy()
    sg.pp.preprocess(a, n_top_genes=50, subset=False)  # the model would use 50 of 200
    a.obs["domain"] = a.obs["domain_truth"]
    table = sg.tl.markers(a)
    assert table.gene.nunique() == a.n_vars  # every gene tested, not only the 50


def test_paga_follows_a_layered_embedding(rng):
    a = _planted(rng, 80)
    layers = a.obs["domain"].cat.codes.to_numpy()
    # an embedding that orders the domains A < B < C along one axis
    a.obsm["STAGATE"] = np.column_stack([layers + rng.normal(0, 0.25, layers.size),
                                         rng.normal(0, 0.25, layers.size)]).astype(np.float32)
    a.obsp["connectivities"] = sp.identity(a.n_obs, format="csr")  # the user's own: kept
    sg.tl.embedding_umap(a)
    assert a.obsm["STAGATE_umap"].shape == (a.n_obs, 2)
    assert "STAGATE_connectivities" in a.obsp and "STAGATE_paga" in a.uns
    assert (a.obsp["connectivities"] != sp.identity(a.n_obs)).nnz == 0
    assert "paga" not in a.uns
    assert sg.tl.paga_path(a) in (["A", "B", "C"], ["C", "B", "A"])


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_paga_path_is_the_heaviest_order(rng, n):
    from itertools import permutations

    from stagate.tl._downstream import _heaviest_path

    for _ in range(5):
        w = rng.random((n, n))
        w = np.triu(w, 1) + np.triu(w, 1).T
        got = _heaviest_path(w)
        assert sorted(got) == list(range(n))
        weight = sum(w[a, b] for a, b in itertools.pairwise(got))
        brute = max(sum(w[a, b] for a, b in itertools.pairwise(p))
                    for p in permutations(range(n)))
        assert weight == pytest.approx(brute)


def test_paga_path_is_not_fooled_by_a_hub(rng):
    # a chain A-B-C-D-E whose middle group also links weakly to both ends: starting at the
    # weakest group and taking the strongest next edge (greedy) leaves the chain; the
    # heaviest path keeps it
    names = list("ABCDE")
    w = np.zeros((5, 5))
    for a, b, v in [(0, 1, 0.9), (1, 2, 0.3), (2, 3, 0.3), (3, 4, 0.9), (2, 0, 0.25),
                    (2, 4, 0.25)]:
        w[a, b] = w[b, a] = v
    a = _planted(rng, 20)
    a.obs["group"] = pd.Categorical(rng.choice(names, a.n_obs), categories=names)
    a.uns["STAGATE_paga"] = {"connectivities": sp.csr_matrix(w), "groups": "group",
                             "names": names}
    assert sg.tl.paga_path(a) in (names, names[::-1])


def test_paga_over_an_annotation_leaves_the_domains_and_missing_labels(rng):
    a = _planted(rng, 80)
    layers = a.obs["domain"].cat.codes.to_numpy()
    a.obsm["STAGATE"] = np.column_stack([layers + rng.normal(0, 0.25, layers.size),
                                         rng.normal(0, 0.25, layers.size)]).astype(np.float32)
    labels = np.array(["L1", "L2", "L3"])[layers].astype(object)
    labels[:5] = "NA"
    sg.tl.embedding_umap(a)
    a.obs["layer"] = labels  # plain strings, not categories: left as they are
    sg.tl.paga(a, "layer")
    assert a.obs["layer"].dtype == object
    record = a.uns["STAGATE_paga_layer"]
    assert record["names"] == ["L1", "L2", "L3", "NA"]
    assert record["connectivities"].shape == (4, 4)
    assert sg.tl.paga_path(a, paga_key="STAGATE_paga_layer") in (["L1", "L2", "L3"],
                                                                  ["L3", "L2", "L1"])
    assert sg.tl.paga_path(a) in (["A", "B", "C"], ["C", "B", "A"])  # the domains' stays
    import matplotlib

    matplotlib.use("Agg")
    texts = {t.get_text() for t in sg.pl.paga(a, paga_key="STAGATE_paga_layer").texts}
    assert {"L1", "L2", "L3"} <= texts and "NA" not in texts  # no node for unannotated spots


def test_paga_graph_plot_leaves_the_data_as_it_was(rng):
    import matplotlib

    matplotlib.use("Agg")
    a = _planted(rng, 40)
    layers = a.obs["domain"].cat.codes.to_numpy()
    a.obsm["STAGATE"] = np.column_stack([layers + rng.normal(0, 0.25, layers.size),
                                         rng.normal(0, 0.25, layers.size)]).astype(np.float32)
    sg.tl.embedding_umap(a)
    a.uns["paga"] = "the user's"
    obs = a.obs.copy()
    ax = sg.pl.paga(a, labels=["a", "b", "c"])
    assert {t.get_text() for t in ax.texts} >= {"a", "b", "c"}
    assert a.uns["paga"] == "the user's" and a.obs.equals(obs)
    with pytest.raises(sg.StagateInputError, match="embedding_umap"):
        sg.pl.paga(a, paga_key="STAGATE_paga_nothing")


def test_morans_i_matches_the_formula(sim):
    sg.tl.stagate(sim, n_epochs=5, hidden_dim=16, latent_dim=4, show_progress=False,
                  device="cpu")
    genes = list(sim.var_names[:3])
    got = sg.tl.morans_i(sim, genes)
    w = sp.csr_matrix(sim.obsp["spatial_connectivities"]).toarray()
    for g in genes:
        x = np.asarray(sim[:, g].X.toarray()).ravel().astype(np.float64)
        z = x - x.mean()
        expected = len(x) / w.sum() * (z @ w @ z) / (z @ z)
        assert got.loc[g, "measured"] == pytest.approx(expected, rel=1e-6)
    assert got["denoised"].notna().all()


def test_attention_by_domain_matches_a_loop(sim):
    sg.tl.stagate(sim, n_epochs=5, hidden_dim=16, latent_dim=4, show_progress=False,
                  device="cpu")
    sim.obs["domain"] = sim.obs["domain_truth"]
    per_spot, per_domain = sg.tl.attention_by_domain(sim)
    att = sp.csr_matrix(sim.obsp["STAGATE_attention"])
    labels = sim.obs["domain"].to_numpy()
    for i in (0, 17, 123):
        cols, vals = att[i].indices, att[i].data
        nb = cols != i
        same = labels[cols[nb]] == labels[i]
        assert per_spot.iloc[i].attention_same == pytest.approx(vals[nb][same].sum()
                                                                / vals[nb].sum())
        assert per_spot.iloc[i].expected_same == pytest.approx(same.mean())
        assert per_spot.iloc[i].self_attention == pytest.approx(vals[~nb].sum())
    border = per_spot[per_spot.border]
    assert per_domain["n_border"].sum() == len(border)


def test_thinning_splits_every_count(sim_raw):
    from stagate.tl._denoise import thin_counts

    a, b = thin_counts(sim_raw.X, 0.5, np.random.default_rng(0))
    np.testing.assert_array_equal((a + b).toarray(), sim_raw.X.toarray())
    share = a.sum() / sim_raw.X.sum()
    assert 0.48 < share < 0.52


def test_evaluate_denoising_reports_three_predictors(sim_raw):
    per_gene, summary = sg.tl.evaluate_denoising(sim_raw, n_epochs=20, hidden_dim=16,
                                                 latent_dim=4, show_progress=False,
                                                 device="cpu", n_top_genes=None)
    assert list(per_gene.columns) == ["measured", "smoothed", "denoised"]
    assert summary["n_genes"] > 100
    assert per_gene.dropna().abs().le(1).all().all()
    assert 0 <= summary["denoised_beats_smoothed"] <= 1
    with pytest.raises(sg.StagateInputError, match="between 0 and 1"):
        sg.tl.evaluate_denoising(sim_raw, fraction=1.0)


def test_genes_plot_says_when_a_gene_has_no_reconstruction(sim_raw):
    a = sim_raw.copy()
    sg.pp.preprocess(a, n_top_genes=50, subset=False)  # ReX only for the 50 model genes
    sg.pp.spatial_network(a)
    sg.tl.stagate(a, n_epochs=3, hidden_dim=8, latent_dim=3, show_progress=False,
                  device="cpu")
    other = a.var_names[~a.var["highly_variable"].to_numpy()][0]
    axes = sg.pl.genes(a, [other])
    texts = [t.get_text() for t in axes[1, 0].texts]
    assert any("not a model gene" in t for t in texts)
    assert len(axes[0, 0].figure.axes) == 3  # two maps, one colour bar (measured only)


def _layered_embedding(rng, n):
    a = AnnData(np.zeros((n, 1), dtype=np.float32))
    layer = rng.integers(0, 3, n)
    a.obsm["STAGATE"] = np.column_stack([layer + rng.normal(0, 0.2, n),
                                         rng.normal(0, 0.2, (n, 4))]).astype(np.float32)
    a.obs["domain"] = pd.Categorical(np.array(list("ABC"))[layer])
    return a


def test_umap_and_leiden_above_scanpy_approximate_size(rng):
    """Above 8,192 spots scanpy 1.11 searches neighbours with pynndescent and then fails on
    scipy >= 1.17's sparse arrays (AttributeError: getnnz); ours searches exactly up to
    100,000 spots: the same neighbours as brute force."""
    a = _layered_embedding(rng, 9000)
    sg.tl.embedding_umap(a)
    assert sg.tl.paga_path(a) in (["A", "B", "C"], ["C", "B", "A"])
    x = a.obsm["STAGATE"]
    conn = a.obsp["STAGATE_connectivities"].tocsr()
    for i in (0, 4321, 8999):  # every one of a spot's 14 nearest spots is connected to it
        nearest = np.argsort(((x - x[i]) ** 2).sum(1))[1:15]
        assert set(nearest) <= set(conn[i].indices)
    sg.tl.domains(a, 3, method="leiden", key_added="leiden")
    assert a.obs["leiden"].nunique() == 3


def test_approximate_neighbours_hand_scanpy_a_sparse_matrix(rng, monkeypatch):
    from stagate import _knn

    monkeypatch.setattr(_knn, "EXACT_UP_TO", 8192)  # pynndescent for 9,000 spots
    a = _layered_embedding(rng, 9000)
    _knn.neighbors(a, use_rep="STAGATE", n_neighbors=10)
    assert a.obsp["connectivities"].shape == (9000, 9000)
    assert np.median(np.diff(a.obsp["distances"].tocsr().indptr)) >= 9


def test_domains_take_the_colour_of_their_annotation_class():
    labels = np.repeat(["L1", "L2", "L3", "NA"], 10)
    domains = np.repeat(["3", "1", "2", "4"], 10)  # 4 holds only unannotated spots
    a = AnnData(np.zeros((40, 1), dtype=np.float32))
    a.obs["layer"] = pd.Categorical(labels)
    a.obs["domain"] = pd.Categorical(domains)
    a.uns["layer_colors"] = ["#000001", "#000002", "#000003", "#000004"]  # the user's: kept
    sg.pl.match_colors(a, reference="layer")
    assert a.uns["layer_colors"] == ["#000001", "#000002", "#000003", "#000004"]
    by_domain = dict(zip(a.obs["domain"].cat.categories, a.uns["domain_colors"], strict=True))
    assert by_domain["3"] == "#000001" and by_domain["1"] == "#000002"
    assert by_domain["2"] == "#000003"
    assert by_domain["4"] not in a.uns["layer_colors"]  # no class: a colour of its own
    import matplotlib

    matplotlib.use("Agg")
    a.obsm["spatial"] = np.column_stack([np.arange(40), np.zeros(40)]).astype(float)
    ax = sg.pl.domains(a)  # the map uses them
    drawn = {t.get_label(): matplotlib.colors.to_hex(t.get_facecolor()[0])
             for t in ax.collections}
    assert drawn["3"] == "#000001"

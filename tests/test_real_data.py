"""Behaviour on the shared real data (skipped, saying why, when ../shared/data is absent)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

import stagate as sg

from .conftest import data_file


def test_dlpfc_auto_radius_is_the_six_nearest_spots():
    a = ad.read_h5ad(data_file("dlpfc_151673"))
    sg.pp.spatial_network(a)
    n = np.diff(a.obsp["spatial_connectivities"].indptr)
    assert np.median(n) == 6 and n.max() == 6
    # the published radius (150 px) gives the same graph
    b = ad.read_h5ad(data_file("dlpfc_151673"))
    sg.pp.spatial_network(b, radius=150)
    assert (a.obsp["spatial_connectivities"] != b.obsp["spatial_connectivities"]).nnz == 0


def test_dlpfc_preprocessing_protocol():
    a = ad.read_h5ad(data_file("dlpfc_151676"))
    raw_x = a.X.copy()
    sg.pp.preprocess(a)
    assert a.n_vars == 3000 and a.var["highly_variable"].all()
    assert (a.layers["counts"] != raw_x[:, np.flatnonzero(np.isin(
        ad.read_h5ad(data_file("dlpfc_151676")).var_names, a.var_names))]).nnz == 0


def test_sections_never_linked():
    a = ad.read_h5ad(data_file("breast_cancer_st_4sections"))
    sg.pp.spatial_network(a, library_key="section")
    conn = a.obsp["spatial_connectivities"].tocoo()
    sec = a.obs["section"].astype(str).to_numpy()
    assert conn.nnz > 0 and (sec[conn.row] == sec[conn.col]).all()
    # without library_key the aligned sections would be linked to each other
    b = ad.read_h5ad(data_file("breast_cancer_st_4sections"))
    sg.pp.spatial_network(b, radius=a.uns["spatial_neighbors"]["params"]["radius"])
    conn = b.obsp["spatial_connectivities"].tocoo()
    assert (sec[conn.row] != sec[conn.col]).any()


def test_empty_cells_are_refused_with_the_fix():
    a = ad.read_h5ad(data_file("starmap_3d_cortex"))
    with pytest.raises(sg.StagateInputError, match="no counts at all.*filter_cells"):
        sg.pp.preprocess(a)


def test_starmap_domains_beat_expression_alone():
    a = ad.read_h5ad(data_file("starmap_visual_cortex"))
    a = a[a.obs["in_1207_benchmark_subset"].astype(bool).to_numpy()].copy()
    sg.pp.preprocess(a)
    sg.pp.spatial_network(a)
    sg.tl.stagate(a, n_epochs=300, random_state=0, show_progress=False, device="cpu")
    sg.tl.domains(a, 7)
    ari = sg.tl.score_domains(a, label_key="layer")["ari"]
    import scanpy as sc

    sc.pp.pca(a, n_comps=30, random_state=0)
    sg.tl.domains(a, 7, use_rep="X_pca", key_added="pca_domain")
    ari_pca = sg.tl.score_domains(a, label_key="layer", domain_key="pca_domain")["ari"]
    assert ari > 0.4 and ari > ari_pca + 0.1, (ari, ari_pca)


def test_starmap_with_coincident_centroids_runs_end_to_end(tmp_path, caplog):
    """Cells whose centroids coincide after rounding (as published imaging tables have) run,
    with a warning; the same table concatenated twice is refused in one line."""
    import json

    from click.testing import CliRunner

    from stagate.cli import cli

    a = ad.read_h5ad(data_file("starmap_visual_cortex"))
    a.obsm["spatial"] = np.round(a.obsm["spatial"] / 120) * 120  # 56 cells on 28 positions
    path = tmp_path / "rounded.h5ad"
    a.write_h5ad(path)
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["run", str(path), "--n-domains", "7", "--label-key",
                                   "layer", "--epochs", "20", "--quiet", "--no-umap",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "56 spots share their position" in caplog.text
    result = ad.read_h5ad(out / "stagate.h5ad")
    assert np.isfinite(result.obsm["STAGATE"]).all()
    assert np.isfinite(result.obsp["STAGATE_attention"].data).all()
    assert json.loads((out / "summary.json").read_text())["n_spots"] == a.n_obs

    twice = ad.concat([a, a], index_unique="-")  # new names, the same cells
    path2 = tmp_path / "twice.h5ad"
    twice.write_h5ad(path2)
    res = CliRunner().invoke(cli, ["run", str(path2), "--n-domains", "7", "--epochs", "2",
                                   "--quiet", "--no-umap", "--out", str(tmp_path / "o2")])
    assert res.exit_code == 1 and "repeat another spot exactly" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o2").exists()


def test_dlpfc_white_matter_markers_are_the_myelin_genes():
    """Markers of the annotated layers, every gene tested: white matter's top genes are the
    myelin genes (MBP, MOBP, PLP1 by their Ensembl IDs in this file), p adjusted by BH."""
    a = ad.read_h5ad(data_file("dlpfc_151673"))
    a = a[a.obs["layer"].notna().to_numpy()].copy()
    sg.pp.preprocess(a, subset=False)
    a.obs["domain"] = a.obs["layer"].astype(str).astype("category")
    table = sg.tl.markers(a)
    assert table.gene.nunique() == a.n_vars  # all genes, not only the 3,000 HVGs
    wm = table[(table.domain == "WM") & (table["rank"] <= 10)]
    myelin = {"ENSG00000197971", "ENSG00000168314", "ENSG00000123560"}  # MBP, MOBP, PLP1
    assert myelin <= set(wm.gene)
    assert (wm[wm.gene.isin(myelin)].p_value_adj < 1e-50).all()


def test_dlpfc_embedding_learns_the_layer_order():
    """PAGA over the annotated layers, on the neighbour graph of one default-recipe run's
    embedding, is the cortical order WM - L6 - ... - L1, as its heaviest path and as scanpy's
    spanning tree (each layer joined to the next and nothing else)."""
    a = ad.read_h5ad(data_file("dlpfc_151673"))
    sg.pp.preprocess(a)
    sg.pp.spatial_network(a)
    sg.tl.stagate(a, recipe="default", random_state=0, show_progress=False, device="cpu")
    a = a[~a.obs["layer"].astype(str).isin(["NA", "nan"]).to_numpy()].copy()
    sg.tl.embedding_umap(a, groupby=None)
    sg.tl.paga(a, "layer")
    order = ["WM", "L6", "L5", "L4", "L3", "L2", "L1"]
    assert sg.tl.paga_path(a, paga_key="STAGATE_paga_layer") in (order, order[::-1])
    record = a.uns["STAGATE_paga_layer"]
    tree = record["connectivities_tree"].toarray()
    edges = {frozenset((record["names"][i], record["names"][j]))
             for i, j in zip(*np.nonzero(tree + tree.T), strict=True)}
    assert edges == {frozenset(p) for p in zip(order, order[1:], strict=False)}

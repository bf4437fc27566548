"""Graphs against brute force; sections kept apart; the automatic radius; bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy.spatial.distance import cdist

import stagate as sg
from stagate.datasets._simulate import _hex_tissue


def make(coords, **obs) -> AnnData:
    a = AnnData(np.ones((len(coords), 3), dtype=np.float32),
                obs=pd.DataFrame(obs, index=[f"s{i}" for i in range(len(coords))]))
    a.obsm["spatial"] = np.asarray(coords, dtype=float)
    return a


def test_radius_graph_equals_brute_force(rng):
    coords = rng.uniform(0, 100, (300, 2))
    a = make(coords)
    sg.pp.spatial_network(a, radius=9.0)
    d = cdist(coords, coords)
    expected = (d < 9.0) & ~np.eye(300, dtype=bool)
    conn = a.obsp["spatial_connectivities"].toarray() > 0
    np.testing.assert_array_equal(conn, expected)
    dist = a.obsp["spatial_distances"].toarray()
    np.testing.assert_allclose(dist[expected], d[expected])


def test_knn_graph_equals_brute_force(rng):
    coords = rng.uniform(0, 100, (200, 2))
    a = make(coords)
    sg.pp.spatial_network(a, n_neighbors=6)
    d = cdist(coords, coords)
    np.fill_diagonal(d, np.inf)
    expected = np.argsort(d, axis=1)[:, :6]
    conn = a.obsp["spatial_connectivities"]
    assert (np.diff(conn.indptr) == 6).all()
    for i in range(200):
        assert set(conn[i].indices) == set(expected[i])


def test_no_edges_between_sections(rng):
    coords = rng.uniform(0, 50, (120, 2))
    # two sections on top of each other: only library_key keeps them apart
    a = make(np.vstack([coords, coords + 0.01]), section=["a"] * 120 + ["b"] * 120)
    sg.pp.spatial_network(a, radius=8.0, library_key="section")
    conn = a.obsp["spatial_connectivities"].toarray()
    assert conn[:120, 120:].sum() == 0 and conn[120:, :120].sum() == 0
    single = make(coords)
    sg.pp.spatial_network(single, radius=8.0)
    np.testing.assert_array_equal(conn[:120, :120], single.obsp["spatial_connectivities"].toarray())


def test_auto_radius_picks_six_nearest_on_hexagonal_grid():
    coords = _hex_tissue(2000) * 1.37 + np.random.default_rng(0).normal(0, 0.5, (2000, 2))
    a = make(coords)
    sg.pp.spatial_network(a)
    n = np.diff(a.obsp["spatial_connectivities"].indptr)
    assert np.median(n) == 6 and n.max() == 6
    r = a.uns["spatial_neighbors"]["params"]["radius"]
    assert 139 < r < 230


def test_auto_radius_hits_target_on_irregular_positions(rng):
    a = make(rng.uniform(0, 1000, (3000, 2)))
    sg.pp.spatial_network(a, target_neighbors=10)
    assert abs(a.uns["spatial_neighbors"]["stats"]["mean_neighbors"] - 10) < 1


def test_isolated_spots_are_reported_not_fatal(caplog):
    coords = np.vstack([np.column_stack([np.arange(20.0), np.zeros(20)]), [[500.0, 500.0]]])
    a = make(coords)
    sg.set_verbosity("INFO")
    sg.pp.spatial_network(a, radius=1.5)
    assert a.uns["spatial_neighbors"]["stats"]["n_isolated"] == 1
    assert "isolated" in caplog.text


def test_squidpy_keys_and_histogram(sim):
    assert {"spatial_connectivities", "spatial_distances"} <= set(sim.obsp)
    stats = sim.uns["spatial_neighbors"]["stats"]
    assert stats["histogram"].sum() == sim.n_obs
    ax = sg.pl.neighbors_histogram(sim)
    assert ax.get_xlabel() == "neighbours per spot"


@pytest.mark.parametrize(
    ("change", "kwargs", "match"),
    [
        ("drop", {}, "No spot coordinates"),
        ("nan", {}, "NaN or infinite coordinates"),
        ("dup", {}, "repeat another spot exactly"),
        (None, {"radius": 0.01}, "every spot is isolated"),
        (None, {"radius": 5.0, "n_neighbors": 3}, "exactly one of"),
    ],
)
def test_bad_input_is_named(rng, change, kwargs, match):
    coords = rng.uniform(0, 100, (50, 2))
    a = make(coords)
    if change == "drop":
        del a.obsm["spatial"]
    elif change == "nan":
        a.obsm["spatial"][3, 0] = np.nan
    elif change == "dup":
        a.obsm["spatial"][4] = a.obsm["spatial"][5]
    with pytest.raises(ValueError, match=match):
        sg.pp.spatial_network(a, **kwargs)


def coincident(rng, n=200, n_shared=30):
    """Distinct cells (their own counts) of which `n_shared` sit exactly on another's centroid."""
    coords = rng.uniform(0, 100, (n, 2))
    coords[:n_shared] = coords[n_shared:2 * n_shared]
    a = make(coords)
    a.X = rng.poisson(3, (n, 3)).astype(np.float32) + np.arange(n)[:, None]  # all different
    return a


def test_coincident_centroids_of_different_cells_are_neighbours_at_distance_zero(rng, caplog):
    a = coincident(rng)
    sg.set_verbosity("INFO")
    sg.pp.spatial_network(a, radius=8.0)
    assert "60 spots share their position" in caplog.text
    conn, dist = a.obsp["spatial_connectivities"], a.obsp["spatial_distances"]
    for i in range(30):
        assert conn[i, i + 30] == 1 and conn[i + 30, i] == 1
    assert (conn.diagonal() == 0).all()
    expected = (cdist(a.obsm["spatial"], a.obsm["spatial"]) < 8.0) & ~np.eye(200, dtype=bool)
    np.testing.assert_array_equal(conn.toarray() > 0, expected)
    assert np.isfinite(dist.data).all() and (dist.data >= 0).all()
    sg.pp.spatial_network(a)  # automatic radius: zero distances are no lattice shell
    assert a.uns["spatial_neighbors"]["params"]["radius"] > 1


def test_knn_with_coincident_centroids_never_lists_a_spot_as_its_own_neighbour(rng):
    coords = np.repeat(rng.uniform(0, 100, (20, 2)), 5, axis=0)  # 5 cells per centroid
    a = make(coords)
    a.X = rng.random((100, 3)).astype(np.float32)
    sg.pp.spatial_network(a, n_neighbors=6)
    conn = a.obsp["spatial_connectivities"]
    assert (np.diff(conn.indptr) == 6).all() and (conn.diagonal() == 0).all()
    d = cdist(coords, coords)
    for i in range(100):  # the 4 co-located cells first, then 2 of the next nearest
        nbrs = conn[i].indices
        assert set(np.flatnonzero(d[i] == 0)) - {i} <= set(nbrs)
        assert np.sort(d[i, nbrs]).tolist() == np.sort(np.delete(d[i], i))[:6].tolist()


def test_a_table_concatenated_twice_is_refused(rng):
    a = coincident(rng, n_shared=0)
    twice = make(np.vstack([a.obsm["spatial"]] * 2))
    twice.X = np.vstack([a.X, a.X])
    with pytest.raises(ValueError, match="200 spot.*same position and the same expression"):
        sg.pp.spatial_network(twice, radius=8.0)


@pytest.mark.filterwarnings("ignore:Observation names are not unique")
def test_duplicated_spot_names_are_named(rng):
    a = make(rng.uniform(0, 100, (20, 2)))
    a.obs_names = ["s0"] * 2 + list(a.obs_names[2:])
    with pytest.raises(ValueError, match="Duplicated spot names.*obs_names_make_unique"):
        sg.pp.spatial_network(a, radius=30.0)

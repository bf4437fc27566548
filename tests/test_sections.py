"""Several sections: the 3-D network against brute force, alignment, stacking, joint training,
mixing and agreement scores, and the command line with several inputs."""

from __future__ import annotations

import json

import anndata
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy.spatial.distance import cdist

import stagate as sg
from stagate._validation import StagateInputError
from stagate.cli import cli
from stagate.train._minibatch import MinibatchPlan

from .conftest import data_file


def stack(coords_per_section, names=None) -> anndata.AnnData:
    names = names or [f"s{k}" for k in range(len(coords_per_section))]
    coords = np.vstack(coords_per_section)
    section = np.concatenate([[n] * len(c) for n, c in zip(names, coords_per_section,
                                                            strict=True)])
    a = anndata.AnnData(np.ones((len(coords), 3), np.float32),
                        obs=pd.DataFrame({"section": section},
                                         index=[f"c{i}" for i in range(len(coords))]))
    a.obsm["spatial"] = coords
    return a


def rotate(xy, degrees, shift):
    th = np.radians(degrees)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    return xy @ rot.T + shift


# -- the 3-D network -----------------------------------------------------------------------


def test_3d_network_equals_brute_force(rng):
    parts = [rng.uniform(0, 40, (90, 2)) for _ in range(3)]
    a = stack(parts, names=["a", "b", "c"])
    sg.pp.spatial_network(a, radius=6.0, library_key="section", between_radius=4.0,
                          key_added="spatial_3d")
    conn = a.obsp["spatial_3d_connectivities"].toarray() > 0
    dist = a.obsp["spatial_3d_distances"].toarray()
    d = cdist(a.obsm["spatial"], a.obsm["spatial"])
    sec = a.obs["section"].map({"a": 0, "b": 1, "c": 2}).to_numpy()
    same = sec[:, None] == sec[None, :]
    adjacent = np.abs(sec[:, None] - sec[None, :]) == 1
    expected = (same & (d < 6.0) & ~np.eye(len(d), dtype=bool)) | (adjacent & (d < 4.0))
    np.testing.assert_array_equal(conn, expected)
    np.testing.assert_allclose(dist[expected], d[expected])
    assert not conn[sec == 0][:, sec == 2].any()  # only adjacent sections are joined
    record = a.uns["spatial_3d_neighbors"]
    assert record["edges"]["within"] == int((expected & same).sum())
    assert record["edges"]["between"] == int((expected & ~same).sum())
    pairs = record["edges"]["between_pairs"]
    assert list(pairs["section_a"]) == ["a", "b"] and list(pairs["section_b"]) == ["b", "c"]
    assert pairs["n_edges"].sum() == record["edges"]["between"]
    mask = sg.pp.between_section_mask(a, "spatial_3d")
    rows = np.repeat(np.arange(len(d)), np.diff(a.obsp["spatial_3d_connectivities"].indptr))
    cols = a.obsp["spatial_3d_connectivities"].indices
    np.testing.assert_array_equal(mask, sec[rows] != sec[cols])


def test_section_order_decides_which_sections_are_adjacent(rng):
    parts = [rng.uniform(0, 30, (60, 2)) for _ in range(3)]
    a = stack(parts, names=["a", "b", "c"])
    sg.pp.spatial_network(a, radius=5.0, library_key="section", between_radius=3.0,
                          section_order=["b", "a", "c"])
    conn = a.obsp["spatial_connectivities"].toarray() > 0
    sec = a.obs["section"].to_numpy()
    assert not conn[sec == "b"][:, sec == "c"].any()  # b-c are not adjacent in b, a, c
    assert conn[sec == "a"][:, sec == "c"].any() and conn[sec == "b"][:, sec == "a"].any()


def test_natural_section_order(rng):
    parts = [rng.uniform(0, 30, (40, 2)) for _ in range(3)]
    a = stack(parts, names=["10", "2", "1"])
    cats = sg.pp._sections.section_categories(a, "section")
    assert list(cats.categories) == ["1", "2", "10"]


def test_auto_between_radius_is_half_the_within_radius(rng):
    a = stack([rng.uniform(0, 30, (80, 2)), rng.uniform(0, 30, (80, 2))])
    sg.pp.spatial_network(a, library_key="section", between_radius="auto")
    params = a.uns["spatial_neighbors"]["params"]
    assert params["between_radius"] == pytest.approx(0.5 * params["radius"])
    sg.pp.spatial_network(a, library_key="section", between_radius="auto", n_neighbors=5)
    within = ~sg.pp.between_section_mask(a)
    reach = np.quantile(a.obsp["spatial_distances"].data[within], 0.95)
    assert a.uns["spatial_neighbors"]["params"]["between_radius"] == pytest.approx(0.5 * reach)


@pytest.mark.parametrize("kwds, match", [
    ({"section_order": ["a", "x"]}, "not in adata.obs"),
    ({"section_order": ["a"]}, "every section"),
    ({"library_key": None}, "pass library_key"),
    ({"between_radius": -1.0}, "must be > 0"),
])
def test_3d_network_bad_input(rng, kwds, match):
    a = stack([rng.uniform(0, 30, (30, 2)), rng.uniform(0, 30, (30, 2))], names=["a", "b"])
    args = {"radius": 5.0, "library_key": "section", "between_radius": 3.0} | kwds
    with pytest.raises(StagateInputError, match=match):
        sg.pp.spatial_network(a, **args)


def test_single_section_3d_and_unreachable_sections_are_refused(rng):
    a = stack([rng.uniform(0, 30, (30, 2))], names=["only"])
    with pytest.raises(StagateInputError, match="at least two sections"):
        sg.pp.spatial_network(a, radius=5.0, library_key="section", between_radius=3.0)
    far = stack([rng.uniform(0, 30, (30, 2)), rng.uniform(1000, 1030, (30, 2))],
                names=["a", "b"])
    with pytest.raises(StagateInputError, match=r"'a' and 'b'.*align_sections.*between_radius"):
        sg.pp.spatial_network(far, radius=5.0, library_key="section", between_radius=3.0)


# -- alignment --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rotated_pair():
    """One simulated section and a copy rotated by 35 degrees, shifted, jittered by 10 um,
    with 10% of its spots dropped (new counts drawn: the same tissue, another slide)."""
    a = sg.datasets.simulate(2500, n_genes=200, n_domains=5, random_state=3)
    rng = np.random.default_rng(4)
    b = a.copy()
    b.obsm["spatial"] = rotate(a.obsm["spatial"], 35, np.array([900.0, -400.0])) \
        + rng.normal(0, 10, a.obsm["spatial"].shape)
    keep = rng.random(a.n_obs) > 0.1
    b = b[keep].copy()
    both = sg.io.concat_sections({"A": a, "B": b})
    sg.pp.preprocess(both, n_top_genes=None)
    return both, a.obsm["spatial"][keep]


def test_alignment_recovers_a_known_rigid_transform(rotated_pair):
    both, truth = rotated_pair
    both = both.copy()
    before = both.obsm["spatial"].copy()
    sg.pp.align_sections(both, "section")
    np.testing.assert_array_equal(both.obsm["spatial"], before)  # input coordinates untouched
    m = both.uns["spatial_aligned"]["transforms"]["B"]
    angle = np.degrees(np.arctan2(m[1, 0], m[0, 0]))
    assert angle == pytest.approx(-35, abs=0.5)
    moved = both.obsm["spatial_aligned"][both.obs["section"].to_numpy() == "B"]
    rms = np.sqrt(((moved - truth) ** 2).sum(axis=1).mean())
    assert rms < 25  # the jitter alone is 10 * sqrt(2) = 14 um; the spot pitch is 100 um
    np.testing.assert_array_equal(both.obsm["spatial_aligned"][both.obs["section"] == "A"],
                                  before[both.obs["section"].to_numpy() == "A"])


def test_alignment_finds_a_mirrored_section_only_when_allowed(rotated_pair):
    both, truth = rotated_pair
    both = both.copy()
    is_b = both.obs["section"].to_numpy() == "B"
    both.obsm["spatial"][is_b, 0] *= -1  # mounted upside down
    sg.pp.align_sections(both, "section", allow_reflection=True)
    m = both.uns["spatial_aligned"]["transforms"]["B"]
    assert np.linalg.det(m[:2, :2]) < 0
    rms = np.sqrt(((both.obsm["spatial_aligned"][is_b] - truth) ** 2).sum(axis=1).mean())
    assert rms < 25


def test_alignment_bad_input(rotated_pair):
    both, _ = rotated_pair
    one = both[both.obs["section"] == "A"].copy()
    with pytest.raises(StagateInputError, match="single section"):
        sg.pp.align_sections(one, "section")
    with pytest.raises(StagateInputError, match="not a column"):
        sg.pp.align_sections(both.copy(), "nope")


def test_dlpfc_slides_align_layer_on_layer():
    """Two DLPFC slides of one donor: after alignment, nearest spots across the slides share
    their annotated layer far more often than chance."""
    a = anndata.read_h5ad(data_file("dlpfc_151673"))
    b = anndata.read_h5ad(data_file("dlpfc_151676"))
    both = sg.io.concat_sections({"151673": a, "151676": b})
    sg.pp.preprocess(both, batch_key="section")
    sg.pp.align_sections(both, "section")
    score = sg.tl.section_agreement(both, "layer", spatial_key="spatial_aligned")
    assert score["pairs"][0]["n_pairs"] > 2500
    assert score["mean_ari"] > 0.4


# -- stacking and joint training ----------------------------------------------------------


def test_concat_sections_keeps_shared_genes_and_names_spots(sim_raw):
    a = sim_raw[:, :150].copy()
    b = sim_raw[:, 50:].copy()
    both = sg.io.concat_sections({"x": a, "y": b})
    assert both.n_vars == 100 and both.n_obs == a.n_obs + b.n_obs
    assert both.obs_names.is_unique and both.obs_names[0].endswith("-x")
    assert list(both.obs["section"].cat.categories) == ["x", "y"]
    assert list(both.uns["stagate_sections"]["genes_lost"]) == [50, 50]
    b.var_names = [f"other{i}" for i in range(b.n_vars)]
    with pytest.raises(StagateInputError, match="share no gene"):
        sg.io.concat_sections({"x": a, "y": b})
    a.uns["stagate_input"] = {"unit": "um"}
    c = sim_raw.copy()
    c.uns["stagate_input"] = {"unit": "px"}
    with pytest.raises(StagateInputError, match="different units"):
        sg.io.concat_sections({"x": a, "y": c})


def test_joint_hvgs_with_batch_key(sim_raw):
    both = sg.io.concat_sections({"x": sim_raw, "y": sim_raw})
    sg.pp.preprocess(both, n_top_genes=50, batch_key="section")
    assert both.n_vars == 50 and "highly_variable_nbatches" in both.var
    with pytest.raises(StagateInputError, match="batch_key"):
        sg.pp.preprocess(sg.io.concat_sections({"x": sim_raw}), n_top_genes=50,
                         batch_key="nope")


def test_minibatch_tiles_never_mix_sections(rng):
    xy = rng.uniform(0, 50, (300, 2))
    a = stack([xy, xy + 0.01])  # the same x-y range twice
    sg.pp.spatial_network(a, radius=6.0, library_key="section", between_radius=3.0)
    codes = a.obs["section"].astype("category").cat.codes.to_numpy()
    plan = MinibatchPlan(a.obsp["spatial_connectivities"], np.ones((600, 3), np.float32),
                         batch_size=64, coordinates=a.obsm["spatial"], sections=codes)
    seen = np.concatenate(plan.chunks)
    assert np.array_equal(np.sort(seen), np.arange(600))
    for tile in plan.chunks:
        assert len(set(codes[tile])) == 1 and tile.size <= 64


def test_training_reads_the_graph_named_by_its_record(sim):
    sim.obsp["my_graph_connectivities"] = sim.obsp["spatial_connectivities"]
    sim.uns["joint_neighbors"] = {"connectivities_key": "my_graph_connectivities",
                                  "distances_key": "spatial_distances"}
    del sim.obsp["spatial_connectivities"]
    sg.tl.stagate(sim, n_epochs=3, graph_key="joint", show_progress=False)
    assert sim.obsm["STAGATE"].shape == (sim.n_obs, 30)
    sg.tl.domains(sim, 3)
    sg.tl.refine_domains(sim, graph_key="joint")
    with pytest.raises(StagateInputError, match="spatial_network"):
        sg.tl.stagate(sim, n_epochs=1, graph_key="spatial", show_progress=False)


# -- mixing and agreement ------------------------------------------------------------------


def test_mixing_scores_separated_and_mixed_sections(rng):
    a = stack([rng.uniform(0, 10, (200, 2)), rng.uniform(0, 10, (200, 2))])
    a.obsm["STAGATE"] = np.vstack([rng.normal(0, 1, (200, 5)), rng.normal(50, 1, (200, 5))])
    assert sg.tl.section_mixing(a)["ilisi"] < 0.05
    a.obsm["STAGATE"] = rng.normal(0, 1, (400, 5))
    mixed = sg.tl.section_mixing(a, domain_key="section")
    assert mixed["ilisi"] > 0.8 and set(mixed["per_domain"]) == {"s0", "s1"}
    assert a.obs["section_ilisi"].between(0, 1.0001).all()


def test_agreement_is_one_for_the_same_domains_at_the_same_places(rng):
    xy = rng.uniform(0, 30, (200, 2))
    a = stack([xy, xy + 0.1])
    dom = (xy[:, 0] > 15).astype(int)
    a.obs["domain"] = np.concatenate([dom, 1 - dom]).astype(str)  # names swapped: same map
    assert sg.tl.section_agreement(a)["mean_ari"] == pytest.approx(1.0)
    a.obs["domain"] = rng.integers(0, 2, 400).astype(str)
    assert abs(sg.tl.section_agreement(a)["mean_ari"]) < 0.1


# -- the command line ------------------------------------------------------------------------


FAST = ["--epochs", "10", "--quiet", "--no-umap", "--n-domains", "4"]


@pytest.fixture
def two_slides(rotated_pair, tmp_path):
    both, _ = rotated_pair
    paths = []
    for name in ("slideA", "slideB"):
        part = both[both.obs["section"] == name[-1]].copy()
        part = anndata.AnnData(part.layers["counts"], obs=part.obs[["domain_truth"]],
                               obsm={"spatial": part.obsm["spatial"]})
        part.obs_names = [n.rsplit("-", 1)[0] for n in part.obs_names]  # shared barcodes
        paths.append(tmp_path / f"{name}.h5ad")
        part.write_h5ad(paths[-1])
    return paths


@pytest.mark.parametrize("mode", ["joint3d", "joint", "separate"])
def test_cli_runs_several_sections(two_slides, tmp_path, mode):
    out = tmp_path / mode
    res = CliRunner().invoke(cli, ["run", *map(str, two_slides), "--sections", mode, "--align",
                                   "--label-key", "domain_truth", "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    sections = summary["sections"]
    assert sections["order"] == ["slideA", "slideB"] and sections["mode"] == mode
    assert set(summary["per_section"]) == {"slideA", "slideB"}
    assert 0 <= sections["mixing"]["ilisi"] <= 1 and "mean_ari" in sections["agreement"]
    assert ("ari" in summary) == (mode != "separate")
    if mode == "joint3d":
        assert sections["edges"]["between"] > 0
        assert summary["trained_on_graph"] == "spatial_3d"
    result = anndata.read_h5ad(out / "stagate.h5ad")
    assert result.obs["section"].tolist().count("slideB") == sections["n_spots"]["slideB"]
    assert "spatial_aligned" in result.obsm
    for f in ("domains.png", "domains_3d.png"):
        assert (out / f).stat().st_size > 0


@pytest.mark.parametrize("args, match", [
    (["--sections", "joint3d"], "needs several sections"),
    (["--align"], "needs several sections"),
    (["--section-key", "domain_truth", "--section-order", "L1,nope"], "not in adata.obs"),
    (["--between-radius", "-3"], "--between-radius must be"),
])
def test_cli_section_errors_are_one_line(two_slides, tmp_path, args, match):
    out = tmp_path / "o"
    res = CliRunner().invoke(cli, ["run", str(two_slides[0]), *args, "--out", str(out), *FAST])
    assert res.exit_code != 0 and match in res.output, res.output
    assert "Traceback" not in res.output and not out.exists()


def test_domain_panels_one_per_section_each_over_its_own_image(rng):
    import matplotlib.pyplot as plt

    a = stack([rng.uniform(0, 900, (50, 2)) for _ in range(3)], names=["a", "b", "c"])
    a.obs["domain"] = pd.Categorical(rng.integers(0, 3, 150).astype(str))
    a.uns["spatial"] = {n: {"images": {"hires": np.full((100, 100, 3), k / 3)},
                            "scalefactors": {"tissue_hires_scalef": 0.1}}
                        for k, n in enumerate(["a", "c"])}  # b has no image
    axes = sg.pl.domains(a, section_key="section")
    visible = [ax for ax in axes.flat if ax.get_visible()]
    assert [ax.get_title().split()[0] for ax in visible] == ["a", "b", "c"]
    assert [len(ax.images) for ax in visible] == [1, 0, 1]
    assert sum(len(c.get_offsets()) for c in visible[1].collections) == 50
    ax3d = sg.pl.domains_3d(a, section_key="section")
    assert [t.get_text() for t in ax3d.get_zticklabels()] == ["a", "b", "c"]
    plt.close("all")


def test_cli_refuses_sections_in_different_units(sim_raw, tmp_path):
    paths = []
    for unit in ("um", "px"):
        a = sim_raw.copy()
        a.uns["stagate_input"] = {"unit": unit}  # as a file written by one of our readers
        paths.append(tmp_path / f"{unit}.h5ad")
        a.write_h5ad(paths[-1])
    out = tmp_path / "o"
    res = CliRunner().invoke(cli, ["run", *map(str, paths), "--out", str(out), *FAST])
    assert res.exit_code == 1 and "different units" in res.output, res.output
    assert not out.exists()

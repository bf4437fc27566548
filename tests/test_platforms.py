"""Visium HD, Xenium, MERSCOPE, CosMx: folders written here from the vendors' published
schemas, read back (counts, names, coordinates, units, controls left out), and bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import stagate as sg
from stagate.cli import cli

from .test_io import write_10x_h5

pytest.importorskip("pyarrow")


def _counts(n, g, seed=0):
    rng = np.random.default_rng(seed)
    return rng.poisson(2.0, (n, g)).astype(np.int32)


# -- Visium HD --------------------------------------------------------------------------------
def make_visium_hd(outs, sizes=(2, 8, 16), n_side=10):
    for size in sizes:
        folder = outs / "binned_outputs" / f"square_{size:03d}um"
        (folder / "spatial").mkdir(parents=True)
        n = n_side * n_side
        row, col = np.divmod(np.arange(n), n_side)
        barcodes = [f"s_{size:03d}um_{r:05d}_{c:05d}-1" for r, c in zip(row, col, strict=True)]
        genes = [f"Gene{i}" for i in range(30)]
        write_10x_h5(folder / "filtered_feature_bc_matrix.h5", _counts(n, 30, size), barcodes,
                     genes, ["Gene Expression"] * 30)
        um_per_px = 0.2737
        px = size / um_per_px
        pd.DataFrame({"barcode": barcodes, "in_tissue": 1, "array_row": row, "array_col": col,
                      "pxl_row_in_fullres": 500 + row * px,
                      "pxl_col_in_fullres": 800 + col * px}).to_parquet(
            folder / "spatial" / "tissue_positions.parquet")
        (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps({
            "spot_diameter_fullres": px, "bin_size_um": float(size),
            "microns_per_pixel": um_per_px, "tissue_hires_scalef": 0.1,
            "tissue_lowres_scalef": 0.01}))
        from matplotlib.image import imsave

        imsave(folder / "spatial" / "tissue_hires_image.png", np.zeros((60, 80, 3)))
    return outs


def test_visium_hd_bins_in_micrometres(tmp_path):
    outs = make_visium_hd(tmp_path / "outs")
    assert sg.io.detect_format(outs) == "visium_hd"
    a = sg.io.read(outs)  # default 8 um
    assert a.shape == (100, 30)
    assert a.uns["stagate_input"]["unit"] == "um"
    assert a.uns["stagate_input"]["bin_size_um"] == 8
    xy = a.obsm["spatial"]
    gaps = np.diff(np.unique(np.round(xy[:, 0], 6)))
    np.testing.assert_allclose(gaps, 8.0, rtol=1e-9)  # neighbouring bins 8 um apart
    two = sg.io.read(outs, bin_size=2)
    np.testing.assert_allclose(np.diff(np.unique(np.round(two.obsm["spatial"][:, 1], 6))), 2.0)
    one_folder = sg.io.read(outs / "binned_outputs" / "square_016um")
    assert one_folder.uns["stagate_input"]["bin_size_um"] == 16
    # the H&E image, with a scale factor from micrometres (the coordinates) to its pixels
    (lib,) = a.uns["spatial"].values()
    assert lib["images"]["hires"].shape[:2] == (60, 80)
    assert lib["scalefactors"]["tissue_hires_scalef"] == pytest.approx(0.1 / 0.2737)


def test_visium_hd_bad_bin_size_and_missing_folder(tmp_path):
    outs = make_visium_hd(tmp_path / "outs", sizes=(8, 16))
    with pytest.raises(sg.StagateInputError, match="no 2 um bins.*square_008um"):
        sg.io.read(outs, bin_size=2)
    with pytest.raises(sg.StagateInputError, match="not a Visium HD bin size"):
        sg.io.read(outs, bin_size=5)


# -- Xenium -----------------------------------------------------------------------------------
def make_xenium(root, cells_format="parquet", drop_cell=False):
    root.mkdir()
    n = 80
    names = [f"Gene{i}" for i in range(20)] + ["NegControlProbe_00042", "BLANK_0006",
                                               "NegControlCodeword_0500",
                                               "UnassignedCodeword_0001"]
    types = ["Gene Expression"] * 20 + ["Negative Control Probe", "Blank Codeword",
                                        "Negative Control Codeword", "Unassigned Codeword"]
    ids = [f"aaaa{i:04d}-1" for i in range(n)]
    write_10x_h5(root / "cell_feature_matrix.h5", _counts(n, len(names)), ids, names, types)
    rng = np.random.default_rng(1)
    cells = pd.DataFrame({"cell_id": ids, "x_centroid": rng.uniform(0, 500, n),
                          "y_centroid": rng.uniform(0, 300, n), "transcript_counts": 50,
                          "cell_area": 80.0})
    if drop_cell:
        cells = cells.iloc[1:]
    if cells_format == "parquet":
        cells.to_parquet(root / "cells.parquet")
    elif cells_format == "csv":
        cells.to_csv(root / "cells.csv.gz", index=False)
    return root, cells


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_xenium_centroids_and_no_controls(tmp_path, fmt):
    root, cells = make_xenium(tmp_path / "xenium", fmt)
    assert sg.io.detect_format(root) == "xenium"
    a = sg.io.read(root)
    assert a.n_obs == 80 and list(a.var_names) == [f"Gene{i}" for i in range(20)]
    np.testing.assert_allclose(a.obsm["spatial"], cells[["x_centroid", "y_centroid"]])
    assert a.uns["stagate_input"]["format"] == "xenium"
    assert a.uns["stagate_input"]["unit"] == "um"


def test_xenium_bad_bundles(tmp_path):
    root, _ = make_xenium(tmp_path / "nocells", cells_format="none")
    (root / "experiment.xenium").write_text("{}")
    with pytest.raises(sg.StagateInputError, match=r"missing the cells table"):
        sg.io.read(root)
    root, _ = make_xenium(tmp_path / "mismatch", drop_cell=True)
    with pytest.raises(sg.StagateInputError, match="1 of 80 cells .* not listed"):
        sg.io.read(root)


# -- MERSCOPE ---------------------------------------------------------------------------------
def make_merscope(root, extra_meta_cell=False):
    root.mkdir()
    n = 60
    ids = [str(10**15 + i) for i in range(n)]
    genes = [f"Gene{i}" for i in range(15)] + ["Blank-1", "Blank-2"]
    table = pd.DataFrame(_counts(n, len(genes), 2), columns=genes, index=pd.Index(ids,
                                                                                  name="cell"))
    table.to_csv(root / "cell_by_gene.csv")
    rng = np.random.default_rng(3)
    meta = pd.DataFrame({"EntityID": ids, "fov": 0, "volume": 900.0,
                         "center_x": rng.uniform(0, 1000, n), "center_y": rng.uniform(0, 800, n)})
    meta.to_csv(root / "cell_metadata.csv", index=False)
    return root, meta


def test_merscope_reads_centres_and_drops_blanks(tmp_path):
    root, meta = make_merscope(tmp_path / "merscope")
    assert sg.io.detect_format(root) == "merscope"
    a = sg.io.read(root)
    assert a.n_obs == 60 and a.n_vars == 15 and not any(v.startswith("Blank")
                                                        for v in a.var_names)
    np.testing.assert_allclose(a.obsm["spatial"], meta[["center_x", "center_y"]])
    assert a.uns["stagate_input"]["unit"] == "um"


# -- CosMx ------------------------------------------------------------------------------------
def make_cosmx(root, drop_meta=False):
    root.mkdir()
    rows = [(fov, cid) for fov in (1, 2) for cid in range(0, 31)]  # cell_ID 0: no cell
    genes = [f"Gene{i}" for i in range(12)] + ["NegPrb1", "NegPrb2", "SystemControl1"]
    expr = pd.DataFrame(_counts(len(rows), len(genes), 4), columns=genes)
    expr.insert(0, "cell_ID", [c for _, c in rows])
    expr.insert(0, "fov", [f for f, _ in rows])
    expr.to_csv(root / "Run5_S1_exprMat_file.csv", index=False)
    cells = [(f, c) for f, c in rows if c != 0]
    if drop_meta:
        cells = cells[1:]
    rng = np.random.default_rng(5)
    meta = pd.DataFrame({"fov": [f for f, _ in cells], "cell_ID": [c for _, c in cells],
                         "CenterX_global_px": rng.uniform(0, 8000, len(cells)),
                         "CenterY_global_px": rng.uniform(0, 8000, len(cells))})
    meta.to_csv(root / "Run5_S1_metadata_file.csv", index=False)
    return root, meta


def test_cosmx_cells_probes_and_pixels(tmp_path):
    root, meta = make_cosmx(tmp_path / "cosmx")
    assert sg.io.detect_format(root) == "cosmx"
    a = sg.io.read(root)
    assert a.n_obs == 60 and a.n_vars == 12  # cell_ID 0 and the control probes left out
    assert a.obs_names[0] == "1_1"
    np.testing.assert_allclose(a.obsm["spatial"], meta[["CenterX_global_px",
                                                        "CenterY_global_px"]])
    assert a.uns["stagate_input"]["um_per_unit"] == pytest.approx(0.12028)
    root, _ = make_cosmx(tmp_path / "bad", drop_meta=True)
    with pytest.raises(sg.StagateInputError, match="not listed here"):
        sg.io.read(root)


def test_cli_runs_a_xenium_bundle(tmp_path):
    root, _ = make_xenium(tmp_path / "xenium")
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["run", str(root), "--n-domains", "3", "--epochs", "5",
                                   "--runs", "1", "--quiet", "--no-umap", "--no-report",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input"]["format"] == "xenium"
    assert summary["input"]["coordinate_unit"] == "um"


def test_zarr_input_says_what_to_do(tmp_path):
    store = tmp_path / "data.zarr"
    store.mkdir()
    with pytest.raises(sg.StagateInputError, match="SpatialData"):
        sg.io.read(store)


# spatialdata and its stack (ome-zarr, dask, xarray) warn about their own deprecations
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                            "ignore::UserWarning", "ignore::RuntimeWarning")
def test_spatialdata_store_in_and_results_out(tmp_path, sim_raw):
    sd = pytest.importorskip("spatialdata", reason="optional extra: pip install "
                                                   "'stagate[spatialdata]'")
    import geopandas as gpd
    from shapely.geometry import Point
    from spatialdata.models import ShapesModel, TableModel

    xy = np.asarray(sim_raw.obsm["spatial"])
    circles = gpd.GeoDataFrame({"radius": np.full(len(xy), 27.5)},
                               geometry=[Point(x, y) for x, y in xy],
                               index=pd.RangeIndex(len(xy)))
    table = sim_raw.copy()
    del table.obsm["spatial"]  # positions come from the shapes the table annotates
    table.uns.pop("stagate_input", None)
    table.uns.pop("simulation", None)
    table.obs["spot_id"] = np.arange(table.n_obs)
    table.obs["region"] = pd.Categorical(["spots"] * table.n_obs)
    sdata = sd.SpatialData(shapes={"spots": ShapesModel.parse(circles)},
                           tables={"table": TableModel.parse(table, region="spots",
                                                             region_key="region",
                                                             instance_key="spot_id")})
    store = tmp_path / "data.zarr"
    sdata.write(store)
    a = sg.io.read(store)
    np.testing.assert_allclose(a.obsm["spatial"], xy)
    assert a.uns["stagate_input"]["format"] == "spatialdata"
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["run", str(store), "--n-domains", "4", "--epochs", "5",
                                   "--runs", "1", "--quiet", "--no-umap", "--no-report",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = sd.read_zarr(out / "stagate.zarr")
    t = result.tables["stagate"]
    assert t.uns["spatialdata_attrs"]["region"] == "spots"
    assert t.n_obs == sim_raw.n_obs and "domain" in t.obs and "STAGATE" in t.obsm
    assert "spots" in result.shapes
    assert list(sd.read_zarr(store).tables) == ["table"]  # the input store is unchanged
